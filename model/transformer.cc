#include "model/transformer.h"

#include <cstring>

namespace frugal::model {

template <typename T>
struct Transformer<T>::Block {
    RMSNorm<T> attn_norm, ffn_norm;
    std::unique_ptr<Attention<T>> attn;
    std::unique_ptr<MLP<T>> mlp;
    std::unique_ptr<MoELayer<T>> moe;
    Tensor n1, rstd1, h_mid, n2, rstd2;

    Block(const Ops<T>& ops, ParamStore& store, const ModelConfig& cfg, int64_t layer, const RopeTable<T>* rope,
          ExpertShard shard) {
        const std::string p = "layers." + std::to_string(layer) + ".";
        attn_norm = RMSNorm<T>(ops, store, p + "attn_norm.weight", cfg.d_model, cfg.norm_eps);
        attn = std::make_unique<Attention<T>>(ops, store, cfg, p + "attn.", rope);
        ffn_norm = RMSNorm<T>(ops, store, p + "ffn_norm.weight", cfg.d_model, cfg.norm_eps);
        if (cfg.is_moe_layer(layer))
            moe = std::make_unique<MoELayer<T>>(ops, store, cfg, p + "moe.", shard);
        else
            mlp = std::make_unique<MLP<T>>(ops, store, p + "mlp.", cfg.d_model, cfg.d_ff, cfg.init_std,
                                           cfg.init_std / std::sqrt(2.0 * double(cfg.n_layers)));
    }
};

template <typename T>
Transformer<T>::Transformer(const ModelConfig& cfg, ExpertShard shard, bool with_grads, backend::Backend& be)
    : ops_(be.ops<T>()), cfg_(cfg), rope_(be, cfg.max_seq_len, cfg.hd(), cfg.rope_theta) {
    cfg_.validate();
    wte_ = store_.add("embed.weight", {cfg.vocab_size, cfg.d_model}, ParamKind::kEmbedding, cfg.init_std);
    for (int64_t l = 0; l < cfg.n_layers; ++l)
        blocks_.push_back(std::make_unique<Block>(ops_, store_, cfg, l, &rope_, shard));
    final_norm_ = RMSNorm<T>(ops_, store_, "final_norm.weight", cfg.d_model, cfg.norm_eps);
    if (cfg.tie_embeddings)
        head_ = Linear<T>(ops_, wte_, cfg.d_model, cfg.vocab_size);
    else
        head_ = Linear<T>(ops_, store_, "head.weight", cfg.d_model, cfg.vocab_size, cfg.init_std);
    store_.allocate(DTypeOf<T>::value, with_grads, be.allocator());
    h_.resize(size_t(cfg.n_layers + 1));
}

template <typename T>
Transformer<T>::~Transformer() = default;

template <typename T>
void Transformer<T>::set_precision(const precision::PrecisionConfig& cfg) {
    for (auto& b : blocks_) {
        b->attn->set_precision(cfg);
        if (b->moe)
            b->moe->set_precision(cfg);
        else
            b->mlp->set_precision(cfg);
    }
    head_.set_precision(cfg, "head");
}

template <typename T>
std::vector<precision::MatmulRecipe<T>*> Transformer<T>::recipes() {
    std::vector<precision::MatmulRecipe<T>*> out;
    for (auto& b : blocks_) {
        b->attn->collect_recipes(out);
        if (b->moe)
            b->moe->collect_recipes(out);
        else
            b->mlp->collect_recipes(out);
    }
    out.push_back(head_.recipe.get());
    return out;
}

template <typename T>
void Transformer<T>::weights_updated() {
    for (precision::MatmulRecipe<T>* r : recipes()) r->weights_updated();
}

template <typename T>
std::vector<MoELayer<T>*> Transformer<T>::moe_layers() {
    std::vector<MoELayer<T>*> out;
    for (auto& b : blocks_)
        if (b->moe) out.push_back(b->moe.get());
    return out;
}

template <typename T>
ForwardResult Transformer<T>::forward(const int32_t* tokens_BS, const int32_t* targets_BS, int64_t b, int64_t s,
                                      const int32_t* doc_start_BS) {
    FRUGAL_CHECK(s <= cfg_.max_seq_len, "sequence length ", s, " exceeds model.max_seq_len (", cfg_.max_seq_len,
                 "): raise model.max_seq_len or shorten train.seq_len");
    b_ = b;
    s_ = s;
    const int64_t n = b * s, d = cfg_.d_model, v = cfg_.vocab_size;
    backend::Backend& be = ops_.backend();
    int32_t* tok = ensure<int32_t>(be, tokens_, n);
    int32_t* tgt = ensure<int32_t>(be, targets_, n);
    int32_t* pos = ensure<int32_t>(be, pos_N_, n);
    int32_t* start = ensure<int32_t>(be, start_N_, n);
    doc_masked_ = doc_start_BS != nullptr;
    ForwardResult r;
    r.num_valid = be.prepare_tokens(tok, tgt, pos, start, tokens_BS, targets_BS, doc_start_BS, n, s, v, kIgnoreIndex);
    const int32_t* att_start = doc_masked_ ? start : nullptr;
    ops_.embedding_forward(ensure<T>(ops_, h_[0], n * d), tok, value<T>(wte_), n, d);
    T* scratch = ensure<T>(ops_, scratch_, n * d);
    for (size_t l = 0; l < blocks_.size(); ++l) {
        Block& blk = *blocks_[l];
        const T* h = h_[l].template data<T>();
        T* n1 = ensure<T>(ops_, blk.n1, n * d);
        T* h_mid = ensure<T>(ops_, blk.h_mid, n * d);
        T* n2 = ensure<T>(ops_, blk.n2, n * d);
        T* h_next = ensure<T>(ops_, h_[l + 1], n * d);
        blk.attn_norm.forward(n1, ensure<T>(ops_, blk.rstd1, n), h, n);
        blk.attn->forward(scratch, n1, pos, b, s, att_start);
        ops_.add(h_mid, h, scratch, n * d);
        blk.ffn_norm.forward(n2, ensure<T>(ops_, blk.rstd2, n), h_mid, n);
        if (blk.moe) {
            blk.moe->forward(scratch, n2, b, s);
            r.aux_loss += blk.moe->router().aux_loss();
            r.z_loss += blk.moe->router().z_loss();
        } else {
            blk.mlp->forward(scratch, n2, n);
        }
        ops_.add(h_next, h_mid, scratch, n * d);
    }
    T* nf = ensure<T>(ops_, nf_, n * d);
    final_norm_.forward(nf, ensure<T>(ops_, rstdf_, n), h_[blocks_.size()].template data<T>(), n);
    T* logits = ensure<T>(ops_, logits_, n * v);
    head_.forward(logits, nf, n);
    r.ce_sum = ops_.cross_entropy_forward(ensure<T>(ops_, loss_N_, n), logits, tgt, n, v, kIgnoreIndex);
    return r;
}

template <typename T>
void Transformer<T>::backward(T ce_scale, T aux_scale) {
    FRUGAL_CHECK(store_.flat_grads().defined(), "backward() on a model built without gradients (inference only)");
    const int64_t b = b_, s = s_, n = b * s, d = cfg_.d_model, v = cfg_.vocab_size;
    T* dlogits = ensure_zero<T>(ops_, dlogits_, n * v);
    ops_.cross_entropy_backward(dlogits, logits_.template data<T>(), targets_.template data<int32_t>(), ce_scale, n, v,
                                kIgnoreIndex);
    T* dn = ensure_zero<T>(ops_, dn_, n * d);
    head_.backward(dn, dlogits, nf_.template data<T>(), n);
    T* dh = ensure_zero<T>(ops_, dh_, n * d);
    final_norm_.backward(dh, dn, h_[blocks_.size()].template data<T>(), rstdf_.template data<T>(), n);
    const int32_t* pos = pos_N_.template data<int32_t>();
    const int32_t* att_start = doc_masked_ ? start_N_.template data<int32_t>() : nullptr;
    for (size_t l = blocks_.size(); l-- > 0;) {
        Block& blk = *blocks_[l];
        // dh holds d(loss)/d(h_{l+1}); the residual adds make it d/d(h_mid) once the FFN branch is added in.
        ops_.fill(dn, n * d, T(0));
        if (blk.moe)
            blk.moe->backward(dn, dh, blk.n2.template data<T>(), b, s, aux_scale);
        else
            blk.mlp->backward(dn, dh, blk.n2.template data<T>(), n);
        blk.ffn_norm.backward(dh, dn, blk.h_mid.template data<T>(), blk.rstd2.template data<T>(), n);
        ops_.fill(dn, n * d, T(0));
        blk.attn->backward(dn, dh, blk.n1.template data<T>(), pos, b, s, att_start);
        blk.attn_norm.backward(dh, dn, h_[l].template data<T>(), blk.rstd1.template data<T>(), n);
    }
    ops_.embedding_backward(grad<T>(wte_), dh, tokens_.template data<int32_t>(), n, d);
}

template class Transformer<float>;
template class Transformer<double>;

}  // namespace frugal::model
