// The router's kernel steps on the CPU: the semantics of each are stated here; model/moe/router.h says how
// Router<T> chains them, and backend/backend.h's Ops<T>::router_* and Backend::router_capacity expose them to model
// code. Free functions over raw buffers in the style of DESIGN.md (outputs first, then saved values, then inputs,
// then dims; backward steps ADD into their d_ outputs unless they say they write them).
//
// Legend: T tokens, E experts, K choices per token, G aux-loss groups (1 for the batch-wise loss, B for the
// sequence-wise one; a group is T/G consecutive tokens).
#pragma once

#include <cstdint>

#include "backend/backend.h"

namespace frugal::backend::cpu {

// ---- Forward steps ----

// scores_TE = softmax or sigmoid of logits_TE; lse_T = logsumexp of each row (both functions: the z-loss reads it).
template <typename T>
void router_scores_forward(T* scores_TE, T* lse_T, const T* logits_TE, ScoreFunc func, int64_t t, int64_t e);

// Top-k of one row of keys: indices of the k largest, descending, ties broken toward the lower index.
template <typename K>
void topk_indices(int32_t* out_K, const K* keys_E, int64_t e, int64_t k);

// selected_TK = top-k of keys_TE = double(score) + double(bias_E), per token. keys_TE is scratch the caller owns.
// Group-limited routing when n_group > 1 (transformers' DeepseekV3TopkRouter, GroupScore::kTop2Sum, and
// DeepseekV2TopkRouter's group_limited_greedy, kMax): the experts form n_group consecutive groups of E / n_group;
// per token, a group's score is the sum of its two largest keys (kTop2Sum) or its largest (kMax); the topk_group best
// groups stay eligible (ties: the lower group index) and every other expert's key is set to -infinity in keys_TE
// before the top-k, which therefore never picks one. n_group == 1, or topk_group == n_group, leaves the keys as they
// are: plain top-k, the same bits. Requires (an Error otherwise) 1 <= n_group <= kMaxRouterGroups dividing E,
// 1 <= topk_group <= n_group, K <= topk_group * E / n_group, and two experts per group for kTop2Sum when n_group > 1.
// O(E + n_group^2 + E K) per token, no allocation.
template <typename T>
void router_select_forward(int32_t* selected_TK, double* keys_TE, const T* scores_TE, const float* bias_E, int64_t t,
                           int64_t e, int64_t k, int64_t n_group, int64_t topk_group, GroupScore group_score);

// weight_TK = scale * score of each choice, divided by the sum of the token's chosen scores when renormalize.
// Reads the unbiased scores: the bias that chose the experts never enters the weights.
template <typename T>
void router_weights_forward(T* weight_TK, const T* scores_TE, const int32_t* selected_TK, bool renormalize,
                            double scale, int64_t t, int64_t e, int64_t k);

// Capacity dropping in token order: the first `capacity` assignments to an expert are kept. Writes expert_TK
// (selected_TK, or -1 where dropped), num_kept_E and num_selected_E (this call's counts, not accumulated) and
// *num_dropped. Invariant: sum(num_kept_E) == T*K - *num_dropped.
void router_capacity_forward(int32_t* expert_TK, int64_t* num_kept_E, int64_t* num_selected_E, int64_t* num_dropped,
                             const int32_t* selected_TK, int64_t capacity, int64_t t, int64_t k, int64_t e);

// Load-balancing loss on the router's choice (before dropping), per group of T/G consecutive tokens, averaged over
// the G groups: *aux_loss = coef / G * sum_g E * sum_e f_ge P_ge with f_ge = count_ge / (T/G K) and P_ge the mean
// normalized score. G = 1 is Switch's loss (section 2.2); G = B is DeepSeek-V3's sequence-wise loss (eq. 17-20, whose
// f_i = E/(K S) count_i is E times this f). Softmax scores are already normalized over experts; sigmoid scores are
// divided by their row sum (eq. 19), accumulated in double in expert order into score_sum_T (written for sigmoid
// only; null is fine for softmax).
template <typename T>
void router_aux_loss_forward(double* aux_loss, double* score_sum_T, const T* scores_TE, const int32_t* selected_TK,
                             ScoreFunc func, double coef, int64_t groups, int64_t t, int64_t e, int64_t k);

// *z_loss = coef * mean over tokens of lse^2 (ST-MoE), accumulated in double in token order.
template <typename T>
void router_z_loss_forward(double* z_loss, const T* lse_T, double coef, int64_t t);

// ---- Backward steps ----

// d_scores_TE += d(weight_TK)/d(scores) applied to d_weight_TK (only the chosen entries receive gradient).
template <typename T>
void router_weights_backward(T* d_scores_TE, const T* d_weight_TK, const T* scores_TE, const int32_t* selected_TK,
                             bool renormalize, double scale, int64_t t, int64_t e, int64_t k);

// d_scores_TE += aux_scale * d(aux loss)/d(scores), the selection held fixed. d_aux_GE is scratch the caller owns: it
// ends up holding the gradient by each normalized score of group g, aux_scale * coef E f_ge / (S G) with S = T/G.
template <typename T>
void router_aux_loss_backward(T* d_scores_TE, T* d_aux_GE, const T* scores_TE, const int32_t* selected_TK,
                              ScoreFunc func, double coef, T aux_scale, int64_t groups, int64_t t, int64_t e,
                              int64_t k);

// WRITES d_logits_TE (it is the first gradient of the logits) from d_scores_TE through softmax or sigmoid.
template <typename T>
void router_scores_backward(T* d_logits_TE, const T* d_scores_TE, const T* scores_TE, ScoreFunc func, int64_t t,
                            int64_t e);

// d_logits_TE += aux_scale * d(z loss)/d(logits) = aux_scale * coef / T * 2 lse softmax(logits).
template <typename T>
void router_z_loss_backward(T* d_logits_TE, const T* logits_TE, const T* lse_T, double coef, T aux_scale, int64_t t,
                            int64_t e);

}  // namespace frugal::backend::cpu
