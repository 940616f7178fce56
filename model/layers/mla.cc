#include "model/layers/mla.h"

namespace frugal::model {

template <typename T>
MLA<T>::MLA(const Ops<T>& ops, ParamStore& store, const ModelConfig& cfg, const std::string& prefix,
            const RopeTable<T>* rope)
    : ops_(ops),
      d_(cfg.d_model),
      h_(cfg.n_heads),
      dn_(cfg.qk_nope_head_dim),
      dr_(cfg.qk_rope_head_dim),
      dv_(cfg.v_head_dim),
      dqk_(cfg.qk_nope_head_dim + cfg.qk_rope_head_dim),
      rq_(cfg.q_lora_rank),
      rkv_(cfg.kv_lora_rank),
      scale_(cfg.attention_scale()),
      rope_(rope) {
    FRUGAL_CHECK(rope->rot_dim == dr_, "MLA rotary table covers ", rope->rot_dim, " values, not qk_rope_head_dim ",
                 dr_);
    const double out_std = cfg.init_std / std::sqrt(2.0 * double(cfg.n_layers));
    if (rq_ > 0) {
        wq_a_ = Linear<T>(ops, store, prefix + "wq_a.weight", d_, rq_, cfg.init_std);
        q_a_norm_ = RMSNorm<T>(ops, store, prefix + "q_a_norm.weight", rq_, cfg.norm_eps);
        wq_b_ = Linear<T>(ops, store, prefix + "wq_b.weight", rq_, h_ * dqk_, cfg.init_std);
    } else {
        wq_ = Linear<T>(ops, store, prefix + "wq.weight", d_, h_ * dqk_, cfg.init_std);
    }
    wkv_a_ = Linear<T>(ops, store, prefix + "wkv_a.weight", d_, rkv_ + dr_, cfg.init_std);
    kv_a_norm_ = RMSNorm<T>(ops, store, prefix + "kv_a_norm.weight", rkv_, cfg.norm_eps);
    wkv_b_ = Linear<T>(ops, store, prefix + "wkv_b.weight", rkv_, h_ * (dn_ + dv_), cfg.init_std);
    wo_ = Linear<T>(ops, store, prefix + "wo.weight", h_ * dv_, d_, out_std);
}

template <typename T>
std::vector<Linear<T>*> MLA<T>::linears() {
    if (rq_ > 0) return {&wq_a_, &wq_b_, &wkv_a_, &wkv_b_, &wo_};
    return {&wq_, &wkv_a_, &wkv_b_, &wo_};
}

template <typename T>
void MLA<T>::set_precision(const precision::PrecisionConfig& cfg) {
    for (Linear<T>* l : linears()) l->set_precision(cfg, "attention");
}

template <typename T>
void MLA<T>::collect_recipes(std::vector<precision::MatmulRecipe<T>*>& out) {
    for (Linear<T>* l : linears()) out.push_back(l->recipe.get());
}

template <typename T>
void MLA<T>::forward(T* out_ND, const T* x_ND, const int32_t* pos_N, int64_t b, int64_t s, const int32_t* start_N) {
    const int64_t n = b * s, lat = rkv_ + dr_;
    // Queries [N, H dqk], each head [nope | rope]; the rope part rotated in place.
    T* q = ensure<T>(ops_, q_, n * h_ * dqk_);
    if (rq_ > 0) {
        T* cq = ensure<T>(ops_, cq_, n * rq_);
        T* cqn = ensure<T>(ops_, cqn_, n * rq_);
        wq_a_.forward(cq, x_ND, n);
        q_a_norm_.forward(cqn, ensure<T>(ops_, rstd_q_, n), cq, n);
        wq_b_.forward(q, cqn, n);
    } else {
        wq_.forward(q, x_ND, n);
    }
    ops_.rope_apply(q + dn_, h_ * dqk_, dqk_, pos_N, rope_->cos(), rope_->sin(), n, h_, dr_, false);
    // The latent [N, Rkv + dr]: c_kv normed, k_rope rotated (one head shared by all).
    T* ckv = ensure<T>(ops_, ckv_, n * lat);
    wkv_a_.forward(ckv, x_ND, n);
    T* c = ensure<T>(ops_, c_, n * rkv_);
    T* cn = ensure<T>(ops_, cn_, n * rkv_);
    ops_.strided_copy(c, rkv_, ckv, lat, n, rkv_, 1);
    kv_a_norm_.forward(cn, ensure<T>(ops_, rstd_c_, n), c, n);
    T* k_rope = ensure<T>(ops_, k_rope_, n * dr_);
    ops_.strided_copy(k_rope, dr_, ckv + rkv_, lat, n, dr_, 1);
    ops_.rope_apply(k_rope, dr_, dr_, pos_N, rope_->cos(), rope_->sin(), n, 1, dr_, false);
    // Per-head keys and values from the latent: kv [N, H (dn + dv)] -> k [N, H dqk] = [k_nope | k_rope], v [N, H dv].
    T* kv = ensure<T>(ops_, kv_, n * h_ * (dn_ + dv_));
    wkv_b_.forward(kv, cn, n);
    T* k = ensure<T>(ops_, k_, n * h_ * dqk_);
    T* v = ensure<T>(ops_, v_, n * h_ * dv_);
    ops_.strided_copy(k, dqk_, kv, dn_ + dv_, n * h_, dn_, 1);
    ops_.strided_copy(k + dn_, dqk_, k_rope, dr_, n * h_, dr_, h_);
    ops_.strided_copy(v, dv_, kv + dn_, dn_ + dv_, n * h_, dv_, 1);
    T* att = ensure<T>(ops_, att_, n * h_ * dv_);
    ops_.attention_forward(att, ensure<T>(ops_, saved_, ops_.attention_saved_numel(b, s, h_)), q, k, v, dims(b, s),
                           start_N);
    wo_.forward(out_ND, att, n);
}

template <typename T>
void MLA<T>::backward(T* dx_ND, const T* dout_ND, const T* x_ND, const int32_t* pos_N, int64_t b, int64_t s,
                      const int32_t* start_N) {
    const int64_t n = b * s, lat = rkv_ + dr_;
    T* d_att = ensure_zero<T>(ops_, d_att_, n * h_ * dv_);
    wo_.backward(d_att, dout_ND, att_.data<T>(), n);
    T* dq = ensure_zero<T>(ops_, dq_, n * h_ * dqk_);
    T* dk = ensure_zero<T>(ops_, dk_, n * h_ * dqk_);
    T* dv = ensure_zero<T>(ops_, d_v_, n * h_ * dv_);
    ops_.attention_backward(dq, dk, dv, d_att, saved_.data<T>(), att_.data<T>(), q_.data<T>(), k_.data<T>(),
                            v_.data<T>(), dims(b, s), start_N);
    // Keys and values back to the up-projection's output; the shared rotary key sums over the heads.
    T* dkv = ensure_zero<T>(ops_, dkv_, n * h_ * (dn_ + dv_));
    ops_.strided_add(dkv, dn_ + dv_, dk, dqk_, n * h_, dn_, 1);
    ops_.strided_add(dkv + dn_, dn_ + dv_, dv, dv_, n * h_, dv_, 1);
    T* dk_rope = ensure_zero<T>(ops_, d_k_rope_, n * dr_);
    ops_.strided_add(dk_rope, dr_, dk + dn_, dqk_, n * h_, dr_, h_);
    // The rotation is orthogonal: its backward is the inverse rotation.
    ops_.rope_apply(dk_rope, dr_, dr_, pos_N, rope_->cos(), rope_->sin(), n, 1, dr_, true);
    T* dcn = ensure_zero<T>(ops_, d_cn_, n * rkv_);
    wkv_b_.backward(dcn, dkv, cn_.data<T>(), n);
    T* dc = ensure_zero<T>(ops_, d_c_, n * rkv_);
    kv_a_norm_.backward(dc, dcn, c_.data<T>(), rstd_c_.data<T>(), n);
    T* dckv = ensure_zero<T>(ops_, d_ckv_, n * lat);
    ops_.strided_add(dckv, lat, dc, rkv_, n, rkv_, 1);
    ops_.strided_add(dckv + rkv_, lat, dk_rope, dr_, n, dr_, 1);
    wkv_a_.backward(dx_ND, dckv, x_ND, n);
    // Queries.
    ops_.rope_apply(dq + dn_, h_ * dqk_, dqk_, pos_N, rope_->cos(), rope_->sin(), n, h_, dr_, true);
    if (rq_ > 0) {
        T* dcqn = ensure_zero<T>(ops_, d_cqn_, n * rq_);
        wq_b_.backward(dcqn, dq, cqn_.data<T>(), n);
        T* dcq = ensure_zero<T>(ops_, d_cq_, n * rq_);
        q_a_norm_.backward(dcq, dcqn, cq_.data<T>(), rstd_q_.data<T>(), n);
        wq_a_.backward(dx_ND, dcq, x_ND, n);
    } else {
        wq_.backward(dx_ND, dq, x_ND, n);
    }
}

template class MLA<float>;
template class MLA<double>;

}  // namespace frugal::model
