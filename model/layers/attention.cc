#include "model/layers/attention.h"

namespace frugal::model {

template <typename T>
Attention<T>::Attention(ParamStore& store, const ModelConfig& cfg, const std::string& prefix, const RopeTable<T>* rope)
    : d_(cfg.d_model),
      hq_(cfg.n_heads),
      hkv_(cfg.kv_heads()),
      hd_(cfg.hd()),
      qk_norm_(cfg.qk_norm),
      q_norm_rows_(cfg.qk_norm_scope == "head" ? cfg.n_heads : 1),
      k_norm_rows_(cfg.qk_norm_scope == "head" ? cfg.kv_heads() : 1),
      rope_(rope) {
    const double out_std = cfg.init_std / std::sqrt(2.0 * double(cfg.n_layers));
    wq_ = Linear<T>(store, prefix + "wq.weight", d_, hq_ * hd_, cfg.init_std, cfg.attn_bias);
    wk_ = Linear<T>(store, prefix + "wk.weight", d_, hkv_ * hd_, cfg.init_std, cfg.attn_bias);
    wv_ = Linear<T>(store, prefix + "wv.weight", d_, hkv_ * hd_, cfg.init_std, cfg.attn_bias);
    wo_ = Linear<T>(store, prefix + "wo.weight", hq_ * hd_, d_, out_std);
    if (qk_norm_) {
        q_norm_ = RMSNorm<T>(store, prefix + "q_norm.weight", hq_ * hd_ / q_norm_rows_, cfg.norm_eps);
        k_norm_ = RMSNorm<T>(store, prefix + "k_norm.weight", hkv_ * hd_ / k_norm_rows_, cfg.norm_eps);
    }
}

template <typename T>
void Attention<T>::forward(T* out_ND, const T* x_ND, const int32_t* pos_N, int64_t b, int64_t s,
                           const int32_t* start_N) {
    const int64_t n = b * s, qw = hq_ * hd_, kw = hkv_ * hd_;
    T* q = ensure<T>(q_, n * qw);
    T* k = ensure<T>(k_, n * kw);
    T* v = ensure<T>(v_, n * kw);
    if (qk_norm_) {
        T* q_raw = ensure<T>(q_raw_, n * qw);
        T* k_raw = ensure<T>(k_raw_, n * kw);
        wq_.forward(q_raw, x_ND, n);
        wk_.forward(k_raw, x_ND, n);
        q_norm_.forward(q, ensure<T>(rstd_q_, n * q_norm_rows_), q_raw, n * q_norm_rows_);
        k_norm_.forward(k, ensure<T>(rstd_k_, n * k_norm_rows_), k_raw, n * k_norm_rows_);
    } else {
        wq_.forward(q, x_ND, n);
        wk_.forward(k, x_ND, n);
    }
    wv_.forward(v, x_ND, n);
    ops::rope_apply(q, qw, pos_N, rope_->cos_PH.data(), rope_->sin_PH.data(), n, hq_, hd_, false);
    ops::rope_apply(k, kw, pos_N, rope_->cos_PH.data(), rope_->sin_PH.data(), n, hkv_, hd_, false);
    T* att = ensure<T>(att_, n * qw);
    ops::attention_forward(att, ensure<T>(probs_, b * hq_ * s * s), q, k, v, b, s, hq_, hkv_, hd_, start_N);
    wo_.forward(out_ND, att, n);
}

template <typename T>
void Attention<T>::backward(T* dx_ND, const T* dout_ND, const T* x_ND, const int32_t* pos_N, int64_t b, int64_t s,
                            const int32_t* start_N) {
    const int64_t n = b * s, qw = hq_ * hd_, kw = hkv_ * hd_;
    T* d_att = ensure_zero<T>(d_att_, n * qw);
    wo_.backward(d_att, dout_ND, att_.data<T>(), n);
    T* dq = ensure_zero<T>(dq_, n * qw);
    T* dk = ensure_zero<T>(dk_, n * kw);
    T* dv = ensure_zero<T>(dv_, n * kw);
    ops::attention_backward(dq, dk, dv, d_att, probs_.data<T>(), q_.data<T>(), k_.data<T>(), v_.data<T>(), b, s, hq_,
                            hkv_, hd_, start_N);
    // The rotation is orthogonal: its backward is the inverse rotation.
    ops::rope_apply(dq, qw, pos_N, rope_->cos_PH.data(), rope_->sin_PH.data(), n, hq_, hd_, true);
    ops::rope_apply(dk, kw, pos_N, rope_->cos_PH.data(), rope_->sin_PH.data(), n, hkv_, hd_, true);
    if (qk_norm_) {
        T* dq_raw = ensure_zero<T>(dq_raw_, n * qw);
        T* dk_raw = ensure_zero<T>(dk_raw_, n * kw);
        q_norm_.backward(dq_raw, dq, q_raw_.data<T>(), rstd_q_.data<T>(), n * q_norm_rows_);
        k_norm_.backward(dk_raw, dk, k_raw_.data<T>(), rstd_k_.data<T>(), n * k_norm_rows_);
        dq = dq_raw;
        dk = dk_raw;
    }
    wq_.backward(dx_ND, dq, x_ND, n);
    wk_.backward(dx_ND, dk, x_ND, n);
    wv_.backward(dx_ND, dv, x_ND, n);
}

template class Attention<float>;
template class Attention<double>;

}  // namespace frugal::model
