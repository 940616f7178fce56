#include "model/layers/attention.h"

#include "model/layers/mla.h"

namespace frugal::model {

template <typename T>
Attention<T>::Attention(const Ops<T>& ops, ParamStore& store, const ModelConfig& cfg, const std::string& prefix,
                        const RopeTable<T>* rope)
    : ops_(ops),
      d_(cfg.d_model),
      hq_(cfg.n_heads),
      hkv_(cfg.kv_heads()),
      hd_(cfg.hd()),
      rot_(cfg.rope_dim()),
      scale_(cfg.attention_scale()),
      qk_norm_(cfg.qk_norm),
      q_norm_rows_(cfg.qk_norm_scope == "head" ? cfg.n_heads : 1),
      k_norm_rows_(cfg.qk_norm_scope == "head" ? cfg.kv_heads() : 1),
      rope_(rope) {
    const double out_std = cfg.init_std / std::sqrt(2.0 * double(cfg.n_layers));
    wq_ = Linear<T>(ops, store, prefix + "wq.weight", d_, hq_ * hd_, cfg.init_std, cfg.attn_bias);
    wk_ = Linear<T>(ops, store, prefix + "wk.weight", d_, hkv_ * hd_, cfg.init_std, cfg.attn_bias);
    wv_ = Linear<T>(ops, store, prefix + "wv.weight", d_, hkv_ * hd_, cfg.init_std, cfg.attn_bias);
    wo_ = Linear<T>(ops, store, prefix + "wo.weight", hq_ * hd_, d_, out_std);
    if (qk_norm_) {
        q_norm_ = RMSNorm<T>(ops, store, prefix + "q_norm.weight", hq_ * hd_ / q_norm_rows_, cfg.norm_eps);
        k_norm_ = RMSNorm<T>(ops, store, prefix + "k_norm.weight", hkv_ * hd_ / k_norm_rows_, cfg.norm_eps);
    }
}

template <typename T>
void Attention<T>::forward(T* out_ND, const T* x_ND, const int32_t* pos_N, int64_t b, int64_t s,
                           const int32_t* start_N) {
    const int64_t n = b * s, qw = hq_ * hd_, kw = hkv_ * hd_;
    T* q = ensure<T>(ops_, q_, n * qw);
    T* k = ensure<T>(ops_, k_, n * kw);
    T* v = ensure<T>(ops_, v_, n * kw);
    if (qk_norm_) {
        T* q_raw = ensure<T>(ops_, q_raw_, n * qw);
        T* k_raw = ensure<T>(ops_, k_raw_, n * kw);
        wq_.forward(q_raw, x_ND, n);
        wk_.forward(k_raw, x_ND, n);
        q_norm_.forward(q, ensure<T>(ops_, rstd_q_, n * q_norm_rows_), q_raw, n * q_norm_rows_);
        k_norm_.forward(k, ensure<T>(ops_, rstd_k_, n * k_norm_rows_), k_raw, n * k_norm_rows_);
    } else {
        wq_.forward(q, x_ND, n);
        wk_.forward(k, x_ND, n);
    }
    wv_.forward(v, x_ND, n);
    ops_.rope_apply(q, qw, hd_, pos_N, rope_->cos(), rope_->sin(), n, hq_, rot_, false);
    ops_.rope_apply(k, kw, hd_, pos_N, rope_->cos(), rope_->sin(), n, hkv_, rot_, false);
    T* att = ensure<T>(ops_, att_, n * qw);
    ops_.attention_forward(att, ensure<T>(ops_, saved_, ops_.attention_saved_numel(b, s, hq_)), q, k, v, dims(b, s),
                           start_N);
    wo_.forward(out_ND, att, n);
}

template <typename T>
void Attention<T>::backward(T* dx_ND, const T* dout_ND, const T* x_ND, const int32_t* pos_N, int64_t b, int64_t s,
                            const int32_t* start_N) {
    const int64_t n = b * s, qw = hq_ * hd_, kw = hkv_ * hd_;
    T* d_att = ensure_zero<T>(ops_, d_att_, n * qw);
    wo_.backward(d_att, dout_ND, att_.data<T>(), n);
    T* dq = ensure_zero<T>(ops_, dq_, n * qw);
    T* dk = ensure_zero<T>(ops_, dk_, n * kw);
    T* dv = ensure_zero<T>(ops_, dv_, n * kw);
    ops_.attention_backward(dq, dk, dv, d_att, saved_.data<T>(), att_.data<T>(), q_.data<T>(), k_.data<T>(),
                            v_.data<T>(), dims(b, s), start_N);
    // The rotation is orthogonal: its backward is the inverse rotation.
    ops_.rope_apply(dq, qw, hd_, pos_N, rope_->cos(), rope_->sin(), n, hq_, rot_, true);
    ops_.rope_apply(dk, kw, hd_, pos_N, rope_->cos(), rope_->sin(), n, hkv_, rot_, true);
    if (qk_norm_) {
        T* dq_raw = ensure_zero<T>(ops_, dq_raw_, n * qw);
        T* dk_raw = ensure_zero<T>(ops_, dk_raw_, n * kw);
        q_norm_.backward(dq_raw, dq, q_raw_.data<T>(), rstd_q_.data<T>(), n * q_norm_rows_);
        k_norm_.backward(dk_raw, dk, k_raw_.data<T>(), rstd_k_.data<T>(), n * k_norm_rows_);
        dq = dq_raw;
        dk = dk_raw;
    }
    wq_.backward(dx_ND, dq, x_ND, n);
    wk_.backward(dx_ND, dk, x_ND, n);
    wv_.backward(dx_ND, dv, x_ND, n);
}

template <typename T>
std::unique_ptr<AttentionLayer<T>> make_attention(const Ops<T>& ops, ParamStore& store, const ModelConfig& cfg,
                                                  const std::string& prefix, const RopeTable<T>* rope) {
    if (cfg.is_mla()) return std::make_unique<MLA<T>>(ops, store, cfg, prefix, rope);
    return std::make_unique<Attention<T>>(ops, store, cfg, prefix, rope);
}

template class Attention<float>;
template class Attention<double>;
template std::unique_ptr<AttentionLayer<float>> make_attention(const Ops<float>&, ParamStore&, const ModelConfig&,
                                                               const std::string&, const RopeTable<float>*);
template std::unique_ptr<AttentionLayer<double>> make_attention(const Ops<double>&, ParamStore&, const ModelConfig&,
                                                                const std::string&, const RopeTable<double>*);

}  // namespace frugal::model
