#include "backend/cpu/moe.h"

#include <algorithm>

#include "backend/cpu/threads.h"
#include "core/error.h"

namespace frugal::backend::cpu {

int64_t build_permutation(int32_t* row_of_TK, int32_t* token_of_row_R, int64_t* tokens_per_expert_E, int64_t* offset_E,
                          const int32_t* expert_TK, int64_t t, int64_t k, int64_t e) {
    std::fill_n(tokens_per_expert_E, e, 0);
    std::fill_n(offset_E, e + 1, 0);
    for (int64_t i = 0; i < t * k; ++i) {
        int32_t ex = expert_TK[i];
        if (ex < 0) continue;
        FRUGAL_CHECK(ex < e, "expert index ", ex, " out of range [0, ", e, ")");
        tokens_per_expert_E[ex]++;
    }
    for (int64_t j = 0; j < e; ++j) offset_E[j + 1] = offset_E[j] + tokens_per_expert_E[j];
    const int64_t num_rows = offset_E[e];
    // Counting sort, stable in (token, choice) order; offset_E serves as the cursor and is restored after.
    int64_t* cursor = offset_E;
    for (int64_t i = 0; i < t * k; ++i) {
        int32_t ex = expert_TK[i];
        if (ex < 0) {
            row_of_TK[i] = -1;
            continue;
        }
        int64_t r = cursor[ex]++;
        row_of_TK[i] = int32_t(r);
        token_of_row_R[r] = int32_t(i / k);
    }
    for (int64_t j = e; j > 0; --j) cursor[j] = cursor[j - 1];
    cursor[0] = 0;
    return num_rows;
}

template <typename T>
void permute_rows(T* rows_RD, const T* x_TD, const int32_t* token_of_row_R, int64_t num_rows, int64_t d) {
#pragma omp parallel for schedule(static) if (worth_a_team(num_rows * d))
    for (int64_t r = 0; r < num_rows; ++r) std::copy_n(x_TD + int64_t(token_of_row_R[r]) * d, d, rows_RD + r * d);
}

template <typename T>
void permute_rows_backward(T* dx_TD, const T* drows_RD, const int32_t* row_of_TK, int64_t t, int64_t k, int64_t d) {
#pragma omp parallel for schedule(static) if (worth_a_team(t * k * d))
    for (int64_t i = 0; i < t; ++i) {
        T* dst = dx_TD + i * d;
        for (int64_t j = 0; j < k; ++j) {
            int32_t r = row_of_TK[i * k + j];
            if (r < 0) continue;
            const T* src = drows_RD + int64_t(r) * d;
            for (int64_t x = 0; x < d; ++x) dst[x] += src[x];
        }
    }
}

template <typename T>
void unpermute_combine(T* out_TD, const T* rows_RD, const T* weight_TK, const int32_t* row_of_TK, int64_t t, int64_t k,
                       int64_t d) {
#pragma omp parallel for schedule(static) if (worth_a_team(t * k * d))
    for (int64_t i = 0; i < t; ++i) {
        T* dst = out_TD + i * d;
        for (int64_t j = 0; j < k; ++j) {
            int32_t r = row_of_TK[i * k + j];
            if (r < 0) continue;
            const T w = weight_TK[i * k + j];
            const T* src = rows_RD + int64_t(r) * d;
            for (int64_t x = 0; x < d; ++x) dst[x] += w * src[x];
        }
    }
}

template <typename T>
void unpermute_combine_backward(T* drows_RD, T* dweight_TK, const T* dout_TD, const T* rows_RD, const T* weight_TK,
                                const int32_t* row_of_TK, int64_t t, int64_t k, int64_t d) {
#pragma omp parallel for schedule(static) if (worth_a_team(t * k * d))
    for (int64_t i = 0; i < t; ++i) {
        const T* g = dout_TD + i * d;
        for (int64_t j = 0; j < k; ++j) {
            int32_t r = row_of_TK[i * k + j];
            if (r < 0) continue;
            const T w = weight_TK[i * k + j];
            const T* y = rows_RD + int64_t(r) * d;
            T* dy = drows_RD + int64_t(r) * d;
            T dot = 0;
            for (int64_t x = 0; x < d; ++x) {
                dy[x] += w * g[x];
                dot += g[x] * y[x];
            }
            dweight_TK[i * k + j] += dot;
        }
    }
}

#define FRUGAL_INSTANTIATE(T)                                                                                  \
    template void permute_rows<T>(T*, const T*, const int32_t*, int64_t, int64_t);                             \
    template void permute_rows_backward<T>(T*, const T*, const int32_t*, int64_t, int64_t, int64_t);           \
    template void unpermute_combine<T>(T*, const T*, const T*, const int32_t*, int64_t, int64_t, int64_t);     \
    template void unpermute_combine_backward<T>(T*, T*, const T*, const T*, const T*, const int32_t*, int64_t, \
                                                int64_t, int64_t);
FRUGAL_INSTANTIATE(float)
FRUGAL_INSTANTIATE(double)
#undef FRUGAL_INSTANTIATE

}  // namespace frugal::backend::cpu
