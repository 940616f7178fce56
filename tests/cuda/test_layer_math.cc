// backend/cuda/layer_math.h (the dense layer kernels' arithmetic, compiled here for the host exactly as the device
// computes it: this file is built with -ffp-contract=off) against the CPU kernels (backend/cpu/ops.h) on random inputs
// of ragged shapes. Composed with the CPU's sequential loops the functions give the CPU's bits where no product feeds
// a sum (SwiGLU forward, RMSNorm's out and rstd, the cross-entropy loss, the sigmoid gate's g, out and d_shared, the
// sequential bias gradient), and agree within an ulp of the products where one does, since the CPU is compiled with
// FMA contraction. Composed with the orders the CUDA kernels reduce in (layer_math::warp_order_sum, the chunked column
// sums of layers.h) they agree within a few ulps of the magnitudes summed: what the reordering alone costs, on which
// the GPU tests' tolerances rest. The rotary and strided-copy kernels' index maps are replayed on the host as well
// (partial rotary, multi-head latent attention's rope part at an offset inside each head and its one shared key row;
// copies and adds with src/dst repeats and a ragged last group): the strided ones give the CPU's bits. Every
// comparison prints its largest absolute and relative error. Runs without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cuda/layer_math.h"
#include "backend/cuda/layers.h"
#include "core/bf16.h"
#include "tests/util.h"

