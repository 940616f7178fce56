#include "model/moe/moe_layer.h"

#include <cmath>

namespace frugal::model {

template <typename T>
MoELayer<T>::MoELayer(const Ops<T>& ops, ParamStore& store, const ModelConfig& cfg, const std::string& prefix,
                      ExpertShard shard)
    : ops_(ops),
      d_(cfg.d_model),
      k_(cfg.moe.top_k),
      e_(cfg.moe.n_experts),
      router_(ops, store, cfg, prefix + "router."),
      experts_(ops, store, cfg, prefix + "experts.", shard.first, shard.count > 0 ? shard.count : cfg.moe.n_experts) {
    if (cfg.moe.n_shared_experts > 0) {
        const double out_std = cfg.init_std / std::sqrt(2.0 * double(cfg.n_layers));
        shared_ =
            std::make_unique<MLP<T>>(ops, store, prefix + "shared.", d_, cfg.moe.n_shared_experts * cfg.moe.d_expert,
                                     cfg.init_std, out_std, "shared_experts");
        if (cfg.moe.shared_expert_gate)
            shared_gate_ = Linear<T>(ops, store, prefix + "shared_gate.weight", d_, 1, cfg.init_std);
    }
    dispatcher_ = std::make_unique<LocalDispatcher<T>>(ops, e_);
}

template <typename T>
void MoELayer<T>::forward(T* out_TD, const T* x_TD, int64_t b, int64_t s) {
    const int64_t t = b * s;
    router_.forward(x_TD, b, s);
    dispatcher_->dispatch_start(x_TD, router_.expert_TK(), t, k_, e_, d_);
    if (overlap_shared_) shared_first_half(x_TD, t);  // while the routed rows travel to the experts
    DispatchHandle<T>& h = dispatcher_->dispatch_wait();
    if (!overlap_shared_) {
        shared_first_half(x_TD, t);
        shared_second_half(out_TD, t);
    }
    T* y = ensure<T>(ops_, y_RD_, std::max<int64_t>(h.num_expert_rows, 1) * d_);
    experts_.forward(y, h.expert_rows, h.tokens_per_local_expert);
    dispatcher_->combine_start(y, router_.weight_TK());
    if (overlap_shared_) shared_second_half(out_TD, t);  // while the outputs travel back
    dispatcher_->combine_finish(out_TD);
}

template <typename T>
void MoELayer<T>::shared_first_half(const T* x_TD, int64_t t) {
    if (!shared_) return;
    shared_->forward_hidden(x_TD, t);
    dispatcher_->progress();
    if (shared_gate_.w) shared_gate_.forward(ensure<T>(ops_, gate_T_, t), x_TD, t);
    dispatcher_->progress();
}

template <typename T>
void MoELayer<T>::shared_second_half(T* out_TD, int64_t t) {
    if (shared_ && shared_gate_.w) {
        T* sh = ensure<T>(ops_, shared_TD_, t * d_);
        shared_->forward_output(sh, t);
        ops_.sigmoid_gate_forward(out_TD, gate_T_.data<T>(), sh, t, d_);
    } else if (shared_) {
        shared_->forward_output(out_TD, t);
    } else {
        ops_.fill(out_TD, t * d_, T(0));
    }
    dispatcher_->progress();
}

template <typename T>
void MoELayer<T>::backward(T* dx_TD, const T* dout_TD, const T* x_TD, int64_t b, int64_t s, T aux_scale) {
    const int64_t t = b * s;
    DispatchHandle<T>& h = dispatcher_->handle();
    const int64_t rows = std::max<int64_t>(h.num_expert_rows, 1);
    T* dy = ensure_zero<T>(ops_, dy_RD_, rows * d_);
    T* dweight = ensure_zero<T>(ops_, dweight_TK_, t * k_);
    dispatcher_->combine_backward(dy, dweight, dout_TD, y_RD_.data<T>(), router_.weight_TK());
    T* dx_rows = ensure_zero<T>(ops_, dx_RD_, rows * d_);
    experts_.backward(dx_rows, dy, h.expert_rows, h.tokens_per_local_expert);
    dispatcher_->dispatch_backward(dx_TD, dx_rows);
    if (shared_ && shared_gate_.w) {
        // out = g s: ds = g dout; d(pre-sigmoid) = g (1 - g) <dout, s>.
        T* ds = ensure<T>(ops_, dshared_TD_, t * d_);
        T* dpre = ensure<T>(ops_, dpre_T_, t);
        ops_.sigmoid_gate_backward(ds, dpre, dout_TD, shared_TD_.data<T>(), gate_T_.data<T>(), t, d_);
        shared_gate_.backward(dx_TD, dpre, x_TD, t);
        shared_->backward(dx_TD, ds, x_TD, t);
    } else if (shared_) {
        shared_->backward(dx_TD, dout_TD, x_TD, t);
    }
    router_.backward(dx_TD, dweight, x_TD, aux_scale);
}

template class MoELayer<float>;
template class MoELayer<double>;

}  // namespace frugal::model
