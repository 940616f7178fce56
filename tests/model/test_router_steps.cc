// The router's kernel steps (model/moe/router.h), each against a naive double-precision reference written here:
// exact where the result is discrete (selection, capacity, counts), and the properties that matter elsewhere
// (renormalized weights sum to the scaling factor; the bias chooses but never weighs; the sigmoid normalization
// equals its O(T E^2) definition bit for bit; the sequence-wise loss is DeepSeek-V3 eq. 17-20 per sequence). The
// backward steps are checked against central differences in double with the routing held fixed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "backend/cpu/router.h"
#include "model/moe/router.h"
#include "tests/model/grad_check.h"
#include "tests/util.h"

namespace frugal {
namespace {

using model::GroupScore;
using model::ScoreFunc;

constexpr ScoreFunc kBothFuncs[] = {ScoreFunc::kSoftmax, ScoreFunc::kSigmoid};

const char* name_of(ScoreFunc f) { return f == ScoreFunc::kSoftmax ? "softmax" : "sigmoid"; }

size_t at(int64_t i) { return static_cast<size_t>(i); }

// Reference scores of one row, in double: softmax via max-shifted exponentials, or the logistic function.
std::vector<double> reference_scores(const std::vector<double>& logits_TE, int64_t t, int64_t e, ScoreFunc f,
                                     std::vector<double>* lse_T) {
    std::vector<double> scores(logits_TE.size());
    lse_T->assign(at(t), 0.0);
    for (int64_t i = 0; i < t; ++i) {
        double mx = -std::numeric_limits<double>::infinity(), z = 0;
        for (int64_t j = 0; j < e; ++j) mx = std::max(mx, logits_TE[at(i * e + j)]);
        for (int64_t j = 0; j < e; ++j) z += std::exp(logits_TE[at(i * e + j)] - mx);
        (*lse_T)[at(i)] = mx + std::log(z);
        for (int64_t j = 0; j < e; ++j) {
            const double l = logits_TE[at(i * e + j)];
            scores[at(i * e + j)] = f == ScoreFunc::kSoftmax ? std::exp(l - mx) / z : 1.0 / (1.0 + std::exp(-l));
        }
    }
    return scores;
}

// Reference top-k: a stable sort by descending key keeps the lower expert first among equal keys.
std::vector<int32_t> reference_topk(const std::vector<double>& scores_TE, const std::vector<float>& bias_E, int64_t t,
                                    int64_t e, int64_t k) {
    std::vector<int32_t> out;
    for (int64_t i = 0; i < t; ++i) {
        std::vector<int32_t> order(at(e));
        std::iota(order.begin(), order.end(), 0);
        auto key = [&](int32_t j) { return scores_TE[at(i * e + j)] + double(bias_E[at(j)]); };
        std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return key(a) > key(b); });
        out.insert(out.end(), order.begin(), order.begin() + k);
    }
    return out;
}

// Distinct random experts per token (a partial Fisher-Yates shuffle per row).
std::vector<int32_t> random_selection(int64_t t, int64_t e, int64_t k, uint64_t seed) {
    rng::Stream s(seed, "selection");
    std::vector<int32_t> sel;
    for (int64_t i = 0; i < t; ++i) {
        std::vector<int32_t> all(at(e));
        std::iota(all.begin(), all.end(), 0);
        for (int64_t j = 0; j < k; ++j) {
            const int64_t pick = j + int64_t(s.below(uint64_t(e - j), uint64_t(i * k + j)));
            std::swap(all[at(j)], all[at(pick)]);
            sel.push_back(all[at(j)]);
        }
    }
    return sel;
}

std::vector<double> sigmoid_of(const std::vector<double>& x) {
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = 1.0 / (1.0 + std::exp(-x[i]));
    return y;
}

