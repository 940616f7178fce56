// The error discipline of a command that runs on every rank under mpirun or srun (frugal train, frugal score).
#pragma once

#include <functional>

#include "parallel/communicator.h"

namespace frugal::apps {

// configure() runs on every rank before any communication and returns the collective timeout in seconds; its
// ConfigErrors are found identically everywhere, so rank 0 reports and every rank exits 2. run(world) does the
// work: a failure there may hit one rank only, which reports it and aborts the whole job (exit 2 for a
// ConfigError, 1 otherwise) so that no rank is left waiting in a collective. Returns 0 when every rank finished.
int run_mpi_job(const std::function<double()>& configure, const std::function<void(parallel::Communicator&)>& run);

}  // namespace frugal::apps
