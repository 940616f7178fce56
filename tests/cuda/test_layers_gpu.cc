// The dense layers' CUDA launchers (backend/cuda/layers.h) against the CPU backend (backend::cpu_backend()) on
// random inputs of ragged shapes (rows shorter than a warp, columns ragged against 32, 256 and the 64-row column
// chunks). Tolerances, as fractions of the largest |want| of a comparison, follow layers.h's classes: bitwise where
// the operations are the CPU's (elementwise, bias, embeddings, BF16, the gate's d_shared); 1e-6 where the CPU's
// compiler fuses a product into a sum (rotary); 4e-6 where exp differs too (the device's expf is within 2 ulps of
// glibc's); 1e-5 where a reduction runs in another order (tests/cuda/test_layer_math.cc measures what the reordering
// alone costs, on the host). Every comparison prints its largest absolute and relative error. Each launcher runs twice
// on the same inputs and must give the same bits both times. Rotary runs on partial and offset rope parts too
// (multi-head latent attention's layouts) and the strided copies with src/dst repeats and ragged last groups,
// bitwise. Without a GPU the tests skip with the CUDA runtime's reason.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/allocator.h"
#include "backend/cuda/check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/layers.h"
#include "core/bf16.h"
#include "tests/cuda/gpu_test_util.h"
#include "tests/util.h"