TEST(RouterSteps, ScoresAreSoftmaxOrSigmoidAndTheLogSumExpIsKeptForBoth) {
    const int64_t t = 9, e = 7;
    auto logits = test::random_vec<double>(t * e, 1, 3.0);
    for (ScoreFunc f : kBothFuncs) {
        std::vector<double> lse_ref;
        auto want = reference_scores(logits, t, e, f, &lse_ref);
        std::vector<double> scores(at(t * e)), lse(at(t));
        backend::cpu::router_scores_forward(scores.data(), lse.data(), logits.data(), f, t, e);
        test::expect_close(scores.data(), want.data(), t * e, 1e-15, 1e-13, std::string(name_of(f)) + " scores");
        test::expect_close(lse.data(), lse_ref.data(), t, 1e-15, 1e-13, std::string(name_of(f)) + " lse");
        // The float kernel agrees with the double reference to float precision.
        std::vector<float> logits_f(logits.begin(), logits.end()), scores_f(at(t * e)), lse_f(at(t));
        backend::cpu::router_scores_forward(scores_f.data(), lse_f.data(), logits_f.data(), f, t, e);
        test::expect_close(scores_f.data(), want.data(), t * e, 1e-7, 1e-5, std::string(name_of(f)) + " float");
    }
}

TEST(RouterSteps, SelectionIsTheTopKOfScorePlusBiasWithTiesTowardTheLowerExpert) {
    const int64_t t = 40, e = 9, k = 3;
    // Scores on a coarse grid so that many keys tie exactly; the bias is a multiple of the grid step as well.
    auto raw = test::random_vec<double>(t * e, 2);
    std::vector<double> scores(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) scores[i] = std::round(raw[i] * 2.0) / 8.0;
    std::vector<float> bias = {0.f, 0.125f, 0.f, -0.25f, 0.f, 0.f, 0.375f, 0.f, -0.125f};
    std::vector<int32_t> selected(at(t * k));
    std::vector<double> keys(at(t * e));
    backend::cpu::router_select_forward(selected.data(), keys.data(), scores.data(), bias.data(), t, e, k, 1, 1,
                                        GroupScore::kTop2Sum);
    EXPECT_EQ(selected, reference_topk(scores, bias, t, e, k));
    int64_t tied_rows = 0;
    for (int64_t i = 0; i < t; ++i)
        for (int64_t j = 0; j + 1 < e; ++j)
            for (int64_t q = j + 1; q < e; ++q) tied_rows += keys[at(i * e + j)] == keys[at(i * e + q)];
    EXPECT_GT(tied_rows, t) << "the case should exercise ties";
    // The float kernel selects on the same double keys.
    std::vector<float> scores_f(scores.begin(), scores.end());
    std::vector<int32_t> selected_f(at(t * k));
    backend::cpu::router_select_forward(selected_f.data(), keys.data(), scores_f.data(), bias.data(), t, e, k, 1, 1,
                                        GroupScore::kTop2Sum);
    EXPECT_EQ(selected_f, selected);
}

TEST(RouterSteps, RenormalizedWeightsSumToTheScalingFactor) {
    const int64_t t = 16, e = 8, k = 3;
    auto scores = sigmoid_of(test::random_vec<double>(t * e, 3, 2.0));
    auto selected = random_selection(t, e, k, 4);
    for (double scale : {1.0, 2.5}) {
        std::vector<double> w(at(t * k)), w_plain(at(t * k));
        backend::cpu::router_weights_forward(w.data(), scores.data(), selected.data(), true, scale, t, e, k);
        backend::cpu::router_weights_forward(w_plain.data(), scores.data(), selected.data(), false, scale, t, e, k);
        for (int64_t i = 0; i < t; ++i) {
            double sum = 0, chosen = 0;
            for (int64_t j = 0; j < k; ++j) {
                sum += w[at(i * k + j)];
                chosen += scores[at(i * e + selected[at(i * k + j)])];
            }
            EXPECT_NEAR(sum, scale, 1e-14 * scale) << "token " << i;
            for (int64_t j = 0; j < k; ++j) {
                const double s = scores[at(i * e + selected[at(i * k + j)])];
                EXPECT_NEAR(w[at(i * k + j)], scale * s / chosen, 1e-15) << "token " << i;
                EXPECT_NEAR(w_plain[at(i * k + j)], scale * s, 1e-15) << "token " << i;
            }
        }
    }
}

