// The dense layers' CUDA kernels: the float operations of backend::Ops (backend/backend.h) other than the matrix
// products (backend/cuda/gemm_lt.h) and attention (backend/cuda/attention_cudnn.h), plus the FP32 <-> BF16
// conversions attention's operands need. Each launcher is named as its operation and takes the stream first, then
// exactly the parameters of the backend.h method with the same meaning: outputs first; a backward ADDS into its
// gradients unless backend.h says it writes them; every pointer is device memory. Operations that need scratch take a
// last parameter `alloc` (the backend's pooled CudaAllocator, whose frees are ordered on `stream`); the one that
// returns a value to the host (cross_entropy_forward) waits for the stream.
//
// The per-element and per-row arithmetic is backend/cuda/layer_math.h's, in the CPU's order of operations, each
// product and sum rounded on its own. Results depend only on the inputs, never on timing or the launch configuration
// (no floating-point atomics). They differ from the CPU's (backend/cpu/ops.cc) by the order of a reduction, by exp /
// log (the device's are within 2 ulps of glibc's), and where the CPU's compiler contracts a product and a sum into
// one FMA (g++'s default for C++ under -march=native), by an ulp of the product:
//   bitwise the CPU's   fill, add, add_inplace, bias_add, embedding_forward, embedding_backward (a stable radix sort
//                       of the token ids, then each id's rows summed in row order into its weight row),
//                       f32_to_bf16, bf16_to_f32, sigmoid_gate_backward's d_shared
//   CPU FMAs            rope_apply
//   bitwise the CPU's   strided_copy, strided_add (one thread per destination element, rows in order)
//   exp (and FMAs)      swiglu_forward, swiglu_backward, sigmoid_gate_forward
//   warp order          rmsnorm_forward, rmsnorm_backward's dx, cross_entropy_forward's per-row losses,
//                       cross_entropy_backward, sigmoid_gate_backward's d_logit: one warp per row, lane l sums the
//                       columns l, l + 32, ... in order, then the xor butterfly (layer_math.h)
//   chunked rows        bias_backward, rmsnorm_backward's dw: each column's rows in chunks of kColumnChunkRows summed
//                       in order into partials [ceil(N / kColumnChunkRows), O], then added in chunk order to the
//                       gradient
//   block tree          cross_entropy_forward's total: one block of 256 threads, thread t sums loss_N[t + 256 i] in
//                       double, then a fixed tree in shared memory
//
// Invariants: with n (or t) of 0 nothing is launched (cross_entropy_forward returns 0); every launch is checked
// (FRUGAL_CUDA_CHECK on cudaGetLastError); all but cross_entropy_forward are asynchronous on `stream`. Token ids and
// targets are those Backend::prepare_tokens checked; embedding_backward takes at most 2^31 - 1 rows.
//
// Legend: N rows (tokens), D model dim, F ffn dim, V vocab, O output features, T tokens of an MoE layer, P rotary
// positions, H half the head dim.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/allocator.h"

