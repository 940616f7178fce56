#include "model/moe/dispatcher.h"

#include <algorithm>
#include <type_traits>

#include "core/error.h"
#include "model/layers/common.h"
#include "precision/quantize.h"

namespace frugal::model {

void build_permutation(Permutation& perm, const int32_t* expert_TK, int64_t t, int64_t k, int64_t e) {
    perm.num_tokens = t;
    perm.top_k = k;
    perm.num_experts = e;
    perm.tokens_per_expert_E.assign(size_t(e), 0);
    perm.offset_E.assign(size_t(e + 1), 0);
    perm.row_of_TK.resize(size_t(t * k));
    for (int64_t i = 0; i < t * k; ++i) {
        int32_t ex = expert_TK[i];
        if (ex < 0) continue;
        FRUGAL_CHECK(ex < e, "expert index ", ex, " out of range [0, ", e, ")");
        perm.tokens_per_expert_E[size_t(ex)]++;
    }
    for (int64_t j = 0; j < e; ++j)
        perm.offset_E[size_t(j + 1)] = perm.offset_E[size_t(j)] + perm.tokens_per_expert_E[size_t(j)];
    perm.num_rows = perm.offset_E[size_t(e)];
    perm.token_of_row_R.resize(size_t(perm.num_rows));
    // Counting sort, stable in (token, choice) order.
    std::vector<int64_t>& cursor = perm.offset_E;  // advanced below, restored after
    for (int64_t i = 0; i < t * k; ++i) {
        int32_t ex = expert_TK[i];
        if (ex < 0) {
            perm.row_of_TK[size_t(i)] = -1;
            continue;
        }
        int64_t r = cursor[size_t(ex)]++;
        perm.row_of_TK[size_t(i)] = int32_t(r);
        perm.token_of_row_R[size_t(r)] = int32_t(i / k);
    }
    for (int64_t j = e; j > 0; --j) cursor[size_t(j)] = cursor[size_t(j - 1)];
    cursor[0] = 0;
}

template <typename T>
void permute_rows(T* rows_RD, const T* x_TD, const Permutation& perm, int64_t d) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < perm.num_rows; ++r)
        std::copy_n(x_TD + int64_t(perm.token_of_row_R[size_t(r)]) * d, d, rows_RD + r * d);
}

template <typename T>
void permute_rows_backward(T* dx_TD, const T* drows_RD, const Permutation& perm, int64_t d) {
    // Parallel over tokens (each token's rows found through row_of_TK), so no two threads add into one row.
    const int64_t k = perm.top_k;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < perm.num_tokens; ++t) {
        T* dst = dx_TD + t * d;
        for (int64_t j = 0; j < k; ++j) {
            int32_t r = perm.row_of_TK[size_t(t * k + j)];
            if (r < 0) continue;
            const T* src = drows_RD + int64_t(r) * d;
            for (int64_t x = 0; x < d; ++x) dst[x] += src[x];
        }
    }
}

template <typename T>
void unpermute_combine(T* out_TD, const T* rows_RD, const T* weight_TK, const Permutation& perm, int64_t d) {
    const int64_t k = perm.top_k;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < perm.num_tokens; ++t) {
        T* dst = out_TD + t * d;
        for (int64_t j = 0; j < k; ++j) {
            int32_t r = perm.row_of_TK[size_t(t * k + j)];
            if (r < 0) continue;
            const T w = weight_TK[t * k + j];
            const T* src = rows_RD + int64_t(r) * d;
            for (int64_t x = 0; x < d; ++x) dst[x] += w * src[x];
        }
    }
}

template <typename T>
void unpermute_combine_backward(T* drows_RD, T* dweight_TK, const T* dout_TD, const T* rows_RD, const T* weight_TK,
                                const Permutation& perm, int64_t d) {
    const int64_t k = perm.top_k;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < perm.num_tokens; ++t) {
        const T* g = dout_TD + t * d;
        for (int64_t j = 0; j < k; ++j) {
            int32_t r = perm.row_of_TK[size_t(t * k + j)];
            if (r < 0) continue;
            const T w = weight_TK[t * k + j];
            const T* y = rows_RD + int64_t(r) * d;
            T* dy = drows_RD + int64_t(r) * d;
            T dot = 0;
            for (int64_t x = 0; x < d; ++x) {
                dy[x] += w * g[x];
                dot += g[x] * y[x];
            }
            dweight_TK[t * k + j] += dot;
        }
    }
}

template <typename T>
void LocalDispatcher<T>::dispatch_prepare(const T* x_TD, const int32_t* expert_TK, int64_t t, int64_t k, int64_t e,
                                          int64_t d) {
    auto& h = this->handle_;
    h.d = d;
    build_permutation(h.perm, expert_TK, t, k, e);
    T* rows = ensure<T>(h.send_rows_RD, std::max<int64_t>(h.perm.num_rows, 1) * d);
    permute_rows(rows, x_TD, h.perm, d);
    if constexpr (std::is_same_v<T, float>) {
        if (fp8_)
            precision::fake_quant_row_tiles(rows, rows, h.perm.num_rows, d, 128, precision::Fp8Format::kE4M3, true);
    } else {
        FRUGAL_CHECK(!fp8_, "FP8 dispatch quantizes float rows");
    }
}

template <typename T>
void LocalDispatcher<T>::dispatch_finish() {
    auto& h = this->handle_;
    h.tokens_per_local_expert = h.perm.tokens_per_expert_E;
    h.expert_rows = h.send_rows_RD.template data<T>();
    h.num_expert_rows = h.perm.num_rows;
}

#define FRUGAL_INSTANTIATE(T)                                                                                       \
    template void permute_rows<T>(T*, const T*, const Permutation&, int64_t);                                       \
    template void permute_rows_backward<T>(T*, const T*, const Permutation&, int64_t);                              \
    template void unpermute_combine<T>(T*, const T*, const T*, const Permutation&, int64_t);                        \
    template void unpermute_combine_backward<T>(T*, T*, const T*, const T*, const T*, const Permutation&, int64_t); \
    template class LocalDispatcher<T>;

FRUGAL_INSTANTIATE(float)
FRUGAL_INSTANTIATE(double)

}  // namespace frugal::model
