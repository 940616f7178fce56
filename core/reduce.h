// Reductions whose result does not depend on the thread count or timing: fixed chunks summed in a fixed order (an
// OpenMP reduction combines partial sums in arrival order). Used for gradient norms, which must be bitwise
// reproducible.
#pragma once

#include <cstdint>

namespace frugal {

inline double sum_squares(const float* x, int64_t n) {
    constexpr int64_t kChunks = 64;
    double partial[kChunks] = {};
#pragma omp parallel for schedule(static) if (n >= (int64_t(1) << 15))
    for (int64_t c = 0; c < kChunks; ++c) {
        const int64_t begin = n * c / kChunks, end = n * (c + 1) / kChunks;
        double s = 0;
        for (int64_t j = begin; j < end; ++j) s += double(x[j]) * double(x[j]);
        partial[c] = s;
    }
    double total = 0;
    for (double s : partial) total += s;
    return total;
}

}  // namespace frugal
