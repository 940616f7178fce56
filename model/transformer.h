// Decoder-only MoE transformer, single device. Data flow (DESIGN.md):
//   tokens -> embedding -> L x block -> final norm -> head -> cross-entropy
//   block: h_mid = h + attn(rmsnorm(h)); h_next = h_mid + ffn(rmsnorm(h_mid)); ffn dense for the first
//   dense_layers blocks, MoE after.
// forward() keeps every activation backward() needs; backward() adds into the parameter gradients.
//
// Multi-token prediction (DeepSeek-V3 section 2.2, model.mtp_modules = D): module k = 1..D reads the previous depth's
// hidden state h^{k-1} (h^0: the last block's output, before the final norm) and the embedding of token t_{i+k},
//   h'_i = W_eh [RMSNorm_e(Emb(t_{i+k})) ; RMSNorm_h(h^{k-1}_i)],  h^k = Block_k(h'),  logits^k = Head(RMSNorm_k(h^k))
// and predicts t_{i+k+1}; the embedding and the head are the main model's. Positions whose t_{i+k} or t_{i+k+1}
// falls past the window (or is an ignored target) are ignored targets of module k. Training adds
// mtp_loss_weight / D times the sum of the modules' mean cross-entropies; a model built without gradients
// (inference) skips the modules.
//
// Loss convention: forward returns the SUM of the per-token cross-entropy over targets != kIgnoreIndex and the
// coefficient-weighted aux and z losses of this micro-batch. The caller chooses the scales: the trainer uses
// ce_scale = 1 / (valid targets in the global batch) and aux_scale = 1 / (micro-batches in the global batch), so
// the gradient is that of mean CE over the global batch + mean aux loss over its micro-batches, whatever the
// number of ranks.
//
// Legend: B sequences, S positions, N = B*S tokens, D model dim, V vocab.
#pragma once

#include <memory>
#include <vector>

#include "model/config.h"
#include "model/layers/attention.h"
#include "model/layers/mlp.h"
#include "model/moe/moe_layer.h"

namespace frugal::model {

inline constexpr int32_t kIgnoreIndex = -100;

struct ForwardResult {
    double ce_sum = 0;      // sum of token losses over valid targets
    int64_t num_valid = 0;  // targets != kIgnoreIndex
    double aux_loss = 0;    // sum over MoE layers (those of the MTP modules included), coefficient-weighted
    double z_loss = 0;
    // Per MTP module k (0-based, depth k + 1): its cross-entropy sum and valid-target count.
    std::vector<double> mtp_ce_sum;
    std::vector<int64_t> mtp_num_valid;
};

// The targets of MTP depth k (1-based) over a [B, S] window, from the main targets (targets_BS[i] = t_{i+1}): the
// module's input token at i is t_{i+k} = targets_BS[i + k - 1] (0 where it is past the window or ignored) and its
// target t_{i+k+1} = targets_BS[i + k] (kIgnoreIndex where past the window or where the input was ignored).
// Host memory; what the trainer counts valid targets with.
void mtp_shift(int32_t* tokens_BS, int32_t* targets_out_BS, const int32_t* targets_BS, int64_t b, int64_t s,
               int64_t depth);

template <typename T>
class Transformer {
  public:
    // with_grads = false builds a model for inference only (scoring, export): no gradient buffers, half the memory;
    // backward() must not be called on it.
    // be: the backend every layer computes on and every buffer is allocated from (backend/backend.h).
    explicit Transformer(const ModelConfig& cfg, ExpertShard shard = {}, bool with_grads = true,
                         backend::Backend& be = backend::cpu_backend());
    ~Transformer();
    ParamStore& params() { return store_; }
    // The backend's operations (ops().backend() is the backend itself).
    const Ops<T>& ops() const { return ops_; }
    const ModelConfig& config() const { return cfg_; }
    void init(uint64_t seed) { store_.init(seed); }
    // Gives every linear layer its recipe (precision/recipe.h); until then all run in FP32.
    void set_precision(const precision::PrecisionConfig& cfg);
    // Every linear layer's recipe in a fixed order (blocks in order, then the head): their state is checkpointed.
    std::vector<precision::MatmulRecipe<T>*> recipes();
    // The parameter values changed (an optimizer step, a load of weights after a forward): every recipe drops its
    // quantized weights and quantizes them again on the next use (precision/recipe.h). The training loop calls it
    // after each optimizer step; a recipe that sees changed weights without it stops with an error.
    void weights_updated();

    // doc_start_BS (optional, document masking of packed windows; data::document_starts): token i attends only to
    // tokens [doc_start_BS[i], i] of its window, and its rotary position is i - doc_start_BS[i].
    ForwardResult forward(const int32_t* tokens_BS, const int32_t* targets_BS, int64_t b, int64_t s,
                          const int32_t* doc_start_BS = nullptr);
    // mtp_ce_scales: the gradient scale of each MTP module's cross-entropy sum (the trainer: mtp_loss_weight /
    // (D x the module's valid targets in the global batch)); empty: ce_scale * mtp_loss_weight / D for each.
    void backward(T ce_scale, T aux_scale, const std::vector<T>& mtp_ce_scales = {});

    // Logits of the last forward, [N, V] (memory of the backend's device, like every buffer below).
    const T* logits() const { return logits_.template data<T>(); }
    // Cross-entropy of each token of the last forward, [N] (0 where the target was ignored): -log p(target).
    const T* token_losses() const { return loss_N_.template data<T>(); }
    std::vector<MoELayer<T>*> moe_layers();

  private:
    struct Block;
    struct Mtp;
    void forward_mtp(ForwardResult& r, const int32_t* targets_BS, const int32_t* doc_start_BS, const int32_t* pos,
                     const int32_t* att_start);
    void backward_mtp(T ce_scale, const std::vector<T>& mtp_ce_scales, T aux_scale, T* dh_last);
    const Ops<T>& ops_;
    ModelConfig cfg_;
    ParamStore store_;
    RopeTable<T> rope_;
    Param* wte_;
    RMSNorm<T> final_norm_;
    Linear<T> head_;
    std::vector<std::unique_ptr<Block>> blocks_;
    std::vector<std::unique_ptr<Mtp>> mtp_;
    bool with_grads_ = true;
    // activations: residual stream h_[l] for l = 0..L, each [N, D]; final norm; logits
    std::vector<Tensor> h_;
    Tensor nf_, rstdf_, logits_, loss_N_, pos_N_, start_N_, tokens_, targets_, scratch_, dh_, dn_, dlogits_;
    bool doc_masked_ = false;
    int64_t b_ = 0, s_ = 0;
};

}  // namespace frugal::model