TEST(RouterSteps, TheBiasChangesTheSelectionButNeverTheWeights) {
    const int64_t t = 32, e = 6, k = 2;
    auto scores = sigmoid_of(test::random_vec<double>(t * e, 5, 2.0));
    const std::vector<float> no_bias(at(e), 0.f), bias = {0.f, 0.f, 0.f, 0.f, 0.f, 0.6f};  // favours expert 5
    std::vector<double> keys(at(t * e));
    std::vector<int32_t> plain(at(t * k)), biased(at(t * k));
    backend::cpu::router_select_forward(plain.data(), keys.data(), scores.data(), no_bias.data(), t, e, k, 1, 1,
                                        GroupScore::kTop2Sum);
    backend::cpu::router_select_forward(biased.data(), keys.data(), scores.data(), bias.data(), t, e, k, 1, 1,
                                        GroupScore::kTop2Sum);
    EXPECT_NE(plain, biased) << "the bias should change some token's choice";
    EXPECT_EQ(biased, reference_topk(scores, bias, t, e, k));
    std::vector<double> w(at(t * k));
    backend::cpu::router_weights_forward(w.data(), scores.data(), biased.data(), true, 1.5, t, e, k);
    for (int64_t i = 0; i < t; ++i) {
        // The weights are the unbiased scores of the biased choice, renormalized and scaled.
        const double a = scores[at(i * e + biased[at(i * k)])], b = scores[at(i * e + biased[at(i * k + 1)])];
        EXPECT_NEAR(w[at(i * k)], 1.5 * a / (a + b), 1e-15) << "token " << i;
        EXPECT_NEAR(w[at(i * k + 1)], 1.5 * b / (a + b), 1e-15) << "token " << i;
    }
}

TEST(RouterSteps, CapacityKeepsTheFirstAssignmentsInTokenOrder) {
    const int64_t t = 30, e = 5, k = 2;
    auto selected = random_selection(t, e, k, 6);
    for (int i = 0; i < 10; ++i) selected[at(i * k)] = 4;  // overload expert 4 early
    const int64_t capacity = model::router_capacity(1.0, t, k, e);
    EXPECT_EQ(capacity, 12);  // ceil(1.0 * 30 * 2 / 5)
    std::vector<int32_t> expert(at(t * k));
    std::vector<int64_t> kept(at(e)), chosen(at(e));
    int64_t dropped = -1;
    backend::cpu::router_capacity_forward(expert.data(), kept.data(), chosen.data(), &dropped, selected.data(),
                                          capacity, t, k, e);
    std::vector<int32_t> want(at(t * k));
    std::vector<int64_t> want_kept(at(e), 0), want_chosen(at(e), 0);
    int64_t want_dropped = 0;
    for (int64_t i = 0; i < t * k; ++i) {
        const int32_t x = selected[at(i)];
        want_chosen[at(x)]++;
        const bool keep = want_kept[at(x)] < capacity;
        want[at(i)] = keep ? x : -1;
        want_kept[at(x)] += keep;
        want_dropped += !keep;
    }
    EXPECT_EQ(expert, want);
    EXPECT_EQ(kept, want_kept);
    EXPECT_EQ(chosen, want_chosen);
    EXPECT_EQ(dropped, want_dropped);
    EXPECT_GT(dropped, 0) << "the case should drop assignments";
    EXPECT_EQ(std::accumulate(kept.begin(), kept.end(), int64_t(0)), t * k - dropped);
    // Dropless: no limit, nothing dropped, expert_TK is the selection.
    EXPECT_EQ(model::router_capacity(0.0, t, k, e), std::numeric_limits<int64_t>::max());
    backend::cpu::router_capacity_forward(expert.data(), kept.data(), chosen.data(), &dropped, selected.data(),
                                          model::router_capacity(0.0, t, k, e), t, k, e);
    EXPECT_EQ(dropped, 0);
    EXPECT_EQ(expert, selected);
    EXPECT_EQ(kept, want_chosen);
}

