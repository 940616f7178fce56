// The CUDA backend's native BF16 and FP8 products (backend/cuda/native_matmul.h) against the CPU's emulating recipes
// (precision::make_matmul_recipe<float> on the CPU backend) on the same inputs: forward, backward data and backward
// weight, the backwards adding into non-zero gradients.
//
// Both sides multiply the same quantized values (the CUDA quantizers are the CPU's bit for bit,
// test_quantize_gpu.cc); they differ in the order and width of the accumulation and in where the scales are applied
// (the CPU multiplies decode(code) / s, cuBLASLt accumulates decode(code) products in FP32 and multiplies by the
// dequantization factors 1 / s once; without CUBLASLT_MATMUL_DESC_FAST_ACCUM its FP8 kernels promote their partial
// sums to FP32). Per output element, with K the contraction length and u = 2^-24:
//   |native - cpu| <= (2 K + 8) u * sum_k |a_k b_k|
// (each side's recursive FP32 sum is within K u of the exact one, plus a few roundings of the scales), with
// sum |a_k b_k| taken over the unquantized operands and widened by 1.25 for the quantization's magnitude change (at
// most 1/16 per E4M3 or E5M2 operand); the backwards add |initial| * u for their accumulate. fp8-blockwise's
// per-128 promotion is held to 1e-5 of sum |a_k b_k| where that is looser than the bound. Without a GPU the GPU
// tests skip with the CUDA runtime's reason; has_native_matmul needs none.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/device.h"
#include "backend/cuda/native_matmul.h"
#include "core/error.h"
#include "core/tensor.h"
#include "precision/recipe.h"
#include "tests/util.h"

namespace frugal {
namespace {

#define FRUGAL_REQUIRE_GPU()                                           \
    do {                                                               \
        std::string why_;                                              \
        if (cuda::cuda_device_count(&why_) == 0) GTEST_SKIP() << why_; \
    } while (0)

constexpr uint64_t kSeed = 20261204;
constexpr double kU = 1.0 / (1 << 24);

// A device copy of a host vector on the CUDA backend.
class DeviceVec {
  public:
    DeviceVec(backend::Backend& be, const std::vector<float>& host)
        : be_(be), t_(Tensor::empty({int64_t(std::max<size_t>(host.size(), 1))}, DType::kF32, be.allocator())) {
        upload(host);
    }
    float* get() { return t_.data<float>(); }
    void upload(const std::vector<float>& host) { be_.copy_to_device(get(), host.data(), host.size() * sizeof(float)); }
    std::vector<float> download(int64_t n) {
        std::vector<float> host(static_cast<size_t>(n));
        be_.synchronize();
        be_.copy_to_host(host.data(), get(), host.size() * sizeof(float));
        return host;
    }

  private:
    backend::Backend& be_;
    Tensor t_;
};

// sum_k |a[i, k]| |b[k, j]| for C[M, N] = op(A) op(B), A stored [M, K] (or [K, M] when trans_a), B [K, N] (or
// [N, K] when trans_b).
std::vector<double> abs_product(const std::vector<float>& a, const std::vector<float>& b, int64_t m, int64_t n,
                                int64_t k, bool trans_a, bool trans_b) {
    std::vector<double> c(size_t(m * n), 0.0);
    for (int64_t i = 0; i < m; ++i)
        for (int64_t p = 0; p < k; ++p) {
            const double av = std::fabs(trans_a ? a[size_t(p * m + i)] : a[size_t(i * k + p)]);
            for (int64_t j = 0; j < n; ++j)
                c[size_t(i * n + j)] += av * std::fabs(trans_b ? b[size_t(j * k + p)] : b[size_t(p * n + j)]);
        }
    return c;
}

// |got - want| <= rel * 1.25 * abs_ab + |initial| * u, element by element; prints the largest ratio to the bound.
void expect_within(const std::vector<float>& got, const std::vector<float>& want, const std::vector<double>& abs_ab,
                   const std::vector<float>* initial, double rel, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    double worst = 0;
    int64_t failures = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        const double bound = rel * 1.25 * abs_ab[i] + (initial ? std::fabs((*initial)[i]) * kU : 0.0) + 1e-30;
        const double err = std::fabs(double(got[i]) - double(want[i]));
        worst = std::max(worst, err / bound);
        if (!(err <= bound) && failures++ < 5)
            ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i] << " error " << err
                          << " bound " << bound << " (seed " << kSeed << ")";
    }
    std::printf("%-40s largest error / bound %.3g (rel %.3g)\n", what.c_str(), worst, rel);
    EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << want.size() << " elements out of bound";
}

