// MoE router (Megatron's TopKRouter, DeepSeek-V3 section 2.1.2): an FP32 linear gate, softmax or sigmoid affinity
// scores, top-k selection on score + expert bias, routing weights from the UNBIASED scores (optionally renormalized
// over the chosen experts, then scaled), the load-balancing and z losses, and capacity dropping.
//
// Legend: T tokens (= B sequences x S positions), E experts, K choices per token, D model dim.
// Outputs of forward():
//   selected_TK  int32  chosen experts in descending key order (ties: lower expert index first)
//   expert_TK    int32  selected_TK with -1 where capacity dropped the assignment (what the dispatcher reads)
//   weight_TK    T      routing weight of each choice
// The expert bias is FP32 state, not a parameter: it only changes which experts are chosen.
#pragma once

#include <vector>

#include "model/config.h"
#include "model/layers/common.h"

namespace frugal::model {

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

template <typename T>
class Router {
  public:
    Router(ParamStore& store, const ModelConfig& cfg, const std::string& prefix);
    void forward(const T* x_TD, int64_t b, int64_t s);
    // dx_TD += gradient through the gate; d_weight_TK is d(loss)/d(weight_TK); aux_scale scales the aux and z
    // loss terms (1 / number of micro-batches in the global batch).
    void backward(T* dx_TD, const T* d_weight_TK, const T* x_TD, T aux_scale);

    const int32_t* selected_TK() const { return selected_.data(); }
    const int32_t* expert_TK() const { return expert_.data(); }
    const T* weight_TK() const { return weight_.data(); }
    const T* scores_TE() const { return scores_.data(); }
    double aux_loss() const { return aux_loss_; }
    double z_loss() const { return z_loss_; }

    std::vector<float>& expert_bias() { return bias_E_; }
    // Aux-loss-free balancing: bias_e += rate * sign(mean load - load_e), from the step's selection counts
    // (global counts under expert parallelism, so every replica moves its bias the same way).
    void update_bias(const std::vector<int64_t>& selected_per_expert);
    MoEStats& stats() { return stats_; }
    Param* gate() const { return gate_.w; }

  private:
    int64_t n_experts_, top_k_, d_;
    MoEConfig cfg_;
    Linear<T> gate_;
    std::vector<float> bias_E_;
    std::vector<T> logits_, scores_, weight_, lse_, dlogits_, dscores_, g_aux_;
    std::vector<double> keys_;
    std::vector<int32_t> selected_, expert_;
    std::vector<int64_t> count_E_;
    double aux_loss_ = 0, z_loss_ = 0;
    int64_t b_ = 0, s_ = 0;
    MoEStats stats_;
};

// Top-k of one row of keys: indices of the k largest, descending, ties broken toward the lower index.
template <typename K>
void topk_indices(int32_t* out_K, const K* keys_E, int64_t e, int64_t k);

}  // namespace frugal::model