namespace frugal {
namespace {

using cuda_test::bits;
using cuda_test::DeviceBuffer;

constexpr uint64_t kSeed = 20261203;
constexpr double kFmaTol = 1e-6;
constexpr double kExpTol = 4e-6;
constexpr double kOrderTol = 1e-5;

struct Dims {
    int64_t n, d;
};
const Dims kDims[] = {{1, 1}, {3, 7}, {77, 300}, {130, 1000}, {1000, 33}, {64, 256}};

std::string tag(const char* op, Dims s) {
    return std::string(op) + " " + std::to_string(s.n) + "x" + std::to_string(s.d);
}

// The backend's stream and its pooled allocator (the launchers' scratch).
struct Gpu {
    cudaStream_t stream = nullptr;
    std::unique_ptr<cuda::CudaAllocator> alloc;
    Gpu() {
        FRUGAL_CUDA_CHECK(cudaSetDevice(0));
        FRUGAL_CUDA_CHECK(cudaStreamCreate(&stream));
        alloc = std::make_unique<cuda::CudaAllocator>(0, stream);
    }
    ~Gpu() {
        alloc.reset();
        (void)cudaStreamDestroy(stream);
    }
};

template <typename T>
void expect_same_bits(const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    int64_t mismatches = 0;
    for (size_t i = 0; i < want.size(); ++i)
        if (bits(got[i]) != bits(want[i]) && mismatches++ < 5)
            ADD_FAILURE() << what << ": element " << i << " got " << double(got[i]) << " want " << double(want[i])
                          << " (seed " << kSeed << ")";
    EXPECT_EQ(mismatches, 0) << what << ": " << mismatches << " of " << want.size() << " elements differ";
}

// Prints the largest errors; tol 0: bitwise, else |got - want| <= tol * (largest |want|).
void check(const std::vector<float>& got, const std::vector<float>& want, const std::string& what, double tol) {
    ASSERT_EQ(got.size(), want.size()) << what;
    const test::Comparison c = test::compare(got.data(), want.data(), int64_t(want.size()));
    double scale = 0;
    for (float w : want) scale = std::max(scale, double(std::fabs(w)));
    std::printf("%-44s largest abs error %.3g (%.3g of the largest |want| %.3g), rel %.3g; tolerance %s\n",
                what.c_str(), c.max_abs, scale > 0 ? c.max_abs / scale : 0.0, scale, c.max_rel,
                tol == 0 ? "bitwise" : std::to_string(tol).c_str());
    if (tol == 0) return expect_same_bits(got, want, what);
    test::expect_close(got.data(), want.data(), int64_t(want.size()), tol * scale, 0.0, what, kSeed);
}

std::vector<float> randn(int64_t n, uint64_t salt, double scale = 1.0) {
    return test::random_vec<float>(n, kSeed + salt, scale);
}

const backend::Ops<float>& cpu_ops() { return backend::cpu_backend().ops<float>(); }

// Runs launch on fresh device copies of the inputs twice (same bits both times) and returns the first result.
template <class Launch>
std::vector<float> run_twice(const std::vector<float>& initial, const std::string& what, Launch launch) {
    DeviceBuffer<float> out(initial);
    launch(out.get());
    const std::vector<float> first = out.download();
    out.upload(initial);
    launch(out.get());
    expect_same_bits(out.download(), first, what + " (second run)");
    return first;
}

TEST(LayersGpu, ElementwiseOpsEqualTheCpuBitForBit) {
    FRUGAL_REQUIRE_GPU();
    Gpu gpu;
    for (Dims s : kDims) {
        const int64_t n = s.n, o = s.d;
        const auto a = randn(n * o, 1), b = randn(n * o, 2), bias = randn(o, 3);
        DeviceBuffer<float> a_d(a), b_d(b), bias_d(bias);

        std::vector<float> want(a.size());
        cpu_ops().fill(want.data(), n * o, 0.625f);
        check(run_twice(a, "fill", [&](float* y) { cuda::fill(gpu.stream, y, n * o, 0.625f); }), want, tag("fill", s),
              0);

        cpu_ops().add(want.data(), a.data(), b.data(), n * o);
        check(run_twice(a, "add", [&](float* y) { cuda::add(gpu.stream, y, y, b_d.get(), n * o); }),  // out aliases a
              want, tag("add", s), 0);

        want = a;
        cpu_ops().add_inplace(want.data(), b.data(), n * o);
        check(run_twice(a, "add_inplace", [&](float* y) { cuda::add_inplace(gpu.stream, y, b_d.get(), n * o); }), want,
              tag("add_inplace", s), 0);

        want = a;
        cpu_ops().bias_add(want.data(), bias.data(), n, o);
        check(run_twice(a, "bias_add", [&](float* y) { cuda::bias_add(gpu.stream, y, bias_d.get(), n, o); }), want,
              tag("bias_add", s), 0);

        std::vector<uint16_t> bf16_want(a.size());
        for (size_t i = 0; i < a.size(); ++i) bf16_want[i] = float_to_bf16_bits(a[i] * 1e3f);
        std::vector<float> scaled(a.size());
        for (size_t i = 0; i < a.size(); ++i) scaled[i] = a[i] * 1e3f;
        DeviceBuffer<float> scaled_d(scaled);
        DeviceBuffer<uint16_t> bf16_d(std::vector<uint16_t>(a.size()));
        cuda::f32_to_bf16(gpu.stream, bf16_d.get(), scaled_d.get(), n * o);
        expect_same_bits(bf16_d.download(), bf16_want, tag("f32_to_bf16", s));
        for (size_t i = 0; i < a.size(); ++i) want[i] = bf16_bits_to_float(bf16_want[i]);
        check(run_twice(a, "bf16_to_f32", [&](float* y) { cuda::bf16_to_f32(gpu.stream, y, bf16_d.get(), n * o); }),
              want, tag("bf16_to_f32", s), 0);
    }
}

TEST(LayersGpu, EmbeddingsEqualTheCpuBitForBitWithRepeatedTokens) {
    FRUGAL_REQUIRE_GPU();
    Gpu gpu;
    for (Dims s : kDims) {
        const int64_t n = s.n, d = s.d, v = 13;  // a small vocabulary: most ids repeat, some never occur
        std::vector<int32_t> tokens(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) tokens[i] = int32_t((i * i * 7 + 3) % v);
        const auto wte = randn(v * d, 4), dout = randn(n * d, 5), dwte0 = randn(v * d, 6);
        DeviceBuffer<int32_t> tokens_d(tokens);
        DeviceBuffer<float> wte_d(wte), dout_d(dout);

        std::vector<float> want(static_cast<size_t>(n * d));
        cpu_ops().embedding_forward(want.data(), tokens.data(), wte.data(), n, d);
        check(run_twice(std::vector<float>(want.size()), "embedding_forward",
                        [&](float* y) { cuda::embedding_forward(gpu.stream, y, tokens_d.get(), wte_d.get(), n, d); }),
              want, tag("embedding_forward", s), 0);

        want = dwte0;
        cpu_ops().embedding_backward(want.data(), dout.data(), tokens.data(), n, d);
        check(run_twice(dwte0, "embedding_backward",
                        [&](float* dw) {
                            cuda::embedding_backward(gpu.stream, dw, dout_d.get(), tokens_d.get(), n, d, *gpu.alloc);
                        }),
              want, tag("embedding_backward", s), 0);
    }
}

TEST(LayersGpu, RopeAndItsInverseAgreeWithTheCpuWithinItsFusedMultiplyAdds) {
    FRUGAL_REQUIRE_GPU();
    Gpu gpu;
    const int64_t n = 301, heads = 5, hd = 18, half = hd / 2, stride = heads * hd + 6, max_pos = 64;
    const auto x = randn(n * stride, 7), cos_t = randn(max_pos * half, 8), sin_t = randn(max_pos * half, 9);
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) pos[i] = int32_t((i * 5) % max_pos);
    DeviceBuffer<int32_t> pos_d(pos);
    DeviceBuffer<float> cos_d(cos_t), sin_d(sin_t);
    for (bool inverse : {false, true}) {
        auto want = x;
        cpu_ops().rope_apply(want.data(), stride, hd, pos.data(), cos_t.data(), sin_t.data(), n, heads, hd, inverse);
        check(run_twice(x, "rope_apply",
                        [&](float* y) {
                            cuda::rope_apply(gpu.stream, y, stride, hd, pos_d.get(), cos_d.get(), sin_d.get(), n, heads,
                                             hd, inverse);
                        }),
              want, inverse ? "rope_apply inverse" : "rope_apply", kFmaTol);
    }
}

// Partial rotary (rot_dim < head width) and multi-head latent attention's layouts: the rope part at an offset
// inside each query head, and the one shared key rope row (heads = 1). The rest of each row keeps its bits.
TEST(LayersGpu, RopeOnPartialAndOffsetRopePartsAgreesWithTheCpuWithinItsFusedMultiplyAdds) {
    FRUGAL_REQUIRE_GPU();
    Gpu gpu;
    struct Layout {
        const char* name;
        int64_t n, row_stride, offset, head_stride, heads, rot_dim;
    };
    const int64_t max_pos = 64;
    for (const Layout& l : {Layout{"partial rotary", 301, 5 * 18 + 6, 0, 18, 5, 8},
                            Layout{"mla query rope part", 77, 16 * 24, 16, 24, 16, 8},
                            Layout{"mla shared key rope row", 130, 72 + 64, 72, 64, 1, 64}}) {
        const int64_t half = l.rot_dim / 2;
        const auto x = randn(l.n * l.row_stride, 50), cos_t = randn(max_pos * half, 51),
                   sin_t = randn(max_pos * half, 52);
        std::vector<int32_t> pos(static_cast<size_t>(l.n));
        for (int64_t i = 0; i < l.n; ++i) pos[size_t(i)] = int32_t((i * 7 + 3) % max_pos);
        DeviceBuffer<int32_t> pos_d(pos);
        DeviceBuffer<float> cos_d(cos_t), sin_d(sin_t);
        for (bool inverse : {false, true}) {
            auto want = x;
            cpu_ops().rope_apply(want.data() + l.offset, l.row_stride, l.head_stride, pos.data(), cos_t.data(),
                                 sin_t.data(), l.n, l.heads, l.rot_dim, inverse);
            const std::string what = std::string("rope_apply ") + l.name + (inverse ? " inverse" : "");
            const auto got = run_twice(x, what, [&](float* y) {
                cuda::rope_apply(gpu.stream, y + l.offset, l.row_stride, l.head_stride, pos_d.get(), cos_d.get(),
                                 sin_d.get(), l.n, l.heads, l.rot_dim, inverse);
            });
            check(got, want, what, kFmaTol);
            int64_t touched = 0;
            for (int64_t r = 0; r < l.n; ++r)
                for (int64_t c = 0; c < l.row_stride; ++c) {
                    const int64_t rel = c - l.offset, h = rel >= 0 ? rel / l.head_stride : -1;
                    const bool rotated = rel >= 0 && h < l.heads && rel - h * l.head_stride < l.rot_dim;
                    if (!rotated && bits(got[size_t(r * l.row_stride + c)]) != bits(x[size_t(r * l.row_stride + c)]))
                        ++touched;
                }
            EXPECT_EQ(touched, 0) << what << ": values outside the rotated part changed";
        }
    }
}

// Rows x cols between a buffer of one row per repeat group (leading dim ld_small) and one of one row per row
// (ld_big); a repeat that does not divide rows leaves a ragged last group.
TEST(LayersGpu, StridedCopyAndAddWithBroadcastAndRaggedRepeatsEqualTheCpuBitForBit) {
    FRUGAL_REQUIRE_GPU();
    Gpu gpu;
    struct Case {
        int64_t rows, cols, ld_small, ld_big, repeat;
    };
    for (const Case& c : {Case{1, 1, 1, 1, 1}, Case{77, 300, 301, 320, 1}, Case{130, 64, 64, 200, 16},
                          Case{1000, 33, 40, 35, 3}, Case{5, 3, 3, 3, 8}}) {
        const std::string shape =
            std::to_string(c.rows) + "x" + std::to_string(c.cols) + " repeat " + std::to_string(c.repeat);
        const int64_t groups = (c.rows + c.repeat - 1) / c.repeat;
        const auto src = randn(groups * c.ld_small, 60), dst0 = randn(c.rows * c.ld_big, 61);
        DeviceBuffer<float> src_d(src);
        auto want = dst0;
        cpu_ops().strided_copy(want.data(), c.ld_big, src.data(), c.ld_small, c.rows, c.cols, c.repeat);
        check(run_twice(dst0, "strided_copy",
                        [&](float* y) {
                            cuda::strided_copy(gpu.stream, y, c.ld_big, src_d.get(), c.ld_small, c.rows, c.cols,
                                               c.repeat);
                        }),
              want, "strided_copy " + shape, 0);

        const auto add_src = randn(c.rows * c.ld_big, 62), add_dst0 = randn(groups * c.ld_small, 63);
        DeviceBuffer<float> add_src_d(add_src);
        auto want_a = add_dst0;
        cpu_ops().strided_add(want_a.data(), c.ld_small, add_src.data(), c.ld_big, c.rows, c.cols, c.repeat);
        check(run_twice(add_dst0, "strided_add",
                        [&](float* y) {
                            cuda::strided_add(gpu.stream, y, c.ld_small, add_src_d.get(), c.ld_big, c.rows, c.cols,
                                              c.repeat);
                        }),
              want_a, "strided_add " + shape, 0);
    }
}

TEST(LayersGpu, SwigluForwardAndBackwardAgreeWithTheCpuWithinTheExpUlps) {
    FRUGAL_REQUIRE_GPU();
    Gpu gpu;
    for (Dims s : kDims) {
        const int64_t n = s.n, f = s.d;
        const auto gu = randn(n * 2 * f, 10, 3.0), dout = randn(n * f, 11), dgu0 = randn(n * 2 * f, 12);
        DeviceBuffer<float> gu_d(gu), dout_d(dout);
        std::vector<float> want(static_cast<size_t>(n * f));
        cpu_ops().swiglu_forward(want.data(), gu.data(), n, f);
        check(run_twice(std::vector<float>(want.size()), "swiglu_forward",
                        [&](float* y) { cuda::swiglu_forward(gpu.stream, y, gu_d.get(), n, f); }),
              want, tag("swiglu_forward", s), kExpTol);
        want = dgu0;
        cpu_ops().swiglu_backward(want.data(), dout.data(), gu.data(), n, f);
        check(run_twice(dgu0, "swiglu_backward",
                        [&](float* dg) { cuda::swiglu_backward(gpu.stream, dg, dout_d.get(), gu_d.get(), n, f); }),
              want, tag("swiglu_backward", s), kExpTol);
    }
}

TEST(LayersGpu, RmsnormAndBiasGradientsAgreeWithTheCpuWithinTheReorderingUlps) {
    FRUGAL_REQUIRE_GPU();
    Gpu gpu;
    const double eps = 1e-5;
    for (Dims s : kDims) {
        const int64_t n = s.n, d = s.d;
        const auto x = randn(n * d, 13, 2.0), w = randn(d, 14), g = randn(n * d, 15), dx0 = randn(n * d, 16),
                   dw0 = randn(d, 17);
        DeviceBuffer<float> x_d(x), w_d(w), g_d(g);
        std::vector<float> out(static_cast<size_t>(n * d)), rstd(static_cast<size_t>(n));
        cpu_ops().rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), n, d, eps);
        DeviceBuffer<float> rstd_d(std::vector<float>(static_cast<size_t>(n)));
        check(run_twice(std::vector<float>(out.size()), "rmsnorm_forward",
                        [&](float* y) {
                            cuda::rmsnorm_forward(gpu.stream, y, rstd_d.get(), x_d.get(), w_d.get(), n, d, eps);
                        }),
              out, tag("rmsnorm out", s), kOrderTol);
        check(rstd_d.download(), rstd, tag("rmsnorm rstd", s), kOrderTol);

