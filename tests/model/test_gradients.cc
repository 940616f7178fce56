// Hand-written backward passes against central differences in double, for every layer and a whole tiny model.
// Each loss is L = sum(out * R) for a fixed random R (so dL/dout = R), plus the layer's own auxiliary losses.
#include <gtest/gtest.h>

#include <string>

#include "backend/cpu/ops.h"
#include "model/layers/attention.h"
#include "model/layers/mlp.h"
#include "model/moe/moe_layer.h"
#include "model/transformer.h"
#include "tests/model/grad_check.h"
#include "tests/util.h"

namespace frugal {
namespace {

using model::ModelConfig;
using model::ParamStore;
namespace ops = backend::cpu;
using test::dot;

ModelConfig tiny_config() {
    ModelConfig c;
    c.vocab_size = 11;
    c.d_model = 8;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.d_ff = 12;
    c.max_seq_len = 8;
    c.init_std = 0.3;
    c.moe.n_experts = 4;
    c.moe.top_k = 2;
    c.moe.d_expert = 6;
    return c;
}

TEST(Gradients, EmbeddingWeightMatchesCentralDifferences) {
    const int64_t n = 7, d = 5, v = 4;
    std::vector<int32_t> tokens = {0, 3, 3, 1, 0, 2, 3};
    auto wte = test::random_vec<double>(v * d, 1);
    auto r = test::random_vec<double>(n * d, 2);
    std::vector<double> out(static_cast<size_t>(n * d)), dwte(static_cast<size_t>(v * d), 0.0);
    auto loss = [&] {
        ops::embedding_forward(out.data(), tokens.data(), wte.data(), n, d);
        return dot(out, r);
    };
    loss();
    ops::embedding_backward(dwte.data(), r.data(), tokens.data(), n, d);
    test::check_gradient(loss, wte.data(), dwte.data(), v * d, "embedding.weight", 100);
}

TEST(Gradients, RmsNormMatchesCentralDifferences) {
    const int64_t n = 6, d = 10;
    auto x = test::random_vec<double>(n * d, 3);
    auto w = test::random_vec<double>(d, 4);
    auto r = test::random_vec<double>(n * d, 5);
    std::vector<double> out(static_cast<size_t>(n * d)), rstd(static_cast<size_t>(n)),
        dx(static_cast<size_t>(n * d), 0.0), dw(static_cast<size_t>(d), 0.0);
    auto loss = [&] {
        ops::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), n, d, 1e-6);
        return dot(out, r);
    };
    loss();
    ops::rmsnorm_backward(dx.data(), dw.data(), r.data(), x.data(), w.data(), rstd.data(), n, d);
    test::check_gradient(loss, x.data(), dx.data(), n * d, "rmsnorm x", 100);
    test::check_gradient(loss, w.data(), dw.data(), d, "rmsnorm w", 100);
}

TEST(Gradients, RopeInverseRotationMatchesCentralDifferences) {
    const int64_t n = 5, h = 3, hd = 6;
    model::RopeTable<double> rope(backend::cpu_backend(), 16, hd, 500.0);
    std::vector<int32_t> pos = {0, 1, 7, 3, 15};
    auto x = test::random_vec<double>(n * h * hd, 6);
    auto r = test::random_vec<double>(n * h * hd, 7);
    std::vector<double> out;
    auto loss = [&] {
        out = x;
        ops::rope_apply(out.data(), h * hd, hd, pos.data(), rope.cos(), rope.sin(), n, h, hd, false);
        return dot(out, r);
    };
    loss();
    std::vector<double> dx = r;
    ops::rope_apply(dx.data(), h * hd, hd, pos.data(), rope.cos(), rope.sin(), n, h, hd, true);
    test::check_gradient(loss, x.data(), dx.data(), n * h * hd, "rope x", 100);
}

