// Inputs and comparisons shared by the router and dispatch tests of the CUDA backend (test_moe_math.cc on the host,
// test_moe_gpu.cc on a GPU): random logits, scores with exact ties, a router selection, a permutation with dropped
// choices, and the largest absolute and relative error between two buffers, printed with its index and both values.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace frugal::moe_test {

constexpr uint64_t kSeed = 20261203;

// Ragged router shapes: one expert, a few, a power of two and a prime above a warp; K up to 8.
struct RouterShape {
    int64_t t, e, k;
};
inline const RouterShape kRouterShapes[] = {{1, 1, 1}, {37, 3, 2}, {129, 8, 2}, {600, 64, 6}, {70, 257, 8}};

inline std::vector<float> normal_floats(int64_t n, float stddev, uint64_t seed) {
    std::mt19937_64 gen(seed);
    std::normal_distribution<float> normal(0.0f, stddev);
    std::vector<float> x(size_t(std::max<int64_t>(n, 0)));
    for (float& v : x) v = normal(gen);
    return x;
}

// Scores in [0, 1) on a grid of 1/8, so a row has many exact ties for the selection to break.
inline std::vector<float> tied_scores(int64_t n, uint64_t seed) {
    std::mt19937_64 gen(seed);
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = float(gen() % 8) / 8.0f;
    return x;
}

// A valid selection: each token's k distinct experts, uniformly shuffled.
inline std::vector<int32_t> random_selection(int64_t t, int64_t e, int64_t k, uint64_t seed) {
    std::mt19937_64 gen(seed);
    std::vector<int32_t> experts(static_cast<size_t>(e)), sel(static_cast<size_t>(t * k));
    std::iota(experts.begin(), experts.end(), 0);
    for (int64_t i = 0; i < t; ++i) {
        std::shuffle(experts.begin(), experts.end(), gen);
        std::copy_n(experts.begin(), k, sel.begin() + i * k);
    }
    return sel;
}

// expert_TK from a selection with about a fifth of the choices dropped (-1).
inline std::vector<int32_t> with_drops(std::vector<int32_t> sel, uint64_t seed) {
    std::mt19937_64 gen(seed);
    for (int32_t& x : sel)
        if (gen() % 5 == 0) x = -1;
    return sel;
}

struct ErrorStats {
    double max_abs = 0, max_rel = 0;
    size_t at = 0;
    double got = 0, want = 0;
};

// The largest absolute error, where it is, and the largest relative error (|got - want| / max(|want|, floor)).
template <typename T>
ErrorStats error_stats(const std::vector<T>& got, const std::vector<T>& want, double floor = 1e-30) {
    ErrorStats s;
    for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
        const double g = double(got[i]), w = double(want[i]);
        const double abs = std::fabs(g - w);
        if (abs > s.max_abs || (std::isnan(g) != std::isnan(w))) {
            s.max_abs = std::isnan(g) != std::isnan(w) ? INFINITY : abs;
            s.at = i;
            s.got = g;
            s.want = w;
        }
        s.max_rel = std::max(s.max_rel, abs / std::max(std::fabs(w), floor));
    }
    return s;
}

inline void print_stats(const std::string& what, const ErrorStats& s) {
    if (s.max_abs == 0) {
        std::printf("%-48s max abs 0, max rel 0\n", what.c_str());
        return;
    }
    std::printf("%-48s max abs %.3e (at %zu: %.9g against %.9g), max rel %.3e\n", what.c_str(), s.max_abs, s.at, s.got,
                s.want, s.max_rel);
}

// Bitwise equality, printing the error statistics either way and the first mismatches.
inline void expect_same_bits(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    print_stats(what, error_stats(got, want));
    int64_t mismatches = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        uint32_t a, b;
        std::memcpy(&a, &got[i], 4);
        std::memcpy(&b, &want[i], 4);
        if (a != b && mismatches++ < 5)
            ADD_FAILURE() << what << ": element " << i << " got " << got[i] << ", want " << want[i] << " (seed "
                          << kSeed << ")";
    }
    EXPECT_EQ(mismatches, 0) << what << ": " << mismatches << " of " << want.size() << " elements differ";
}

// Within a relative tolerance of each element's scale (max(|want|, floor)).
inline void expect_close(const std::vector<float>& got, const std::vector<float>& want, double rel, double floor,
                         const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    const ErrorStats s = error_stats(got, want, floor);
    print_stats(what, s);
    EXPECT_LE(s.max_rel, rel) << what << ": element " << s.at << " got " << s.got << ", want " << s.want << " (seed "
                              << kSeed << ")";
}

}  // namespace frugal::moe_test