struct Shape {
    int64_t n, in, out;
    int64_t offset;  // floats from an aligned start of the outputs y, dx and dw (slices as the model passes them)
};

void compare_recipe(const std::string& recipe, Shape s) {
    backend::Backend& gpu = backend::backend_for(Device::kCuda);
    precision::PrecisionConfig cfg;
    cfg.recipe = recipe;
    auto cpu_recipe = precision::make_matmul_recipe<float>(cfg, "experts", backend::cpu_backend().ops<float>());
    auto native = gpu.make_native_matmul({cfg.recipe, cfg.block_size, cfg.power_of_2_scales});
    ASSERT_TRUE(native != nullptr) << recipe << " has a native form on the CUDA backend";

    const int64_t n = s.n, in = s.in, out = s.out;
    const std::vector<float> x = test::random_vec<float>(n * in, kSeed + 1);
    const std::vector<float> w = test::random_vec<float>(out * in, kSeed + 2, 0.05);
    const std::vector<float> dy = test::random_vec<float>(n * out, kSeed + 3, 1e-3);
    const std::vector<float> dx0 = test::random_vec<float>(n * in, kSeed + 4, 1e-3);
    const std::vector<float> dw0 = test::random_vec<float>(out * in, kSeed + 5, 1e-2);

    std::vector<float> y(size_t(n * out)), dx = dx0, dw = dw0;
    cpu_recipe->forward(y.data(), x.data(), w.data(), n, in, out);
    cpu_recipe->backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), n, in, out);

    const int64_t o = s.offset;
    auto at_offset = [o](const std::vector<float>& v) {
        std::vector<float> p(size_t(o), 0.0f);
        p.insert(p.end(), v.begin(), v.end());
        return p;
    };
    DeviceVec gx(gpu, x), gw(gpu, w), gdy(gpu, dy), gdx(gpu, at_offset(dx0)), gdw(gpu, at_offset(dw0));
    DeviceVec gy(gpu, at_offset(std::vector<float>(size_t(n * out), std::nanf(""))));
    native->forward(gy.get() + o, gx.get(), gw.get(), n, in, out);
    native->backward(gdx.get() + o, gdw.get() + o, gdy.get(), gx.get(), gw.get(), n, in, out);
    auto tail = [o](std::vector<float> v) { return std::vector<float>(v.begin() + o, v.end()); };

    const std::string tag = recipe + " " + std::to_string(n) + "x" + std::to_string(in) + "x" + std::to_string(out) +
                            (o ? " offset " + std::to_string(o) : std::string()) + " ";
    auto rel = [&](int64_t k) {
        const double bound = (2.0 * double(k) + 8.0) * kU;
        return recipe == "fp8-blockwise" ? std::max(bound, 1e-5) : bound;
    };
    expect_within(tail(gy.download(o + n * out)), y, abs_product(x, w, n, out, in, false, true), nullptr, rel(in),
                  tag + "forward");
    expect_within(tail(gdx.download(o + n * in)), dx, abs_product(dy, w, n, in, out, false, false), &dx0, rel(out),
                  tag + "backward data");
    expect_within(tail(gdw.download(o + out * in)), dw, abs_product(dy, x, out, in, n, true, false), &dw0, rel(n),
                  tag + "backward weight");
}

// A ragged token count (200: padded to 208 for FP8) with aligned outputs, and whole 128-tiles everywhere with
// outputs one float off alignment.
const Shape kShapes[] = {{200, 256, 384, 0}, {128, 128, 256, 1}};

TEST(NativeMatmul, Fp8DelayedAndBlockSizesOtherThan128HaveNoNativeForm) {
    EXPECT_FALSE(cuda::has_native_matmul({"fp8-delayed", 128, true}));
    EXPECT_FALSE(cuda::has_native_matmul({"fp32", 128, true}));
    EXPECT_FALSE(cuda::has_native_matmul({"fp8-blockwise", 64, true}));
    EXPECT_TRUE(cuda::has_native_matmul({"bf16", 128, true}));
    EXPECT_TRUE(cuda::has_native_matmul({"fp8-tensorwise", 128, false}));
    EXPECT_TRUE(cuda::has_native_matmul({"fp8-blockwise", 128, false}));
}

