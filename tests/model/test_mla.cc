// The DeepSeek-V3 pieces of the model: multi-head latent attention, YaRN and partial rotary embeddings, and the
// multi-token-prediction modules, against central differences in double (as every other layer,
// tests/model/test_gradients.cc) and against their definitions. The logits of whole released-architecture models
// against transformers are in tests/checkpoint/test_hf_golden.cc.
#include <gtest/gtest.h>

#include <cmath>

#include "model/layers/mla.h"
#include "model/transformer.h"
#include "tests/model/grad_check.h"
#include "tests/util.h"

namespace frugal {
namespace {

using model::ModelConfig;
using model::ParamStore;

// A tiny DeepSeek-style configuration: 3 heads of 4 + 2 query/key values and 3 value values, latents of 5 and 6.
ModelConfig tiny_mla(int64_t q_lora_rank, bool yarn) {
    ModelConfig c;
    c.vocab_size = 11;
    c.d_model = 8;
    c.n_layers = 2;
    c.n_heads = 3;
    c.d_ff = 12;
    c.max_seq_len = 8;
    c.init_std = 0.3;
    c.attention = "mla";
    c.q_lora_rank = q_lora_rank;
    c.kv_lora_rank = 6;
    c.qk_nope_head_dim = 4;
    c.qk_rope_head_dim = 2;
    c.v_head_dim = 3;
    if (yarn) {
        c.rope_scaling = "yarn";
        c.rope_factor = 4;
        c.rope_original_max_seq_len = 4;
        c.yarn_mscale = 0.8;
        c.yarn_mscale_all_dim = 0.6;
    }
    c.moe.n_experts = 4;
    c.moe.top_k = 2;
    c.moe.d_expert = 6;
    return c;
}

// Layer-level check: L = sum(out * R) over x and every parameter, with and without document masking.
void mla_case(const ModelConfig& cfg, bool doc_mask) {
    model::RopeTable<double> rope(backend::cpu_backend(), cfg);
    ParamStore store;
    model::MLA<double> attn(backend::cpu_backend().ops<double>(), store, cfg, "attn.", &rope);
    store.allocate(DType::kF64);
    store.init(23);
    test::check_attention_layer(attn, store, cfg.d_model, doc_mask, "mla");
    // Every parameter of the layer is named as the checkpoints and the Hugging Face mapping expect.
    for (const char* name : {"attn.wkv_a.weight", "attn.kv_a_norm.weight", "attn.wkv_b.weight", "attn.wo.weight"})
        EXPECT_NE(store.find(name), nullptr) << name;
    EXPECT_EQ(store.find("attn.wq.weight") != nullptr, cfg.q_lora_rank == 0);
    EXPECT_EQ(store.find("attn.wq_b.weight") != nullptr, cfg.q_lora_rank > 0);
}

TEST(Mla, CompressedQueriesMatchCentralDifferences) { mla_case(tiny_mla(5, false), false); }
TEST(Mla, PlainQueryProjectionMatchesCentralDifferences) { mla_case(tiny_mla(0, false), false); }
TEST(Mla, YarnScaledAttentionMatchesCentralDifferences) { mla_case(tiny_mla(5, true), false); }
TEST(Mla, DocumentMaskedMatchesCentralDifferences) { mla_case(tiny_mla(0, true), true); }

// The decoupled rotary key is one head shared by all: changing position p of token i changes every head's score the
// same way, and a token's keys depend on the latent only (two tokens with the same input and position give the same
// output row in a one-token-per-window batch).
TEST(Mla, WindowsWithTheSameTokenAndPositionGiveTheSameOutput) {
    const ModelConfig cfg = tiny_mla(5, true);
    model::RopeTable<double> rope(backend::cpu_backend(), cfg);
    ParamStore store;
    model::MLA<double> attn(backend::cpu_backend().ops<double>(), store, cfg, "attn.", &rope);
    store.allocate(DType::kF64);
    store.init(5);
    const int64_t d = cfg.d_model;
    auto row = test::random_vec<double>(d, 3);
    std::vector<double> x(static_cast<size_t>(3 * d));
    for (int64_t i = 0; i < 3; ++i) std::copy(row.begin(), row.end(), x.begin() + i * d);
    std::vector<int32_t> pos = {0, 0, 0};
    std::vector<double> out(static_cast<size_t>(3 * d));
    attn.forward(out.data(), x.data(), pos.data(), 3, 1);
    for (int64_t i = 1; i < 3; ++i)
        for (int64_t j = 0; j < d; ++j) EXPECT_EQ(out[static_cast<size_t>(i * d + j)], out[static_cast<size_t>(j)]);
}

// YaRN as transformers' _compute_yarn_parameters defines it: dims that turn more than beta_fast times over the
// original context keep their frequency, those turning fewer than beta_slow times are divided by the factor, a linear
// ramp in between; factor 1 changes nothing; the attention factor and MLA's softmax scale follow get_mscale.
TEST(Rope, YarnKeepsFastDimsDividesSlowOnesAndScalesAsTransformersDoes) {
    ModelConfig c;
    c.n_heads = 1;
    c.d_model = 64;
    c.head_dim = 64;
    c.rope_theta = 10000;
    c.max_seq_len = 4096;
    const std::vector<double> plain = model::rope_inv_freq(c);
    c.rope_scaling = "yarn";
    c.rope_factor = 8;
    c.rope_original_max_seq_len = 512;
    const std::vector<double> yarn = model::rope_inv_freq(c);
    ASSERT_EQ(plain.size(), 32u);
    ASSERT_EQ(yarn.size(), 32u);
    // low = floor(64 ln(512 / (32 2 pi)) / (2 ln 10000)) = floor(3.25) = 3,
    // high = ceil(64 ln(512 / (2 pi)) / (2 ln 10000)) = ceil(15.29) = 16
    for (size_t j = 0; j <= 3; ++j) EXPECT_DOUBLE_EQ(yarn[j], plain[j]) << j;
    for (size_t j = 16; j < 32; ++j) EXPECT_DOUBLE_EQ(yarn[j], plain[j] / 8) << j;
    const double ramp = (10.0 - 3.0) / (16.0 - 3.0);
    EXPECT_NEAR(yarn[10], plain[10] / 8 * ramp + plain[10] * (1 - ramp), 1e-15);
    // attention factor: get_mscale(8, 1) = 0.1 ln 8 + 1 without mscale_all_dim; their ratio with both.
    EXPECT_NEAR(c.rope_attention_factor(), 0.1 * std::log(8.0) + 1, 1e-15);
    c.yarn_mscale = 1.0;
    c.yarn_mscale_all_dim = 0.5;
    EXPECT_NEAR(c.rope_attention_factor(), (0.1 * std::log(8.0) + 1) / (0.05 * std::log(8.0) + 1), 1e-15);
    // MLA's scale: 1 / sqrt(dn + dr) times get_mscale(factor, mscale_all_dim)^2 (DeepseekV3Attention.scaling).
    ModelConfig m = tiny_mla(0, true);
    const double ms = 0.1 * 0.6 * std::log(4.0) + 1;
    EXPECT_NEAR(m.attention_scale(), ms * ms / std::sqrt(6.0), 1e-15);
    m.rope_factor = 1;
    EXPECT_NEAR(m.attention_scale(), 1 / std::sqrt(6.0), 1e-15);
    EXPECT_EQ(model::rope_inv_freq(m), model::RopeTable<double>::plain_inv_freq(2, m.rope_theta));
}

// Partial rotary (GLM-4.5): only the first head_dim * factor values of each head rotate; the rest pass unchanged.
TEST(Rope, PartialRotaryLeavesTheUnrotatedValuesAndMatchesCentralDifferences) {
    ModelConfig cfg;
    cfg.vocab_size = 11;
    cfg.d_model = 8;
    cfg.n_layers = 2;
    cfg.n_heads = 2;
    cfg.n_kv_heads = 1;
    cfg.head_dim = 8;
    cfg.max_seq_len = 8;
    cfg.init_std = 0.3;
    cfg.partial_rotary_factor = 0.5;
    ASSERT_EQ(cfg.rope_dim(), 4);
    model::RopeTable<double> rope(backend::cpu_backend(), cfg);
    EXPECT_EQ(rope.rot_dim, 4);
    // The op itself: values past rot_dim untouched.
    std::vector<double> x = test::random_vec<double>(2 * 2 * 8, 4), y = x;
    std::vector<int32_t> pos = {3, 5};
    backend::cpu_backend().ops<double>().rope_apply(y.data(), 16, 8, pos.data(), rope.cos(), rope.sin(), 2, 2, 4,
                                                    false);
    for (int64_t i = 0; i < 2; ++i)
        for (int64_t h = 0; h < 2; ++h)
            for (int64_t j = 4; j < 8; ++j)
                EXPECT_EQ(y[static_cast<size_t>(i * 16 + h * 8 + j)], x[static_cast<size_t>(i * 16 + h * 8 + j)]);
    EXPECT_NE(y[0], x[0]);
    // The attention layer's gradients with it.
    ParamStore store;
    model::Attention<double> attn(backend::cpu_backend().ops<double>(), store, cfg, "attn.", &rope);
    store.allocate(DType::kF64);
    store.init(17);
    test::check_attention_layer(attn, store, cfg.d_model, false, "partial rotary");
}

// Module k reads t_{i+k} and predicts t_{i+k+1}; what falls past the window, or follows an ignored target, is ignored.
TEST(Mtp, ShiftReadsTheTokenKAheadAndIgnoresWhatFallsPastTheWindow) {
    const int32_t X = model::kIgnoreIndex;
    const std::vector<int32_t> targets = {11, 12, 13, 14, 15, /* window 2 */ 21, X, 23, 24, 25};
    std::vector<int32_t> tok(10), tgt(10);
    model::mtp_shift(tok.data(), tgt.data(), targets.data(), 2, 5, 1);
    EXPECT_EQ(tok, (std::vector<int32_t>{11, 12, 13, 14, 15, 21, 0, 23, 24, 25}));
    EXPECT_EQ(tgt, (std::vector<int32_t>{12, 13, 14, 15, X, X, X, 24, 25, X}));
    model::mtp_shift(tok.data(), tgt.data(), targets.data(), 2, 5, 2);
    EXPECT_EQ(tok, (std::vector<int32_t>{12, 13, 14, 15, 0, 0, 23, 24, 25, 0}));
    EXPECT_EQ(tgt, (std::vector<int32_t>{13, 14, 15, X, X, X, 24, 25, X, X}));
}

// A whole DeepSeek-V3-style model: MLA with compressed queries and YaRN, one dense layer, sigmoid routing with a
// shared expert and the sequence-wise aux loss, two MTP modules (so depth 2 reads depth 1's output), tied or untied
// embeddings. The loss the gradient is checked against adds the MTP modules' cross-entropies, weighted as
// backward()'s default scales say.
void deepseek_model_case(bool tied) {
    ModelConfig cfg = tiny_mla(5, true);
    cfg.n_layers = 2;
    cfg.dense_layers = 1;
    cfg.tie_embeddings = tied;
    cfg.mtp_modules = 2;
    cfg.mtp_loss_weight = 0.7;
    cfg.moe.score_func = "sigmoid";
    cfg.moe.n_shared_experts = 1;
    cfg.moe.routed_scaling_factor = 2.5;
    cfg.moe.aux_loss = "seq";
    cfg.moe.aux_loss_coef = 0.05;
    model::Transformer<double> net(cfg);
    net.init(29);
    // Every MTP parameter exists under its checkpoint name; module 1's block is MoE (layer index n_layers + 1).
    for (const char* name : {"mtp.0.enorm.weight", "mtp.0.hnorm.weight", "mtp.0.eh_proj.weight",
                             "mtp.1.final_norm.weight", "mtp.1.attn.wkv_b.weight", "mtp.1.moe.router.weight"})
        EXPECT_NE(net.params().find(name), nullptr) << name;
    EXPECT_EQ(net.moe_layers().size(), 3u);
    const int64_t b = 2, s = 6, n = b * s;
    std::vector<int32_t> tokens(static_cast<size_t>(n)), targets(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        tokens[static_cast<size_t>(i)] = int32_t((i * 7 + 3) % cfg.vocab_size);
        targets[static_cast<size_t>(i)] = i == 4 ? model::kIgnoreIndex : int32_t((i * 5 + 1) % cfg.vocab_size);
    }
    const double ce_scale = 1.0 / 11.0, aux_scale = 0.5;
    model::ForwardResult last;
    auto loss = [&] {
        last = net.forward(tokens.data(), targets.data(), b, s);
        double l = last.ce_sum * ce_scale + aux_scale * (last.aux_loss + last.z_loss);
        for (double m : last.mtp_ce_sum) l += m * ce_scale * cfg.mtp_loss_weight / double(cfg.mtp_modules);
        return l;
    };
    loss();
    ASSERT_EQ(last.mtp_ce_sum.size(), 2u);
    // Depth 1 loses the last position of each window and the one after the ignored target; depth 2 one more each.
    EXPECT_EQ(last.num_valid, 11);
    EXPECT_EQ(last.mtp_num_valid, (std::vector<int64_t>{8, 6}));
    for (double m : last.mtp_ce_sum) EXPECT_GT(m, 0);
    for (auto* layer : net.moe_layers())
        ASSERT_GT(test::min_topk_margin(layer->router().scores_TE(), layer->router().expert_bias_host(), n,
                                        cfg.moe.n_experts, cfg.moe.top_k),
                  1e-4);
    net.params().zero_grad();
    net.backward(ce_scale, aux_scale);
    test::check_all_params(net.params(), loss, 8);
}

TEST(Mtp, DeepSeekStyleModelWithTwoModulesMatchesCentralDifferences) { deepseek_model_case(false); }
TEST(Mtp, DeepSeekStyleModelWithTiedEmbeddingsMatchesCentralDifferences) { deepseek_model_case(true); }

// Inference (a model without gradients) runs the main model only: the same logits, no MTP losses.
TEST(Mtp, InferenceSkipsTheModulesAndGivesTheSameLogits) {
    ModelConfig cfg = tiny_mla(0, false);
    cfg.mtp_modules = 1;
    model::Transformer<double> train_net(cfg), infer_net(cfg, {}, false);
    train_net.init(3);
    infer_net.init(3);
    const int64_t b = 1, s = 6, n = b * s;
    std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6}, targets = {2, 3, 4, 5, 6, 7};
    const model::ForwardResult a = train_net.forward(tokens.data(), targets.data(), b, s);
    const model::ForwardResult c = infer_net.forward(tokens.data(), targets.data(), b, s);
    EXPECT_EQ(a.mtp_ce_sum.size(), 1u);
    EXPECT_TRUE(c.mtp_ce_sum.empty());
    EXPECT_EQ(a.ce_sum, c.ce_sum);
    for (int64_t i = 0; i < n * cfg.vocab_size; ++i) EXPECT_EQ(train_net.logits()[i], infer_net.logits()[i]);
}

}  // namespace
}  // namespace frugal
