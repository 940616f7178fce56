// Causal self-attention with grouped-query heads, optional QK-norm (RMSNorm per head, Qwen3, or over the whole
// projection, OLMoE), optional query/key/value biases (Qwen2) and rotary embeddings over the whole head or its first
// head_dim * partial_rotary_factor values (GLM-4.5). The output projection has no
// bias. The attention core stays in the compute precision.
//
// Legend: N = B*S tokens, D model dim, Hq/Hkv heads, hd head dim.
// Saved for backward: q_NHd (after norm and rope), k_NHd, v_NHd, attention output att_NHd, what the backend's
// attention keeps (saved_, Ops::attention_saved_numel: the CPU's probabilities [B, Hq, S, S]), and with QK-norm the
// raw projections and their rstd.
#pragma once

#include <memory>
#include <vector>

#include "model/config.h"
#include "model/layers/common.h"

namespace frugal::model {

// What a transformer block needs of its attention: grouped-query attention (below) or multi-head latent attention
// (model/layers/mla.h).
template <typename T>
class AttentionLayer {
  public:
    virtual ~AttentionLayer() = default;
    // start_N (optional): document masking, token i attends to [start_N[i], i] of its window (ops::attention_forward).
    virtual void forward(T* out_ND, const T* x_ND, const int32_t* pos_N, int64_t b, int64_t s,
                         const int32_t* start_N = nullptr) = 0;
    // dx_ND += d(loss)/dx ; parameter gradients added into their Params. start_N as given to forward.
    virtual void backward(T* dx_ND, const T* dout_ND, const T* x_ND, const int32_t* pos_N, int64_t b, int64_t s,
                          const int32_t* start_N = nullptr) = 0;
    // The projections use the recipe of role "attention"; the attention core stays in T.
    virtual void set_precision(const precision::PrecisionConfig& cfg) = 0;
    virtual void collect_recipes(std::vector<precision::MatmulRecipe<T>*>& out) = 0;
};

// The attention of cfg.attention (gqa or mla) under prefix ("layers.L.attn.").
template <typename T>
std::unique_ptr<AttentionLayer<T>> make_attention(const Ops<T>& ops, ParamStore& store, const ModelConfig& cfg,
                                                  const std::string& prefix, const RopeTable<T>* rope);

template <typename T>
class Attention : public AttentionLayer<T> {
  public:
    Attention(const Ops<T>& ops, ParamStore& store, const ModelConfig& cfg, const std::string& prefix,
              const RopeTable<T>* rope);
    void forward(T* out_ND, const T* x_ND, const int32_t* pos_N, int64_t b, int64_t s,
                 const int32_t* start_N = nullptr) override;
    void backward(T* dx_ND, const T* dout_ND, const T* x_ND, const int32_t* pos_N, int64_t b, int64_t s,
                  const int32_t* start_N = nullptr) override;
    void set_precision(const precision::PrecisionConfig& cfg) override {
        for (Linear<T>* l : {&wq_, &wk_, &wv_, &wo_}) l->set_precision(cfg, "attention");
    }
    void collect_recipes(std::vector<precision::MatmulRecipe<T>*>& out) override {
        for (Linear<T>* l : {&wq_, &wk_, &wv_, &wo_}) out.push_back(l->recipe.get());
    }

  private:
    backend::AttentionDims dims(int64_t b, int64_t s) const { return {b, s, hq_, hkv_, hd_, hd_, scale_}; }
    const Ops<T>& ops_;
    int64_t d_, hq_, hkv_, hd_, rot_;  // rot_: values of a head the rotation covers (partial_rotary_factor)
    double scale_;
    bool qk_norm_;
    int64_t q_norm_rows_, k_norm_rows_;  // rows the QK-norms see per token: heads (scope head) or 1
    const RopeTable<T>* rope_;
    Linear<T> wq_, wk_, wv_, wo_;
    RMSNorm<T> q_norm_, k_norm_;
    Tensor q_, k_, v_, q_raw_, k_raw_, rstd_q_, rstd_k_, att_, saved_;
    Tensor d_att_, dq_, dk_, dv_, dq_raw_, dk_raw_;
};

}  // namespace frugal::model
