// MoE invariants (DESIGN.md): router top-k / renormalization / scaling against a reference with ties; permute and
// un-permute identities; combine(dispatch(x)) with identity experts; capacity-dropping counts; experts with zero
// tokens; grouped experts against the sequential reference; expert-bias update direction; layout-independent init.
#include <gtest/gtest.h>

#include <numeric>

#include "backend/cpu/router.h"
#include "model/moe/moe_layer.h"
#include "model/transformer.h"
#include "tests/util.h"

namespace frugal {
namespace {

using model::ModelConfig;
using model::ParamStore;

ModelConfig moe_config(int64_t e, int64_t k) {
    ModelConfig c;
    c.d_model = 16;
    c.n_layers = 2;
    c.moe.n_experts = e;
    c.moe.top_k = k;
    c.moe.d_expert = 12;
    c.init_std = 0.2;
    return c;
}

TEST(Router, TopKBreaksTiesTowardLowerIndex) {
    std::vector<double> keys = {0.5, 0.9, 0.5, 0.9, 0.1, 0.5};
    int32_t out[4];
    backend::cpu::topk_indices(out, keys.data(), 6, 4);
    EXPECT_EQ(std::vector<int32_t>(out, out + 4), (std::vector<int32_t>{1, 3, 0, 2}));
    std::vector<float> all_equal(5, 0.25f);
    backend::cpu::topk_indices(out, all_equal.data(), 5, 3);
    EXPECT_EQ(std::vector<int32_t>(out, out + 3), (std::vector<int32_t>{0, 1, 2}));
}

TEST(Router, WeightsMatchReferenceAndBiasOnlyChooses) {
    for (const char* func : {"softmax", "sigmoid"})
        for (bool norm : {true, false}) {
            ModelConfig cfg = moe_config(8, 3);
            cfg.moe.score_func = func;
            cfg.moe.norm_topk_prob = norm;
            cfg.moe.routed_scaling_factor = 2.5;
            const int64_t t = 20, d = cfg.d_model, e = 8, k = 3;
            ParamStore store;
            model::Router<double> router(backend::cpu_backend().ops<double>(), store, cfg, "r.");
            store.allocate(DType::kF64);
            store.init(3);
            std::vector<float> bias = {0.3f, 0, 0, -0.2f, 0, 0.1f, 0, 0};
            router.set_expert_bias(bias);
            auto x = test::random_vec<double>(t * d, 4);
            router.forward(x.data(), 1, t);
            const double* w = store.params()[0]->value.data<double>();
            for (int64_t i = 0; i < t; ++i) {
                std::vector<double> score(static_cast<size_t>(e)), key(static_cast<size_t>(e));
                double mx = -1e300, z = 0;
                std::vector<double> logit(static_cast<size_t>(e));
                for (int64_t j = 0; j < e; ++j) {
                    double l = 0;
                    for (int64_t p = 0; p < d; ++p) l += w[j * d + p] * x[static_cast<size_t>(i * d + p)];
                    logit[static_cast<size_t>(j)] = l;
                    mx = std::max(mx, l);
                }
                for (int64_t j = 0; j < e; ++j) z += std::exp(logit[static_cast<size_t>(j)] - mx);
                for (int64_t j = 0; j < e; ++j) {
                    score[static_cast<size_t>(j)] = std::string(func) == "softmax"
                                                        ? std::exp(logit[static_cast<size_t>(j)] - mx) / z
                                                        : 1.0 / (1.0 + std::exp(-logit[static_cast<size_t>(j)]));
                    key[static_cast<size_t>(j)] = score[static_cast<size_t>(j)] + bias[static_cast<size_t>(j)];
                }
                std::vector<int32_t> order(static_cast<size_t>(e));
                std::iota(order.begin(), order.end(), 0);
                std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t c) {
                    return key[static_cast<size_t>(a)] > key[static_cast<size_t>(c)];
                });
                double chosen_sum = 0;
                for (int64_t j = 0; j < k; ++j) chosen_sum += score[static_cast<size_t>(order[static_cast<size_t>(j)])];
                for (int64_t j = 0; j < k; ++j) {
                    EXPECT_EQ(router.selected_TK()[i * k + j], order[static_cast<size_t>(j)]) << func << " token " << i;
                    // The weight comes from the unbiased score.
                    double want =
                        2.5 * score[static_cast<size_t>(order[static_cast<size_t>(j)])] / (norm ? chosen_sum : 1.0);
                    EXPECT_NEAR(router.weight_TK()[i * k + j], want, 1e-12) << func << " token " << i;
                }
            }
        }
}

