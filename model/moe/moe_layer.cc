#include "model/moe/moe_layer.h"

#include <cmath>

namespace frugal::model {

template <typename T>
MoELayer<T>::MoELayer(ParamStore& store, const ModelConfig& cfg, const std::string& prefix, ExpertShard shard)
    : d_(cfg.d_model),
      k_(cfg.moe.top_k),
      e_(cfg.moe.n_experts),
      router_(store, cfg, prefix + "router."),
      experts_(store, cfg, prefix + "experts.", shard.first, shard.count > 0 ? shard.count : cfg.moe.n_experts) {
    if (cfg.moe.n_shared_experts > 0) {
        const double out_std = cfg.init_std / std::sqrt(2.0 * double(cfg.n_layers));
        shared_ = std::make_unique<MLP<T>>(store, prefix + "shared.", d_, cfg.moe.n_shared_experts * cfg.moe.d_expert,
                                           cfg.init_std, out_std, "shared_experts");
        if (cfg.moe.shared_expert_gate)
            shared_gate_ = Linear<T>(store, prefix + "shared_gate.weight", d_, 1, cfg.init_std);
    }
    dispatcher_ = std::make_unique<LocalDispatcher<T>>(e_);
}

template <typename T>
void MoELayer<T>::forward(T* out_TD, const T* x_TD, int64_t b, int64_t s) {
    const int64_t t = b * s;
    router_.forward(x_TD, b, s);
    DispatchHandle<T>& h = dispatcher_->dispatch(x_TD, router_.expert_TK(), t, k_, e_, d_);
    T* y = ensure<T>(y_RD_, std::max<int64_t>(h.num_expert_rows, 1) * d_);
    experts_.forward(y, h.expert_rows, h.tokens_per_local_expert);
    if (shared_ && shared_gate_.w) {
        T* sh = ensure<T>(shared_TD_, t * d_);
        T* g = ensure<T>(gate_T_, t);
        shared_->forward(sh, x_TD, t);
        shared_gate_.forward(g, x_TD, t);
        for (int64_t i = 0; i < t; ++i) {
            g[i] = T(1) / (T(1) + std::exp(-g[i]));
            for (int64_t j = 0; j < d_; ++j) out_TD[i * d_ + j] = g[i] * sh[i * d_ + j];
        }
    } else if (shared_) {
        shared_->forward(out_TD, x_TD, t);
    } else {
        std::fill_n(out_TD, t * d_, T(0));
    }
    dispatcher_->combine(out_TD, y, router_.weight_TK());
}

template <typename T>
void MoELayer<T>::backward(T* dx_TD, const T* dout_TD, const T* x_TD, int64_t b, int64_t s, T aux_scale) {
    const int64_t t = b * s;
    DispatchHandle<T>& h = dispatcher_->handle();
    const int64_t rows = std::max<int64_t>(h.num_expert_rows, 1);
    T* dy = ensure_zero<T>(dy_RD_, rows * d_);
    dweight_TK_.assign(size_t(t * k_), T(0));
    dispatcher_->combine_backward(dy, dweight_TK_.data(), dout_TD, y_RD_.data<T>(), router_.weight_TK());
    T* dx_rows = ensure_zero<T>(dx_RD_, rows * d_);
    experts_.backward(dx_rows, dy, h.expert_rows, h.tokens_per_local_expert);
    dispatcher_->dispatch_backward(dx_TD, dx_rows);
    if (shared_ && shared_gate_.w) {
        // out = g s: ds = g dout; d(pre-sigmoid) = g (1 - g) <dout, s>.
        const T* sh = shared_TD_.data<T>();
        const T* g = gate_T_.data<T>();
        T* ds = ensure<T>(dshared_TD_, t * d_);
        T* dpre = ensure<T>(dpre_T_, t);
        for (int64_t i = 0; i < t; ++i) {
            T dot = 0;
            for (int64_t j = 0; j < d_; ++j) {
                dot += dout_TD[i * d_ + j] * sh[i * d_ + j];
                ds[i * d_ + j] = g[i] * dout_TD[i * d_ + j];
            }
            dpre[i] = g[i] * (T(1) - g[i]) * dot;
        }
        shared_gate_.backward(dx_TD, dpre, x_TD, t);
        shared_->backward(dx_TD, ds, x_TD, t);
    } else if (shared_) {
        shared_->backward(dx_TD, dout_TD, x_TD, t);
    }
    router_.backward(dx_TD, dweight_TK_.data(), x_TD, aux_scale);
}

template class MoELayer<float>;
template class MoELayer<double>;

}  // namespace frugal::model