        // The backward reads the CPU's rstd, so that only its own reductions differ.
        rstd_d.upload(rstd);
        auto dx = dx0, dw = dw0;
        cpu_ops().rmsnorm_backward(dx.data(), dw.data(), g.data(), x.data(), w.data(), rstd.data(), n, d);
        DeviceBuffer<float> dw_d(dw0);
        check(run_twice(dx0, "rmsnorm_backward",
                        [&](float* y) {
                            dw_d.upload(dw0);
                            cuda::rmsnorm_backward(gpu.stream, y, dw_d.get(), g_d.get(), x_d.get(), w_d.get(),
                                                   rstd_d.get(), n, d, *gpu.alloc);
                        }),
              dx, tag("rmsnorm dx", s), kOrderTol);
        check(dw_d.download(), dw, tag("rmsnorm dw", s), kOrderTol);
        check(run_twice(dx0, "rmsnorm_backward without dw",
                        [&](float* y) {
                            cuda::rmsnorm_backward(gpu.stream, y, nullptr, g_d.get(), x_d.get(), w_d.get(),
                                                   rstd_d.get(), n, d, *gpu.alloc);
                        }),
              dx, tag("rmsnorm dx (no dw)", s), kOrderTol);

        auto db = dw0;
        cpu_ops().bias_backward(db.data(), g.data(), n, d);
        check(run_twice(dw0, "bias_backward",
                        [&](float* y) { cuda::bias_backward(gpu.stream, y, g_d.get(), n, d, *gpu.alloc); }),
              db, tag("bias_backward", s), kOrderTol * std::sqrt(double(n)));
    }
}