namespace frugal::cuda {

// Rows per partial of the column sums (bias_backward, rmsnorm_backward's dw).
constexpr int64_t kColumnChunkRows = 64;

// ---- Elementwise ----

void fill(cudaStream_t stream, float* x, int64_t n, float value);
// out = a + b (out may alias a or b)
void add(cudaStream_t stream, float* out, const float* a, const float* b, int64_t n);
// y += x
void add_inplace(cudaStream_t stream, float* y, const float* x, int64_t n);
// y_NO[r] += b_O for every row
void bias_add(cudaStream_t stream, float* y_NO, const float* b_O, int64_t n, int64_t out);
// db_O += sum over rows of dy_NO (chunked rows)
void bias_backward(cudaStream_t stream, float* db_O, const float* dy_NO, int64_t n, int64_t out,
                   frugal::Allocator& alloc);

// ---- Layers ----

// out_ND[i] = wte_VD[tokens_N[i]]
void embedding_forward(cudaStream_t stream, float* out_ND, const int32_t* tokens_N, const float* wte_VD, int64_t n,
                       int64_t d);
// dwte_VD[tokens_N[i]] += dout_ND[i], rows of one token id in row order
void embedding_backward(cudaStream_t stream, float* dwte_VD, const float* dout_ND, const int32_t* tokens_N, int64_t n,
                        int64_t d, frugal::Allocator& alloc);
// out = x rstd w, rstd_N = 1 / sqrt(mean(x^2) + eps)
void rmsnorm_forward(cudaStream_t stream, float* out_ND, float* rstd_N, const float* x_ND, const float* w_D, int64_t n,
                     int64_t d, double eps);
// dx_ND += the input gradient; dw_D += sum over rows of dout x rstd (dw_D may be null to skip it)
void rmsnorm_backward(cudaStream_t stream, float* dx_ND, float* dw_D, const float* dout_ND, const float* x_ND,
                      const float* w_D, const float* rstd_N, int64_t n, int64_t d, frugal::Allocator& alloc);
// In place on the first rot_dim values of each head (head h of row r at x + r * row_stride + h * head_stride);
// cos_PH, sin_PH [P, rot_dim / 2]; inverse applies the transposed rotation (the backward).
void rope_apply(cudaStream_t stream, float* x, int64_t row_stride, int64_t head_stride, const int32_t* pos_N,
                const float* cos_PH, const float* sin_PH, int64_t n, int64_t heads, int64_t rot_dim, bool inverse);
// dst[r * ld_dst + c] = src[(r / src_repeat) * ld_src + c] (bitwise the CPU's)
void strided_copy(cudaStream_t stream, float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows,
                  int64_t cols, int64_t src_repeat);
// dst[(r / dst_repeat) * ld_dst + c] += src[r * ld_src + c], each destination element summing its dst_repeat
// source rows in row order in one thread (bitwise the CPU's)
void strided_add(cudaStream_t stream, float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows,
                 int64_t cols, int64_t dst_repeat);
// gu_N2F row = [gate(F) | up(F)], out_NF = silu(gate) up
void swiglu_forward(cudaStream_t stream, float* out_NF, const float* gu_N2F, int64_t n, int64_t f);
void swiglu_backward(cudaStream_t stream, float* dgu_N2F, const float* dout_NF, const float* gu_N2F, int64_t n,
                     int64_t f);
// Writes loss_N (0 for rows whose target is ignore_index) and returns their sum in double (block tree); waits for
// the stream.
double cross_entropy_forward(cudaStream_t stream, float* loss_N, const float* logits_NV, const int32_t* targets_N,
                             int64_t n, int64_t v, int32_t ignore_index, frugal::Allocator& alloc);
// dlogits += scale (softmax(logits) - onehot(target)) for every row not ignored
void cross_entropy_backward(cudaStream_t stream, float* dlogits_NV, const float* logits_NV, const int32_t* targets_N,
                            float scale, int64_t n, int64_t v, int32_t ignore_index);
// gate_T: logits in, g = sigmoid(logit) out; out_TD = g shared_TD
void sigmoid_gate_forward(cudaStream_t stream, float* out_TD, float* gate_T, const float* shared_TD, int64_t t,
                          int64_t d);
// WRITES d_shared_TD = g dout and d_logit_T = g (1 - g) <dout, shared>
void sigmoid_gate_backward(cudaStream_t stream, float* d_shared_TD, float* d_logit_T, const float* dout_TD,
                           const float* shared_TD, const float* gate_T, int64_t t, int64_t d);

// ---- BF16 (core/bf16.h: round to nearest even, NaN to 0x7FFF) ----

void f32_to_bf16(cudaStream_t stream, uint16_t* out, const float* in, int64_t n);
void bf16_to_f32(cudaStream_t stream, float* out, const uint16_t* in, int64_t n);

}  // namespace frugal::cuda