namespace frugal {
namespace {

namespace lm = cuda::layer_math;
namespace cpu = backend::cpu;

constexpr uint64_t kSeed = 20261202;
// Tolerances, as fractions of the largest |want| of a comparison. The CPU kernels are compiled with FMA contraction
// (g++'s default for C++, -ffp-contract=fast, under -march=native): where a product feeds a sum the CPU may round
// once where the device rounds twice, an ulp of the product. A reduction in the kernels' order moves by a few ulps of
// the magnitudes it sums.
constexpr double kFmaTol = 1e-6;
constexpr double kOrderTol = 1e-5;

struct Dims {
    int64_t n, d;
};
// One row and one column, rows shorter than a warp, ragged against 32 and against the column chunk (64 rows).
const Dims kDims[] = {{1, 1}, {3, 7}, {5, 33}, {70, 100}, {130, 257}, {64, 64}};

uint32_t bits(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return u;
}

std::string tag(const char* op, Dims s) {
    return std::string(op) + " " + std::to_string(s.n) + "x" + std::to_string(s.d);
}

// Prints the largest errors; with tol 0 every element must have the CPU's bits, else |got - want| <= tol * scale
// where scale is the largest |want| (the magnitude the reordered sums carry).
void check(const std::vector<float>& got, const std::vector<float>& want, const std::string& what, double tol) {
    ASSERT_EQ(got.size(), want.size()) << what;
    const test::Comparison c = test::compare(got.data(), want.data(), int64_t(want.size()));
    double scale = 0;
    for (float w : want) scale = std::max(scale, double(std::fabs(w)));
    std::printf("%-44s largest abs error %.3g (%.3g of the largest |want| %.3g), rel %.3g; tolerance %s\n",
                what.c_str(), c.max_abs, scale > 0 ? c.max_abs / scale : 0.0, scale, c.max_rel,
                tol == 0 ? "bitwise" : std::to_string(tol).c_str());
    if (tol == 0) {
        int64_t mismatches = 0;
        for (size_t i = 0; i < want.size(); ++i)
            if (bits(got[i]) != bits(want[i]) && mismatches++ < 5)
                ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i] << " (seed "
                              << kSeed << ")";
        EXPECT_EQ(mismatches, 0) << what;
        return;
    }
    test::expect_close(got.data(), want.data(), int64_t(want.size()), tol * scale, 0.0, what, kSeed);
}

// A reduction of terms j in [0, n): sequentially (the CPU's order) or in the CUDA kernels' warp order.
template <typename Acc, class Step>
Acc row_reduce(int64_t n, bool warp_order, Step step) {
    if (warp_order) return lm::warp_order_sum<Acc>(n, step, [](Acc a, Acc b) { return a + b; });
    Acc acc = 0;
    for (int64_t j = 0; j < n; ++j) acc = step(acc, j);
    return acc;
}

// dst_O += sum over rows of term(r, o): sequentially, or as layers.cu does (partials of kColumnChunkRows rows, added
// in chunk order).
template <class Term>
void column_sum(float* dst, int64_t n, int64_t out, bool chunked, Term term) {
    for (int64_t o = 0; o < out; ++o) {
        if (!chunked) {
            for (int64_t r = 0; r < n; ++r) dst[o] = lm::add_rn(dst[o], term(r, o));
            continue;
        }
        for (int64_t r0 = 0; r0 < n; r0 += cuda::kColumnChunkRows) {
            float partial = 0.0f;
            for (int64_t r = r0; r < std::min(n, r0 + cuda::kColumnChunkRows); ++r)
                partial = lm::add_rn(partial, term(r, o));
            dst[o] = lm::add_rn(dst[o], partial);
        }
    }
}

std::vector<float> randn(int64_t n, uint64_t salt, double scale = 1.0) {
    return test::random_vec<float>(n, kSeed + salt, scale);
}

TEST(LayerMath, SwigluForwardIsTheCpusBitsAndItsBackwardWithinTheCpusFusedMultiplyAdds) {
    for (Dims s : kDims) {
        const int64_t n = s.n, f = s.d;
        const auto gu = randn(n * 2 * f, 1, 3.0), dout = randn(n * f, 2);
        std::vector<float> want(static_cast<size_t>(n * f)), got(static_cast<size_t>(n * f));
        cpu::swiglu_forward(want.data(), gu.data(), n, f);
        for (int64_t r = 0; r < n; ++r)
            for (int64_t j = 0; j < f; ++j) got[r * f + j] = lm::swiglu(gu[r * 2 * f + j], gu[r * 2 * f + f + j]);
        check(got, want, tag("swiglu_forward", s), 0);

        auto want_d = randn(n * 2 * f, 3), got_d = want_d;
        cpu::swiglu_backward(want_d.data(), dout.data(), gu.data(), n, f);
        for (int64_t r = 0; r < n; ++r)
            for (int64_t j = 0; j < f; ++j)
                lm::swiglu_backward(got_d[r * 2 * f + j], got_d[r * 2 * f + f + j], dout[r * f + j], gu[r * 2 * f + j],
                                    gu[r * 2 * f + f + j]);
        check(got_d, want_d, tag("swiglu_backward", s), kFmaTol);
    }
}

TEST(LayerMath, RopeRotationAndItsInverseAgreeWithTheCpuWithinItsFusedMultiplyAdds) {
    const int64_t n = 37, heads = 3, hd = 10, half = hd / 2, stride = heads * hd + 4, max_pos = 50;
    const auto x = randn(n * stride, 4), cos_t = randn(max_pos * half, 5), sin_t = randn(max_pos * half, 6);
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) pos[i] = int32_t((i * 7) % max_pos);
    for (bool inverse : {false, true}) {
        auto want = x, got = x;
        cpu::rope_apply(want.data(), stride, hd, pos.data(), cos_t.data(), sin_t.data(), n, heads, hd, inverse);
        for (int64_t i = 0; i < n; ++i)
            for (int64_t h = 0; h < heads; ++h)
                for (int64_t j = 0; j < half; ++j) {
                    float* v = got.data() + i * stride + h * hd;
                    lm::rope_rotate(v[j], v[j + half], cos_t[pos[i] * half + j], sin_t[pos[i] * half + j], inverse);
                }
        check(got, want, inverse ? "rope_apply inverse" : "rope_apply", kFmaTol);
    }
}

// layers.cu's rope_kernel on the host: thread i of n * heads * rot_dim / 2 rotates pair j of head h of row r.
void rope_as_the_kernel(float* x, int64_t row_stride, int64_t head_stride, const int32_t* pos, const float* cos_t,
                        const float* sin_t, int64_t n, int64_t heads, int64_t rot_dim, bool inverse) {
    const int64_t half = rot_dim / 2, per_row = heads * half;
    for (int64_t i = 0; i < n * per_row; ++i) {
        const int64_t r = i / per_row, rest = i - r * per_row, h = rest / half, j = rest - h * half;
        const int64_t table = int64_t(pos[r]) * half + j;
        float* v = x + r * row_stride + h * head_stride;
        lm::rope_rotate(v[j], v[j + half], cos_t[table], sin_t[table], inverse);
    }
}

