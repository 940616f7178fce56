#include "backend/cpu/optim.h"

#include <cmath>
#include <cstring>

#include "backend/cpu/threads.h"
#include "core/bf16.h"

namespace frugal::backend::cpu {

namespace {
inline float load(const float* s, int64_t j) { return s[j]; }
inline float load(const uint16_t* s, int64_t j) { return bf16_bits_to_float(s[j]); }
inline void store(float* s, int64_t j, float v) { s[j] = v; }
inline void store(uint16_t* s, int64_t j, float v) { s[j] = float_to_bf16_bits(v); }
}  // namespace

template <typename M>
void adamw_update(float* value, const float* grad, M* m, M* v, int64_t n, float b1, float b2, float step_size,
                  float inv_sqrt_bc2, float eps, float decay) {
#pragma omp parallel for schedule(static) if (worth_a_team(n))
    for (int64_t j = 0; j < n; ++j) {
        const float g = grad[j];
        const float mj = b1 * load(m, j) + (1.0f - b1) * g;
        const float vj = b2 * load(v, j) + (1.0f - b2) * g * g;
        store(m, j, mj);
        store(v, j, vj);
        const float denom = std::sqrt(vj) * inv_sqrt_bc2 + eps;
        value[j] = value[j] * decay - step_size * mj / denom;
    }
}

void scale(float* x, int64_t n, float factor) {
#pragma omp parallel for schedule(static) if (worth_a_team(n))
    for (int64_t j = 0; j < n; ++j) x[j] *= factor;
}

uint64_t fingerprint(const float* x, int64_t n) {
    constexpr int64_t kStride = 997;
    uint64_t h = 1469598103934665603ull;
    auto mix = [&](int64_t i) {
        uint32_t bits;
        std::memcpy(&bits, x + i, 4);
        h = (h ^ bits) * 1099511628211ull;
    };
    for (int64_t i = 0; i < n; i += kStride) mix(i);
    if (n > 0) mix(n - 1);
    return h;
}

template void adamw_update<float>(float*, const float*, float*, float*, int64_t, float, float, float, float, float,
                                  float);
template void adamw_update<uint16_t>(float*, const float*, uint16_t*, uint16_t*, int64_t, float, float, float, float,
                                     float, float);

}  // namespace frugal::backend::cpu
