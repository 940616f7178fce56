#include "accounting/flops.h"

namespace frugal::accounting {

namespace {
struct LayerParams {
    double attention, dense_ffn, routed_all, routed_active, shared, router, norms;
};
LayerParams layer_params(const model::ModelConfig& m, int64_t layer) {
    const double d = double(m.d_model), hq = double(m.n_heads), hkv = double(m.kv_heads()), hd = double(m.hd());
    LayerParams p{};
    // GQA projections: d * hd * (q + 2 kv) + q * hd * d (Megatron's h*(q + 2kv) + q*h).
    p.attention = d * hd * (hq + 2 * hkv) + hq * hd * d;
    p.norms = 2 * d + (m.qk_norm ? 2 * hd : 0);
    if (m.is_moe_layer(layer)) {
        const double expert = 3 * d * double(m.moe.d_expert);  // SwiGLU: gate, up, down
        p.routed_all = expert * double(m.moe.n_experts);
        p.routed_active = expert * double(m.moe.top_k);
        p.shared = expert * double(m.moe.n_shared_experts);
        p.router = d * double(m.moe.n_experts);
    } else {
        p.dense_ffn = 3 * d * double(m.d_ff);
    }
    return p;
}
}  // namespace

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

double training_flops_per_token(const model::ModelConfig& m, int64_t seq_len) {
    double matmul = 0;
    for (int64_t l = 0; l < m.n_layers; ++l) {
        LayerParams p = layer_params(m, l);
        matmul += p.attention + p.dense_ffn + p.routed_active + p.shared + p.router;
    }
    matmul += double(m.d_model) * double(m.vocab_size);  // output head (tied or not, it is a matmul)
    const double attention_core = 6.0 * double(m.n_layers) * double(seq_len) * double(m.n_heads) * double(m.hd());
    return 6.0 * matmul + attention_core;
}

}  // namespace frugal::accounting
