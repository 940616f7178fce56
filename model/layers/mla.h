// Multi-head latent attention (MLA; DeepSeek-V2 section 2.1, DeepSeek-V3 section 2.1.1). Keys and values come from
// one compressed latent per token, shared by all heads; the rotary part of the key is a single decoupled head
// shared by all heads too. With q_lora_rank > 0 the queries are compressed the same way.
//
//   queries   c_q = RMSNorm(x W_qa) ; q = c_q W_qb            (q_lora_rank > 0)   or  q = x W_q
//             q per head = [q_nope (dn) | q_rope (dr)], q_rope rotated
//   latent    [c_kv (Rkv) | k_rope (dr)] = x W_kva ; c_kv normed ; k_rope rotated (one head)
//   keys      [k_nope (dn) | v (dv)] per head = RMSNorm(c_kv) W_kvb ; k per head = [k_nope | k_rope]
//   output    softmax(scale q k^T) v per head, concatenated, times W_o
// scale = 1 / sqrt(dn + dr), times YaRN's mscale_all_dim correction squared (ModelConfig::attention_scale).
//
// Parameters (prefix "layers.L.attn."): wq.weight [H dqk, D] or wq_a.weight [Rq, D], q_a_norm.weight [Rq],
// wq_b.weight [H dqk, Rq]; wkv_a.weight [Rkv + dr, D], kv_a_norm.weight [Rkv], wkv_b.weight [H (dn + dv), Rkv],
// wo.weight [D, H dv]. No biases.
//
// Legend: N = B*S tokens, D model dim, H heads, dn/dr/dv the nope/rope/value head widths, dqk = dn + dr, Rq/Rkv the
// query/key-value latent ranks.
// Saved for backward: the latents (cq_, ckv_, c_ and their normed forms with rstd), the up-projection kv_NHdnv,
// q_NHdqk, k_NHdqk (rotated), v_NHdv, the attention output and what the backend's attention keeps.
#pragma once

#include "model/layers/attention.h"

namespace frugal::model {

template <typename T>
class MLA : public AttentionLayer<T> {
  public:
    MLA(const Ops<T>& ops, ParamStore& store, const ModelConfig& cfg, const std::string& prefix,
        const RopeTable<T>* rope);
    void forward(T* out_ND, const T* x_ND, const int32_t* pos_N, int64_t b, int64_t s,
                 const int32_t* start_N = nullptr) override;
    void backward(T* dx_ND, const T* dout_ND, const T* x_ND, const int32_t* pos_N, int64_t b, int64_t s,
                  const int32_t* start_N = nullptr) override;
    void set_precision(const precision::PrecisionConfig& cfg) override;
    void collect_recipes(std::vector<precision::MatmulRecipe<T>*>& out) override;

  private:
    std::vector<Linear<T>*> linears();
    backend::AttentionDims dims(int64_t b, int64_t s) const { return {b, s, h_, h_, dqk_, dv_, scale_}; }

    const Ops<T>& ops_;
    int64_t d_, h_, dn_, dr_, dv_, dqk_, rq_, rkv_;
    double scale_;
    const RopeTable<T>* rope_;
    Linear<T> wq_, wq_a_, wq_b_, wkv_a_, wkv_b_, wo_;
    RMSNorm<T> q_a_norm_, kv_a_norm_;
    // activations
    Tensor cq_, cqn_, rstd_q_, ckv_, c_, cn_, rstd_c_, k_rope_, kv_, q_, k_, v_, att_, saved_;
    // gradients
    Tensor d_att_, dq_, dk_, d_v_, dkv_, d_k_rope_, d_cn_, d_c_, d_ckv_, d_cqn_, d_cq_;
};

}  // namespace frugal::model
