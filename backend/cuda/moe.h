// The CUDA backend's router, dispatch-permutation and token kernels: one launcher per operation of backend/backend.h
// (Ops<float>::router_* and permute/unpermute, Backend::router_capacity, router_bias_update, build_permutation and
// prepare_tokens), with the stream first and then exactly that method's parameters and meaning. The CPU kernels
// (backend/cpu/router.h, backend/cpu/moe.h, backend/cpu/ops.h) define the semantics; the per-row arithmetic is
// backend/cuda/moe_math.h's, in the CPU's order of operations.
//
// Legend: T tokens, E experts, K choices per token, G aux-loss groups, R kept rows, D row width, N positions.
// Pointers are device memory except those named *_host; backward launchers ADD into their gradients except
// router_scores_backward, which WRITES d_logits_TE (as the CPU does).
//
// How each runs, and what equals the CPU:
//   router rows          one thread per token, the CPU's row loop (moe_math.h): equal but for expf/logf (a few ulps);
//                        the selection compares doubles and equals the CPU's given the same scores and bias
//   aux loss             per (group, chunk of kAuxChunk tokens, expert) partial counts and score sums, then each
//                        group's chunks summed in chunk order on the device (G x E values; the forward copies them to
//                        the host and finishes the loss there in the CPU's order); counts are exact, score sums differ
//                        from the CPU's token-order sum by double rounding only
//   z loss               forward: lse_T copied to the host and summed there in token order (the CPU's loop, exact);
//                        backward: one thread per logit
//   permute / combine    one thread block per row (permute_rows) or per token (the rest), threads over D, a token's
//                        choices in order: no two blocks write one row, no atomics; exact but for combine_backward's
//                        dot product, a fixed pairwise tree over 256 partials
//   capacity, permutation, bias update, token checks
//                        host steps on host copies (moe_math.h's restatements of the CPU loops), exact: their counts
//                        must reach the host anyway (the all-to-all sizes its exchange by them)
//
// Invariants: results depend only on the inputs, never on the launch configuration or timing (no floating-point
// atomics; fixed reduction orders); every launch is checked; with t, num_rows or d of 0 nothing is launched; the
// launchers that return a host value or write *_host outputs synchronize the stream, the others are asynchronous;
// the host steps copy through pageable host buffers of their own and synchronize after their last copy, so none is
// read after the launcher returns. A launcher's Allocator must order its frees on `stream` (CudaAllocator does, on
// the backend's one stream): scratch is given back when the launcher returns, before its kernels have run.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backend/backend.h"
#include "core/allocator.h"

namespace frugal::cuda {

using backend::GroupScore;
using backend::ScoreFunc;

// Tokens per partial of the balancing loss's sums.
constexpr int64_t kAuxChunk = 256;

// ---- Router forward ----

void router_scores_forward(cudaStream_t stream, float* scores_TE, float* lse_T, const float* logits_TE, ScoreFunc func,
                           int64_t t, int64_t e);
// Group-limited when n_group > 1, as backend/cpu/router.h states; the grouping is checked on the host first.
void router_select_forward(cudaStream_t stream, int32_t* selected_TK, double* keys_TE, const float* scores_TE,
                           const float* bias_E, int64_t t, int64_t e, int64_t k, int64_t n_group, int64_t topk_group,
                           GroupScore group_score);
void router_weights_forward(cudaStream_t stream, float* weight_TK, const float* scores_TE, const int32_t* selected_TK,
                            bool renormalize, double scale, int64_t t, int64_t e, int64_t k);
// Returns the loss (synchronizes). alloc: scratch of 2 (C + G) E 8-byte words, C = G ceil((T/G) / kAuxChunk).
double router_aux_loss_forward(cudaStream_t stream, double* score_sum_T, const float* scores_TE,
                               const int32_t* selected_TK, ScoreFunc func, double coef, int64_t groups, int64_t t,
                               int64_t e, int64_t k, Allocator& alloc);
// Returns the loss (synchronizes).
double router_z_loss_forward(cudaStream_t stream, const float* lse_T, double coef, int64_t t);

// ---- Router backward ----

void router_weights_backward(cudaStream_t stream, float* d_scores_TE, const float* d_weight_TK, const float* scores_TE,
                             const int32_t* selected_TK, bool renormalize, double scale, int64_t t, int64_t e,
                             int64_t k);
// alloc: scratch of C E int64 counts, C = G ceil((T/G) / kAuxChunk).
void router_aux_loss_backward(cudaStream_t stream, float* d_scores_TE, float* d_aux_GE, const float* scores_TE,
                              const int32_t* selected_TK, ScoreFunc func, double coef, float aux_scale, int64_t groups,
                              int64_t t, int64_t e, int64_t k, Allocator& alloc);
void router_scores_backward(cudaStream_t stream, float* d_logits_TE, const float* d_scores_TE, const float* scores_TE,
                            ScoreFunc func, int64_t t, int64_t e);
void router_z_loss_backward(cudaStream_t stream, float* d_logits_TE, const float* logits_TE, const float* lse_T,
                            double coef, float aux_scale, int64_t t, int64_t e);

// ---- Dispatch permutation ----

void permute_rows(cudaStream_t stream, float* rows_RD, const float* x_TD, const int32_t* token_of_row_R,
                  int64_t num_rows, int64_t d);
void permute_rows_backward(cudaStream_t stream, float* dx_TD, const float* drows_RD, const int32_t* row_of_TK,
                           int64_t t, int64_t k, int64_t d);
void unpermute_combine(cudaStream_t stream, float* out_TD, const float* rows_RD, const float* weight_TK,
                       const int32_t* row_of_TK, int64_t t, int64_t k, int64_t d);
void unpermute_combine_backward(cudaStream_t stream, float* drows_RD, float* dweight_TK, const float* dout_TD,
                                const float* rows_RD, const float* weight_TK, const int32_t* row_of_TK, int64_t t,
                                int64_t k, int64_t d);

// ---- Routing integers and tokens (host steps; all synchronize) ----

int64_t router_capacity(cudaStream_t stream, int32_t* expert_TK, int64_t* num_kept_E_host, int64_t* num_selected_E_host,
                        const int32_t* selected_TK, int64_t capacity, int64_t t, int64_t k, int64_t e);
void router_bias_update(cudaStream_t stream, float* bias_E, const int64_t* selected_E_host, double rate, int64_t e);
int64_t build_permutation(cudaStream_t stream, int32_t* row_of_TK, int32_t* token_of_row_R,
                          int64_t* tokens_per_expert_E_host, int64_t* offset_E_host, const int32_t* expert_TK,
                          int64_t t, int64_t k, int64_t e);
int64_t prepare_tokens(cudaStream_t stream, int32_t* tokens_N, int32_t* targets_N, int32_t* pos_N, int32_t* start_N,
                       const int32_t* tokens_host, const int32_t* targets_host, const int32_t* doc_start_host,
                       int64_t n, int64_t s, int64_t v, int32_t ignore_index);

}  // namespace frugal::cuda