// The balancing loss by its definition: per group of S = T/G tokens, E * sum_e f_e P_e with f_e = count_e / (S K)
// and P_e the mean over the group of the score divided by its row sum, each row sum recomputed for every (t, e)
// exactly as the definition reads (O(T E^2)); then coef times the mean over groups.
double definition_aux_loss(const std::vector<double>& scores, const std::vector<int32_t>& selected, ScoreFunc f,
                           double coef, int64_t groups, int64_t t, int64_t e, int64_t k) {
    const int64_t per = t / groups;
    double total = 0;
    for (int64_t g = 0; g < groups; ++g) {
        std::vector<double> count(at(e), 0.0), p(at(e), 0.0);
        for (int64_t i = g * per; i < (g + 1) * per; ++i) {
            for (int64_t j = 0; j < k; ++j) count[at(selected[at(i * k + j)])] += 1;
            for (int64_t j = 0; j < e; ++j) {
                double row_sum = 0;
                for (int64_t q = 0; q < e; ++q) row_sum += scores[at(i * e + q)];
                p[at(j)] += f == ScoreFunc::kSoftmax ? scores[at(i * e + j)] : scores[at(i * e + j)] / row_sum;
            }
        }
        double l = 0;
        for (int64_t j = 0; j < e; ++j) l += double(e) * count[at(j)] / double(per * k) * p[at(j)] / double(per);
        total += coef * l / double(groups);
    }
    return total;
}

TEST(RouterSteps, SigmoidBalancingLossEqualsItsQuadraticDefinitionBitForBit) {
    const int64_t b = 3, s = 10, t = b * s, e = 12, k = 4;
    auto scores = sigmoid_of(test::random_vec<double>(t * e, 7, 2.0));
    auto selected = random_selection(t, e, k, 8);
    for (int64_t groups : {int64_t(1), b}) {
        std::vector<double> row_sum(at(t), -1.0);
        double loss = -1;
        backend::cpu::router_aux_loss_forward(&loss, row_sum.data(), scores.data(), selected.data(),
                                              ScoreFunc::kSigmoid, 0.01, groups, t, e, k);
        EXPECT_EQ(loss, definition_aux_loss(scores, selected, ScoreFunc::kSigmoid, 0.01, groups, t, e, k))
            << groups << " groups";
        for (int64_t i = 0; i < t; ++i) {
            double sum = 0;
            for (int64_t j = 0; j < e; ++j) sum += scores[at(i * e + j)];
            EXPECT_EQ(row_sum[at(i)], sum) << "token " << i;
        }
    }
    // Float scores: the row sums are still accumulated in double.
    std::vector<float> scores_f(scores.begin(), scores.end());
    std::vector<double> widened(scores_f.begin(), scores_f.end()), row_sum(at(t));
    double loss = -1;
    backend::cpu::router_aux_loss_forward(&loss, row_sum.data(), scores_f.data(), selected.data(), ScoreFunc::kSigmoid,
                                          0.01, b, t, e, k);
    EXPECT_EQ(loss, definition_aux_loss(widened, selected, ScoreFunc::kSigmoid, 0.01, b, t, e, k));
}

