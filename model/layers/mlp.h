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
    MLP(ParamStore& store, const std::string& prefix, int64_t d_model, int64_t d_hidden, double std, double out_std);
    void forward(T* out_ND, const T* x_ND, int64_t n);
    // dx_ND += ...; parameter gradients added.
    void backward(T* dx_ND, const T* dout_ND, const T* x_ND, int64_t n);

  private:
    int64_t d_, f_;
    Linear<T> w13_, w2_;
    Tensor gu_N2F_, h_NF_, dh_NF_, dgu_N2F_;
};

}  // namespace frugal::model
