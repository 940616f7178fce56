#include "apps/mpi_job.h"

#include "core/error.h"
#include "core/log.h"
#include "parallel/mpi_comm.h"

namespace frugal::apps {

int run_mpi_job(const std::function<double()>& configure, const std::function<void(parallel::Communicator&)>& run) {
    parallel::mpi_init();
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    log::set_rank(rank, size);
    double timeout_s = 0;
    try {
        timeout_s = configure();
    } catch (const ConfigError& e) {
        if (rank == 0) log::error(e.what());
        parallel::mpi_finalize();
        return 2;
    }
    try {
        auto world = parallel::MpiComm::world(timeout_s);
        run(*world);
    } catch (const ConfigError& e) {
        log::error(e.what());
        parallel::mpi_abort(2);
    } catch (const Error& e) {
        log::error(e.what(), " [", e.where(), "]");
        parallel::mpi_abort(1);
    } catch (const std::exception& e) {
        log::error(e.what());
        parallel::mpi_abort(1);
    }
    parallel::mpi_finalize();
    return 0;
}

}  // namespace frugal::apps
