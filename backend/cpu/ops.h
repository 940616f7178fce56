// CPU kernels: the fast path. Free functions in the llm.c style, op_forward(out, saved..., in..., dims) and
// op_backward(d_in..., d_weight..., d_out, saved..., in..., dims). Every backward ADDS into its gradient outputs,
// so callers zero them once per step and several consumers of one activation accumulate naturally.
//
// Templated on the scalar: float for training, double for the gradient checks. GEMMs go through Eigen (which
// threads with OpenMP); element-wise loops are OpenMP-parallel over rows with static schedules, so results do not
// depend on timing. All buffers are row-major.
//
// Legend: N rows (tokens), D model dim, F ffn dim, V vocab, B batch, S sequence, H heads (Hq query, Hkv key/value),
// hd head dim.
#pragma once

#include <cstdint>

#include "backend/backend.h"

namespace frugal::backend::cpu {

// C[M,N] = op(A)[M,K] * op(B)[K,N] + beta * C, with leading dimensions (row strides) lda, ldb, ldc.
// op(A) = A^T when trans_a (A is then stored [K, M]); likewise for B.
template <typename T>
void gemm(T* c, int64_t ldc, const T* a, int64_t lda, const T* b, int64_t ldb, int64_t m, int64_t n, int64_t k,
          bool trans_a, bool trans_b, T beta);

// Dense shorthand: leading dimensions from the shapes.
template <typename T>
void matmul(T* c, const T* a, const T* b, int64_t m, int64_t n, int64_t k, bool trans_a, bool trans_b, T beta) {
    gemm(c, n, a, trans_a ? m : k, b, trans_b ? k : n, m, n, k, trans_a, trans_b, beta);
}

// Linear layer y_NO = x_NI * w_OI^T (PyTorch's nn.Linear layout, no bias).
template <typename T>
void linear_forward(T* y_NO, const T* x_NI, const T* w_OI, int64_t n, int64_t in, int64_t out) {
    matmul(y_NO, x_NI, w_OI, n, out, in, false, true, T(0));
}
// dx_NI += dy_NO * w_OI ; dw_OI += dy_NO^T * x_NI.  Either output may be null to skip it.
template <typename T>
void linear_backward(T* dx_NI, T* dw_OI, const T* dy_NO, const T* x_NI, const T* w_OI, int64_t n, int64_t in,
                     int64_t out) {
    if (dx_NI) matmul(dx_NI, dy_NO, w_OI, n, in, out, false, false, T(1));
    if (dw_OI) matmul(dw_OI, dy_NO, x_NI, out, in, n, true, false, T(1));
}

template <typename T>
void embedding_forward(T* out_ND, const int32_t* tokens_N, const T* wte_VD, int64_t n, int64_t d);
template <typename T>
void embedding_backward(T* dwte_VD, const T* dout_ND, const int32_t* tokens_N, int64_t n, int64_t d);

// out = x * rstd * w, rstd_N = 1 / sqrt(mean(x^2) + eps). Rows of length d with row stride d.
template <typename T>
void rmsnorm_forward(T* out_ND, T* rstd_N, const T* x_ND, const T* w_D, int64_t n, int64_t d, double eps);
template <typename T>
void rmsnorm_backward(T* dx_ND, T* dw_D, const T* dout_ND, const T* x_ND, const T* w_D, const T* rstd_N, int64_t n,
                      int64_t d);

// Rotary embedding in the "rotate half" convention (element j pairs with j + rot_dim/2), applied in place to the
// first rot_dim values of each head of x viewed as [N, heads] heads at x + i * row_stride + h * head_stride.
// cos/sin tables are [max_pos, rot_dim/2]; pos_N gives each row's position. inverse = true applies the transposed
// rotation, which is the backward of the forward rotation.
template <typename T>
void rope_apply(T* x, int64_t row_stride, int64_t head_stride, const int32_t* pos_N, const T* cos_PH, const T* sin_PH,
                int64_t n, int64_t heads, int64_t rot_dim, bool inverse);

// Causal softmax attention with grouped-query heads: query head h reads key/value head h / (Hq / Hkv).
// Shapes in backend.h's AttentionDims; probs (saved for backward): [B, Hq, S, S].
// start_BS (optional, document masking): query i of a window attends keys [start_BS[i], i] only.
template <typename T>
void attention_forward(T* out, T* probs_BHSS, const T* q, const T* k, const T* v, const AttentionDims& dims,
                       const int32_t* start_BS = nullptr);
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* probs_BHSS, const T* q, const T* k, const T* v,
                        const AttentionDims& dims, const int32_t* start_BS = nullptr);

// Strided row copies, as backend.h's Ops::strided_copy / strided_add state them.
template <typename T>
void strided_copy(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t rows, int64_t cols, int64_t src_repeat);
template <typename T>
void strided_add(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t rows, int64_t cols, int64_t dst_repeat);

// SwiGLU on a fused gate/up row: gu_N2F row = [gate(F) | up(F)], out = silu(gate) * up.
template <typename T>
void swiglu_forward(T* out_NF, const T* gu_N2F, int64_t n, int64_t f);
template <typename T>
void swiglu_backward(T* dgu_N2F, const T* dout_NF, const T* gu_N2F, int64_t n, int64_t f);

// Cross-entropy of logits against targets; rows whose target equals ignore_index contribute nothing.
// Returns the sum of the per-row losses (double accumulation) and writes them into loss_N (0 for ignored rows).
template <typename T>
double cross_entropy_forward(T* loss_N, const T* logits_NV, const int32_t* targets_N, int64_t n, int64_t v,
                             int32_t ignore_index);
// dlogits += scale * (softmax(logits) - onehot(target)) for every row not ignored.
template <typename T>
void cross_entropy_backward(T* dlogits_NV, const T* logits_NV, const int32_t* targets_N, T scale, int64_t n, int64_t v,
                            int32_t ignore_index);

// y += x
template <typename T>
void add_inplace(T* y, const T* x, int64_t n);
// out = a + b (out may alias a or b)
template <typename T>
void add(T* out, const T* a, const T* b, int64_t n);
template <typename T>
void fill(T* x, int64_t n, T value);
// y_NO[r] += b_O ; db_O += sum over rows of dy_NO (rows in order)
template <typename T>
void bias_add(T* y_NO, const T* b_O, int64_t n, int64_t out);
template <typename T>
void bias_backward(T* db_O, const T* dy_NO, int64_t n, int64_t out);
// gate_T: logits in, g = sigmoid(logit) out; out_TD = g * shared_TD. Backward WRITES d_shared_TD = g dout and
// d_logit_T = g (1 - g) <dout, shared>.
template <typename T>
void sigmoid_gate_forward(T* out_TD, T* gate_T, const T* shared_TD, int64_t t, int64_t d);
template <typename T>
void sigmoid_gate_backward(T* d_shared_TD, T* d_logit_T, const T* dout_TD, const T* shared_TD, const T* gate_T,
                           int64_t t, int64_t d);

// Checks and copies a micro-batch's tokens (Backend::prepare_tokens); returns the number of valid targets.
int64_t prepare_tokens(int32_t* tokens_N, int32_t* targets_N, int32_t* pos_N, int32_t* start_N,
                       const int32_t* tokens_in, const int32_t* targets_in, const int32_t* doc_start_in, int64_t n,
                       int64_t s, int64_t v, int32_t ignore_index);

}  // namespace frugal::backend::cpu