TEST(Router, ExpertBiasMovesTowardBalance) {
    ModelConfig cfg = moe_config(4, 1);
    cfg.moe.bias_update_rate = 0.001;
    ParamStore store;
    model::Router<float> router(backend::cpu_backend().ops<float>(), store, cfg, "r.");
    store.allocate(DType::kF32);
    router.update_bias({10, 2, 4, 4});  // mean 5: expert 0 overloaded, 1 and 2/3 underloaded
    EXPECT_FLOAT_EQ(router.expert_bias_host()[0], -0.001f);
    EXPECT_FLOAT_EQ(router.expert_bias_host()[1], 0.001f);
    EXPECT_FLOAT_EQ(router.expert_bias_host()[2], 0.001f);
    router.update_bias({5, 5, 5, 5});  // balanced: no move
    EXPECT_FLOAT_EQ(router.expert_bias_host()[0], -0.001f);
    // A large enough bias takes an expert out of the choice: the bias steers selection.
    router.set_expert_bias({-10.f, 0.f, 0.f, 0.f});
    auto x = test::random_vec<float>(64 * cfg.d_model, 5);
    store.init(1);
    router.forward(x.data(), 1, 64);
    for (int64_t i = 0; i < 64; ++i) EXPECT_NE(router.selected_TK()[i], 0);
}

TEST(Dispatcher, PermutationIsStableAndUnpermuteInvertsIt) {
    const int64_t t = 6, k = 2, e = 4, d = 3;
    std::vector<int32_t> expert = {2, 0, 1, 2, 0, 3, 2, -1, 1, 0, 3, 2};  // one dropped assignment
    model::Permutation perm;
    model::build_permutation(backend::cpu_backend(), perm, expert.data(), t, k, e);
    EXPECT_EQ(perm.tokens_per_expert_E, (std::vector<int64_t>{3, 2, 4, 2}));
    EXPECT_EQ(perm.num_rows, t * k - 1);
    EXPECT_EQ(perm.row_of()[7], -1);
    // Rows of expert 0 come from tokens 0, 2, 4 in order; expert 2 from tokens 0, 1, 3, 5.
    EXPECT_EQ(std::vector<int32_t>(perm.token_of(), perm.token_of() + 3), (std::vector<int32_t>{0, 2, 4}));
    EXPECT_EQ(std::vector<int32_t>(perm.token_of() + 5, perm.token_of() + 9), (std::vector<int32_t>{0, 1, 3, 5}));
    // Every row carries its token's data.
    std::vector<double> x(static_cast<size_t>(t * d));
    for (int64_t i = 0; i < t * d; ++i) x[static_cast<size_t>(i)] = double(i);
    std::vector<double> rows(static_cast<size_t>(perm.num_rows * d));
    model::permute_rows(backend::cpu_backend().ops<double>(), rows.data(), x.data(), perm, d);
    for (int64_t i = 0; i < t * k; ++i) {
        int32_t r = perm.row_of()[i];
        if (r < 0) continue;
        for (int64_t j = 0; j < d; ++j)
            EXPECT_EQ(rows[static_cast<size_t>(r * d + j)], x[static_cast<size_t>((i / k) * d + j)]);
    }
}