// Every element outside [offset + h * head_stride, + rot_dim) of every row keeps its bits.
void expect_outside_rotation_untouched(const std::vector<float>& got, const std::vector<float>& x, int64_t n,
                                       int64_t row_stride, int64_t offset, int64_t head_stride, int64_t heads,
                                       int64_t rot_dim, const std::string& what) {
    int64_t touched = 0;
    for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < row_stride; ++c) {
            const int64_t rel = c - offset, h = rel >= 0 ? rel / head_stride : -1;
            const bool rotated = rel >= 0 && h < heads && rel - h * head_stride < rot_dim;
            const size_t at = size_t(r * row_stride + c);
            if (!rotated && bits(got[at]) != bits(x[at])) ++touched;
        }
    EXPECT_EQ(touched, 0) << what << ": values outside the rotated part changed";
}

// Partial rotary (rot_dim < head width) and multi-head latent attention's layouts: the rope part at an offset
// inside each query head (nope first), and the one shared rope row of the keys (heads = 1).
struct RopeLayout {
    const char* name;
    int64_t n, row_stride, offset, head_stride, heads, rot_dim;
};
const RopeLayout kRopeLayouts[] = {
    {"partial rotary", 29, 4 * 20 + 3, 0, 20, 4, 8},
    {"mla query rope part", 23, 3 * 24, 16, 24, 3, 8},
    {"mla shared key rope row", 31, 40 + 6, 40, 6, 1, 6},
};

TEST(LayerMath, RopeOnPartialAndOffsetRopePartsAgreesWithTheCpuAndLeavesTheRestOfEachHeadAlone) {
    const int64_t max_pos = 40;
    for (const RopeLayout& l : kRopeLayouts) {
        const int64_t half = l.rot_dim / 2;
        const auto x = randn(l.n * l.row_stride, 30), cos_t = randn(max_pos * half, 31),
                   sin_t = randn(max_pos * half, 32);
        std::vector<int32_t> pos(static_cast<size_t>(l.n));
        for (int64_t i = 0; i < l.n; ++i) pos[size_t(i)] = int32_t((i * 3 + 1) % max_pos);
        for (bool inverse : {false, true}) {
            auto want = x, got = x;
            cpu::rope_apply(want.data() + l.offset, l.row_stride, l.head_stride, pos.data(), cos_t.data(), sin_t.data(),
                            l.n, l.heads, l.rot_dim, inverse);
            rope_as_the_kernel(got.data() + l.offset, l.row_stride, l.head_stride, pos.data(), cos_t.data(),
                               sin_t.data(), l.n, l.heads, l.rot_dim, inverse);
            const std::string what = std::string("rope_apply ") + l.name + (inverse ? " inverse" : "");
            check(got, want, what, kFmaTol);
            expect_outside_rotation_untouched(got, x, l.n, l.row_stride, l.offset, l.head_stride, l.heads, l.rot_dim,
                                              what);
            expect_outside_rotation_untouched(want, x, l.n, l.row_stride, l.offset, l.head_stride, l.heads, l.rot_dim,
                                              what + " (cpu)");
        }
    }
}

// layers.cu's strided_copy_kernel and strided_add_kernel on the host: one thread per destination element; the add
// sums its dst_repeat source rows in row order.
void strided_copy_as_the_kernel(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows,
                                int64_t cols, int64_t src_repeat) {
    for (int64_t i = 0; i < rows * cols; ++i) {
        const int64_t r = i / cols, c = i - r * cols;
        dst[r * ld_dst + c] = src[(r / src_repeat) * ld_src + c];
    }
}
void strided_add_as_the_kernel(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                               int64_t dst_repeat) {
    const int64_t dst_rows = (rows + dst_repeat - 1) / dst_repeat;
    for (int64_t i = 0; i < dst_rows * cols; ++i) {
        const int64_t q = i / cols, c = i - q * cols;
        float acc = dst[q * ld_dst + c];
        const int64_t end = std::min(rows, q * dst_repeat + dst_repeat);
        for (int64_t r = q * dst_repeat; r < end; ++r) acc = lm::add_rn(acc, src[r * ld_src + c]);
        dst[q * ld_dst + c] = acc;
    }
}

// rows x cols between buffers of leading dims ld_small (the side with one row per repeat) and ld_big; repeat > 1
// with rows not a multiple of it leaves a ragged last group.
struct StridedCase {
    int64_t rows, cols, ld_small, ld_big, repeat;
};
const StridedCase kStridedCases[] = {
    {1, 1, 1, 1, 1}, {7, 5, 9, 6, 1}, {13, 6, 8, 11, 4}, {33, 40, 40, 57, 16}, {5, 3, 3, 3, 8}};