void attention_case(bool qk_norm, int64_t n_kv_heads, const std::string& scope = "head", bool bias = false,
                    bool doc_mask = false) {
    ModelConfig cfg = tiny_config();
    cfg.qk_norm = qk_norm;
    cfg.qk_norm_scope = scope;
    cfg.attn_bias = bias;
    cfg.n_kv_heads = n_kv_heads;
    model::RopeTable<double> rope(backend::cpu_backend(), cfg);
    ParamStore store;
    model::Attention<double> attn(backend::cpu_backend().ops<double>(), store, cfg, "attn.", &rope);
    store.allocate(DType::kF64);
    store.init(17);
    for (model::Param* p : store.params())  // biases start at zero: move them so the check sees their effect
        if (p->kind == model::ParamKind::kBias) {
            auto v = test::random_vec<double>(p->value.numel(), 18);
            std::copy(v.begin(), v.end(), p->value.data<double>());
        }
    test::check_attention_layer(attn, store, cfg.d_model, doc_mask, "attention");
}

TEST(Gradients, GroupedQueryAttentionWithQkNormMatchesCentralDifferences) { attention_case(true, 2); }
TEST(Gradients, MultiHeadAttentionMatchesCentralDifferences) { attention_case(false, 0); }
TEST(Gradients, MultiQueryAttentionWithQkNormMatchesCentralDifferences) { attention_case(true, 1); }
// OLMoE
TEST(Gradients, AttentionWithProjectionQkNormMatchesCentralDifferences) { attention_case(true, 2, "projection"); }
TEST(Gradients, AttentionWithQkvBiasesMatchesCentralDifferences) { attention_case(false, 2, "head", true); }  // Qwen2
TEST(Gradients, DocumentMaskedAttentionMatchesCentralDifferences) { attention_case(true, 2, "head", false, true); }

TEST(Gradients, SwiGluMlpMatchesCentralDifferences) {
    const int64_t n = 7, d = 6, f = 9;
    ParamStore store;
    model::MLP<double> mlp(backend::cpu_backend().ops<double>(), store, "mlp.", d, f, 0.5, 0.5);
    store.allocate(DType::kF64);
    store.init(3);
    auto x = test::random_vec<double>(n * d, 10);
    auto r = test::random_vec<double>(n * d, 11);
    std::vector<double> out(static_cast<size_t>(n * d)), dx(static_cast<size_t>(n * d), 0.0);
    auto loss = [&] {
        mlp.forward(out.data(), x.data(), n);
        return dot(out, r);
    };
    loss();
    mlp.backward(dx.data(), r.data(), x.data(), n);
    test::check_gradient(loss, x.data(), dx.data(), n * d, "mlp x");
    test::check_all_params(store, loss);
}

struct RouterCase {
    const char* score_func;
    const char* aux;
    bool norm;
    double scale;
};

class RouterGradients : public ::testing::TestWithParam<RouterCase> {};

TEST_P(RouterGradients, WeightsAuxLossAndZLossMatchCentralDifferences) {
    const RouterCase rc = GetParam();
    ModelConfig cfg = tiny_config();
    cfg.moe.n_experts = 6;
    cfg.moe.top_k = 2;
    cfg.moe.score_func = rc.score_func;
    cfg.moe.aux_loss = rc.aux;
    cfg.moe.aux_loss_coef = 0.3;
    cfg.moe.z_loss_coef = 0.2;
    cfg.moe.norm_topk_prob = rc.norm;
    cfg.moe.routed_scaling_factor = rc.scale;
    const int64_t b = 3, s = 4, t = b * s, d = cfg.d_model, k = cfg.moe.top_k;
    ParamStore store;
    model::Router<double> router(backend::cpu_backend().ops<double>(), store, cfg, "router.");
    store.allocate(DType::kF64);
    store.init(5);
    router.set_expert_bias({0.05f, -0.02f, 0.0f, 0.01f, -0.04f, 0.03f});
    auto x = test::random_vec<double>(t * d, 12, 2.0);
    auto rw = test::random_vec<double>(t * k, 13);
    const double aux_scale = 0.7;
    auto loss = [&] {
        router.forward(x.data(), b, s);
        double l = 0;
        for (int64_t i = 0; i < t * k; ++i) l += router.weight_TK()[i] * rw[static_cast<size_t>(i)];
        return l + aux_scale * (router.aux_loss() + router.z_loss());
    };
    loss();
    ASSERT_GT(test::min_topk_margin(router.scores_TE(), router.expert_bias_host(), t, cfg.moe.n_experts, k), 1e-4)
        << "inputs leave top-k too close to a tie for a central difference";
    EXPECT_GT(router.aux_loss(), 0.0);
    EXPECT_GT(router.z_loss(), 0.0);
    std::vector<double> dx(static_cast<size_t>(t * d), 0.0);
    router.backward(dx.data(), rw.data(), x.data(), aux_scale);
    test::check_gradient(loss, x.data(), dx.data(), t * d, "router x", 48);
    test::check_all_params(store, loss, 48);
}