TEST(Dispatcher, CombineOfDispatchWithIdentityExpertsScalesByWeights) {
    const int64_t t = 9, k = 3, e = 5, d = 4;
    std::vector<int32_t> expert(static_cast<size_t>(t * k));
    rng::Stream s(1, "experts");
    for (int64_t i = 0; i < t; ++i)  // distinct experts per token, expert 4 never chosen (zero tokens)
        for (int64_t j = 0; j < k; ++j) expert[static_cast<size_t>(i * k + j)] = int32_t((i + j) % 4);
    auto x = test::random_vec<double>(t * d, 2);
    auto w = test::random_vec<double>(t * k, 3);
    model::LocalDispatcher<double> disp(backend::cpu_backend().ops<double>(), e);
    auto& h = disp.dispatch(x.data(), expert.data(), t, k, e, d);
    EXPECT_EQ(h.tokens_per_local_expert[4], 0);
    EXPECT_EQ(std::accumulate(h.tokens_per_local_expert.begin(), h.tokens_per_local_expert.end(), int64_t(0)), t * k);
    std::vector<double> out(static_cast<size_t>(t * d), 0.0);
    disp.combine(out.data(), h.expert_rows, w.data());  // identity experts: y = x rows
    for (int64_t i = 0; i < t; ++i) {
        double wsum = 0;
        for (int64_t j = 0; j < k; ++j) wsum += w[static_cast<size_t>(i * k + j)];
        for (int64_t c = 0; c < d; ++c)
            EXPECT_NEAR(out[static_cast<size_t>(i * d + c)], wsum * x[static_cast<size_t>(i * d + c)], 1e-12);
    }
    // The gradient through the same path: d/dx of sum(out * g) = g * sum_k w, and d/dw_k = <g, x>.
    auto g = test::random_vec<double>(t * d, 4);
    std::vector<double> dy(static_cast<size_t>(h.num_expert_rows * d), 0.0), dw(static_cast<size_t>(t * k), 0.0),
        dx(static_cast<size_t>(t * d), 0.0);
    disp.combine_backward(dy.data(), dw.data(), g.data(), h.expert_rows, w.data());
    disp.dispatch_backward(dx.data(), dy.data());
    for (int64_t i = 0; i < t; ++i) {
        double wsum = 0, gx = 0;
        for (int64_t j = 0; j < k; ++j) wsum += w[static_cast<size_t>(i * k + j)];
        for (int64_t c = 0; c < d; ++c) {
            EXPECT_NEAR(dx[static_cast<size_t>(i * d + c)], wsum * g[static_cast<size_t>(i * d + c)], 1e-12);
            gx += g[static_cast<size_t>(i * d + c)] * x[static_cast<size_t>(i * d + c)];
        }
        for (int64_t j = 0; j < k; ++j) EXPECT_NEAR(dw[static_cast<size_t>(i * k + j)], gx, 1e-12);
    }
}

TEST(MoE, AnOverloadedExpertKeepsOnlyItsFirstCapacityTokensAndTheCountsAddUp) {
    ModelConfig cfg = moe_config(4, 2);
    cfg.moe.capacity_factor = 1.0;
    const int64_t t = 40, d = cfg.d_model, k = 2, e = 4;
    ParamStore store;
    model::MoELayer<float> moe(backend::cpu_backend().ops<float>(), store, cfg, "moe.");
    store.allocate(DType::kF32);
    store.init(9);
    moe.router().set_expert_bias({0.5f, 0.f, 0.f, 0.f});  // force overload of expert 0
    auto x = test::random_vec<float>(t * d, 10);
    std::vector<float> out(static_cast<size_t>(t * d));
    moe.forward(out.data(), x.data(), 1, t);
    const auto& st = moe.router().stats();
    const int64_t capacity = (t * k + e - 1) / e;
    int64_t processed = 0, selected = 0;
    for (int64_t j = 0; j < e; ++j) {
        EXPECT_LE(st.tokens_per_expert[static_cast<size_t>(j)], capacity);
        processed += st.tokens_per_expert[static_cast<size_t>(j)];
        selected += st.selected_per_expert[static_cast<size_t>(j)];
    }
    EXPECT_EQ(st.selected_per_expert[0], t);       // every token chose expert 0 ...
    EXPECT_EQ(st.tokens_per_expert[0], capacity);  // ... and only the first `capacity` kept it
    EXPECT_GT(st.dropped, 0);
    EXPECT_EQ(processed, t * k - st.dropped);  // sum(num_tokens_per_expert) == T*K - dropped
    EXPECT_EQ(selected, t * k);
    // Dropped assignments are the LATEST tokens: the first `capacity` tokens keep expert 0.
    for (int64_t i = 0; i < t; ++i) {
        bool kept = false;
        for (int64_t j = 0; j < k; ++j) kept |= moe.router().expert_TK()[i * k + j] == 0;
        EXPECT_EQ(kept, i < capacity) << "token " << i;
    }
}

