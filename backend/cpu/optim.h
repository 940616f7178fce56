// The optimizer's kernels on the CPU (semantics in backend/backend.h, Backend::adamw_update / sum_squares / scale):
// OpenMP loops with static schedules over FP32 master weights.
#pragma once

#include <cstdint>

namespace frugal::backend::cpu {

// M is float (FP32 moments) or uint16_t (BF16 bits, rounded to nearest even after every update).
template <typename M>
void adamw_update(float* value, const float* grad, M* m, M* v, int64_t n, float b1, float b2, float step_size,
                  float inv_sqrt_bc2, float eps, float decay);
void scale(float* x, int64_t n, float factor);
// FNV-1a over the bits of every 997th element and the last one.
uint64_t fingerprint(const float* x, int64_t n);

}  // namespace frugal::backend::cpu