std::string strided_tag(const char* op, const StridedCase& c) {
    return std::string(op) + " " + std::to_string(c.rows) + "x" + std::to_string(c.cols) + " repeat " +
           std::to_string(c.repeat);
}

TEST(LayerMath, StridedCopyAndAddWithBroadcastAndRaggedRepeatsAreTheCpusBits) {
    for (const StridedCase& c : kStridedCases) {
        const int64_t groups = (c.rows + c.repeat - 1) / c.repeat;
        // copy: src has one row per group (ld_small), dst one per row (ld_big)
        const auto src = randn(groups * c.ld_small, 40), dst0 = randn(c.rows * c.ld_big, 41);
        auto want = dst0, got = dst0;
        cpu::strided_copy(want.data(), c.ld_big, src.data(), c.ld_small, c.rows, c.cols, c.repeat);
        strided_copy_as_the_kernel(got.data(), c.ld_big, src.data(), c.ld_small, c.rows, c.cols, c.repeat);
        check(got, want, strided_tag("strided_copy", c), 0);
        // add: src one row per row (ld_big), dst one per group (ld_small); sums of up to 16 rows round every step
        const auto add_src = randn(c.rows * c.ld_big, 42), add_dst0 = randn(groups * c.ld_small, 43);
        auto want_a = add_dst0, got_a = add_dst0;
        cpu::strided_add(want_a.data(), c.ld_small, add_src.data(), c.ld_big, c.rows, c.cols, c.repeat);
        strided_add_as_the_kernel(got_a.data(), c.ld_small, add_src.data(), c.ld_big, c.rows, c.cols, c.repeat);
        check(got_a, want_a, strided_tag("strided_add", c), 0);
        // Columns past cols keep their bits on both.
        for (int64_t q = 0; q < groups; ++q)
            for (int64_t col = c.cols; col < c.ld_small; ++col)
                EXPECT_EQ(bits(got_a[size_t(q * c.ld_small + col)]), bits(add_dst0[size_t(q * c.ld_small + col)]))
                    << strided_tag("strided_add", c) << " wrote column " << col;
    }
}

// RMSNorm forward and backward (dx and dw) as the kernels compute them, in the given reduction orders.
struct RmsnormResult {
    std::vector<float> out, rstd, dx, dw;
};
RmsnormResult rmsnorm_by_layer_math(const std::vector<float>& x, const std::vector<float>& w,
                                    const std::vector<float>& g, const std::vector<float>& dx0,
                                    const std::vector<float>& dw0, Dims s, double eps, bool gpu_order) {
    const int64_t n = s.n, d = s.d;
    RmsnormResult r{std::vector<float>(static_cast<size_t>(n * d)), std::vector<float>(static_cast<size_t>(n)), dx0,
                    dw0};
    for (int64_t i = 0; i < n; ++i) {
        const float* xr = x.data() + i * d;
        const float* gr = g.data() + i * d;
        const float ss =
            row_reduce<float>(d, gpu_order, [&](float acc, int64_t j) { return lm::sum_sq_step(acc, xr[j]); });
        const float rstd = lm::rmsnorm_rstd(ss, d, eps);
        r.rstd[i] = rstd;
        for (int64_t j = 0; j < d; ++j) r.out[i * d + j] = lm::rmsnorm_out(xr[j], rstd, w[j]);
        const float dot = row_reduce<float>(
            d, gpu_order, [&](float acc, int64_t j) { return lm::rmsnorm_dot_step(acc, w[j], gr[j], xr[j]); });
        const float coef = lm::rmsnorm_coef(dot, rstd, d);
        for (int64_t j = 0; j < d; ++j)
            r.dx[i * d + j] = lm::rmsnorm_dx(r.dx[i * d + j], rstd, w[j], gr[j], xr[j], coef);
    }
    column_sum(r.dw.data(), n, d, gpu_order,
               [&](int64_t i, int64_t j) { return lm::rmsnorm_dw_term(g[i * d + j], x[i * d + j], r.rstd[i]); });
    return r;
}