TEST(RouterSteps, SequenceWiseLossIsTheMeanOfDeepSeekV3PerSequenceLosses) {
    const int64_t b = 4, s = 8, t = b * s, e = 8, k = 2;
    const double alpha = 0.001;
    auto scores = sigmoid_of(test::random_vec<double>(t * e, 9, 2.0));
    auto selected = random_selection(t, e, k, 10);
    // DeepSeek-V3 eq. 17-20 for one sequence of S tokens: f_i = E / (K S) * #{t: i in TopK_t},
    // s'_{i,t} = s_{i,t} / sum_j s_{j,t}, P_i = mean_t s'_{i,t}, L = alpha * sum_i f_i P_i.
    double want = 0;
    for (int64_t q = 0; q < b; ++q) {
        std::vector<double> f(at(e), 0.0), p(at(e), 0.0);
        for (int64_t i = q * s; i < (q + 1) * s; ++i) {
            double row = 0;
            for (int64_t j = 0; j < e; ++j) row += scores[at(i * e + j)];
            for (int64_t j = 0; j < k; ++j) f[at(selected[at(i * k + j)])] += double(e) / double(k * s);
            for (int64_t j = 0; j < e; ++j) p[at(j)] += scores[at(i * e + j)] / row / double(s);
        }
        double l = 0;
        for (int64_t j = 0; j < e; ++j) l += f[at(j)] * p[at(j)];
        want += alpha * l / double(b);
    }
    std::vector<double> row_sum(at(t));
    double seq = -1, batch = -1;
    backend::cpu::router_aux_loss_forward(&seq, row_sum.data(), scores.data(), selected.data(), ScoreFunc::kSigmoid,
                                          alpha, b, t, e, k);
    backend::cpu::router_aux_loss_forward(&batch, row_sum.data(), scores.data(), selected.data(), ScoreFunc::kSigmoid,
                                          alpha, 1, t, e, k);
    EXPECT_NEAR(seq, want, 1e-14 * want);
    EXPECT_GT(std::fabs(seq - batch), 1e-6 * want) << "per-sequence terms must differ from the batch-wise loss";
    // Softmax scores are already normalized over experts: the loss reads them as they are, and needs no row sums.
    auto soft = scores;
    for (int64_t i = 0; i < t; ++i) {
        double row = 0;
        for (int64_t j = 0; j < e; ++j) row += soft[at(i * e + j)];
        for (int64_t j = 0; j < e; ++j) soft[at(i * e + j)] /= row;
    }
    double from_softmax = -1;
    backend::cpu::router_aux_loss_forward(&from_softmax, static_cast<double*>(nullptr), soft.data(), selected.data(),
                                          ScoreFunc::kSoftmax, alpha, b, t, e, k);
    EXPECT_NEAR(from_softmax, want, 1e-14 * want);
}

TEST(RouterSteps, ZLossIsTheMeanSquaredLogSumExp) {
    const int64_t t = 11, e = 5;
    auto logits = test::random_vec<double>(t * e, 11, 4.0);
    std::vector<double> lse_ref;
    reference_scores(logits, t, e, ScoreFunc::kSoftmax, &lse_ref);
    double want = 0;
    for (double l : lse_ref) want += l * l / double(t);
    want *= 0.02;
    std::vector<double> scores(at(t * e)), lse(at(t));
    backend::cpu::router_scores_forward(scores.data(), lse.data(), logits.data(), ScoreFunc::kSigmoid, t, e);
    double z = -1;
    backend::cpu::router_z_loss_forward(&z, lse.data(), 0.02, t);
    EXPECT_NEAR(z, want, 1e-13 * want);
}

TEST(RouterSteps, WeightsBackwardMatchesCentralDifferences) {
    const int64_t t = 6, e = 5, k = 2;
    auto scores = sigmoid_of(test::random_vec<double>(t * e, 12, 2.0));
    auto selected = random_selection(t, e, k, 13);
    auto r = test::random_vec<double>(t * k, 14);
    for (bool renormalize : {true, false}) {
        std::vector<double> w(at(t * k)), d_scores(at(t * e), 0.0);
        auto loss = [&] {
            backend::cpu::router_weights_forward(w.data(), scores.data(), selected.data(), renormalize, 2.5, t, e, k);
            double l = 0;
            for (int64_t i = 0; i < t * k; ++i) l += w[at(i)] * r[at(i)];
            return l;
        };
        backend::cpu::router_weights_backward(d_scores.data(), r.data(), scores.data(), selected.data(), renormalize,
                                              2.5, t, e, k);
        test::check_gradient(loss, scores.data(), d_scores.data(), t * e, renormalize ? "renormalized" : "plain", 100);
        for (int64_t i = 0; i < t; ++i)  // experts not chosen get no gradient from the weights
            for (int64_t j = 0; j < e; ++j) {
                const bool chosen = selected[at(i * k)] == j || selected[at(i * k + 1)] == j;
                if (!chosen) {
                    EXPECT_EQ(d_scores[at(i * e + j)], 0.0) << "token " << i << " expert " << j;
                }
            }
    }
}