TEST(LayersGpu, CrossEntropyAgreesWithTheCpuWithinTheReorderingUlpsAndSkipsIgnoredRows) {
    FRUGAL_REQUIRE_GPU();
    Gpu gpu;
    constexpr int32_t kIgnore = -100;
    const float scale = 0.37f;
    for (Dims s : {Dims{1, 1}, Dims{5, 33}, Dims{77, 1000}, Dims{600, 5003}}) {
        const int64_t n = s.n, v = s.d;
        const auto logits = randn(n * v, 18, 8.0), d0 = randn(n * v, 19);
        std::vector<int32_t> targets(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) targets[i] = i % 4 == 3 ? kIgnore : int32_t((i * 131 + 7) % v);
        DeviceBuffer<float> logits_d(logits);
        DeviceBuffer<int32_t> targets_d(targets);

        std::vector<float> loss(static_cast<size_t>(n));
        const double total = cpu_ops().cross_entropy_forward(loss.data(), logits.data(), targets.data(), n, v, kIgnore);
        double gpu_total = 0, second_total = 0;
        int runs = 0;
        check(run_twice(std::vector<float>(static_cast<size_t>(n), 9.0f), "cross_entropy_forward",
                        [&](float* l) {
                            (runs++ ? second_total : gpu_total) = cuda::cross_entropy_forward(
                                gpu.stream, l, logits_d.get(), targets_d.get(), n, v, kIgnore, *gpu.alloc);
                        }),
              loss, tag("cross_entropy loss", s), kOrderTol);
        std::printf("%-44s total %.17g, cpu %.17g\n", tag("cross_entropy total", s).c_str(), gpu_total, total);
        EXPECT_NEAR(gpu_total, total, kOrderTol * std::max(1.0, std::fabs(total))) << tag("total", s);
        EXPECT_EQ(std::memcmp(&gpu_total, &second_total, sizeof(double)), 0) << tag("total (second run)", s);

        auto d = d0;
        cpu_ops().cross_entropy_backward(d.data(), logits.data(), targets.data(), scale, n, v, kIgnore);
        check(run_twice(d0, "cross_entropy_backward",
                        [&](float* dl) {
                            cuda::cross_entropy_backward(gpu.stream, dl, logits_d.get(), targets_d.get(), scale, n, v,
                                                         kIgnore);
                        }),
              d, tag("cross_entropy dlogits", s), kOrderTol);
    }
}

