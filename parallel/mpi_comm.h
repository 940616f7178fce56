// MPI implementation of the Communicator, and the process-level MPI life cycle (init, finalize, abort).
//
// Every call's return code is checked and a failure names the call. Collectives are issued non-blocking
// (MPI_Iallreduce, MPI_Ialltoallv, ...) and polled until done or until the deadline of parallel.timeout_s, after
// which the job is aborted with the step, the layer and the collective in the message: no rank hangs silently.
#pragma once

#include <mpi.h>

#include <vector>

#include "parallel/communicator.h"

namespace frugal::parallel {

// True when this process was started by mpirun/mpiexec or srun (their environment variables are present).
bool launched_by_mpi();
// MPI_Init_thread (funneled) once; errors return codes instead of aborting, so they become Frugal errors.
void mpi_init();
bool mpi_initialized();
void mpi_finalize();
// Stops every rank of the job with the given exit code.
[[noreturn]] void mpi_abort(int code);

class MpiComm final : public Communicator {
  public:
    // MPI_COMM_WORLD (mpi_init() must have run).
    static std::unique_ptr<MpiComm> world(double timeout_s);
    ~MpiComm() override;

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    std::string name() const override { return name_; }
    void all_reduce(void* buf, int64_t count, DType dtype, ReduceOp op) override;
    void all_to_all(const void* send, void* recv, int64_t count_per_rank, DType dtype) override;
    void all_to_all_v(const void* send, const int64_t* send_counts, const int64_t* send_displs, void* recv,
                      const int64_t* recv_counts, const int64_t* recv_displs, DType dtype) override;
    void start_all_to_all_v(const void* send, const int64_t* send_counts, const int64_t* send_displs, void* recv,
                            const int64_t* recv_counts, const int64_t* recv_displs, DType dtype) override;
    void progress() override;
    void finish_all() override;
    void all_gather(const void* send, void* recv, int64_t count, DType dtype) override;
    void reduce_scatter(const void* send, void* recv, const int64_t* recv_counts, DType dtype, ReduceOp op) override;
    void all_gather_v(void* buf, const int64_t* counts, const int64_t* displs, DType dtype) override;
    void broadcast(void* buf, int64_t count, DType dtype, int root) override;
    void barrier() override;
    std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;
    void* native_handle() override { return &comm_; }

    void set_timeout(double seconds) { timeout_s_ = seconds; }

  private:
    MpiComm(MPI_Comm comm, bool owned, double timeout_s, std::string name);
    // Polls the n requests until all complete; aborts the job past the deadline.
    void wait(MPI_Request* requests, int n, const char* collective);
    void wait(MPI_Request& request, const char* collective) { wait(&request, 1, collective); }

    MPI_Comm comm_;
    bool owned_;
    double timeout_s_;
    std::string name_;
    int rank_ = 0, size_ = 1;
    // int copies of the 64-bit counts the -v collectives take; they must outlive the request, so they are members.
    std::vector<int> rc_, rd_;
    // The started all_to_all_v exchanges: requests and their int counts (send, send displacements, receive, receive
    // displacements), kept until finish_all(); the vectors grow to the most exchanges in flight and are reused.
    std::vector<MPI_Request> pending_;
    std::vector<std::vector<int>> pending_counts_;
};

}  // namespace frugal::parallel
