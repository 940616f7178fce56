#include "backend/backend.h"

#include "backend/cpu/cpu_backend.h"

namespace frugal::backend {

Backend& backend_for(Device device) {
    if (device == Device::kCpu) return cpu::backend();
    FRUGAL_CHECK(false, "this build has no ", device_name(device),
                 " backend: rebuild with FRUGAL_CUDA=ON on a machine with the CUDA toolkit, or set run.device: cpu");
    return cpu::backend();
}

}  // namespace frugal::backend
