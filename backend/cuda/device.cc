// Device choice: the launcher's local-rank variables and the CUDA runtime's device count (see device.h).
#include "backend/cuda/device.h"

#include <cuda_runtime_api.h>

#include <cerrno>
#include <cstdlib>

#include "backend/cuda/check.h"
#include "core/error.h"

namespace frugal::cuda {

namespace {
// The local-rank variables in the order they are consulted: a job under Slurm started by Open MPI's mpirun has both
// and mpirun's is the one that counts this job's ranks.
constexpr const char* kLocalRankVariables[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID",
                                               "PMI_LOCAL_RANK"};
constexpr long kMaxLocalRank = 1 << 20;

int parse_local_rank(const char* name, const char* value) {
    errno = 0;
    char* end = nullptr;
    const long v = std::strtol(value, &end, 10);
    const bool is_integer = end != value && *end == '\0' && errno == 0;
    if (!is_integer || v < 0 || v > kMaxLocalRank)
        FRUGAL_THROW("the environment variable ", name, " is '", value,
                     "', not a local rank (an integer from 0): the launcher sets it; unset it or fix the job script");
    return static_cast<int>(v);
}
}  // namespace

int local_rank_from_env(const std::function<const char*(const char*)>& getenv) {
    for (const char* name : kLocalRankVariables) {
        const char* value = getenv(name);
        if (value != nullptr && value[0] != '\0') return parse_local_rank(name, value);
    }
    return 0;
}

int cuda_device_count(std::string* why_none) {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
        (void)cudaGetLastError();
        if (why_none) *why_none = "the CUDA runtime finds no usable GPU: " + detail::status_text(status);
        return 0;
    }
    if (count == 0 && why_none) *why_none = "the CUDA runtime finds no GPU on this machine";
    return count;
}

int select_device(int local_rank) {
    FRUGAL_CHECK(local_rank >= 0, "local rank ", local_rank, " is negative");
    std::string why;
    const int count = cuda_device_count(&why);
    if (count == 0) FRUGAL_THROW("run.device: cuda was asked for but ", why, "; use run.device: cpu or auto");
    const int device = local_rank % count;
    FRUGAL_CUDA_CHECK(cudaSetDevice(device));
    return device;
}

}  // namespace frugal::cuda
