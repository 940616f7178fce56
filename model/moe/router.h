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
//   select        selected_TK = top-k of keys_TE = score + bias, in double; with moe.n_group > 1 only among the
//                 experts of the moe.topk_group best groups (group-limited routing, backend/cpu/router.h)
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

// moe.score_func, moe.aux_loss and moe.group_score resolved once (MoEConfig keeps the strings they were parsed from).
using backend::GroupScore;
using backend::ScoreFunc;
enum class AuxLoss { kNone, kBatch, kSeq };
ScoreFunc parse_score_func(const std::string& name);    // throws ConfigError naming moe.score_func
AuxLoss parse_aux_loss(const std::string& name);        // throws ConfigError naming moe.aux_loss
GroupScore parse_group_score(const std::string& name);  // throws ConfigError naming moe.group_score

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

// The steps are backend operations (backend/backend.h: Ops<T>::router_*, Backend::router_capacity); the CPU's
// kernels, with each step's exact semantics, are in backend/cpu/router.h.

// ceil(capacity_factor * T K / E) assignments per expert; capacity_factor 0 (dropless) gives no limit.
int64_t router_capacity(double capacity_factor, int64_t t, int64_t k, int64_t e);

template <typename T>
class Router {
  public:
    Router(const Ops<T>& ops, ParamStore& store, const ModelConfig& cfg, const std::string& prefix);
    void forward(const T* x_TD, int64_t b, int64_t s);
    // dx_TD += gradient through the gate; d_weight_TK is d(loss)/d(weight_TK); aux_scale scales the aux and z
    // loss terms (1 / number of micro-batches in the global batch).
    void backward(T* dx_TD, const T* d_weight_TK, const T* x_TD, T aux_scale);

    // Buffers of the backend's device, [T, K] and [T, E] of the last forward.
    const int32_t* selected_TK() const { return selected_TK_.template data<int32_t>(); }
    const int32_t* expert_TK() const { return expert_TK_.template data<int32_t>(); }
    const T* weight_TK() const { return weight_TK_.template data<T>(); }
    const T* scores_TE() const { return scores_TE_.template data<T>(); }
    double aux_loss() const { return aux_loss_; }
    double z_loss() const { return z_loss_; }

    // The FP32 expert bias [E], on the backend's device (checkpoints read and write it there).
    float* expert_bias() { return bias_E_.data<float>(); }
    std::vector<float> expert_bias_host() const;
    void set_expert_bias(const std::vector<float>& bias_E);
    // Aux-loss-free balancing: bias_e += rate * sign(mean load - load_e), from the step's selection counts
    // (global counts under expert parallelism, so every replica moves its bias the same way).
    void update_bias(const std::vector<int64_t>& selected_per_expert);
    MoEStats& stats() { return stats_; }
    Param* gate() const { return gate_.w; }
    // Node-limited routing (moe.max_nodes_per_token M): the experts are on `nodes` nodes, E / nodes consecutive
    // experts each; a token then picks at most M nodes, by the best (top_k / M = 1) or the two best (2) of its
    // score + bias on each, and its top_k experts among them. nodes 1 leaves routing as it was.
    void limit_nodes(int64_t nodes);
    int64_t node_groups() const { return n_group_; }

  private:
    bool has_aux_loss() const { return aux_kind_ != AuxLoss::kNone && cfg_.aux_loss_coef > 0; }
    int64_t aux_groups() const { return aux_kind_ == AuxLoss::kSeq ? b_ : 1; }

    const Ops<T>& ops_;
    backend::Backend& be_;
    int64_t n_experts_, top_k_, d_;
    MoEConfig cfg_;
    ScoreFunc score_func_;
    AuxLoss aux_kind_;
    GroupScore group_score_;
    int64_t n_group_, topk_group_;  // moe.n_group / topk_group, or the nodes under limit_nodes()
    Linear<T> gate_;
    Tensor bias_E_;                                                                            // float [E]
    Tensor logits_TE_, scores_TE_, weight_TK_, lse_T_, d_logits_TE_, d_scores_TE_, d_aux_GE_;  // T
    Tensor keys_TE_, score_sum_T_;                                                             // double
    Tensor selected_TK_, expert_TK_;                                                           // int32
    std::vector<int64_t> num_kept_E_, num_selected_E_;                                         // host counts
    double aux_loss_ = 0, z_loss_ = 0;
    int64_t b_ = 0, s_ = 0;
    MoEStats stats_;
};

}  // namespace frugal::model
