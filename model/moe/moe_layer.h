// The MoE feed-forward block: router -> dispatcher.dispatch -> experts -> dispatcher.combine, plus optional shared
// experts that every token passes through (DeepSeek-V3), optionally scaled per token by a sigmoid gate
// g_T = sigmoid(x_TD w_gate^T) (Qwen2-MoE): out = g * shared(x) + combine(experts(dispatch(x))).
//
// Parallelism plugs in through the dispatcher: the layer is built with a LocalDispatcher and the expert-parallel
// wiring replaces it (set_dispatcher) and builds only the local experts; this file never talks to other ranks.
//
// Legend: T tokens, D model dim, K top-k, R rows received by this rank's experts.
#pragma once

#include <memory>

#include "model/layers/mlp.h"
#include "model/moe/dispatcher.h"
#include "model/moe/experts.h"
#include "model/moe/router.h"

namespace frugal::model {

// Which experts this rank builds: [first, first + count) of n_experts.
struct ExpertShard {
    int64_t first = 0;
    int64_t count = 0;  // 0 = all
};

template <typename T>
class MoELayer {
  public:
    MoELayer(const Ops<T>& ops, ParamStore& store, const ModelConfig& cfg, const std::string& prefix,
             ExpertShard shard = {});
    void forward(T* out_TD, const T* x_TD, int64_t b, int64_t s);
    // dx_TD += ...; aux_scale scales the balancing and z losses (see Router::backward).
    void backward(T* dx_TD, const T* dout_TD, const T* x_TD, int64_t b, int64_t s, T aux_scale);

    void set_dispatcher(std::unique_ptr<Dispatcher<T>> dispatcher) { dispatcher_ = std::move(dispatcher); }
    // true (the default): the shared experts run while the exchanges are in flight, the first half of their MLP
    // during the dispatch and the second during the combine; false: between the two. The same arithmetic either
    // way, only the timing differs.
    void set_overlap_shared(bool overlap) { overlap_shared_ = overlap; }
    // Routed and shared experts take the configured recipe; the router stays FP32.
    void set_precision(const precision::PrecisionConfig& cfg) {
        experts_.set_precision(cfg);
        if (shared_) shared_->set_precision(cfg);
    }
    void collect_recipes(std::vector<precision::MatmulRecipe<T>*>& out) {
        experts_.collect_recipes(out);
        if (shared_) shared_->collect_recipes(out);
    }
    Dispatcher<T>& dispatcher() { return *dispatcher_; }
    Router<T>& router() { return router_; }
    Experts<T>& experts() { return experts_; }

  private:
    // The shared experts in two halves: their hidden activations (and gate), then out_TD = their output (gated),
    // or zeros without shared experts.
    void shared_first_half(const T* x_TD, int64_t t);
    void shared_second_half(T* out_TD, int64_t t);

    const Ops<T>& ops_;
    int64_t d_, k_, e_;
    Router<T> router_;
    Experts<T> experts_;
    std::unique_ptr<MLP<T>> shared_;
    Linear<T> shared_gate_;  // [1, D], FP32 like the router; w == nullptr when the shared experts are ungated
    Tensor shared_TD_, gate_T_, dpre_T_, dshared_TD_;
    std::unique_ptr<Dispatcher<T>> dispatcher_;
    bool overlap_shared_ = true;
    Tensor y_RD_, dy_RD_, dx_RD_, dweight_TK_;
};

}  // namespace frugal::model
