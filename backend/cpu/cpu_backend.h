// The CPU backend: the reference every other backend is held to. Its Ops tables (float and double) and its other
// operations forward to the kernels of backend/cpu (ops.h: dense layers and elementwise; router.h; moe.h: dispatch
// permutation; optim.h) and to the FP8/BF16 quantizers of precision/quantize.h. Memory is host memory from
// host_allocator(), so the byte copies are memcpy and synchronize() has nothing to wait for.
#pragma once

#include "backend/backend.h"

namespace frugal::backend::cpu {

// The process-wide CPU backend (backend_for(Device::kCpu)).
Backend& backend();

}  // namespace frugal::backend::cpu
