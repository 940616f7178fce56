// Group-limited routing (moe.n_group, moe.topk_group, moe.group_score; backend/cpu/router.h's router_select_forward)
// against a brute-force reference written here: the groups ranked by a full stable sort on (group score descending,
// group index), the group score from a full sort of each group's keys, then a full stable sort of the eligible
// experts by key. Exact equality of the selection, on random keys and on keys drawn from a few values so that group
// scores and expert keys tie often, in both group scores, with and without bias, in float and double. Also: the bias
// enters the group score (it can move a token to another group), one group (or all groups kept) is the ungrouped
// selection bit for bit, Router<T> routes inside the chosen groups, and each configuration rule is a ConfigError
// naming its key.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/router.h"
#include "core/error.h"
#include "model/moe/router.h"
#include "tests/util.h"
#include "trainer/run_config.h"

namespace frugal {
namespace {

using model::GroupScore;
using model::ModelConfig;
using model::ParamStore;
using test::config_error;
using test::expect_has;

size_t at(int64_t i) { return static_cast<size_t>(i); }

const char* name_of(GroupScore g) { return g == GroupScore::kTop2Sum ? "top2_sum" : "max"; }

struct Grouping {
    int64_t e, k, n_group, topk_group;
};

// The selection of one token, by the definition: keys = score + bias in double; a group's score from its sorted
// keys; the topk_group first groups of a stable sort by score (equal scores keep the lower index first); the k
// first eligible experts of a stable sort by key.
template <typename T>
std::vector<int32_t> reference_row(const T* scores_E, const std::vector<float>& bias_E, const Grouping& g,
                                   GroupScore how) {
    const int64_t per = g.e / g.n_group;
    std::vector<double> keys(at(g.e));
    for (int64_t j = 0; j < g.e; ++j) keys[at(j)] = double(scores_E[j]) + double(bias_E[at(j)]);
    std::vector<double> group_score(at(g.n_group));
    for (int64_t q = 0; q < g.n_group; ++q) {
        std::vector<double> v(keys.begin() + q * per, keys.begin() + (q + 1) * per);
        std::sort(v.begin(), v.end(), std::greater<double>());
        group_score[at(q)] = how == GroupScore::kMax ? v[0] : v[0] + v[1];
    }
    std::vector<int64_t> groups(at(g.n_group));
    std::iota(groups.begin(), groups.end(), 0);
    std::stable_sort(groups.begin(), groups.end(),
                     [&](int64_t a, int64_t b) { return group_score[at(a)] > group_score[at(b)]; });
    std::vector<int32_t> eligible;
    for (int64_t j = 0; j < g.e; ++j)
        if (std::find(groups.begin(), groups.begin() + g.topk_group, j / per) != groups.begin() + g.topk_group)
            eligible.push_back(int32_t(j));
    std::stable_sort(eligible.begin(), eligible.end(), [&](int32_t a, int32_t b) { return keys[at(a)] > keys[at(b)]; });
    return std::vector<int32_t>(eligible.begin(), eligible.begin() + g.k);
}

template <typename T>
std::vector<int32_t> reference_select(const std::vector<T>& scores_TE, const std::vector<float>& bias_E, int64_t t,
                                      const Grouping& g, GroupScore how) {
    std::vector<int32_t> out;
    for (int64_t i = 0; i < t; ++i) {
        const auto row = reference_row(scores_TE.data() + i * g.e, bias_E, g, how);
        out.insert(out.end(), row.begin(), row.end());
    }
    return out;
}

template <typename T>
std::vector<int32_t> select(const std::vector<T>& scores_TE, const std::vector<float>& bias_E, int64_t t,
                            const Grouping& g, GroupScore how, std::vector<double>* keys_TE = nullptr) {
    std::vector<int32_t> selected(at(t * g.k));
    std::vector<double> keys(at(t * g.e));
    backend::cpu::router_select_forward(selected.data(), keys.data(), scores_TE.data(), bias_E.data(), t, g.e, g.k,
                                        g.n_group, g.topk_group, how);
    if (keys_TE) *keys_TE = keys;
    return selected;
}

// Scores: uniform in (0, 1), or (tied) one of 0, 1/4, 1/2, 3/4; the bias: none, small random, or (tied) multiples of
// 1/4 so that the keys stay on the grid.
std::vector<double> draw_scores(int64_t n, bool tied, uint64_t seed) {
    std::mt19937_64 gen(seed);
    std::vector<double> x(at(n));
    for (double& v : x) v = tied ? double(gen() % 4) / 4.0 : (double(gen() % 1000000) + 0.5) / 1e6;
    return x;
}

std::vector<float> draw_bias(int64_t e, bool biased, bool tied, uint64_t seed) {
    std::mt19937_64 gen(seed);
    std::vector<float> b(at(e), 0.0f);
    if (!biased) return b;
    for (float& v : b) v = tied ? float(int(gen() % 3) - 1) / 4.0f : float(int(gen() % 2001) - 1000) / 10000.0f;
    return b;
}

const Grouping kGroupings[] = {
    {8, 2, 4, 2},   {16, 3, 4, 1}, {16, 4, 8, 3}, {12, 5, 3, 2},  {64, 6, 8, 4},
    {32, 4, 16, 5}, {9, 3, 9, 3},  {6, 2, 2, 2},  {256, 8, 8, 4}, {20, 10, 5, 3},
};

TEST(RouterGroups, SelectionEqualsTheBruteForceReferenceOnRandomAndTiedKeys) {
    const int64_t t = 48;
    int64_t cases = 0, tied_group_rows = 0;
    for (const auto& g : kGroupings)
        for (GroupScore how : {GroupScore::kTop2Sum, GroupScore::kMax})
            for (bool tied : {false, true})
                for (bool biased : {false, true}) {
                    if (how == GroupScore::kTop2Sum && g.e / g.n_group < 2) continue;
                    const uint64_t seed = uint64_t(g.e * 1000 + g.n_group * 10 + g.topk_group) + (tied ? 7 : 0);
                    const auto scores = draw_scores(t * g.e, tied, seed);
                    const auto bias = draw_bias(g.e, biased, tied, seed + 1);
                    const std::string what = std::string("E ") + std::to_string(g.e) + " K " + std::to_string(g.k) +
                                             " groups " + std::to_string(g.n_group) + " keep " +
                                             std::to_string(g.topk_group) + " " + name_of(how) + (tied ? " tied" : "") +
                                             (biased ? " biased" : "") + " seed " + std::to_string(seed);
                    const auto want = reference_select(scores, bias, t, g, how);
                    EXPECT_EQ(select(scores, bias, t, g, how), want) << what;
                    // Float scores select on the same double keys.
                    const std::vector<float> scores_f(scores.begin(), scores.end());
                    EXPECT_EQ(select(scores_f, bias, t, g, how), reference_select(scores_f, bias, t, g, how)) << what;
                    ++cases;
                    if (!tied) continue;
                    // Count rows where the last kept group ties with the first dropped one: the tie rule decides.
                    const int64_t per = g.e / g.n_group;
                    for (int64_t i = 0; i < t && g.topk_group < g.n_group; ++i) {
                        std::vector<double> gs;
                        for (int64_t q = 0; q < g.n_group; ++q) {
                            std::vector<double> v;
                            for (int64_t j = 0; j < per; ++j)
                                v.push_back(scores[at(i * g.e + q * per + j)] + double(bias[at(q * per + j)]));
                            std::sort(v.begin(), v.end(), std::greater<double>());
                            gs.push_back(how == GroupScore::kMax ? v[0] : v[0] + v[1]);
                        }
                        std::sort(gs.begin(), gs.end(), std::greater<double>());
                        tied_group_rows += gs[at(g.topk_group - 1)] == gs[at(g.topk_group)];
                    }
                }
    EXPECT_GT(cases, 60);
    EXPECT_GT(tied_group_rows, 200) << "the tied cases should make the group tie rule decide often";
}

TEST(RouterGroups, ExcludedExpertsHaveMinusInfinityKeysAndAreNeverChosen) {
    const Grouping g{16, 4, 4, 2};
    const int64_t t = 32, per = g.e / g.n_group;
    const auto scores = draw_scores(t * g.e, false, 11);
    const auto bias = draw_bias(g.e, true, false, 12);
    std::vector<double> keys;
    const auto selected = select(scores, bias, t, g, GroupScore::kTop2Sum, &keys);
    for (int64_t i = 0; i < t; ++i) {
        int64_t excluded_groups = 0;
        for (int64_t q = 0; q < g.n_group; ++q) {
            const bool out = std::isinf(keys[at(i * g.e + q * per)]);
            excluded_groups += out;
            for (int64_t j = 0; j < per; ++j) {
                const double key = keys[at(i * g.e + q * per + j)];
                if (out)
                    EXPECT_EQ(key, -INFINITY) << "token " << i << " expert " << q * per + j;
                else
                    EXPECT_EQ(key, scores[at(i * g.e + q * per + j)] + double(bias[at(q * per + j)]));
            }
        }
        EXPECT_EQ(excluded_groups, g.n_group - g.topk_group) << "token " << i;
        for (int64_t c = 0; c < g.k; ++c)
            EXPECT_FALSE(std::isinf(keys[at(i * g.e + selected[at(i * g.k + c)])])) << "token " << i;
    }
}

TEST(RouterGroups, TheBiasEntersTheGroupScoreAndCanMoveATokenToAnotherGroup) {
    // Two groups of four. Unbiased, group 0 leads in both scores (top2 1.7 against 1.0, max 0.9 against 0.5); a bias
    // of 0.6 on experts 6 and 7 lifts group 1 to top2 2.0 and max 1.1, and the token routes to it entirely.
    const Grouping g{8, 2, 2, 1};
    const std::vector<double> scores = {0.9, 0.8, 0.1, 0.1, 0.5, 0.5, 0.4, 0.4};
    const std::vector<float> no_bias(8, 0.0f), bias = {0, 0, 0, 0, 0, 0, 0.6f, 0.6f};
    for (GroupScore how : {GroupScore::kTop2Sum, GroupScore::kMax}) {
        EXPECT_EQ(select(scores, no_bias, 1, g, how), (std::vector<int32_t>{0, 1})) << name_of(how);
        EXPECT_EQ(select(scores, bias, 1, g, how), (std::vector<int32_t>{6, 7})) << name_of(how);
        EXPECT_EQ(select(scores, bias, 1, g, how), reference_select(scores, bias, 1, g, how)) << name_of(how);
    }
    // A bias that lifts only expert 6 raises group 1's top2 score less than its max: 1.0 + 0.5 = 1.5 < 1.7 keeps
    // group 0 under top2_sum, while max (1.0 > 0.9) moves the token to group 1; ungrouped, it takes 6 and 0.
    const std::vector<float> one = {0, 0, 0, 0, 0, 0, 0.6f, 0};
    EXPECT_EQ(select(scores, one, 1, g, GroupScore::kTop2Sum), (std::vector<int32_t>{0, 1}));
    EXPECT_EQ(select(scores, one, 1, g, GroupScore::kMax), (std::vector<int32_t>{6, 4}));
    EXPECT_EQ(select(scores, one, 1, Grouping{8, 2, 1, 1}, GroupScore::kTop2Sum), (std::vector<int32_t>{6, 0}));
}

TEST(RouterGroups, OneGroupOrEveryGroupKeptIsTheUngroupedSelectionBitForBit) {
    const int64_t t = 40, e = 16, k = 4;
    for (bool tied : {false, true}) {
        const auto scores = draw_scores(t * e, tied, 21);
        const auto bias = draw_bias(e, true, tied, 22);
        // The ungrouped selection as it is defined: keys = score + bias, top-k of each row.
        std::vector<double> want_keys(at(t * e));
        std::vector<int32_t> want(at(t * k));
        for (int64_t i = 0; i < t; ++i) {
            for (int64_t j = 0; j < e; ++j) want_keys[at(i * e + j)] = scores[at(i * e + j)] + double(bias[at(j)]);
            backend::cpu::topk_indices(want.data() + i * k, want_keys.data() + i * e, e, k);
        }
        for (const Grouping g : {Grouping{e, k, 1, 1}, Grouping{e, k, 4, 4}, Grouping{e, k, 16, 16}})
            for (GroupScore how : {GroupScore::kTop2Sum, GroupScore::kMax}) {
                if (how == GroupScore::kTop2Sum && g.n_group == 16) continue;
                std::vector<double> keys;
                EXPECT_EQ(select(scores, bias, t, g, how, &keys), want) << g.n_group << " groups " << name_of(how);
                EXPECT_EQ(keys, want_keys) << g.n_group << " groups " << name_of(how);
            }
    }
}

TEST(RouterGroups, TheRouterRoutesEveryTokenInsideItsChosenGroups) {
    ModelConfig cfg;
    cfg.d_model = 16;
    cfg.n_layers = 2;
    cfg.init_std = 0.5;
    cfg.moe.n_experts = 16;
    cfg.moe.top_k = 4;
    cfg.moe.d_expert = 8;
    cfg.moe.score_func = "sigmoid";
    const int64_t t = 64, per = 4;
    auto run = [&](int64_t n_group, int64_t topk_group, const std::string& how) {
        cfg.moe.n_group = n_group;
        cfg.moe.topk_group = topk_group;
        cfg.moe.group_score = how;
        cfg.validate();
        ParamStore store;
        model::Router<double> router(backend::cpu_backend().ops<double>(), store, cfg, "r.");
        store.allocate(DType::kF64);
        store.init(5);
        const auto x = test::random_vec<double>(t * cfg.d_model, 6);
        router.forward(x.data(), 2, t / 2);
        return std::vector<int32_t>(router.selected_TK(), router.selected_TK() + t * cfg.moe.top_k);
    };
    const auto plain = run(1, 1, "top2_sum");
    for (const std::string how : {"top2_sum", "max"}) {
        const auto grouped = run(4, 2, how);
        EXPECT_NE(grouped, plain) << how << ": two of four groups should change some token's choice";
        for (int64_t i = 0; i < t; ++i) {
            std::vector<int32_t> groups;
            for (int64_t c = 0; c < cfg.moe.top_k; ++c) groups.push_back(grouped[at(i * cfg.moe.top_k + c)] / per);
            std::sort(groups.begin(), groups.end());
            groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
            EXPECT_LE(groups.size(), 2u) << how << " token " << i;
        }
    }
}

// Node-limited routing (moe.max_nodes_per_token M, DeepSeek-V3 section 2.1.2) on experts spread over `nodes` nodes:
// each token's experts lie on at most M nodes, and the selection is the reference's with the nodes as groups and a
// node's score the sum of the token's top_k / M best keys there (the best one for top_k / M = 1, the best two for 2).
// One node changes nothing.
TEST(RouterGroups, NodeLimitedRoutingPicksAtMostMNodesByTheirBestTopKOverMKeys) {
    ModelConfig cfg;
    cfg.d_model = 16;
    cfg.n_layers = 2;
    cfg.init_std = 0.5;
    cfg.moe.n_experts = 16;
    cfg.moe.d_expert = 8;
    cfg.moe.score_func = "sigmoid";
    const int64_t t = 64;
    struct Case {
        int64_t top_k, m, nodes;
    };
    for (const Case c : {Case{2, 1, 2}, Case{4, 2, 4}, Case{2, 2, 8}, Case{4, 4, 2}, Case{2, 1, 1}}) {
        cfg.moe.top_k = c.top_k;
        cfg.moe.max_nodes_per_token = c.m;
        cfg.validate();
        ParamStore store;
        model::Router<double> router(backend::cpu_backend().ops<double>(), store, cfg, "r.");
        store.allocate(DType::kF64);
        store.init(5);
        std::vector<float> bias(16);
        for (int64_t j = 0; j < 16; ++j) bias[at(j)] = 0.05f * float((j * 7) % 5) - 0.1f;
        router.set_expert_bias(bias);
        router.limit_nodes(c.nodes);
        EXPECT_EQ(router.node_groups(), c.nodes > 1 ? c.nodes : 1);
        const auto x = test::random_vec<double>(t * cfg.d_model, 6);
        router.forward(x.data(), 2, t / 2);
        const Grouping g{16, c.top_k, c.nodes, std::min(c.m, c.nodes)};
        const GroupScore how = c.top_k / c.m == 1 ? GroupScore::kMax : GroupScore::kTop2Sum;
        const std::string what = "top_k " + std::to_string(c.top_k) + ", M " + std::to_string(c.m) + ", " +
                                 std::to_string(c.nodes) + " nodes";
        for (int64_t i = 0; i < t; ++i) {
            std::vector<int32_t> got(router.selected_TK() + i * c.top_k, router.selected_TK() + (i + 1) * c.top_k);
            std::vector<int32_t> nodes_used;
            for (int32_t ex : got) nodes_used.push_back(ex / int32_t(16 / c.nodes));
            std::sort(nodes_used.begin(), nodes_used.end());
            nodes_used.erase(std::unique(nodes_used.begin(), nodes_used.end()), nodes_used.end());
            EXPECT_LE(int64_t(nodes_used.size()), c.m) << what << ", token " << i;
            auto want = reference_row(router.scores_TE() + i * 16, bias, g, how);
            std::sort(got.begin(), got.end());
            std::sort(want.begin(), want.end());
            EXPECT_EQ(got, want) << what << ", token " << i;
        }
    }
    // The rules: not with moe.n_group, and top_k / M of one or two.
    auto err = [](std::vector<std::string> sets) {
        sets.insert(sets.begin(), {"moe.n_experts=16", "moe.top_k=4"});
        return config_error([&] { trainer::load_config("", sets, 1); });
    };
    expect_has(err({"moe.max_nodes_per_token=1"}), {"moe.max_nodes_per_token (1)", "moe.top_k (4)", "half"});
    expect_has(err({"moe.max_nodes_per_token=3"}), {"moe.max_nodes_per_token (3)", "moe.top_k (4)"});
    expect_has(err({"moe.max_nodes_per_token=2", "moe.n_group=4", "moe.topk_group=2"}),
               {"moe.max_nodes_per_token (2)", "moe.n_group (4)", "moe.n_group: 1"});
    EXPECT_NO_THROW(trainer::load_config("", {"moe.n_experts=16", "moe.top_k=4", "moe.max_nodes_per_token=2"}, 1));
}

TEST(RouterGroups, EachGroupingRuleIsAConfigErrorNamingItsKey) {
    auto err = [](std::vector<std::string> sets) {
        sets.insert(sets.begin(), {"moe.n_experts=16", "moe.top_k=4"});
        return config_error([&] { trainer::load_config("", sets, 1); });
    };
    expect_has(err({"moe.n_group=3"}), {"moe.n_group (3)", "moe.n_experts (16)", "divisor"});
    expect_has(err({"moe.n_group=4", "moe.topk_group=5"}), {"moe.topk_group (5)", "moe.n_group (4)"});
    expect_has(err({"moe.n_group=8", "moe.topk_group=1"}),
               {"moe.top_k (4)", "2 experts", "moe.topk_group (1)", "raise moe.topk_group or lower moe.top_k"});
    expect_has(err({"moe.n_group=16", "moe.topk_group=4"}),
               {"moe.group_score top2_sum", "two experts per group", "moe.n_group (16)", "moe.group_score max"});
    expect_has(err({"moe.group_score=sum"}), {"moe.group_score", "sum", "top2_sum", "max"});
    expect_has(err({"moe.n_group=0"}), {"moe.n_group", "0"});
    expect_has(err({"moe.n_group=128"}), {"moe.n_group", "128", "64"});
    // The same rules hold for configs built in code.
    ModelConfig cfg;
    cfg.moe.n_experts = 16;
    cfg.moe.top_k = 4;
    cfg.moe.n_group = 4;
    cfg.moe.topk_group = 0;
    expect_has(config_error([&] { cfg.moe.validate(); }), {"moe.topk_group (0)"});
    // What is allowed: one group (topk_group 1), max with one expert per group, every group kept.
    for (const auto& sets :
         std::vector<std::vector<std::string>>{{},
                                               {"moe.n_group=16", "moe.topk_group=4", "moe.group_score=max"},
                                               {"moe.n_group=4", "moe.topk_group=4"},
                                               {"moe.n_group=8", "moe.topk_group=2"}}) {
        std::vector<std::string> all = {"moe.n_experts=16", "moe.top_k=4"};
        all.insert(all.end(), sets.begin(), sets.end());
        EXPECT_NO_THROW(trainer::load_config("", all, 1)) << (sets.empty() ? "defaults" : sets[0]);
    }
    // The kernel refuses what validation would, in case a caller skips it.
    std::vector<double> scores(16, 0.5), keys(16);
    std::vector<float> bias(16, 0.0f);
    std::vector<int32_t> sel(4);
    EXPECT_THROW(backend::cpu::router_select_forward(sel.data(), keys.data(), scores.data(), bias.data(), 1, 16, 4, 3,
                                                     1, GroupScore::kMax),
                 Error);
    EXPECT_THROW(backend::cpu::router_select_forward(sel.data(), keys.data(), scores.data(), bias.data(), 1, 16, 4, 8,
                                                     1, GroupScore::kMax),
                 Error);
}

}  // namespace
}  // namespace frugal