TEST(NativeMatmulGpu, TheCudaBackendOffersNoNativeFp8DelayedAndTheRecipeEmulates) {
    FRUGAL_REQUIRE_GPU();
    backend::Backend& gpu = backend::backend_for(Device::kCuda);
    EXPECT_TRUE(gpu.make_native_matmul({"fp8-delayed", 128, true}) == nullptr);
    precision::PrecisionConfig cfg;
    cfg.recipe = "fp8-delayed";
    EXPECT_EQ(precision::make_matmul_recipe<float>(cfg, "experts", gpu.ops<float>())->name(), "fp8-delayed");
}

TEST(NativeMatmulGpu, Bf16ProductsMatchTheCpuEmulationWithinTheAccumulationBound) {
    FRUGAL_REQUIRE_GPU();
    for (Shape s : kShapes) compare_recipe("bf16", s);
}

TEST(NativeMatmulGpu, Fp8TensorwiseProductsMatchTheCpuEmulationWithinTheAccumulationBound) {
    FRUGAL_REQUIRE_GPU();
    for (Shape s : kShapes) compare_recipe("fp8-tensorwise", s);
}

TEST(NativeMatmulGpu, Fp8BlockwiseProductsMatchTheCpuEmulationWithinTheAccumulationBound) {
    FRUGAL_REQUIRE_GPU();
    for (Shape s : kShapes) compare_recipe("fp8-blockwise", s);
}

TEST(NativeMatmulGpu, AChangedWeightWithoutWeightsUpdatedIsRefusedAndRequantizedAfterIt) {
    FRUGAL_REQUIRE_GPU();
    backend::Backend& gpu = backend::backend_for(Device::kCuda);
    const int64_t n = 32, in = 128, out = 128;
    for (const char* recipe : {"bf16", "fp8-tensorwise", "fp8-blockwise"}) {
        auto native = gpu.make_native_matmul({recipe, 128, true});
        ASSERT_TRUE(native != nullptr) << recipe;
        DeviceVec x(gpu, test::random_vec<float>(n * in, kSeed + 6));
        std::vector<float> w = test::random_vec<float>(out * in, kSeed + 7, 0.05);
        DeviceVec gw(gpu, w), y(gpu, std::vector<float>(size_t(n * out)));
        native->forward(y.get(), x.get(), gw.get(), n, in, out);
        const std::vector<float> before = y.download(n * out);
        for (float& v : w) v = -v;
        gw.upload(w);
        try {
            native->forward(y.get(), x.get(), gw.get(), n, in, out);
            ADD_FAILURE() << recipe << ": a changed weight was used without weights_updated()";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("weights_updated()"), std::string::npos) << e.what();
        }
        native->weights_updated();
        native->forward(y.get(), x.get(), gw.get(), n, in, out);
        const std::vector<float> after = y.download(n * out);
        // The weight is negated exactly and every quantizer is odd-symmetric: the product flips its sign bit for bit.
        for (size_t i = 0; i < after.size(); ++i) ASSERT_EQ(after[i], -before[i]) << recipe << " element " << i;
    }
}

TEST(NativeMatmulGpu, NoTokensLeavesTheOutputsAlone) {
    FRUGAL_REQUIRE_GPU();
    backend::Backend& gpu = backend::backend_for(Device::kCuda);
    for (const char* recipe : {"bf16", "fp8-tensorwise", "fp8-blockwise"}) {
        auto native = gpu.make_native_matmul({recipe, 128, true});
        ASSERT_TRUE(native != nullptr) << recipe;
        DeviceVec w(gpu, test::random_vec<float>(128 * 128, kSeed + 8)), dw(gpu, std::vector<float>(128 * 128, 2.0f));
        native->forward(nullptr, nullptr, w.get(), 0, 128, 128);
        native->backward(nullptr, dw.get(), nullptr, nullptr, w.get(), 0, 128, 128);
        for (float v : dw.download(128 * 128)) ASSERT_EQ(v, 2.0f) << recipe;
    }
}

}  // namespace
}  // namespace frugal