// What gtest prints for a case in listings and failure messages (instead of a byte dump).
void PrintTo(const RouterCase& rc, std::ostream* os) {
    *os << rc.score_func << " scores, " << (rc.norm ? "renormalized" : "unnormalized") << ", scale " << rc.scale << ", "
        << rc.aux << " aux loss";
}

// Names such as SigmoidScoresRenormalizedAndScaledWithSequenceAuxLoss.
std::string router_case_name(const ::testing::TestParamInfo<RouterCase>& info) {
    const RouterCase& rc = info.param;
    std::string name = std::string(rc.score_func) == "softmax" ? "SoftmaxScores" : "SigmoidScores";
    name += rc.norm ? "Renormalized" : "Unnormalized";
    if (rc.scale != 1.0) name += "AndScaled";
    name += std::string(rc.aux) == "seq" ? "WithSequenceAuxLoss" : "WithBatchAuxLoss";
    return name;
}

INSTANTIATE_TEST_SUITE_P(Variants, RouterGradients,
                         ::testing::Values(RouterCase{"softmax", "batch", true, 1.0},
                                           RouterCase{"softmax", "seq", false, 1.0},
                                           RouterCase{"sigmoid", "seq", true, 2.5},
                                           RouterCase{"sigmoid", "batch", false, 1.5}),
                         router_case_name);

void moe_case(double capacity_factor, int64_t shared, bool gate = false) {
    ModelConfig cfg = tiny_config();
    cfg.moe.n_shared_experts = shared;
    cfg.moe.shared_expert_gate = gate;
    cfg.moe.capacity_factor = capacity_factor;
    cfg.moe.aux_loss = "batch";
    cfg.moe.aux_loss_coef = 0.1;
    cfg.moe.z_loss_coef = 0.05;
    const int64_t b = 2, s = 6, t = b * s, d = cfg.d_model;
    ParamStore store;
    model::MoELayer<double> moe(backend::cpu_backend().ops<double>(), store, cfg, "moe.");
    store.allocate(DType::kF64);
    store.init(23);
    auto x = test::random_vec<double>(t * d, 14, 2.0);
    auto r = test::random_vec<double>(t * d, 15);
    std::vector<double> out(static_cast<size_t>(t * d)), dx(static_cast<size_t>(t * d), 0.0);
    auto loss = [&] {
        moe.forward(out.data(), x.data(), b, s);
        return dot(out, r) + moe.router().aux_loss() + moe.router().z_loss();
    };
    loss();
    ASSERT_GT(test::min_topk_margin(moe.router().scores_TE(), moe.router().expert_bias_host(), t, cfg.moe.n_experts,
                                    cfg.moe.top_k),
              1e-4);
    if (capacity_factor > 0) {
        EXPECT_GT(moe.router().stats().dropped, 0) << "the case should drop assignments";
    }
    moe.backward(dx.data(), r.data(), x.data(), b, s, 1.0);
    test::check_gradient(loss, x.data(), dx.data(), t * d, "moe x", 48);
    test::check_all_params(store, loss, 24);
}

