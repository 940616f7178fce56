#include "model/transformer.h"

#include <cstring>

namespace frugal::model {

// One transformer block: h_mid = h + attn(rmsnorm(h)); h_next = h_mid + ffn(rmsnorm(h_mid)).
template <typename T>
struct Transformer<T>::Block {
    const Ops<T>& ops;
    RMSNorm<T> attn_norm, ffn_norm;
    std::unique_ptr<AttentionLayer<T>> attn;
    std::unique_ptr<MLP<T>> mlp;
    std::unique_ptr<MoELayer<T>> moe;
    Tensor n1, rstd1, h_mid, n2, rstd2;

    // prefix "layers.L." (or "mtp.I." for an MTP module's block); layer: the index that decides dense or MoE.
    Block(const Ops<T>& o, ParamStore& store, const ModelConfig& cfg, const std::string& p, int64_t layer,
          const RopeTable<T>* rope, ExpertShard shard)
        : ops(o) {
        attn_norm = RMSNorm<T>(o, store, p + "attn_norm.weight", cfg.d_model, cfg.norm_eps);
        attn = make_attention<T>(o, store, cfg, p + "attn.", rope);
        ffn_norm = RMSNorm<T>(o, store, p + "ffn_norm.weight", cfg.d_model, cfg.norm_eps);
        if (cfg.is_moe_layer(layer))
            moe = std::make_unique<MoELayer<T>>(o, store, cfg, p + "moe.", shard);
        else
            mlp = std::make_unique<MLP<T>>(o, store, p + "mlp.", cfg.d_model, cfg.d_ff, cfg.init_std,
                                           cfg.init_std / std::sqrt(2.0 * double(cfg.n_layers)));
    }
    void set_precision(const precision::PrecisionConfig& cfg) {
        attn->set_precision(cfg);
        if (moe)
            moe->set_precision(cfg);
        else
            mlp->set_precision(cfg);
    }
    void collect_recipes(std::vector<precision::MatmulRecipe<T>*>& out) {
        attn->collect_recipes(out);
        if (moe)
            moe->collect_recipes(out);
        else
            mlp->collect_recipes(out);
    }
    // h_next_ND = block(h_ND); scratch_ND is [N, D] working memory; adds the MoE losses into r.
    void forward(T* h_next, const T* h, T* scratch, const int32_t* pos, int64_t b, int64_t s, const int32_t* att_start,
                 ForwardResult& r) {
        const int64_t n = b * s, d = attn_norm.d;
        T* x1 = ensure<T>(ops, n1, n * d);
        T* mid = ensure<T>(ops, h_mid, n * d);
        T* x2 = ensure<T>(ops, n2, n * d);
        attn_norm.forward(x1, ensure<T>(ops, rstd1, n), h, n);
        attn->forward(scratch, x1, pos, b, s, att_start);
        ops.add(mid, h, scratch, n * d);
        ffn_norm.forward(x2, ensure<T>(ops, rstd2, n), mid, n);
        if (moe) {
            moe->forward(scratch, x2, b, s);
            r.aux_loss += moe->router().aux_loss();
            r.z_loss += moe->router().z_loss();
        } else {
            mlp->forward(scratch, x2, n);
        }
        ops.add(h_next, mid, scratch, n * d);
    }
    // dh_ND holds d(loss)/d(h_next) and becomes d(loss)/d(h) (the residual adds); dn_ND is [N, D] scratch; h is
    // the block's input.
    void backward(T* dh, T* dn, const T* h, const int32_t* pos, int64_t b, int64_t s, const int32_t* att_start,
                  T aux_scale) {
        const int64_t n = b * s, d = attn_norm.d;
        ops.fill(dn, n * d, T(0));
        if (moe)
            moe->backward(dn, dh, n2.template data<T>(), b, s, aux_scale);
        else
            mlp->backward(dn, dh, n2.template data<T>(), n);
        ffn_norm.backward(dh, dn, h_mid.template data<T>(), rstd2.template data<T>(), n);
        ops.fill(dn, n * d, T(0));
        attn->backward(dn, dh, n1.template data<T>(), pos, b, s, att_start);
        attn_norm.backward(dh, dn, h, rstd1.template data<T>(), n);
    }
};

// One multi-token-prediction module (see transformer.h): its norms, projection, block and output norm, and the
// activations of the last forward.
template <typename T>
struct Transformer<T>::Mtp {
    RMSNorm<T> enorm, hnorm, final_norm;
    Linear<T> eh_proj;
    std::unique_ptr<Block> block;
    std::vector<int32_t> tokens_host, targets_host;
    Tensor tokens, targets, pos_scratch, start_scratch, emb, en, rstd_e, hn, rstd_h, cat, hp, h_out, nf, rstdf, logits,
        loss_N, d_cat, d_hp, d_emb, d_en, d_hn, d_out;