TEST(LayersGpu, SigmoidGateAgreesWithTheCpu) {
    FRUGAL_REQUIRE_GPU();
    Gpu gpu;
    for (Dims s : kDims) {
        const int64_t t = s.n, d = s.d;
        const auto shared = randn(t * d, 20), dout = randn(t * d, 21), logits = randn(t, 22, 4.0);
        DeviceBuffer<float> shared_d(shared), dout_d(dout), gate_d(logits);
        std::vector<float> out(static_cast<size_t>(t * d)), gate = logits;
        cpu_ops().sigmoid_gate_forward(out.data(), gate.data(), shared.data(), t, d);
        check(run_twice(std::vector<float>(out.size()), "sigmoid_gate_forward",
                        [&](float* y) {
                            gate_d.upload(logits);
                            cuda::sigmoid_gate_forward(gpu.stream, y, gate_d.get(), shared_d.get(), t, d);
                        }),
              out, tag("sigmoid_gate out", s), kExpTol);
        check(gate_d.download(), gate, tag("sigmoid_gate g", s), kExpTol);

        gate_d.upload(gate);  // the backward reads the CPU's gate, so that only its own reduction differs
        std::vector<float> ds(static_cast<size_t>(t * d)), dl(static_cast<size_t>(t));
        cpu_ops().sigmoid_gate_backward(ds.data(), dl.data(), dout.data(), shared.data(), gate.data(), t, d);
        DeviceBuffer<float> dl_d(std::vector<float>(static_cast<size_t>(t), 7.0f));
        check(run_twice(std::vector<float>(ds.size(), 7.0f), "sigmoid_gate_backward",
                        [&](float* y) {
                            cuda::sigmoid_gate_backward(gpu.stream, y, dl_d.get(), dout_d.get(), shared_d.get(),
                                                        gate_d.get(), t, d);
                        }),
              ds, tag("sigmoid_gate d_shared", s), 0);
        check(dl_d.download(), dl, tag("sigmoid_gate d_logit", s), kOrderTol);
    }
}

TEST(LayersGpu, EmptyInputsLaunchNothingAndTheLossOfNoRowsIsZero) {
    FRUGAL_REQUIRE_GPU();
    Gpu gpu;
    float* none = nullptr;
    cuda::fill(gpu.stream, none, 0, 1.0f);
    cuda::bias_backward(gpu.stream, none, none, 0, 5, *gpu.alloc);
    cuda::embedding_backward(gpu.stream, none, none, nullptr, 0, 8, *gpu.alloc);
    EXPECT_EQ(cuda::cross_entropy_forward(gpu.stream, none, none, nullptr, 0, 10, -100, *gpu.alloc), 0.0);
    FRUGAL_CUDA_CHECK(cudaStreamSynchronize(gpu.stream));
}

}  // namespace
}  // namespace frugal
