// The tiny models of the PyTorch golden comparison (tests/golden/make_golden.py), shared by the exporter that
// writes their inputs and by the test that checks Frugal against the recorded outputs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace frugal::golden {

struct GoldenCase {
    std::string name;
    model::ModelConfig cfg;
    uint64_t seed;
    int64_t batch, seq;
};

inline std::vector<GoldenCase> golden_cases() {
    model::ModelConfig a;
    a.vocab_size = 32;
    a.d_model = 16;
    a.n_layers = 3;
    a.dense_layers = 1;
    a.n_heads = 4;
    a.n_kv_heads = 2;
    a.qk_norm = true;
    a.d_ff = 24;
    a.max_seq_len = 16;
    a.rope_theta = 1000.0;
    a.init_std = 0.2;
    a.moe.n_experts = 4;
    a.moe.top_k = 2;
    a.moe.d_expert = 8;
    a.moe.n_shared_experts = 1;
    a.moe.score_func = "softmax";
    a.moe.norm_topk_prob = true;
    a.moe.aux_loss = "batch";
    a.moe.aux_loss_coef = 0.01;
    a.moe.z_loss_coef = 0.001;

    // DeepSeek-V3 style routing, tied embeddings, multi-head attention without QK-norm.
    model::ModelConfig b = a;
    b.n_kv_heads = 0;
    b.qk_norm = false;
    b.tie_embeddings = true;
    b.dense_layers = 0;
    b.n_layers = 2;
    b.moe.n_experts = 6;
    b.moe.top_k = 3;
    b.moe.n_shared_experts = 0;
    b.moe.score_func = "sigmoid";
    b.moe.routed_scaling_factor = 2.5;
    b.moe.aux_loss = "seq";
    b.moe.aux_loss_coef = 0.05;
    b.moe.z_loss_coef = 0.0;
    return {{"a", a, 7, 2, 12}, {"b", b, 11, 3, 8}};
}

// Tokens, targets (one ignored) and expert biases of a case, fixed functions of the case so that the exporter and
// the test agree without a file.
inline void golden_batch(const GoldenCase& c, std::vector<int32_t>& tokens, std::vector<int32_t>& targets) {
    const int64_t n = c.batch * c.seq;
    tokens.resize(static_cast<size_t>(n));
    targets.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        tokens[static_cast<size_t>(i)] = int32_t((i * 13 + 5) % c.cfg.vocab_size);
        targets[static_cast<size_t>(i)] = i == 3 ? -100 : int32_t((i * 7 + 2) % c.cfg.vocab_size);
    }
}

inline std::vector<float> golden_bias(const GoldenCase& c, int64_t layer) {
    std::vector<float> bias(static_cast<size_t>(c.cfg.moe.n_experts));
    for (int64_t j = 0; j < c.cfg.moe.n_experts; ++j) bias[static_cast<size_t>(j)] = 0.02f * float((j + layer) % 3 - 1);
    return bias;
}

}  // namespace frugal::golden