TEST(MoE, GroupedExpertsMatchSequentialReferenceIncludingEmptyExperts) {
    ModelConfig cfg = moe_config(6, 2);
    cfg.d_model = 32;
    cfg.moe.d_expert = 48;
    ParamStore store;
    model::Experts<float> experts(backend::cpu_backend().ops<float>(), store, cfg, "experts.", 0, 6);
    store.allocate(DType::kF32);
    store.init(4);
    std::vector<int64_t> counts = {5, 0, 17, 1, 0, 9};
    const int64_t rows = 32;
    auto x = test::random_vec<float>(rows * 32, 5);
    std::vector<float> y_fast(static_cast<size_t>(rows * 32)), y_ref(y_fast.size());
    experts.forward(y_fast.data(), x.data(), counts);
    experts.forward_reference(y_ref.data(), x.data(), counts);
    test::expect_close(y_fast.data(), y_ref.data(), rows * 32, 1e-5, 1e-4, "grouped vs sequential experts");
    // All tokens on one expert, every other expert empty.
    std::vector<int64_t> one = {0, 0, 0, 32, 0, 0};
    experts.forward(y_fast.data(), x.data(), one);
    experts.forward_reference(y_ref.data(), x.data(), one);
    test::expect_close(y_fast.data(), y_ref.data(), rows * 32, 1e-5, 1e-4, "one busy expert");
}

TEST(MoE, ExpertShardHasTheSameWeightsAsTheFullLayer) {
    ModelConfig cfg = moe_config(8, 2);
    ParamStore full_store, shard_store;
    model::Experts<float> full(backend::cpu_backend().ops<float>(), full_store, cfg, "layers.1.moe.experts.", 0, 8);
    model::Experts<float> shard(backend::cpu_backend().ops<float>(), shard_store, cfg, "layers.1.moe.experts.", 4,
                                2);  // experts 4 and 5
    full_store.allocate(DType::kF32);
    shard_store.allocate(DType::kF32);
    full_store.init(42);
    shard_store.init(42);
    const int64_t per = 2 * cfg.moe.d_expert * cfg.d_model;
    const float* a = full.w13()->value.data<float>() + 4 * per;
    const float* b = shard.w13()->value.data<float>();
    for (int64_t i = 0; i < 2 * per; ++i) ASSERT_EQ(a[i], b[i]) << "w13 element " << i;
    EXPECT_EQ(shard.w13()->global_shape, full.w13()->shape);
}

TEST(MoE, StatisticsReportImbalance) {
    model::MoEStats st;
    st.reset(4);
    st.tokens_per_expert = {8, 0, 0, 0};
    EXPECT_DOUBLE_EQ(st.imbalance(), 4.0);
    st.tokens_per_expert = {2, 2, 2, 2};
    EXPECT_DOUBLE_EQ(st.imbalance(), 1.0);
}

// A fresh layer's forward and backward read nothing they have not written: two layers built and run the same way,
// each after freed memory was left full of a different poison, give bitwise the same outputs and input gradients.
// (The buffers are Tensors, 64-byte aligned as in training: Eigen's kernels may sum in another order at another
// alignment.)
TEST(MoE, FreshLayersGiveBitwiseTheSameOutputsAndGradients) {
    for (int64_t shared : {0, 1}) {
        ModelConfig cfg;
        cfg.d_model = 8;
        cfg.init_std = 0.3;
        cfg.moe.n_experts = 4;
        cfg.moe.top_k = 2;
        cfg.moe.d_expert = 6;
        cfg.moe.n_shared_experts = shared;
        const int64_t t = 7, d = cfg.d_model;
        Tensor x = Tensor::empty({t, d}, DType::kF64), dout = Tensor::empty({t, d}, DType::kF64);
        const std::vector<double> xv = test::random_vec<double>(t * d, 3), gv = test::random_vec<double>(t * d, 4);
        std::copy(xv.begin(), xv.end(), x.data<double>());
        std::copy(gv.begin(), gv.end(), dout.data<double>());
        auto run = [&](double poison) {
            {
                std::vector<std::vector<double>> junk;
                for (int i = 0; i < 64; ++i) junk.emplace_back(size_t(64 << (i % 6)), poison);
            }
            ParamStore store;
            model::MoELayer<double> moe(backend::cpu_backend().ops<double>(), store, cfg, "moe.");
            store.allocate(DType::kF64);
            store.init(11);
            Tensor out = Tensor::zeros({t, d}, DType::kF64), dx = Tensor::zeros({t, d}, DType::kF64);
            moe.forward(out.data<double>(), x.data<double>(), 1, t);
            moe.backward(dx.data<double>(), dout.data<double>(), x.data<double>(), 1, t, 1.0);
            std::vector<double> res(out.data<double>(), out.data<double>() + t * d);
            res.insert(res.end(), dx.data<double>(), dx.data<double>() + t * d);
            return res;
        };
        EXPECT_EQ(run(1e30), run(-7.0)) << "shared experts " << shared;
    }
}

}  // namespace
}  // namespace frugal