TEST(LayerMath, RmsnormAgreesWithTheCpuWithinUlpsInItsOrderAndInTheKernelsOrder) {
    const double eps = 1e-5;
    for (Dims s : kDims) {
        const int64_t n = s.n, d = s.d;
        const auto x = randn(n * d, 7, 2.0), w = randn(d, 8), g = randn(n * d, 9), dx0 = randn(n * d, 10),
                   dw0 = randn(d, 11);
        RmsnormResult want{std::vector<float>(static_cast<size_t>(n * d)), std::vector<float>(static_cast<size_t>(n)),
                           dx0, dw0};
        cpu::rmsnorm_forward(want.out.data(), want.rstd.data(), x.data(), w.data(), n, d, eps);
        cpu::rmsnorm_backward(want.dx.data(), want.dw.data(), g.data(), x.data(), w.data(), want.rstd.data(), n, d);
        for (bool gpu_order : {false, true}) {
            const RmsnormResult got = rmsnorm_by_layer_math(x, w, g, dx0, dw0, s, eps, gpu_order);
            // A reordered sum of d terms moves by a few ulps of its magnitude; dx and dw carry them.
            const double tol = gpu_order ? kOrderTol : 0;
            const std::string order = gpu_order ? " (kernel order)" : "";
            check(got.out, want.out, tag("rmsnorm out", s) + order, tol);
            check(got.rstd, want.rstd, tag("rmsnorm rstd", s) + order, tol);
            check(got.dx, want.dx, tag("rmsnorm dx", s) + order, gpu_order ? kOrderTol : kFmaTol);
            check(got.dw, want.dw, tag("rmsnorm dw", s) + order, gpu_order ? kOrderTol : kFmaTol);
        }
    }
}

// Logits spread over tens of units, targets with every fourth row ignored.
struct CrossEntropyInput {
    std::vector<float> logits;
    std::vector<int32_t> targets;
};
constexpr int32_t kIgnore = -100;
CrossEntropyInput cross_entropy_input(int64_t n, int64_t v) {
    CrossEntropyInput in{randn(n * v, 12, 8.0), std::vector<int32_t>(static_cast<size_t>(n))};
    for (int64_t i = 0; i < n; ++i) in.targets[i] = i % 4 == 3 ? kIgnore : int32_t((i * 131 + 7) % v);
    return in;
}

TEST(LayerMath, CrossEntropyAgreesWithTheCpuWithinUlpsInItsOrderAndInTheKernelsOrder) {
    const float scale = 0.37f;
    for (Dims s : kDims) {
        const int64_t n = s.n, v = s.d;
        const CrossEntropyInput in = cross_entropy_input(n, v);
        std::vector<float> want_loss(static_cast<size_t>(n));
        const double want_total =
            cpu::cross_entropy_forward(want_loss.data(), in.logits.data(), in.targets.data(), n, v, kIgnore);
        auto want_d = randn(n * v, 13);
        auto d0 = want_d;
        cpu::cross_entropy_backward(want_d.data(), in.logits.data(), in.targets.data(), scale, n, v, kIgnore);
        for (bool gpu_order : {false, true}) {
            std::vector<float> loss(static_cast<size_t>(n)), d = d0;
            for (int64_t i = 0; i < n; ++i) {
                if (in.targets[i] == kIgnore) continue;
                const float* row = in.logits.data() + i * v;
                float mx = -INFINITY;  // the maximum is exact in any order
                for (int64_t j = 0; j < v; ++j) mx = lm::max_step(mx, row[j]);
                const double sum = row_reduce<double>(
                    v, gpu_order, [&](double acc, int64_t j) { return lm::ce_exp_step(acc, row[j], mx); });
                loss[i] = lm::ce_row_loss(sum, mx, row[in.targets[i]]);
                const float sum_f = row_reduce<float>(
                    v, gpu_order, [&](float acc, int64_t j) { return lm::ce_sum_step(acc, row[j], mx); });
                const float inv = lm::ce_inv(scale, sum_f);
                for (int64_t j = 0; j < v; ++j)
                    d[i * v + j] = lm::ce_grad(d[i * v + j], row[j], mx, inv, j == in.targets[i], scale);
            }
            const std::string order = gpu_order ? " (kernel order)" : "";
            check(loss, want_loss, tag("cross_entropy loss", s) + order, gpu_order ? kOrderTol : 0);
            check(d, want_d, tag("cross_entropy dlogits", s) + order, gpu_order ? kOrderTol : kFmaTol);
            double total = 0;
            for (float l : loss) total += double(l);
            if (gpu_order)
                EXPECT_NEAR(total, want_total, 1e-5 * std::max(1.0, std::fabs(want_total))) << tag("total", s);
            else
                EXPECT_EQ(total, want_total) << tag("total", s);
        }
    }
}