    Mtp(const Ops<T>& o, ParamStore& store, const ModelConfig& cfg, int64_t i, const RopeTable<T>* rope,
        ExpertShard shard) {
        const std::string p = "mtp." + std::to_string(i) + ".";
        enorm = RMSNorm<T>(o, store, p + "enorm.weight", cfg.d_model, cfg.norm_eps);
        hnorm = RMSNorm<T>(o, store, p + "hnorm.weight", cfg.d_model, cfg.norm_eps);
        eh_proj = Linear<T>(o, store, p + "eh_proj.weight", 2 * cfg.d_model, cfg.d_model, cfg.init_std);
        block = std::make_unique<Block>(o, store, cfg, p, cfg.n_layers + i, rope, shard);
        final_norm = RMSNorm<T>(o, store, p + "final_norm.weight", cfg.d_model, cfg.norm_eps);
    }
};

void mtp_shift(int32_t* tokens_BS, int32_t* targets_out_BS, const int32_t* targets_BS, int64_t b, int64_t s,
               int64_t depth) {
    for (int64_t r = 0; r < b; ++r)
        for (int64_t i = 0; i < s; ++i) {
            const int64_t in = i + depth - 1, out = i + depth;  // t_{i+k} = targets[i+k-1], t_{i+k+1} = targets[i+k]
            const bool has_input = in < s && targets_BS[r * s + in] != kIgnoreIndex;
            tokens_BS[r * s + i] = has_input ? targets_BS[r * s + in] : 0;
            targets_out_BS[r * s + i] = has_input && out < s ? targets_BS[r * s + out] : kIgnoreIndex;
        }
}

template <typename T>
Transformer<T>::Transformer(const ModelConfig& cfg, ExpertShard shard, bool with_grads, backend::Backend& be)
    : ops_(be.ops<T>()), cfg_(cfg), rope_(be, cfg), with_grads_(with_grads) {
    cfg_.validate();
    wte_ = store_.add("embed.weight", {cfg.vocab_size, cfg.d_model}, ParamKind::kEmbedding, cfg.init_std);
    for (int64_t l = 0; l < cfg.n_layers; ++l)
        blocks_.push_back(
            std::make_unique<Block>(ops_, store_, cfg, "layers." + std::to_string(l) + ".", l, &rope_, shard));
    for (int64_t i = 0; i < cfg.mtp_modules; ++i)
        mtp_.push_back(std::make_unique<Mtp>(ops_, store_, cfg, i, &rope_, shard));
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
    for (auto& b : blocks_) b->set_precision(cfg);
    for (auto& m : mtp_) {
        m->eh_proj.set_precision(cfg, "dense_ffn");
        m->block->set_precision(cfg);
    }
    head_.set_precision(cfg, "head");
}

template <typename T>
std::vector<precision::MatmulRecipe<T>*> Transformer<T>::recipes() {
    std::vector<precision::MatmulRecipe<T>*> out;
    for (auto& b : blocks_) b->collect_recipes(out);
    out.push_back(head_.recipe.get());
    for (auto& m : mtp_) {  // after the head: the recipes of a model without MTP keep their checkpointed order
        out.push_back(m->eh_proj.recipe.get());
        m->block->collect_recipes(out);
    }
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
    for (auto& m : mtp_)
        if (m->block->moe) out.push_back(m->block->moe.get());
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
    for (size_t l = 0; l < blocks_.size(); ++l)
        blocks_[l]->forward(ensure<T>(ops_, h_[l + 1], n * d), h_[l].template data<T>(), scratch, pos, b, s, att_start,
                            r);
    T* nf = ensure<T>(ops_, nf_, n * d);
    final_norm_.forward(nf, ensure<T>(ops_, rstdf_, n), h_[blocks_.size()].template data<T>(), n);
    T* logits = ensure<T>(ops_, logits_, n * v);
    head_.forward(logits, nf, n);
    r.ce_sum = ops_.cross_entropy_forward(ensure<T>(ops_, loss_N_, n), logits, tgt, n, v, kIgnoreIndex);
    if (!mtp_.empty() && with_grads_) forward_mtp(r, targets_BS, doc_start_BS, pos, att_start);
    return r;
}

template <typename T>
void Transformer<T>::forward_mtp(ForwardResult& r, const int32_t* targets_BS, const int32_t* doc_start_BS,
                                 const int32_t* pos, const int32_t* att_start) {
    const int64_t b = b_, s = s_, n = b * s, d = cfg_.d_model, v = cfg_.vocab_size;
    backend::Backend& be = ops_.backend();
    T* scratch = scratch_.template data<T>();
    const T* h_prev = h_[blocks_.size()].template data<T>();
    for (size_t i = 0; i < mtp_.size(); ++i) {
        Mtp& m = *mtp_[i];
        m.tokens_host.resize(size_t(n));
        m.targets_host.resize(size_t(n));
        mtp_shift(m.tokens_host.data(), m.targets_host.data(), targets_BS, b, s, int64_t(i) + 1);
        int32_t* tok = ensure<int32_t>(be, m.tokens, n);
        int32_t* tgt = ensure<int32_t>(be, m.targets, n);
        // Positions and document starts are the main model's (pos, att_start); these copies are discarded.
        r.mtp_num_valid.push_back(be.prepare_tokens(tok, tgt, ensure<int32_t>(be, m.pos_scratch, n),
                                                    ensure<int32_t>(be, m.start_scratch, n), m.tokens_host.data(),
                                                    m.targets_host.data(), doc_start_BS, n, s, v, kIgnoreIndex));
        T* emb = ensure<T>(ops_, m.emb, n * d);
        ops_.embedding_forward(emb, tok, value<T>(wte_), n, d);
        T* en = ensure<T>(ops_, m.en, n * d);
        T* hn = ensure<T>(ops_, m.hn, n * d);
        m.enorm.forward(en, ensure<T>(ops_, m.rstd_e, n), emb, n);
        m.hnorm.forward(hn, ensure<T>(ops_, m.rstd_h, n), h_prev, n);
        T* cat = ensure<T>(ops_, m.cat, n * 2 * d);  // [N, 2D] = [embedding | hidden] (DeepSeek-V3 eq. 21)
        ops_.strided_copy(cat, 2 * d, en, d, n, d, 1);
        ops_.strided_copy(cat + d, 2 * d, hn, d, n, d, 1);
        T* hp = ensure<T>(ops_, m.hp, n * d);
        m.eh_proj.forward(hp, cat, n);
        T* h_out = ensure<T>(ops_, m.h_out, n * d);
        m.block->forward(h_out, hp, scratch, pos, b, s, att_start, r);
        T* nf = ensure<T>(ops_, m.nf, n * d);
        m.final_norm.forward(nf, ensure<T>(ops_, m.rstdf, n), h_out, n);
        T* logits = ensure<T>(ops_, m.logits, n * v);
        head_.forward(logits, nf, n);
        r.mtp_ce_sum.push_back(
            ops_.cross_entropy_forward(ensure<T>(ops_, m.loss_N, n), logits, tgt, n, v, kIgnoreIndex));
        h_prev = h_out;
    }
}

template <typename T>
void Transformer<T>::backward(T ce_scale, T aux_scale, const std::vector<T>& mtp_ce_scales) {
    FRUGAL_CHECK(store_.flat_grads().defined(), "backward() on a model built without gradients (inference only)");
    const int64_t b = b_, s = s_, n = b * s, d = cfg_.d_model, v = cfg_.vocab_size;
    const int32_t* pos = pos_N_.template data<int32_t>();
    const int32_t* att_start = doc_masked_ ? start_N_.template data<int32_t>() : nullptr;
    // dh: d(loss)/d(h_L), first from the MTP modules (h_L feeds module 1), then from the final norm.
    T* dh = ensure_zero<T>(ops_, dh_, n * d);
    if (!mtp_.empty()) backward_mtp(ce_scale, mtp_ce_scales, aux_scale, dh);
    T* dlogits = ensure_zero<T>(ops_, dlogits_, n * v);
    ops_.cross_entropy_backward(dlogits, logits_.template data<T>(), targets_.template data<int32_t>(), ce_scale, n, v,
                                kIgnoreIndex);
    T* dn = ensure_zero<T>(ops_, dn_, n * d);
    head_.backward(dn, dlogits, nf_.template data<T>(), n);
    final_norm_.backward(dh, dn, h_[blocks_.size()].template data<T>(), rstdf_.template data<T>(), n);
    for (size_t l = blocks_.size(); l-- > 0;)
        blocks_[l]->backward(dh, dn, h_[l].template data<T>(), pos, b, s, att_start, aux_scale);
    ops_.embedding_backward(grad<T>(wte_), dh, tokens_.template data<int32_t>(), n, d);
}

template <typename T>
void Transformer<T>::backward_mtp(T ce_scale, const std::vector<T>& mtp_ce_scales, T aux_scale, T* dh_last) {
    const int64_t b = b_, s = s_, n = b * s, d = cfg_.d_model, v = cfg_.vocab_size;
    FRUGAL_CHECK(mtp_ce_scales.empty() || mtp_ce_scales.size() == mtp_.size(), "backward: ", mtp_ce_scales.size(),
                 " MTP scales for ", mtp_.size(), " MTP modules");
    FRUGAL_CHECK(mtp_[0]->logits.defined(), "backward: the last forward did not run the MTP modules");
    const int32_t* pos = pos_N_.template data<int32_t>();
    const int32_t* att_start = doc_masked_ ? start_N_.template data<int32_t>() : nullptr;
    T* dlogits = ensure<T>(ops_, dlogits_, n * v);
    T* dn = ensure<T>(ops_, dn_, n * d);
    // Depth D first: module k's d(hidden input) is module k-1's d(output); module 1's is d(h_L).
    for (size_t i = mtp_.size(); i-- > 0;) {
        Mtp& m = *mtp_[i];
        const T scale =
            mtp_ce_scales.empty() ? T(double(ce_scale) * cfg_.mtp_loss_weight / double(mtp_.size())) : mtp_ce_scales[i];
        T* d_out = i + 1 < mtp_.size() ? m.d_out.template data<T>() : ensure_zero<T>(ops_, m.d_out, n * d);
        ops_.fill(dlogits, n * v, T(0));
        ops_.cross_entropy_backward(dlogits, m.logits.template data<T>(), m.targets.template data<int32_t>(), scale, n,
                                    v, kIgnoreIndex);
        ops_.fill(dn, n * d, T(0));
        head_.backward(dn, dlogits, m.nf.template data<T>(), n);
        m.final_norm.backward(d_out, dn, m.h_out.template data<T>(), m.rstdf.template data<T>(), n);
        // Through the block: d_out becomes d(loss)/d(h'), then the projection and the two norms.
        T* scratch = ensure<T>(ops_, scratch_, n * d);
        m.block->backward(d_out, scratch, m.hp.template data<T>(), pos, b, s, att_start, aux_scale);
        T* d_cat = ensure_zero<T>(ops_, m.d_cat, n * 2 * d);
        m.eh_proj.backward(d_cat, d_out, m.cat.template data<T>(), n);
        T* d_en = ensure_zero<T>(ops_, m.d_en, n * d);
        T* d_hn = ensure_zero<T>(ops_, m.d_hn, n * d);
        ops_.strided_add(d_en, d, d_cat, 2 * d, n, d, 1);
        ops_.strided_add(d_hn, d, d_cat + d, 2 * d, n, d, 1);
        T* d_emb = ensure_zero<T>(ops_, m.d_emb, n * d);
        m.enorm.backward(d_emb, d_en, m.emb.template data<T>(), m.rstd_e.template data<T>(), n);
        ops_.embedding_backward(grad<T>(wte_), d_emb, m.tokens.template data<int32_t>(), n, d);
        // The hidden input: module k-1's output, or h_L.
        T* d_prev = dh_last;
        const T* prev = h_[blocks_.size()].template data<T>();
        if (i > 0) {
            d_prev = ensure_zero<T>(ops_, mtp_[i - 1]->d_out, n * d);
            prev = mtp_[i - 1]->h_out.template data<T>();
        }
        m.hnorm.backward(d_prev, d_hn, prev, m.rstd_h.template data<T>(), n);
    }
}

template class Transformer<float>;
template class Transformer<double>;

}  // namespace frugal::model
