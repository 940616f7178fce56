// Routed experts: SwiGLU FFNs, one per expert, over rows grouped by expert (the dispatcher's layout).
//
// Weights (this rank's shard of the global [E, ...] tensors; expert e_local is global expert first + e_local):
//   w13_E2FD  [E_local, 2F, D]  rows [0, F) gate, [F, 2F) up     global [E, 2F, D]
//   w2_EDF    [E_local, D, F]                                      global [E, D, F]
// Rows: x_RD with tokens_per_expert[e] consecutive rows for each local expert in order.
//
// forward() is the grouped fast path: one GEMM per expert and matrix over its contiguous rows.
// forward_reference() is the sequential per-row loop kept as its oracle (naive dot products, no Eigen).
#pragma once

#include <vector>

#include "model/config.h"
#include "model/layers/common.h"

namespace frugal::model {

template <typename T>
class Experts {
  public:
    Experts(const Ops<T>& ops, ParamStore& store, const ModelConfig& cfg, const std::string& prefix,
            int64_t first_expert, int64_t num_local);
    void forward(T* y_RD, const T* x_RD, const std::vector<int64_t>& tokens_per_expert);
    void backward(T* dx_RD, const T* dy_RD, const T* x_RD, const std::vector<int64_t>& tokens_per_expert);
    void forward_reference(T* y_RD, const T* x_RD, const std::vector<int64_t>& tokens_per_expert) const;
    // One recipe object per expert and matrix (delayed scaling keeps a history per GEMM), role "experts".
    void set_precision(const precision::PrecisionConfig& cfg);
    // Local expert e's two recipes, in expert order.
    void collect_recipes(std::vector<precision::MatmulRecipe<T>*>& out) {
        for (int64_t e = 0; e < num_local_; ++e) {
            out.push_back(r13_[size_t(e)].get());
            out.push_back(r2_[size_t(e)].get());
        }
    }

    Param* w13() const { return w13_; }
    Param* w2() const { return w2_; }

  private:
    const Ops<T>& ops_;
    int64_t d_, f_, num_local_;
    Param* w13_;
    Param* w2_;
    std::vector<std::unique_ptr<precision::MatmulRecipe<T>>> r13_, r2_;
    Tensor gu_R2F_, h_RF_, dh_RF_, dgu_R2F_;
};

}  // namespace frugal::model
