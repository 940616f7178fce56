// MoE router (Megatron's TopKRouter, DeepSeek-V3 section 2.1.2): an FP32 linear gate, softmax or sigmoid affinity
// scores, top-k selection on score + expert bias, routing weights from the UNBIASED scores (optionally renormalized
// over the chosen experts, then scaled), the load-balancing and z losses, and capacity dropping.
//
// Legend: T tokens (= B sequences x S positions), E experts, K choices per token, D model dim, G aux-loss groups
// (1 for the batch-wise loss, B for the sequence-wise one; a group is T/G consecutive tokens).
// Outputs of forward():
//   selected_TK  int32  chosen experts in descending key order (ties: lower expert index first)
//   expert_TK    int32  selected_TK with -1 where capacity dropped the assignment (what the dispatcher reads)
//   weight_TK    T      routing weight of each choice
// The expert bias is FP32 state, not a parameter: it only changes which experts are chosen.
//
// Router<T>::forward is a sequence of kernel steps, free functions over raw buffers in the style of DESIGN.md
// (outputs first, then saved values, then inputs, then dims; backward steps ADD into their d_ outputs unless they
// say they write them), so that each can become a device kernel with the same signature:
//   gate          logits_TE = x_TD gate^T                     (the Linear)
//   scores        scores_TE = softmax(logits) or sigmoid(logits); lse_T = logsumexp(logits) either way
//   select        selected_TK = top-k of keys_TE = score + bias, in double
//   weights       weight_TK = c * score (/ sum of the chosen scores when renormalizing), c the scaling factor
//   capacity      expert_TK, num_kept_E, num_selected_E, num_dropped: keep the first `capacity` per expert
//   aux loss      Switch Transformers section 2.2 (batch) or DeepSeek-V3 eq. 17-20 (seq), on the choice before dropping
//   z loss        the router z-loss of ST-MoE (Zoph et al. 2022): coef * mean(lse^2)
// and backward the reverse: weights, aux loss (both into d_scores_TE), scores (d_scores_TE -> d_logits_TE),
// z loss (into d_logits_TE), gate.
#pragma once

#include <vector>

#include "model/config.h"
#include "model/layers/common.h"

namespace frugal::model {

// moe.score_func and moe.aux_loss resolved once (MoEConfig keeps the strings it was parsed from).
enum class ScoreFunc { kSoftmax, kSigmoid };
enum class AuxLoss { kNone, kBatch, kSeq };
ScoreFunc parse_score_func(const std::string& name);  // throws ConfigError naming moe.score_func
AuxLoss parse_aux_loss(const std::string& name);      // throws ConfigError naming moe.aux_loss

// Statistics of one MoE layer, accumulated over the micro-batches of a step.
struct MoEStats {
    std::vector<int64_t> tokens_per_expert;    // assignments processed (after dropping), per global expert
    std::vector<int64_t> selected_per_expert;  // assignments chosen by the router (before dropping)
    int64_t dropped = 0;
    int64_t assignments = 0;  // T*K summed over micro-batches
    double aux_loss = 0;      // coefficient-weighted, summed over micro-batches
    double z_loss = 0;
    int64_t micro_batches = 0;

    void reset(int64_t n_experts);
    // max load / mean load over experts (1 = perfectly balanced).
    double imbalance() const;
};

// ---- Forward steps ----

// scores_TE = softmax or sigmoid of logits_TE; lse_T = logsumexp of each row (both functions: the z-loss reads it).
template <typename T>
void router_scores_forward(T* scores_TE, T* lse_T, const T* logits_TE, ScoreFunc func, int64_t t, int64_t e);

// Top-k of one row of keys: indices of the k largest, descending, ties broken toward the lower index.
template <typename K>
void topk_indices(int32_t* out_K, const K* keys_E, int64_t e, int64_t k);

// selected_TK = top-k of keys_TE = double(score) + double(bias_E), per token. keys_TE is scratch the caller owns.
template <typename T>
void router_select_forward(int32_t* selected_TK, double* keys_TE, const T* scores_TE, const float* bias_E, int64_t t,
                           int64_t e, int64_t k);

// weight_TK = scale * score of each choice, divided by the sum of the token's chosen scores when renormalize.
// Reads the unbiased scores: the bias that chose the experts never enters the weights.
template <typename T>
void router_weights_forward(T* weight_TK, const T* scores_TE, const int32_t* selected_TK, bool renormalize,
                            double scale, int64_t t, int64_t e, int64_t k);

// ceil(capacity_factor * T K / E) assignments per expert; capacity_factor 0 (dropless) gives no limit.
int64_t router_capacity(double capacity_factor, int64_t t, int64_t k, int64_t e);

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

template <typename T>
class Router {
  public:
    Router(ParamStore& store, const ModelConfig& cfg, const std::string& prefix);
    void forward(const T* x_TD, int64_t b, int64_t s);
    // dx_TD += gradient through the gate; d_weight_TK is d(loss)/d(weight_TK); aux_scale scales the aux and z
    // loss terms (1 / number of micro-batches in the global batch).
    void backward(T* dx_TD, const T* d_weight_TK, const T* x_TD, T aux_scale);

    const int32_t* selected_TK() const { return selected_TK_.data(); }
    const int32_t* expert_TK() const { return expert_TK_.data(); }
    const T* weight_TK() const { return weight_TK_.data(); }
    const T* scores_TE() const { return scores_TE_.data(); }
    double aux_loss() const { return aux_loss_; }
    double z_loss() const { return z_loss_; }

    std::vector<float>& expert_bias() { return bias_E_; }
    // Aux-loss-free balancing: bias_e += rate * sign(mean load - load_e), from the step's selection counts
    // (global counts under expert parallelism, so every replica moves its bias the same way).
    void update_bias(const std::vector<int64_t>& selected_per_expert);
    MoEStats& stats() { return stats_; }
    Param* gate() const { return gate_.w; }

  private:
    bool has_aux_loss() const { return aux_kind_ != AuxLoss::kNone && cfg_.aux_loss_coef > 0; }
    int64_t aux_groups() const { return aux_kind_ == AuxLoss::kSeq ? b_ : 1; }

    int64_t n_experts_, top_k_, d_;
    MoEConfig cfg_;
    ScoreFunc score_func_;
    AuxLoss aux_kind_;
    Linear<T> gate_;
    std::vector<float> bias_E_;
    std::vector<T> logits_TE_, scores_TE_, weight_TK_, lse_T_, d_logits_TE_, d_scores_TE_, d_aux_GE_;
    std::vector<double> keys_TE_, score_sum_T_;
    std::vector<int32_t> selected_TK_, expert_TK_;
    std::vector<int64_t> num_kept_E_, num_selected_E_;
    double aux_loss_ = 0, z_loss_ = 0;
    int64_t b_ = 0, s_ = 0;
    MoEStats stats_;
};

}  // namespace frugal::model
