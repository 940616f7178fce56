// SwiGLU feed-forward, out = w2(silu(x w1^T) * (x w3^T)), with w1 and w3 fused into one [2F, D] weight
// (rows [0, F) gate, [F, 2F) up) so the up-projection is a single GEMM. Used for the dense blocks and the shared
// experts.
//
// Legend: N tokens, D model dim, F hidden width.
#pragma once

#include "model/config.h"
#include "model/layers/common.h"

namespace frugal::model {

template <typename T>
class MLP {
  public:
    // role: "dense_ffn" or "shared_experts", the precision role of both matrices.
    MLP(const Ops<T>& ops, ParamStore& store, const std::string& prefix, int64_t d_model, int64_t d_hidden, double std,
        double out_std, std::string role = "dense_ffn");
    void forward(T* out_ND, const T* x_ND, int64_t n) {
        forward_hidden(x_ND, n);
        forward_output(out_ND, n);
    }
    // forward() in two halves (the MoE layer runs one while the dispatch is in flight, the other during the
    // combine): the hidden activations silu(x w1^T) * (x w3^T), kept for backward, then out = w2(hidden).
    void forward_hidden(const T* x_ND, int64_t n);
    void forward_output(T* out_ND, int64_t n);
    // dx_ND += ...; parameter gradients added.
    void backward(T* dx_ND, const T* dout_ND, const T* x_ND, int64_t n);
    void set_precision(const precision::PrecisionConfig& cfg) {
        w13_.set_precision(cfg, role_);
        w2_.set_precision(cfg, role_);
    }
    void collect_recipes(std::vector<precision::MatmulRecipe<T>*>& out) {
        out.push_back(w13_.recipe.get());
        out.push_back(w2_.recipe.get());
    }

  private:
    const Ops<T>& ops_;
    int64_t d_, f_;
    std::string role_;
    Linear<T> w13_, w2_;
    Tensor gu_N2F_, h_NF_, dh_NF_, dgu_N2F_;
};

}  // namespace frugal::model
