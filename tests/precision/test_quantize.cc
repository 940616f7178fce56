// Quantization error within its analytical bound for every granularity and format; FP8 matmuls and linear-layer
// gradients against FP32 within theirs; delayed-scaling history; BF16 optimizer state.
//
// Bounds: with scale s (the group's amax lands at or below the format's max), an element x in the normal range
// rounds with relative error at most 2^-(M+1) (M mantissa bits: 2^-4 for E4M3, 2^-3 for E5M2); in the subnormal
// range the absolute error is at most half the smallest subnormal over s (2^-10 / s for E4M3, 2^-17 / s for E5M2).
#include <gtest/gtest.h>

#include <cmath>

#include "backend/cpu/ops.h"
#include "optim/adamw.h"
#include "precision/quantize.h"
#include "precision/recipe.h"
#include "tests/util.h"

namespace frugal {
namespace {

using namespace precision;

double elem_bound(float x, float scale, Fp8Format f) {
    const double rel = f == Fp8Format::kE4M3 ? 1.0 / 16 : 1.0 / 8;
    const double sub = f == Fp8Format::kE4M3 ? std::ldexp(1.0, -10) : std::ldexp(1.0, -17);
    return std::max(rel * std::fabs(double(x)), sub / double(scale)) * (1 + 1e-6);
}

// Checks out against in, group by group: groups are given by a function from element index to group id.
template <typename GroupOf>
void check_groups(const std::vector<float>& in, const std::vector<float>& out, int64_t groups, GroupOf group_of,
                  Fp8Format f, bool pow2, const std::string& what) {
    std::vector<float> gmax(static_cast<size_t>(groups), 0.0f);
    for (size_t i = 0; i < in.size(); ++i) {
        float& m = gmax[static_cast<size_t>(group_of(int64_t(i)))];
        m = std::max(m, std::fabs(in[i]));
    }
    for (size_t i = 0; i < in.size(); ++i) {
        const float a = gmax[static_cast<size_t>(group_of(int64_t(i)))];
        float s = fp8_max(f) / a;
        if (pow2) s = std::exp2(std::floor(std::log2(s)));
        const double err = std::fabs(double(out[i]) - double(in[i]));
        ASSERT_LE(err, elem_bound(in[i], s, f)) << what << " element " << i << " in " << in[i] << " out " << out[i];
    }
}

std::vector<float> wide_range(int64_t n, uint64_t seed) {
    // Magnitudes over many decades, so both the normal and the subnormal range of each group are exercised.
    auto v = test::random_vec<float>(n, seed);
    for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] *= std::ldexp(1.0f, int(i % 23) - 11);
    return v;
}

TEST(Quantize, ErrorOfEveryElementIsWithinItsRoundingBoundForEveryGranularity) {
    const int64_t rows = 300, cols = 260, tile = 128;  // ragged edges on purpose
    auto x = wide_range(rows * cols, 1);
    std::vector<float> out(x.size());
    for (Fp8Format f : {Fp8Format::kE4M3, Fp8Format::kE5M2})
        for (bool pow2 : {false, true}) {
            const std::string tag = std::string(f == Fp8Format::kE4M3 ? "e4m3" : "e5m2") + (pow2 ? " pow2" : "");
            fake_quant(out.data(), x.data(), int64_t(x.size()), f,
                       pow2 ? std::exp2(std::floor(std::log2(fp8_max(f) / amax(x.data(), int64_t(x.size())))))
                            : scale_for(amax(x.data(), int64_t(x.size())), f, false));
            check_groups(
                x, out, 1, [](int64_t) { return 0; }, f, pow2, "tensor " + tag);
            const int64_t ct = (cols + tile - 1) / tile, rt = (rows + tile - 1) / tile;
            fake_quant_row_tiles(out.data(), x.data(), rows, cols, tile, f, pow2);
            check_groups(
                x, out, rows * ct, [&](int64_t i) { return (i / cols) * ct + (i % cols) / tile; }, f, pow2,
                "1x128 " + tag);
            fake_quant_col_tiles(out.data(), x.data(), rows, cols, tile, f, pow2);
            check_groups(
                x, out, rt * cols, [&](int64_t i) { return ((i / cols) / tile) * cols + i % cols; }, f, pow2,
                "128x1 " + tag);
            fake_quant_blocks(out.data(), x.data(), rows, cols, tile, f, pow2);
            check_groups(
                x, out, rt * ct, [&](int64_t i) { return ((i / cols) / tile) * ct + (i % cols) / tile; }, f, pow2,
                "128x128 " + tag);
        }
}

TEST(Quantize, RealCodesRoundTripThroughScales) {
    const int64_t rows = 5, cols = 300;
    auto x = wide_range(rows * cols, 2);
    std::vector<uint8_t> codes(x.size());
    std::vector<float> scales(static_cast<size_t>(rows * 3)), back(x.size()), fq(x.size());
    quantize_row_tiles(codes.data(), scales.data(), x.data(), rows, cols, 128, Fp8Format::kE4M3, true);
    dequantize_row_tiles(back.data(), codes.data(), scales.data(), rows, cols, 128, Fp8Format::kE4M3);
    fake_quant_row_tiles(fq.data(), x.data(), rows, cols, 128, Fp8Format::kE4M3, true);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(back[i], fq[i]) << i;
    for (float s : scales) EXPECT_EQ(s, std::exp2(std::round(std::log2(s)))) << "power-of-two scale";
}

// |y - y_ref| <= sum_k |a_k| |b_k| (ea + eb + ea eb) + FP32 accumulation, elementwise.
void check_matmul_bound(const std::vector<float>& got, const std::vector<double>& ref,
                        const std::vector<double>& abs_dot, double ea, double eb, const std::string& what) {
    for (size_t i = 0; i < got.size(); ++i) {
        const double bound = abs_dot[i] * (ea + eb + ea * eb) + 1e-5 * abs_dot[i] + 1e-30;
        ASSERT_LE(std::fabs(double(got[i]) - ref[i]), bound) << what << " element " << i;
    }
}

TEST(Recipes, Fp8LinearForwardAndGradientsAreWithinTheirBounds) {
    // Values well inside the normal range of every group, so the relative bounds apply.
    const int64_t n = 130, in = 200, out = 70;
    auto x = test::random_vec<float>(n * in, 3);
    auto w = test::random_vec<float>(out * in, 4, 0.05);
    auto dy = test::random_vec<float>(n * out, 5, 1e-3);
    // FP64 references and sum |a||b| for the three products.
    std::vector<double> y_ref(static_cast<size_t>(n * out), 0), y_abs(static_cast<size_t>(n * out), 0),
        dx_ref(static_cast<size_t>(n * in), 0), dx_abs(static_cast<size_t>(n * in), 0),
        dw_ref(static_cast<size_t>(out * in), 0), dw_abs(static_cast<size_t>(out * in), 0);
    for (int64_t i = 0; i < n; ++i)
        for (int64_t o = 0; o < out; ++o)
            for (int64_t k = 0; k < in; ++k) {
                const double a = x[static_cast<size_t>(i * in + k)], b = w[static_cast<size_t>(o * in + k)],
                             g = dy[static_cast<size_t>(i * out + o)];
                y_ref[static_cast<size_t>(i * out + o)] += a * b;
                y_abs[static_cast<size_t>(i * out + o)] += std::fabs(a * b);
                dx_ref[static_cast<size_t>(i * in + k)] += g * b;
                dx_abs[static_cast<size_t>(i * in + k)] += std::fabs(g * b);
                dw_ref[static_cast<size_t>(o * in + k)] += g * a;
                dw_abs[static_cast<size_t>(o * in + k)] += std::fabs(g * a);
            }
    struct Case {
        const char* recipe;
        double e_act, e_w, e_grad;
    };
    // Relative rounding bound of each operand: E4M3 2^-4, E5M2 2^-3, BF16 2^-8 (subnormals excluded above; the
    // blockwise path also has tiny elements near tile edges, hence the small absolute slack in the bound).
    for (Case c :
         {Case{"bf16", 1.0 / 256, 1.0 / 256, 1.0 / 256}, Case{"fp8-tensorwise", 1.0 / 16, 1.0 / 16, 1.0 / 8},
          Case{"fp8-delayed", 1.0 / 16, 1.0 / 16, 1.0 / 8}, Case{"fp8-blockwise", 1.0 / 16, 1.0 / 16, 1.0 / 16}}) {
        PrecisionConfig cfg;
        cfg.recipe = c.recipe;
        auto r = make_matmul_recipe<float>(cfg, "experts", backend::cpu_backend().ops<float>());
        EXPECT_EQ(r->name(), c.recipe);
        std::vector<float> y(static_cast<size_t>(n * out)), dx(static_cast<size_t>(n * in), 0.0f),
            dw(static_cast<size_t>(out * in), 0.0f);
        r->forward(y.data(), x.data(), w.data(), n, in, out);
        r->backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), n, in, out);
        check_matmul_bound(y, y_ref, y_abs, c.e_act, c.e_w, std::string(c.recipe) + " forward");
        check_matmul_bound(dx, dx_ref, dx_abs, c.e_grad, c.e_w, std::string(c.recipe) + " dgrad");
        check_matmul_bound(dw, dw_ref, dw_abs, c.e_grad, c.e_act, std::string(c.recipe) + " wgrad");
        // And not trivially: FP8 differs from FP32 somewhere.
        double max_diff = 0;
        for (size_t i = 0; i < y.size(); ++i) max_diff = std::max(max_diff, std::fabs(y[i] - y_ref[i]));
        EXPECT_GT(max_diff, 1e-6) << c.recipe;
    }
    // Roles outside precision.low_precision_layers stay FP32.
    PrecisionConfig cfg;
    cfg.recipe = "fp8-blockwise";
    EXPECT_EQ(make_matmul_recipe<float>(cfg, "head", backend::cpu_backend().ops<float>())->name(), "fp32");
    cfg.low_precision_layers = {"experts"};
    EXPECT_EQ(make_matmul_recipe<float>(cfg, "attention", backend::cpu_backend().ops<float>())->name(), "fp32");
}

