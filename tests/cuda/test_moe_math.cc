// backend/cuda/moe_math.h (the CUDA router and dispatch kernels' per-row arithmetic and host steps, compiled here for
// the host) against the CPU kernels (backend/cpu/router.h, moe.h, ops.h) on random inputs of ragged shapes. The
// kernels' own loops are restated around the row functions (one row per token, the aux-loss chunks of kAuxChunk
// tokens, the 256-thread tree of combine_backward), so what is checked is what a GPU computes but for expf/logf.
// Tolerances: bit for bit wherever the order of operations is the CPU's; the aux loss's chunked double sums within
// 1e-13 relative; combine_backward's tree-ordered dot product within 1e-5 of sum |dout * row|. Runs without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/cpu/moe.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/router.h"
#include "backend/cuda/moe.h"
#include "backend/cuda/moe_math.h"
#include "core/error.h"
#include "tests/cuda/moe_inputs.h"

namespace frugal {
namespace {

namespace moe = cuda::moe;
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

TEST(CudaMoeMath, ScoresRowsEqualTheCpuBitForBit) {
    for (const auto& s : kRouterShapes)
        for (ScoreFunc f : kFuncs) {
            const auto logits = moe_test::normal_floats(s.t * s.e, 3.0f, kSeed + uint64_t(s.e));
            std::vector<float> want(logits.size()), got(logits.size()), want_lse(size_t(s.t)), got_lse(size_t(s.t));
            backend::cpu::router_scores_forward(want.data(), want_lse.data(), logits.data(), f, s.t, s.e);
            for (int64_t i = 0; i < s.t; ++i)
                moe::scores_row(got.data() + i * s.e, &got_lse[size_t(i)], logits.data() + i * s.e,
                                f == ScoreFunc::kSoftmax, s.e);
            expect_same_bits(got, want, tag("scores", s) + func_name(f));
            expect_same_bits(got_lse, want_lse, tag("lse", s) + func_name(f));
        }
}

TEST(CudaMoeMath, SelectionEqualsTheCpuAndBreaksTiesTowardTheLowerExpert) {
    for (const auto& s : kRouterShapes) {
        const auto scores = moe_test::tied_scores(s.t * s.e, kSeed + uint64_t(s.t));
        // Half the experts get a bias of 0 (ties stay ties), the others a small one.
        std::vector<float> bias = moe_test::normal_floats(s.e, 0.01f, kSeed);
        for (size_t j = 0; j < bias.size(); j += 2) bias[j] = 0.0f;
        std::vector<int32_t> want(size_t(s.t * s.k)), got(want.size());
        std::vector<double> want_keys(scores.size()), got_keys(scores.size());
        backend::cpu::router_select_forward(want.data(), want_keys.data(), scores.data(), bias.data(), s.t, s.e, s.k, 1,
                                            1, backend::GroupScore::kTop2Sum);
        for (int64_t i = 0; i < s.t; ++i)
            moe::select_row(got.data() + i * s.k, got_keys.data() + i * s.e, scores.data() + i * s.e, bias.data(), s.e,
                            s.k, 1, 1, true);
        EXPECT_EQ(got, want) << tag("select", s) << " (seed " << kSeed << ")";
        EXPECT_EQ(got_keys, want_keys) << tag("keys", s);
    }
    // All keys equal: the first k experts in index order.
    const std::vector<double> flat(5, 0.25);
    int32_t top[3];
    moe::topk_row(top, flat.data(), 5, 3);
    EXPECT_EQ(std::vector<int32_t>(top, top + 3), (std::vector<int32_t>{0, 1, 2}));
}

TEST(CudaMoeMath, GroupLimitedSelectionEqualsTheCpuInBothGroupScores) {
    struct GroupShape {
        int64_t t, e, k, n_group, topk_group;
    };
    // DeepSeek-V3's 8 groups choosing 4 of 256 experts; one expert per group (max only); a single group kept; all
    // groups kept (no exclusion); the 64-group limit.
    const GroupShape shapes[] = {{70, 256, 8, 8, 4}, {129, 8, 2, 4, 2}, {50, 16, 4, 16, 4},
                                 {37, 12, 3, 3, 1},  {40, 6, 2, 2, 2},  {20, 128, 6, 64, 5}};
    for (const auto& s : shapes)
        for (backend::GroupScore how : {backend::GroupScore::kTop2Sum, backend::GroupScore::kMax})
            for (bool tied : {false, true}) {
                if (how == backend::GroupScore::kTop2Sum && s.e / s.n_group < 2) continue;
                const uint64_t seed = kSeed + uint64_t(s.e * 7 + s.n_group);
                const auto scores =
                    tied ? moe_test::tied_scores(s.t * s.e, seed) : moe_test::normal_floats(s.t * s.e, 1.0f, seed);
                std::vector<float> bias = moe_test::normal_floats(s.e, tied ? 0.0f : 0.05f, seed + 1);
                std::vector<int32_t> want(size_t(s.t * s.k)), got(want.size());
                std::vector<double> want_keys(scores.size()), got_keys(scores.size());
                backend::cpu::router_select_forward(want.data(), want_keys.data(), scores.data(), bias.data(), s.t, s.e,
                                                    s.k, s.n_group, s.topk_group, how);
                for (int64_t i = 0; i < s.t; ++i)
                    moe::select_row(got.data() + i * s.k, got_keys.data() + i * s.e, scores.data() + i * s.e,
                                    bias.data(), s.e, s.k, s.n_group, s.topk_group,
                                    how == backend::GroupScore::kTop2Sum);
                const std::string what = tag("grouped select", moe_test::RouterShape{s.t, s.e, s.k}) + " G" +
                                         std::to_string(s.n_group) + " top " + std::to_string(s.topk_group) +
                                         (how == backend::GroupScore::kMax ? " max" : " top2_sum") +
                                         (tied ? " tied" : "");
                EXPECT_EQ(got, want) << what << " (seed " << seed << ")";
                EXPECT_EQ(got_keys, want_keys) << what;
                if (s.topk_group < s.n_group) {
                    int64_t excluded = 0;
                    for (double x : got_keys) excluded += std::isinf(x);
                    EXPECT_EQ(excluded, s.t * (s.n_group - s.topk_group) * (s.e / s.n_group))
                        << what << ": every token excludes the experts of n_group - topk_group groups";
                }
            }
}

TEST(CudaMoeMath, WeightsAndTheirBackwardEqualTheCpuBitForBit) {
    for (const auto& s : kRouterShapes)
        for (bool renorm : {false, true}) {
            const auto logits = moe_test::normal_floats(s.t * s.e, 2.0f, kSeed + 1);
            std::vector<float> scores(logits.size()), lse(size_t(s.t));
            backend::cpu::router_scores_forward(scores.data(), lse.data(), logits.data(), ScoreFunc::kSigmoid, s.t,
                                                s.e);
            const auto sel = moe_test::random_selection(s.t, s.e, s.k, kSeed + 2);
            const double scale = 2.5;
            std::vector<float> want(sel.size()), got(sel.size());
            backend::cpu::router_weights_forward(want.data(), scores.data(), sel.data(), renorm, scale, s.t, s.e, s.k);
            for (int64_t i = 0; i < s.t; ++i)
                moe::weights_row(got.data() + i * s.k, scores.data() + i * s.e, sel.data() + i * s.k, renorm,
                                 float(scale), s.k);
            const std::string r = renorm ? " renormalized" : "";
            expect_same_bits(got, want, tag("weights", s) + r);

            const auto dw = moe_test::normal_floats(s.t * s.k, 1.0f, kSeed + 3);
            std::vector<float> want_ds = moe_test::normal_floats(s.t * s.e, 1.0f, kSeed + 4), got_ds = want_ds;
            backend::cpu::router_weights_backward(want_ds.data(), dw.data(), scores.data(), sel.data(), renorm, scale,
                                                  s.t, s.e, s.k);
            for (int64_t i = 0; i < s.t; ++i)
                moe::weights_backward_row(got_ds.data() + i * s.e, dw.data() + i * s.k, scores.data() + i * s.e,
                                          sel.data() + i * s.k, renorm, float(scale), s.k);
            expect_same_bits(got_ds, want_ds, tag("weights backward", s) + r);
        }
}

// The kernels' aux-loss sums: per (group, chunk, expert) partials, then each group's chunks in order.
struct AuxSums {
    std::vector<int64_t> count_GE;
    std::vector<double> p_GE;
};
AuxSums chunked_aux_sums(const std::vector<float>& scores, const double* score_sum_T, const std::vector<int32_t>& sel,
                         int64_t groups, int64_t t, int64_t e, int64_t k) {
    const int64_t per = t / groups, chunks = (per + cuda::kAuxChunk - 1) / cuda::kAuxChunk;
    AuxSums s{std::vector<int64_t>(size_t(groups * e), 0), std::vector<double>(size_t(groups * e), 0.0)};
    for (int64_t g = 0; g < groups; ++g)
        for (int64_t c = 0; c < chunks; ++c) {
            const int64_t begin = g * per + c * cuda::kAuxChunk;
            const int64_t end = std::min(begin + cuda::kAuxChunk, (g + 1) * per);
            for (int64_t j = 0; j < e; ++j) {
                double p = 0;
                int64_t n = 0;
                moe::aux_chunk_expert(&p, &n, scores.data(), score_sum_T, sel.data(), begin, end, j, e, k);
                s.p_GE[size_t(g * e + j)] = moe::dadd(s.p_GE[size_t(g * e + j)], p);
                s.count_GE[size_t(g * e + j)] += n;
            }
        }
    return s;
}

TEST(CudaMoeMath, AuxLossFromChunkedSumsMatchesTheCpuWithin1e13) {
    for (const auto& s : kRouterShapes)
        for (ScoreFunc f : kFuncs)
            for (int64_t groups : {int64_t(1), s.t % 3 == 0 ? int64_t(3) : s.t}) {
                const auto logits = moe_test::normal_floats(s.t * s.e, 2.0f, kSeed + 5);
                std::vector<float> scores(logits.size()), lse(size_t(s.t));
                backend::cpu::router_scores_forward(scores.data(), lse.data(), logits.data(), f, s.t, s.e);
                const auto sel = moe_test::random_selection(s.t, s.e, s.k, kSeed + 6);
                double want = 0;
                std::vector<double> want_sum(size_t(s.t)), got_sum(size_t(s.t));
                backend::cpu::router_aux_loss_forward(&want, want_sum.data(), scores.data(), sel.data(), f, 0.01,
                                                      groups, s.t, s.e, s.k);
                const bool softmax = f == ScoreFunc::kSoftmax;
                for (int64_t i = 0; i < s.t; ++i) got_sum[size_t(i)] = moe::score_sum_row(scores.data() + i * s.e, s.e);
                if (!softmax) {
                    EXPECT_EQ(got_sum, want_sum) << tag("score sums", s);
                }
                const AuxSums sums =
                    chunked_aux_sums(scores, softmax ? nullptr : got_sum.data(), sel, groups, s.t, s.e, s.k);
                const double got = moe::aux_loss_from_sums(sums.count_GE.data(), sums.p_GE.data(), 0.01, groups,
                                                           s.t / groups, s.e, s.k);
                const double rel = std::fabs(got - want) / std::fabs(want);
                std::printf("%-48s %.17g against %.17g, rel %.3e\n",
                            (tag("aux loss", s) + func_name(f) + " G" + std::to_string(groups)).c_str(), got, want,
                            rel);
                EXPECT_LE(rel, 1e-13) << tag("aux loss", s) << " G" << groups << " (seed " << kSeed << ")";
            }
}

TEST(CudaMoeMath, AuxLossBackwardEqualsTheCpuBitForBit) {
    for (const auto& s : kRouterShapes)
        for (ScoreFunc f : kFuncs)
            for (int64_t groups : {int64_t(1), s.t % 3 == 0 ? int64_t(3) : s.t}) {
                const auto logits = moe_test::normal_floats(s.t * s.e, 2.0f, kSeed + 7);
                std::vector<float> scores(logits.size()), lse(size_t(s.t));
                backend::cpu::router_scores_forward(scores.data(), lse.data(), logits.data(), f, s.t, s.e);
                const auto sel = moe_test::random_selection(s.t, s.e, s.k, kSeed + 8);
                const float aux_scale = 0.75f;
                std::vector<float> want_ds = moe_test::normal_floats(s.t * s.e, 1.0f, kSeed + 9), got_ds = want_ds;
                std::vector<float> want_aux(size_t(groups * s.e)), got_aux(want_aux.size());
                backend::cpu::router_aux_loss_backward(want_ds.data(), want_aux.data(), scores.data(), sel.data(), f,
                                                       0.01, aux_scale, groups, s.t, s.e, s.k);
                const int64_t per = s.t / groups;
                const AuxSums sums = chunked_aux_sums(scores, nullptr, sel, groups, s.t, s.e, s.k);
                const float factor = moe::aux_grad_factor(0.01, aux_scale, groups, per, s.e, s.k);
                for (size_t i = 0; i < got_aux.size(); ++i) got_aux[i] = moe::mul(float(sums.count_GE[i]), factor);
                for (int64_t i = 0; i < s.t; ++i)
                    moe::aux_backward_row(got_ds.data() + i * s.e, scores.data() + i * s.e,
                                          got_aux.data() + (i / per) * s.e, f == ScoreFunc::kSoftmax, s.e);
                const std::string what = tag("aux backward", s) + func_name(f) + " G" + std::to_string(groups);
                expect_same_bits(got_aux, want_aux, what + " d_aux");
                expect_same_bits(got_ds, want_ds, what);
            }
}

TEST(CudaMoeMath, ScoresBackwardAndTheZLossEqualTheCpuBitForBit) {
    for (const auto& s : kRouterShapes) {
        const auto logits = moe_test::normal_floats(s.t * s.e, 3.0f, kSeed + 10);
        const auto ds = moe_test::normal_floats(s.t * s.e, 1.0f, kSeed + 11);
        for (ScoreFunc f : kFuncs) {
            std::vector<float> scores(logits.size()), lse(size_t(s.t));
            backend::cpu::router_scores_forward(scores.data(), lse.data(), logits.data(), f, s.t, s.e);
            std::vector<float> want(logits.size()), got(logits.size(), 123.0f);
            backend::cpu::router_scores_backward(want.data(), ds.data(), scores.data(), f, s.t, s.e);
            for (int64_t i = 0; i < s.t; ++i)
                moe::scores_backward_row(got.data() + i * s.e, ds.data() + i * s.e, scores.data() + i * s.e,
                                         f == ScoreFunc::kSoftmax, s.e);
            expect_same_bits(got, want, tag("scores backward", s) + func_name(f));
        }
        std::vector<float> scores(logits.size()), lse(size_t(s.t));
        backend::cpu::router_scores_forward(scores.data(), lse.data(), logits.data(), ScoreFunc::kSoftmax, s.t, s.e);
        double want_z = 0;
        backend::cpu::router_z_loss_forward(&want_z, lse.data(), 0.001, s.t);
        EXPECT_EQ(moe::z_loss_sum(lse.data(), 0.001, s.t), want_z) << tag("z loss", s);

        std::vector<float> want = moe_test::normal_floats(s.t * s.e, 1.0f, kSeed + 12), got = want;
        backend::cpu::router_z_loss_backward(want.data(), logits.data(), lse.data(), 0.001, 0.5f, s.t, s.e);
        const float c0 = moe::z_grad_factor(0.001, 0.5f, s.t);
        for (int64_t x = 0; x < s.t * s.e; ++x)
            moe::z_loss_backward_element(&got[size_t(x)], logits[size_t(x)], lse[size_t(x / s.e)], c0);
        expect_same_bits(got, want, tag("z loss backward", s));
    }
}

struct DispatchShape {
    int64_t t, k, e, d;
};
// D below, at and above the combine block's 256 threads, and ragged.
const DispatchShape kDispatchShapes[] = {{1, 1, 1, 1}, {5, 2, 4, 3}, {33, 2, 8, 256}, {17, 4, 6, 1000}};

TEST(CudaMoeMath, CombineAndPermuteBackwardEqualTheCpuAndTheDotIsWithinTolerance) {
    for (const auto& s : kDispatchShapes) {
        const std::string what =
            "dispatch T" + std::to_string(s.t) + " K" + std::to_string(s.k) + " D" + std::to_string(s.d);
        const auto expert = moe_test::with_drops(moe_test::random_selection(s.t, s.e, s.k, kSeed + 13), kSeed + 14);
        std::vector<int32_t> row_of(expert.size()), token_of_row(expert.size());
        std::vector<int64_t> per_expert(size_t(s.e)), offset(size_t(s.e + 1));
        const int64_t r = backend::cpu::build_permutation(row_of.data(), token_of_row.data(), per_expert.data(),
                                                          offset.data(), expert.data(), s.t, s.k, s.e);
        const auto rows = moe_test::normal_floats(r * s.d, 1.0f, kSeed + 15);
        const auto weight = moe_test::normal_floats(s.t * s.k, 1.0f, kSeed + 16);
        const auto dout = moe_test::normal_floats(s.t * s.d, 1.0f, kSeed + 17);

        // unpermute_combine: per element, the token's choices in order.
        std::vector<float> want = moe_test::normal_floats(s.t * s.d, 1.0f, kSeed + 18), got = want;
        backend::cpu::unpermute_combine(want.data(), rows.data(), weight.data(), row_of.data(), s.t, s.k, s.d);
        for (int64_t i = 0; i < s.t; ++i)
            for (int64_t x = 0; x < s.d; ++x)
                for (int64_t j = 0; j < s.k; ++j)
                    if (const int32_t row = row_of[size_t(i * s.k + j)]; row >= 0)
                        moe::combine_element(&got[size_t(i * s.d + x)], weight[size_t(i * s.k + j)],
                                             rows[size_t(row * s.d + x)]);
        expect_same_bits(got, want, what + " combine");

        // unpermute_combine_backward: drows exact, dweight by the block's tree.
        std::vector<float> want_drows = moe_test::normal_floats(r * s.d, 1.0f, kSeed + 19), got_drows = want_drows;
        std::vector<float> want_dw = moe_test::normal_floats(s.t * s.k, 1.0f, kSeed + 20), got_dw = want_dw;
        std::vector<float> dw_scale(want_dw.size(), 0.0f);
        backend::cpu::unpermute_combine_backward(want_drows.data(), want_dw.data(), dout.data(), rows.data(),
                                                 weight.data(), row_of.data(), s.t, s.k, s.d);
        float partial[moe::kCombineThreads];
        for (int64_t i = 0; i < s.t; ++i)
            for (int64_t j = 0; j < s.k; ++j) {
                const int64_t row = row_of[size_t(i * s.k + j)];
                if (row < 0) continue;
                for (int tid = 0; tid < moe::kCombineThreads; ++tid)
                    partial[tid] =
                        moe::combine_backward_thread(got_drows.data() + row * s.d, dout.data() + i * s.d,
                                                     rows.data() + row * s.d, weight[size_t(i * s.k + j)], s.d, tid);
                float& dw = got_dw[size_t(i * s.k + j)];
                dw = moe::add(dw, moe::block_tree_sum(partial));
                for (int64_t x = 0; x < s.d; ++x)
                    dw_scale[size_t(i * s.k + j)] += std::fabs(dout[size_t(i * s.d + x)] * rows[size_t(row * s.d + x)]);
            }
        expect_same_bits(got_drows, want_drows, what + " combine backward drows");
        double worst = 0;
        for (size_t x = 0; x < got_dw.size(); ++x)
            worst = std::max(worst, std::fabs(double(got_dw[x]) - double(want_dw[x])) /
                                        std::max(1.0, double(dw_scale[x]) + std::fabs(double(want_dw[x]))));
        std::printf("%-48s max |error| / (sum |dout row| + |dweight|) %.3e\n", (what + " combine backward dw").c_str(),
                    worst);
        EXPECT_LE(worst, 1e-5) << what << " (seed " << kSeed << ")";

        // permute_rows_backward: the same sums without weights.
        std::vector<float> want_dx = moe_test::normal_floats(s.t * s.d, 1.0f, kSeed + 21), got_dx = want_dx;
        backend::cpu::permute_rows_backward(want_dx.data(), rows.data(), row_of.data(), s.t, s.k, s.d);
        for (int64_t i = 0; i < s.t; ++i)
            for (int64_t x = 0; x < s.d; ++x)
                for (int64_t j = 0; j < s.k; ++j)
                    if (const int32_t row = row_of[size_t(i * s.k + j)]; row >= 0)
                        got_dx[size_t(i * s.d + x)] =
                            moe::add(got_dx[size_t(i * s.d + x)], rows[size_t(row * s.d + x)]);
        expect_same_bits(got_dx, want_dx, what + " permute backward");
    }
}

TEST(CudaMoeMath, CapacityPermutationAndBiasHostStepsEqualTheCpu) {
    for (const auto& s : kRouterShapes)
        for (int64_t capacity : {int64_t(0), int64_t(1), s.t * s.k / s.e, s.t * s.k}) {
            const auto sel = moe_test::random_selection(s.t, s.e, s.k, kSeed + 22);
            std::vector<int32_t> want(sel.size()), got(sel.size());
            std::vector<int64_t> want_kept(size_t(s.e)), want_sel(size_t(s.e)), got_kept(size_t(s.e), 7),
                got_sel(size_t(s.e), 7);
            int64_t want_dropped = 0;
            backend::cpu::router_capacity_forward(want.data(), want_kept.data(), want_sel.data(), &want_dropped,
                                                  sel.data(), capacity, s.t, s.k, s.e);
            const int64_t got_dropped =
                moe::capacity_host(got.data(), got_kept.data(), got_sel.data(), sel.data(), capacity, s.t, s.k, s.e);
            const std::string what = tag("capacity", s) + " C" + std::to_string(capacity);
            EXPECT_EQ(got, want) << what;
            EXPECT_EQ(got_kept, want_kept) << what;
            EXPECT_EQ(got_sel, want_sel) << what;
            EXPECT_EQ(got_dropped, want_dropped) << what;

            std::vector<int32_t> want_row(sel.size()), got_row(sel.size()), want_tok(sel.size(), -7),
                got_tok(sel.size(), -7);
            std::vector<int64_t> want_n(size_t(s.e)), got_n(size_t(s.e)), want_off(size_t(s.e + 1)),
                got_off(size_t(s.e + 1));
            const int64_t want_r = backend::cpu::build_permutation(want_row.data(), want_tok.data(), want_n.data(),
                                                                   want_off.data(), want.data(), s.t, s.k, s.e);
            const int64_t got_r = moe::permutation_host(got_row.data(), got_tok.data(), got_n.data(), got_off.data(),
                                                        want.data(), s.t, s.k, s.e);
            EXPECT_EQ(got_r, want_r) << what;
            EXPECT_EQ(got_r, s.t * s.k - want_dropped) << what;
            EXPECT_EQ(got_row, want_row) << what;
            EXPECT_EQ(got_tok, want_tok) << what;
            EXPECT_EQ(got_n, want_n) << what;
            EXPECT_EQ(got_off, want_off) << what;

            std::vector<float> want_bias = moe_test::normal_floats(s.e, 0.1f, kSeed + 23), got_bias = want_bias;
            backend::cpu_backend().router_bias_update(want_bias.data(), want_sel.data(), 1e-3, s.e);
            moe::bias_update_host(got_bias.data(), want_sel.data(), 1e-3, s.e);
            expect_same_bits(got_bias, want_bias, what + " bias update");
        }
}

TEST(CudaMoeMath, ASelectionOutsideTheExpertsIsRefusedNamingTheToken) {
    const std::vector<int32_t> sel = {0, 1, 1, 4};
    std::vector<int32_t> expert(4);
    std::vector<int64_t> kept(3), selected(3);
    try {
        moe::capacity_host(expert.data(), kept.data(), selected.data(), sel.data(), 8, 2, 2, 3);
        FAIL() << "expert 4 of 3 was accepted";
    } catch (const Error& err) {
        EXPECT_NE(std::string(err.what()).find("router selection 4 of choice 1 of token 1"), std::string::npos)
            << err.what();
    }
}

// Runs prepare_tokens on both sides; returns the CPU's error message (empty when it accepted the input).
std::string prepare_both(const std::vector<int32_t>& tokens, const std::vector<int32_t>& targets,
                         const std::vector<int32_t>* doc_start, int64_t s, int64_t v) {
    const int64_t n = int64_t(tokens.size());
    std::vector<int32_t> a[4], b[4];
    for (int i = 0; i < 4; ++i) a[i].assign(size_t(n), -9), b[i].assign(size_t(n), -9);
    std::string want_err, got_err;
    int64_t want = -1, got = -1;
    const int32_t* starts = doc_start ? doc_start->data() : nullptr;
    try {
        want = backend::cpu::prepare_tokens(a[0].data(), a[1].data(), a[2].data(), a[3].data(), tokens.data(),
                                            targets.data(), starts, n, s, v, -100);
    } catch (const Error& err) {
        want_err = err.what();
    }
    try {
        got = moe::prepare_tokens_host(b[0].data(), b[1].data(), b[2].data(), b[3].data(), tokens.data(),
                                       targets.data(), starts, n, s, v, -100);
    } catch (const Error& err) {
        got_err = err.what();
    }
    EXPECT_EQ(got_err, want_err);
    if (want_err.empty()) {
        EXPECT_EQ(got, want);
        for (int i = 0; i < 4; ++i) EXPECT_EQ(b[i], a[i]) << "output " << i;
    }
    return want_err;
}

TEST(CudaMoeMath, TokenChecksAndPositionsEqualTheCpuIncludingTheirMessages) {
    const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6}, targets = {2, -100, 4, 5, 6, 0};
    const std::vector<int32_t> starts = {0, 0, 2, 0, 1, 1};
    EXPECT_EQ(prepare_both(tokens, targets, nullptr, 3, 10), "");
    EXPECT_EQ(prepare_both(tokens, targets, &starts, 3, 10), "");
    EXPECT_NE(prepare_both({1, 10, 3}, {0, 0, 0}, nullptr, 3, 10).find("token id 10 at position 1"), std::string::npos);
    EXPECT_NE(prepare_both({1, 2, 3}, {0, 0, 11}, nullptr, 3, 10).find("target id 11 at position 2"),
              std::string::npos);
    const std::vector<int32_t> bad_start = {0, 2, 0};
    EXPECT_NE(prepare_both({1, 2, 3}, {0, 0, 0}, &bad_start, 3, 10).find("document start 2 of position 1"),
              std::string::npos);
}

}  // namespace
}  // namespace frugal