TEST(Gradients, DroplessMoELayerMatchesCentralDifferences) { moe_case(0.0, 0); }
TEST(Gradients, MoELayerWithASharedExpertMatchesCentralDifferences) { moe_case(0.0, 1); }
TEST(Gradients, MoELayerThatDropsOverCapacityMatchesCentralDifferences) { moe_case(0.5, 1); }
TEST(Gradients, MoELayerWithAGatedSharedExpertMatchesCentralDifferences) { moe_case(0.0, 2, true); }  // Qwen2-MoE

TEST(Gradients, CrossEntropyWithAnIgnoredTargetMatchesCentralDifferences) {
    const int64_t n = 4, v = 9;
    auto logits = test::random_vec<double>(n * v, 16, 2.0);
    std::vector<int32_t> targets = {3, -100, 8, 0};
    std::vector<double> loss_n(static_cast<size_t>(n)), dl(static_cast<size_t>(n * v), 0.0);
    auto loss = [&] {
        return 0.5 * ops::cross_entropy_forward(loss_n.data(), logits.data(), targets.data(), n, v, -100);
    };
    ops::cross_entropy_backward(dl.data(), logits.data(), targets.data(), 0.5, n, v, -100);
    test::check_gradient(loss, logits.data(), dl.data(), n * v, "cross-entropy logits", 100);
}

void whole_model_case(bool tied, bool qwen2_features = false) {
    ModelConfig cfg = tiny_config();
    cfg.n_layers = 3;
    cfg.dense_layers = 1;
    cfg.qk_norm = true;
    if (qwen2_features) {  // every optional piece at once: projection QK-norm, QKV biases, gated shared expert
        cfg.qk_norm_scope = "projection";
        cfg.attn_bias = true;
        cfg.moe.shared_expert_gate = true;
    }
    cfg.tie_embeddings = tied;
    cfg.moe.n_shared_experts = 1;
    cfg.moe.aux_loss = "seq";
    cfg.moe.aux_loss_coef = 0.05;
    cfg.moe.z_loss_coef = 0.01;
    model::Transformer<double> net(cfg);
    net.init(31);
    const int64_t b = 2, s = 6, n = b * s;
    std::vector<int32_t> tokens(static_cast<size_t>(n)), targets(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        tokens[static_cast<size_t>(i)] = int32_t((i * 7 + 3) % cfg.vocab_size);
        targets[static_cast<size_t>(i)] = i == 4 ? model::kIgnoreIndex : int32_t((i * 5 + 1) % cfg.vocab_size);
    }
    const double ce_scale = 1.0 / 11.0, aux_scale = 0.5;
    auto loss = [&] {
        model::ForwardResult r = net.forward(tokens.data(), targets.data(), b, s);
        return r.ce_sum * ce_scale + aux_scale * (r.aux_loss + r.z_loss);
    };
    loss();
    for (auto* layer : net.moe_layers())
        ASSERT_GT(test::min_topk_margin(layer->router().scores_TE(), layer->router().expert_bias_host(), n,
                                        cfg.moe.n_experts, cfg.moe.top_k),
                  1e-4);
    net.params().zero_grad();
    net.backward(ce_scale, aux_scale);
    test::check_all_params(net.params(), loss, 10);
}

TEST(Gradients, WholeModelWithUntiedEmbeddingsMatchesCentralDifferences) { whole_model_case(false); }
TEST(Gradients, WholeModelWithTiedEmbeddingsMatchesCentralDifferences) { whole_model_case(true); }
TEST(Gradients, WholeModelWithBiasesGateAndProjectionNormMatchesCentralDifferences) { whole_model_case(false, true); }

}  // namespace
}  // namespace frugal
