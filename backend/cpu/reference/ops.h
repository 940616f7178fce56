// Naive reference kernels: plain loops, double accumulation, no Eigen, no threads. Test oracles only; nothing on
// the training path calls them. Same signatures and conventions as backend/cpu/ops.h.
#pragma once

#include <cstdint>

#include "backend/backend.h"

namespace frugal::backend::reference {

template <typename T>
void gemm(T* c, int64_t ldc, const T* a, int64_t lda, const T* b, int64_t ldb, int64_t m, int64_t n, int64_t k,
          bool trans_a, bool trans_b, T beta);

// doc_BS (optional): each token's document id; keys of another document are invisible (document masking).
template <typename T>
void attention_forward(T* out, const T* q, const T* k, const T* v, const AttentionDims& dims,
                       const int32_t* doc_BS = nullptr);
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const AttentionDims& dims, const int32_t* doc_BS = nullptr);

template <typename T>
void rmsnorm_forward(T* out_ND, const T* x_ND, const T* w_D, int64_t n, int64_t d, double eps);

}  // namespace frugal::backend::reference