TEST(RouterSteps, AuxLossBackwardMatchesCentralDifferences) {
    const int64_t b = 2, s = 5, t = b * s, e = 6, k = 2;
    auto selected = random_selection(t, e, k, 15);
    const double aux_scale = 0.7;
    for (ScoreFunc f : kBothFuncs)
        for (int64_t groups : {int64_t(1), b}) {
            auto scores = sigmoid_of(test::random_vec<double>(t * e, 16, 2.0));
            std::vector<double> row_sum(at(t)), d_scores(at(t * e), 0.0), d_aux(at(groups * e));
            auto loss = [&] {
                double l = 0;
                backend::cpu::router_aux_loss_forward(&l, row_sum.data(), scores.data(), selected.data(), f, 0.3,
                                                      groups, t, e, k);
                return aux_scale * l;
            };
            backend::cpu::router_aux_loss_backward(d_scores.data(), d_aux.data(), scores.data(), selected.data(), f,
                                                   0.3, aux_scale, groups, t, e, k);
            test::check_gradient(loss, scores.data(), d_scores.data(), t * e,
                                 std::string(name_of(f)) + " aux, groups " + std::to_string(groups), 100);
        }
}

TEST(RouterSteps, ScoresBackwardMatchesCentralDifferences) {
    const int64_t t = 5, e = 6;
    auto logits = test::random_vec<double>(t * e, 17, 2.0);
    auto r = test::random_vec<double>(t * e, 18);
    for (ScoreFunc f : kBothFuncs) {
        std::vector<double> scores(at(t * e)), lse(at(t)), d_logits(at(t * e), 123.0);
        auto loss = [&] {
            backend::cpu::router_scores_forward(scores.data(), lse.data(), logits.data(), f, t, e);
            double l = 0;
            for (int64_t i = 0; i < t * e; ++i) l += scores[at(i)] * r[at(i)];
            return l;
        };
        loss();
        // The step writes d_logits (the 123 it starts from must not survive).
        backend::cpu::router_scores_backward(d_logits.data(), r.data(), scores.data(), f, t, e);
        test::check_gradient(loss, logits.data(), d_logits.data(), t * e, std::string(name_of(f)) + " scores", 100);
    }
}

TEST(RouterSteps, ZLossBackwardMatchesCentralDifferences) {
    const int64_t t = 4, e = 5;
    auto logits = test::random_vec<double>(t * e, 19, 3.0);
    std::vector<double> scores(at(t * e)), lse(at(t)), d_logits(at(t * e), 0.0);
    auto loss = [&] {
        backend::cpu::router_scores_forward(scores.data(), lse.data(), logits.data(), ScoreFunc::kSigmoid, t, e);
        double z = 0;
        backend::cpu::router_z_loss_forward(&z, lse.data(), 0.2, t);
        return 0.7 * z;
    };
    loss();
    backend::cpu::router_z_loss_backward(d_logits.data(), logits.data(), lse.data(), 0.2, 0.7, t, e);
    test::check_gradient(loss, logits.data(), d_logits.data(), t * e, "z loss", 100);
}

TEST(RouterSteps, UnknownScoreFunctionOrAuxLossIsRefusedNamingTheKey) {
    EXPECT_EQ(model::parse_score_func("softmax"), ScoreFunc::kSoftmax);
    EXPECT_EQ(model::parse_score_func("sigmoid"), ScoreFunc::kSigmoid);
    EXPECT_EQ(model::parse_aux_loss("none"), model::AuxLoss::kNone);
    EXPECT_EQ(model::parse_aux_loss("batch"), model::AuxLoss::kBatch);
    EXPECT_EQ(model::parse_aux_loss("seq"), model::AuxLoss::kSeq);
    try {
        model::parse_score_func("sparsemax");
        ADD_FAILURE() << "sparsemax was accepted";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("moe.score_func (sparsemax)"), std::string::npos) << e.what();
    }
    try {
        model::parse_aux_loss("token");
        ADD_FAILURE() << "token was accepted";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("moe.aux_loss (token)"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace frugal
