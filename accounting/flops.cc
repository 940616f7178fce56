#include "accounting/flops.h"

namespace frugal::accounting {

namespace {
struct LayerParams {
    double attention, dense_ffn, routed_all, routed_active, shared, router, norms;
};
LayerParams layer_params(const model::ModelConfig& m, int64_t layer) {
    const double d = double(m.d_model), hq = double(m.n_heads), hkv = double(m.kv_heads()), hd = double(m.hd());
    LayerParams p{};
    if (m.attention == "mla") {
        // DeepSeek-V2/V3 MLA: q = W_qb norm(W_qa x) (or W_q x without q_lora_rank); [c_kv, k_rope] = W_kva x;
        // [k_nope, v] = W_kvb norm(c_kv); out = W_o attn, heads of width qk_nope + qk_rope (queries, keys) and v.
        const double qk = double(m.qk_nope_head_dim + m.qk_rope_head_dim), v = double(m.v_head_dim);
        const double qlr = double(m.q_lora_rank), kvr = double(m.kv_lora_rank);
        const double q_proj = m.q_lora_rank > 0 ? d * qlr + qlr * hq * qk : d * hq * qk;
        p.attention =
            q_proj + d * (kvr + double(m.qk_rope_head_dim)) + kvr * hq * (double(m.qk_nope_head_dim) + v) + hq * v * d;
        p.norms = 2 * d + kvr + (m.q_lora_rank > 0 ? qlr : 0);
    } else {
        // GQA projections: d * hd * (q + 2 kv) + q * hd * d (Megatron's h*(q + 2kv) + q*h).
        p.attention = d * hd * (hq + 2 * hkv) + hq * hd * d;
        p.norms = 2 * d + (!m.qk_norm ? 0 : m.qk_norm_scope == "head" ? 2 * hd : (hq + hkv) * hd);
        if (m.attn_bias) p.norms += (hq + 2 * hkv) * hd;  // vectors, not matmul weights: counted with the norms
    }
    if (m.is_moe_layer(layer)) {
        const double expert = 3 * d * double(m.moe.d_expert);  // SwiGLU: gate, up, down
        p.routed_all = expert * double(m.moe.n_experts);
        p.routed_active = expert * double(m.moe.top_k);
        p.shared = expert * double(m.moe.n_shared_experts);
        p.router = d * double(m.moe.n_experts) + (m.moe.shared_expert_gate ? d : 0);
    } else {
        p.dense_ffn = 3 * d * double(m.d_ff);
    }
    return p;
}
}  // namespace

double mtp_params(const model::ModelConfig& m) {
    if (m.mtp_modules == 0) return 0;
    // DeepSeek-V3 section 2.2: each module is one transformer block (an MoE layer, as the last main layers) plus a
    // projection of [h; emb] (2d -> d) and two RMSNorms; the embedding and output head are shared with the model.
    const double block = [&] {
        LayerParams p = layer_params(m, m.n_layers - 1);
        return p.attention + p.norms + p.dense_ffn + p.routed_all + p.shared + p.router;
    }();
    const double d = double(m.d_model);
    return double(m.mtp_modules) * (block + 2 * d * d + 2 * d + d);
}

ParamCounts count_params(const model::ModelConfig& m) {
    ParamCounts c;
    const double embed = double(m.vocab_size) * double(m.d_model);
    const double head = m.tie_embeddings ? 0.0 : embed;
    for (int64_t l = 0; l < m.n_layers; ++l) {
        LayerParams p = layer_params(m, l);
        const double common = p.attention + p.norms + p.dense_ffn + p.shared + p.router;
        c.total += common + p.routed_all;
        c.active_no_embed += common + p.routed_active;
    }
    c.active_no_embed += double(m.d_model);  // final norm
    c.total += embed + head + double(m.d_model);
    c.active = c.active_no_embed + embed + head;
    return c;
}

double routed_expert_params(const model::ModelConfig& m) {
    double n = 0;
    for (int64_t l = 0; l < m.n_layers; ++l) n += layer_params(m, l).routed_all;
    return n;
}

double training_flops_per_token(const model::ModelConfig& m, int64_t seq_len) {
    double matmul = 0;
    for (int64_t l = 0; l < m.n_layers; ++l) {
        LayerParams p = layer_params(m, l);
        matmul += p.attention + p.dense_ffn + p.routed_active + p.shared + p.router;
    }
    matmul += double(m.d_model) * double(m.vocab_size);  // output head (tied or not, it is a matmul)
    // QK^T over the query/key width and PV over the value width, causal: 3 S heads (d_qk + d_v) per token.
    const double d_qk = m.attention == "mla" ? double(m.qk_nope_head_dim + m.qk_rope_head_dim) : double(m.hd());
    const double d_v = m.attention == "mla" ? double(m.v_head_dim) : double(m.hd());
    // Each multi-token-prediction module (DeepSeek-V3 section 2.2) runs one more block (as the last layer), its
    // [emb; h] projection (2d -> d) and the shared output head on every token.
    if (m.mtp_modules > 0) {
        LayerParams p = layer_params(m, m.n_layers - 1);
        const double d = double(m.d_model);
        matmul += double(m.mtp_modules) * (p.attention + p.dense_ffn + p.routed_active + p.shared + p.router +
                                           2 * d * d + d * double(m.vocab_size));
    }
    const double layers = double(m.n_layers + m.mtp_modules);
    const double attention_core = 3.0 * layers * double(seq_len) * double(m.n_heads) * (d_qk + d_v);
    return 6.0 * matmul + attention_core;
}

}  // namespace frugal::accounting