TEST(LayerMath, SigmoidGateAgreesWithTheCpuWithinUlpsInItsOrderAndInTheKernelsOrder) {
    for (Dims s : kDims) {
        const int64_t t = s.n, d = s.d;
        const auto shared = randn(t * d, 14), dout = randn(t * d, 15), logits = randn(t, 16, 4.0);
        std::vector<float> want_out(static_cast<size_t>(t * d)), want_gate = logits;
        cpu::sigmoid_gate_forward(want_out.data(), want_gate.data(), shared.data(), t, d);
        std::vector<float> want_ds(static_cast<size_t>(t * d)), want_dl(static_cast<size_t>(t));
        cpu::sigmoid_gate_backward(want_ds.data(), want_dl.data(), dout.data(), shared.data(), want_gate.data(), t, d);
        for (bool gpu_order : {false, true}) {
            std::vector<float> out(static_cast<size_t>(t * d)), gate(static_cast<size_t>(t)),
                ds(static_cast<size_t>(t * d)), dl(static_cast<size_t>(t));
            for (int64_t i = 0; i < t; ++i) {
                gate[i] = lm::sigmoid(logits[i]);
                for (int64_t j = 0; j < d; ++j) {
                    out[i * d + j] = lm::gate_out(gate[i], shared[i * d + j]);
                    ds[i * d + j] = lm::gate_d_shared(gate[i], dout[i * d + j]);
                }
                const float dot = row_reduce<float>(d, gpu_order, [&](float acc, int64_t j) {
                    return lm::gate_dot_step(acc, dout[i * d + j], shared[i * d + j]);
                });
                dl[i] = lm::gate_d_logit(gate[i], dot);
            }
            const std::string order = gpu_order ? " (kernel order)" : "";
            check(gate, want_gate, tag("sigmoid_gate g", s), 0);
            check(out, want_out, tag("sigmoid_gate out", s), 0);
            check(ds, want_ds, tag("sigmoid_gate d_shared", s), 0);
            check(dl, want_dl, tag("sigmoid_gate d_logit", s) + order, gpu_order ? kOrderTol : kFmaTol);
        }
    }
}

TEST(LayerMath, ChunkedColumnSumsOfTheBiasGradientAgreeWithTheCpuWithinUlps) {
    for (Dims s : kDims) {
        const int64_t n = s.n, out = s.d;
        const auto dy = randn(n * out, 17), db0 = randn(out, 18);
        auto want = db0, seq = db0, chunked = db0;
        cpu::bias_backward(want.data(), dy.data(), n, out);
        const auto term = [&](int64_t r, int64_t o) { return dy[r * out + o]; };
        column_sum(seq.data(), n, out, false, term);
        column_sum(chunked.data(), n, out, true, term);
        check(seq, want, tag("bias_backward", s), 0);
        // The chunk partials sum at most kColumnChunkRows terms each: the error is a few ulps of the partial sums'
        // magnitude (sqrt(n) for unit normal terms).
        check(chunked, want, tag("bias_backward (kernel order)", s), kOrderTol * std::sqrt(double(n)));
    }
}

TEST(LayerMath, Bf16ConversionsEqualCoreBf16OnEveryPatternClass) {
    std::vector<float> x = randn(4096, 19, 1e3);
    for (float special : {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::denorm_min(), 1.00390625f, 1.01171875f})
        x.push_back(special);
    for (uint32_t b = 0; b < 65536; b += 7) x.push_back(cuda::fp8::bits_float((b << 16) | 0x8000u));  // ties
    int64_t mismatches = 0;
    for (float v : x) {
        const uint16_t want = float_to_bf16_bits(v), got = cuda::fp8::encode_bf16(v);
        if (got != want && mismatches++ < 5) ADD_FAILURE() << "f32_to_bf16(" << v << "): " << got << " want " << want;
        if (bits(cuda::fp8::decode_bf16(want)) != bits(bf16_bits_to_float(want)) && mismatches++ < 5)
            ADD_FAILURE() << "bf16_to_f32(" << want << ")";
    }
    EXPECT_EQ(mismatches, 0);
}

}  // namespace
}  // namespace frugal
