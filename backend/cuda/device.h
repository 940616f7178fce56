// Which GPU a rank uses. One rank drives one GPU: the rank's index among the ranks of its machine (the launcher's
// local rank) modulo the machine's GPU count picks it, so `mpirun -n 8` on an 8-GPU node gives each rank its own.
//
// Invariants: local_rank_from_env is pure (it reads only through the getenv it is given, so tests pass a fake
// environment); cuda_device_count never throws for a machine without a GPU or without a driver, it returns 0 and
// says why; select_device is the only function here that changes the calling thread's current device.
#pragma once

#include <functional>
#include <string>

namespace frugal::cuda {

// The rank's index on its machine, from the first of these that is set: OMPI_COMM_WORLD_LOCAL_RANK (Open MPI's
// mpirun), SLURM_LOCALID (srun), MPI_LOCALRANKID (MPICH's Hydra), PMI_LOCAL_RANK (PMI launchers); 0 when none is.
// A value that is not a non-negative integer is an Error naming the variable and the value.
int local_rank_from_env(const std::function<const char*(const char*)>& getenv);

// The number of GPUs the CUDA runtime sees; 0 when there are none, with the runtime's reason in *why_none (no
// device, no driver, a driver older than the runtime ...), which may be null when the caller does not want it.
int cuda_device_count(std::string* why_none);

// Makes local_rank % cuda_device_count() the current device of the calling thread and returns it. With no GPU:
// an Error "run.device: cuda was asked for but <reason>; use run.device: cpu or auto".
int select_device(int local_rank);

}  // namespace frugal::cuda
