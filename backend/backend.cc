#include "backend/backend.h"

#include "backend/cpu/cpu_backend.h"
#ifdef FRUGAL_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace frugal::backend {

bool backend_available(Device device, std::string* why_not) {
    if (device == Device::kCpu) return true;
#ifdef FRUGAL_HAVE_CUDA
    return cuda::available(why_not);
#else
    if (why_not) *why_not = "this build has no CUDA backend (rebuild with FRUGAL_CUDA=ON where the toolkit is)";
    return false;
#endif
}

Backend& backend_for(Device device) {
    if (device == Device::kCpu) return cpu::backend();
#ifdef FRUGAL_HAVE_CUDA
    return cuda::backend();
#else
    FRUGAL_CHECK(false, "this build has no ", device_name(device),
                 " backend: rebuild with FRUGAL_CUDA=ON on a machine with the CUDA toolkit, or set run.device: cpu");
    return cpu::backend();
#endif
}

}  // namespace frugal::backend