TEST(Recipes, DelayedScalingUsesTheLargestAmaxInItsHistoryWindow) {
    AmaxHistory h(3);
    EXPECT_FLOAT_EQ(h.scale_and_record(2.0f, 448.0f, 0), 224.0f);  // empty history: this use's amax
    EXPECT_FLOAT_EQ(h.scale_and_record(8.0f, 448.0f, 0), 224.0f);  // max of history {2}
    EXPECT_FLOAT_EQ(h.scale_and_record(1.0f, 448.0f, 1), 28.0f);   // max {2, 8} = 8, margin 1 halves
    EXPECT_FLOAT_EQ(h.scale_and_record(1.0f, 448.0f, 0), 56.0f);   // history {2, 8, 1}
    EXPECT_FLOAT_EQ(h.scale_and_record(1.0f, 448.0f, 0), 56.0f);   // {8, 1, 1}: 8 still inside the window
    EXPECT_FLOAT_EQ(h.scale_and_record(1.0f, 448.0f, 0), 448.0f);  // {1, 1, 1}: 8 has aged out
    EXPECT_EQ(h.size(), 3u);
}

TEST(Optimizer, Bf16MomentsTrackFp32Moments) {
    optim::OptimConfig cfg;
    const int64_t n = 64;
    auto p0 = test::random_vec<float>(n, 7);
    std::vector<float> pa = p0, pb = p0, ga(static_cast<size_t>(n)), gb(static_cast<size_t>(n));
    optim::AdamW a(cfg, {{pa.data(), ga.data(), n, true}}, false);
    optim::AdamW b(cfg, {{pb.data(), gb.data(), n, true}}, true);
    EXPECT_EQ(b.exp_avg()[0].dtype(), DType::kBF16);
    for (int step = 0; step < 10; ++step) {
        auto g = test::random_vec<float>(n, uint64_t(100 + step));
        ga = g;
        gb = g;
        a.step(1e-3);
        b.step(1e-3);
    }
    // BF16 keeps 8 bits of mantissa: the updates agree to a fraction of the step size.
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(pa[static_cast<size_t>(i)], pb[static_cast<size_t>(i)], 1e-4) << i;
    double diff = 0;
    for (int64_t i = 0; i < n; ++i) diff += std::fabs(pa[static_cast<size_t>(i)] - pb[static_cast<size_t>(i)]);
    EXPECT_GT(diff, 0.0) << "BF16 moments should round somewhere";
}

}  // namespace
}  // namespace frugal
