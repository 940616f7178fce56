// The CUDA router, dispatch-permutation and token launchers (backend/cuda/moe.h) against the CPU backend
// (backend::cpu_backend()) on random inputs of ragged shapes, op by op: every launcher gets the inputs the CPU got, so
// a step is judged by itself. Tolerances: exact for the selection, the routing integers, the token checks, the
// weights, the gradients through the weights, the balancing loss's gradient, the scores' backward, the permutation and
// the combine; the scores within 1e-5 relative, lse within 4e-6 and the z-loss gradient within 1e-6 of
// max(|value|, 1) (CUDA's expf and logf against glibc's, a few ulps); the balancing loss within 1e-13 relative
// (chunked double sums); combine_backward's dweight within 1e-5 of sum |dout row| (a tree-ordered dot product). The
// largest absolute and relative error of each comparison is printed. Without a GPU every test skips with the CUDA
// runtime's reason.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/allocator.h"
#include "backend/cuda/check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/moe.h"
#include "core/error.h"
#include "tests/cuda/gpu_test_util.h"
#include "tests/cuda/moe_inputs.h"

namespace frugal {
namespace {

using cuda_test::DeviceBuffer;

using backend::ScoreFunc;
using moe_test::expect_close;
using moe_test::expect_same_bits;
using moe_test::kRouterShapes;
using moe_test::kSeed;

std::string tag(const char* op, const moe_test::RouterShape& s) {
    return std::string(op) + " T" + std::to_string(s.t) + " E" + std::to_string(s.e) + " K" + std::to_string(s.k);
}
const ScoreFunc kFuncs[] = {ScoreFunc::kSoftmax, ScoreFunc::kSigmoid};
const char* func_name(ScoreFunc f) { return f == ScoreFunc::kSoftmax ? " softmax" : " sigmoid"; }

class CudaMoe : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string why;
        if (cuda::cuda_device_count(&why) == 0) GTEST_SKIP() << "needs a GPU: " << why;
        device_ = cuda::select_device(0);
        FRUGAL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
        alloc_ = std::make_unique<cuda::CudaAllocator>(device_, stream_);
    }
    void TearDown() override {
        alloc_.reset();
        if (stream_) (void)cudaStreamDestroy(stream_);
    }
    void sync() { FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

    const backend::Ops<float>& cpu() const { return backend::cpu_backend().ops<float>(); }

    int device_ = 0;
    cudaStream_t stream_ = nullptr;
    std::unique_ptr<cuda::CudaAllocator> alloc_;
};

TEST_F(CudaMoe, ScoresMatchTheCpuWithinAFewUlps) {
    for (const auto& s : kRouterShapes)
        for (ScoreFunc f : kFuncs) {
            const auto logits = moe_test::normal_floats(s.t * s.e, 3.0f, kSeed);
            std::vector<float> want(logits.size()), want_lse(size_t(s.t));
            cpu().router_scores_forward(want.data(), want_lse.data(), logits.data(), f, s.t, s.e);
            DeviceBuffer<float> l(logits), sc(logits.size()), lse(size_t(s.t));
            cuda::router_scores_forward(stream_, sc.get(), lse.get(), l.get(), f, s.t, s.e);
            expect_close(sc.download(), want, 1e-5, 1e-30, tag("scores", s) + func_name(f));
            expect_close(lse.download(), want_lse, 4e-6, 1.0, tag("lse", s) + func_name(f));
        }
}

TEST_F(CudaMoe, SelectionAndWeightsEqualTheCpu) {
    for (const auto& s : kRouterShapes) {
        const auto scores = moe_test::tied_scores(s.t * s.e, kSeed + 1);
        std::vector<float> bias = moe_test::normal_floats(s.e, 0.01f, kSeed + 2);
        for (size_t j = 0; j < bias.size(); j += 2) bias[j] = 0.0f;
        std::vector<int32_t> want(size_t(s.t * s.k));
        std::vector<double> want_keys(scores.size());
        cpu().router_select_forward(want.data(), want_keys.data(), scores.data(), bias.data(), s.t, s.e, s.k, 1, 1,
                                    backend::GroupScore::kTop2Sum);
        DeviceBuffer<float> sc(scores), b(bias);
        DeviceBuffer<int32_t> sel(want.size());
        DeviceBuffer<double> keys(scores.size());
        cuda::router_select_forward(stream_, sel.get(), keys.get(), sc.get(), b.get(), s.t, s.e, s.k, 1, 1,
                                    backend::GroupScore::kTop2Sum);
        EXPECT_EQ(sel.download(), want) << tag("select", s) << " (seed " << kSeed << ")";
        EXPECT_EQ(keys.download(), want_keys) << tag("keys", s);

        for (bool renorm : {false, true}) {
            std::vector<float> want_w(want.size());
            cpu().router_weights_forward(want_w.data(), scores.data(), want.data(), renorm, 2.5, s.t, s.e, s.k);
            DeviceBuffer<float> w(want_w.size());
            cuda::router_weights_forward(stream_, w.get(), sc.get(), sel.get(), renorm, 2.5, s.t, s.e, s.k);
            expect_same_bits(w.download(), want_w, tag("weights", s) + (renorm ? " renormalized" : ""));

            const auto dw = moe_test::normal_floats(s.t * s.k, 1.0f, kSeed + 3);
            std::vector<float> want_ds = moe_test::normal_floats(s.t * s.e, 1.0f, kSeed + 4);
            DeviceBuffer<float> ds(want_ds), d_w(dw);
            cpu().router_weights_backward(want_ds.data(), dw.data(), scores.data(), want.data(), renorm, 2.5, s.t, s.e,
                                          s.k);
            cuda::router_weights_backward(stream_, ds.get(), d_w.get(), sc.get(), sel.get(), renorm, 2.5, s.t, s.e,
                                          s.k);
            expect_same_bits(ds.download(), want_ds, tag("weights backward", s) + (renorm ? " renormalized" : ""));
        }
    }
}

TEST_F(CudaMoe, BalancingLossAndItsGradientMatchTheCpu) {
    for (const auto& s : kRouterShapes)
        for (ScoreFunc f : kFuncs)
            for (int64_t groups : {int64_t(1), s.t % 3 == 0 ? int64_t(3) : s.t}) {
                const std::string what = tag("aux", s) + func_name(f) + " G" + std::to_string(groups);
                const auto logits = moe_test::normal_floats(s.t * s.e, 2.0f, kSeed + 5);
                std::vector<float> scores(logits.size()), lse(size_t(s.t));
                cpu().router_scores_forward(scores.data(), lse.data(), logits.data(), f, s.t, s.e);
                const auto sel = moe_test::random_selection(s.t, s.e, s.k, kSeed + 6);
                std::vector<double> want_sum(size_t(s.t));
                const double want = cpu().router_aux_loss_forward(want_sum.data(), scores.data(), sel.data(), f, 0.01,
                                                                  groups, s.t, s.e, s.k);
                DeviceBuffer<float> sc(scores);
                DeviceBuffer<int32_t> se(sel);
                DeviceBuffer<double> sum(size_t(s.t));
                const double got = cuda::router_aux_loss_forward(stream_, sum.get(), sc.get(), se.get(), f, 0.01,
                                                                 groups, s.t, s.e, s.k, *alloc_);
                const double again = cuda::router_aux_loss_forward(stream_, sum.get(), sc.get(), se.get(), f, 0.01,
                                                                   groups, s.t, s.e, s.k, *alloc_);
                std::printf("%-48s %.17g against %.17g, rel %.3e\n", what.c_str(), got, want,
                            std::fabs(got - want) / std::fabs(want));
                EXPECT_LE(std::fabs(got - want), 1e-13 * std::fabs(want)) << what << " (seed " << kSeed << ")";
                EXPECT_EQ(got, again) << what << ": two runs differ";
                if (f == ScoreFunc::kSigmoid) {
                    EXPECT_EQ(sum.download(), want_sum) << what;
                }

                std::vector<float> want_ds = moe_test::normal_floats(s.t * s.e, 1.0f, kSeed + 7);
                std::vector<float> want_aux(size_t(groups * s.e));
                DeviceBuffer<float> ds(want_ds), aux(want_aux.size());
                cpu().router_aux_loss_backward(want_ds.data(), want_aux.data(), scores.data(), sel.data(), f, 0.01,
                                               0.75f, groups, s.t, s.e, s.k);
                cuda::router_aux_loss_backward(stream_, ds.get(), aux.get(), sc.get(), se.get(), f, 0.01, 0.75f, groups,
                                               s.t, s.e, s.k, *alloc_);
                expect_same_bits(aux.download(), want_aux, what + " d_aux");
                expect_same_bits(ds.download(), want_ds, what + " backward");
            }
}

TEST_F(CudaMoe, ScoresBackwardAndTheZLossMatchTheCpu) {
    for (const auto& s : kRouterShapes) {
        const auto logits = moe_test::normal_floats(s.t * s.e, 3.0f, kSeed + 8);
        const auto d_scores = moe_test::normal_floats(s.t * s.e, 1.0f, kSeed + 9);
        DeviceBuffer<float> l(logits), dsc(d_scores);
        std::vector<float> lse(size_t(s.t));
        for (ScoreFunc f : kFuncs) {
            std::vector<float> scores(logits.size()), want(logits.size());
            cpu().router_scores_forward(scores.data(), lse.data(), logits.data(), f, s.t, s.e);
            cpu().router_scores_backward(want.data(), d_scores.data(), scores.data(), f, s.t, s.e);
            DeviceBuffer<float> sc(scores), dl(std::vector<float>(logits.size(), 123.0f));
            cuda::router_scores_backward(stream_, dl.get(), dsc.get(), sc.get(), f, s.t, s.e);
            expect_same_bits(dl.download(), want, tag("scores backward", s) + func_name(f));
        }
        // lse is the sigmoid pass's, the same function of the logits as the softmax pass's.
        DeviceBuffer<float> ls(lse);
        const double want_z = cpu().router_z_loss_forward(lse.data(), 0.001, s.t);
        EXPECT_EQ(cuda::router_z_loss_forward(stream_, ls.get(), 0.001, s.t), want_z) << tag("z loss", s);

        std::vector<float> want = moe_test::normal_floats(s.t * s.e, 1.0f, kSeed + 10);
        DeviceBuffer<float> dl(want);
        cpu().router_z_loss_backward(want.data(), logits.data(), lse.data(), 0.001, 0.5f, s.t, s.e);
        cuda::router_z_loss_backward(stream_, dl.get(), l.get(), ls.get(), 0.001, 0.5f, s.t, s.e);
        expect_close(dl.download(), want, 1e-6, 1.0, tag("z loss backward", s));
    }
}

struct DispatchShape {
    int64_t t, k, e, d;
};
const DispatchShape kDispatchShapes[] = {
    {1, 1, 1, 1}, {5, 2, 4, 3}, {33, 2, 8, 256}, {17, 4, 6, 1000}, {300, 8, 64, 72}};

TEST_F(CudaMoe, RoutingIntegersAndTheCombineEqualTheCpu) {
    backend::Backend& cpu_be = backend::cpu_backend();
    for (const auto& s : kDispatchShapes) {
        const std::string what =
            "dispatch T" + std::to_string(s.t) + " K" + std::to_string(s.k) + " D" + std::to_string(s.d);
        const auto sel = moe_test::random_selection(s.t, s.e, s.k, kSeed + 11);
        const int64_t capacity = std::max<int64_t>(1, s.t * s.k / s.e - 1);
        const size_t tk = sel.size();

        // Capacity, then the permutation of what it kept.
        std::vector<int32_t> want_expert(tk);
        std::vector<int64_t> want_kept(size_t(s.e)), want_sel(size_t(s.e)), got_kept(size_t(s.e)), got_sel(size_t(s.e));
        const int64_t want_dropped = cpu_be.router_capacity(want_expert.data(), want_kept.data(), want_sel.data(),
                                                            sel.data(), capacity, s.t, s.k, s.e);
        DeviceBuffer<int32_t> d_sel(sel), d_expert(tk);
        const int64_t got_dropped = cuda::router_capacity(stream_, d_expert.get(), got_kept.data(), got_sel.data(),
                                                          d_sel.get(), capacity, s.t, s.k, s.e);
        EXPECT_EQ(got_dropped, want_dropped) << what;
        EXPECT_EQ(d_expert.download(), want_expert) << what;
        EXPECT_EQ(got_kept, want_kept) << what;
        EXPECT_EQ(got_sel, want_sel) << what;

        std::vector<int32_t> row_of(tk), token_of_row(tk);
        std::vector<int64_t> want_n(size_t(s.e)), want_off(size_t(s.e + 1)), got_n(size_t(s.e)),
            got_off(size_t(s.e + 1));
        const int64_t r = cpu_be.build_permutation(row_of.data(), token_of_row.data(), want_n.data(), want_off.data(),
                                                   want_expert.data(), s.t, s.k, s.e);
        DeviceBuffer<int32_t> d_row_of(tk), d_token_of_row(tk);
        EXPECT_EQ(cuda::build_permutation(stream_, d_row_of.get(), d_token_of_row.get(), got_n.data(), got_off.data(),
                                          d_expert.get(), s.t, s.k, s.e),
                  r)
            << what;
        EXPECT_EQ(d_row_of.download(), row_of) << what;
        std::vector<int32_t> got_tor = d_token_of_row.download();
        got_tor.resize(size_t(r));
        EXPECT_EQ(got_tor, std::vector<int32_t>(token_of_row.begin(), token_of_row.begin() + r)) << what;
        EXPECT_EQ(got_n, want_n) << what;
        EXPECT_EQ(got_off, want_off) << what;

        std::vector<float> want_bias = moe_test::normal_floats(s.e, 0.1f, kSeed + 12);
        DeviceBuffer<float> d_bias(want_bias);
        cpu_be.router_bias_update(want_bias.data(), want_sel.data(), 1e-3, s.e);
        cuda::router_bias_update(stream_, d_bias.get(), want_sel.data(), 1e-3, s.e);
        expect_same_bits(d_bias.download(), want_bias, what + " bias update");

        // The rows and their combine, forward and backward.
        const auto x = moe_test::normal_floats(s.t * s.d, 1.0f, kSeed + 13);
        const auto weight = moe_test::normal_floats(s.t * s.k, 1.0f, kSeed + 14);
        const auto dout = moe_test::normal_floats(s.t * s.d, 1.0f, kSeed + 15);
        DeviceBuffer<float> d_x(x), d_weight(weight), d_dout(dout), d_rows(size_t(r * s.d));
        std::vector<float> rows(size_t(r * s.d));
        cpu().permute_rows(rows.data(), x.data(), token_of_row.data(), r, s.d);
        cuda::permute_rows(stream_, d_rows.get(), d_x.get(), d_token_of_row.get(), r, s.d);
        expect_same_bits(d_rows.download(), rows, what + " permute");

        std::vector<float> want_dx = moe_test::normal_floats(s.t * s.d, 1.0f, kSeed + 16);
        DeviceBuffer<float> d_dx(want_dx);
        cpu().permute_rows_backward(want_dx.data(), rows.data(), row_of.data(), s.t, s.k, s.d);
        cuda::permute_rows_backward(stream_, d_dx.get(), d_rows.get(), d_row_of.get(), s.t, s.k, s.d);
        expect_same_bits(d_dx.download(), want_dx, what + " permute backward");

        std::vector<float> want_out = moe_test::normal_floats(s.t * s.d, 1.0f, kSeed + 17);
        DeviceBuffer<float> d_out(want_out);
        cpu().unpermute_combine(want_out.data(), rows.data(), weight.data(), row_of.data(), s.t, s.k, s.d);
        cuda::unpermute_combine(stream_, d_out.get(), d_rows.get(), d_weight.get(), d_row_of.get(), s.t, s.k, s.d);
        expect_same_bits(d_out.download(), want_out, what + " combine");

        const auto drows0 = moe_test::normal_floats(r * s.d, 1.0f, kSeed + 18);
        const auto dw0 = moe_test::normal_floats(s.t * s.k, 1.0f, kSeed + 19);
        std::vector<float> want_drows = drows0, want_dw = dw0;
        cpu().unpermute_combine_backward(want_drows.data(), want_dw.data(), dout.data(), rows.data(), weight.data(),
                                         row_of.data(), s.t, s.k, s.d);
        std::vector<float> got_dw[2];
        for (int run = 0; run < 2; ++run) {
            DeviceBuffer<float> d_drows(drows0), d_dw(dw0);
            cuda::unpermute_combine_backward(stream_, d_drows.get(), d_dw.get(), d_dout.get(), d_rows.get(),
                                             d_weight.get(), d_row_of.get(), s.t, s.k, s.d);
            expect_same_bits(d_drows.download(), want_drows, what + " combine backward drows");
            got_dw[run] = d_dw.download();
        }
        EXPECT_EQ(got_dw[0], got_dw[1]) << what << ": two runs of combine backward differ";
        double worst = 0;
        for (size_t i = 0; i < tk; ++i) {
            const int64_t row = row_of[i], t = int64_t(i) / s.k;
            double scale = std::fabs(double(want_dw[i]));
            if (row >= 0)
                for (int64_t c = 0; c < s.d; ++c)
                    scale += std::fabs(double(dout[size_t(t * s.d + c)]) * double(rows[size_t(row * s.d + c)]));
            worst = std::max(worst, std::fabs(double(got_dw[0][i]) - double(want_dw[i])) / std::max(scale, 1.0));
        }
        std::printf("%-48s max |error| / (sum |dout row| + |dweight|) %.3e\n", (what + " combine backward dw").c_str(),
                    worst);
        EXPECT_LE(worst, 1e-5) << what << " (seed " << kSeed << ")";
    }
}

TEST_F(CudaMoe, TokensArePreparedAsOnTheCpuAndBadOnesRefusedWithItsMessage) {
    const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6}, targets = {2, -100, 4, 5, 6, 0};
    const std::vector<int32_t> starts = {0, 0, 2, 0, 1, 1};
    std::vector<int32_t> want[4];
    for (auto& w : want) w.resize(tokens.size());
    const int64_t want_valid =
        backend::cpu_backend().prepare_tokens(want[0].data(), want[1].data(), want[2].data(), want[3].data(),
                                              tokens.data(), targets.data(), starts.data(), 6, 3, 10, -100);
    DeviceBuffer<int32_t> out[4] = {DeviceBuffer<int32_t>(6), DeviceBuffer<int32_t>(6), DeviceBuffer<int32_t>(6),
                                    DeviceBuffer<int32_t>(6)};
    EXPECT_EQ(cuda::prepare_tokens(stream_, out[0].get(), out[1].get(), out[2].get(), out[3].get(), tokens.data(),
                                   targets.data(), starts.data(), 6, 3, 10, -100),
              want_valid);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i].download(), want[i]) << "output " << i;

    const std::vector<int32_t> bad = {1, 2, 10, 4, 5, 6};
    try {
        cuda::prepare_tokens(stream_, out[0].get(), out[1].get(), out[2].get(), out[3].get(), bad.data(),
                             targets.data(), nullptr, 6, 3, 10, -100);
        FAIL() << "token 10 of a vocabulary of 10 was accepted";
    } catch (const Error& err) {
        EXPECT_NE(std::string(err.what()).find("token id 10 at position 2 is outside the vocabulary [0, 10)"),
                  std::string::npos)
            << err.what();
    }
}

}  // namespace
}  // namespace frugal
