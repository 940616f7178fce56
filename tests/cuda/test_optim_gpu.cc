// The CUDA optimizer and precision-glue launchers (backend/cuda/optim.h) against the CPU backend
// (backend::cpu_backend()) on random inputs of ragged sizes: AdamW (FP32 and BF16 moments, several steps fed back),
// scale, amax, fingerprint and the quantizers bit for bit; sum_squares bit for bit against its kernel order on the
// host (optim_math.h), within the reordering bound of the CPU's, and with the same bits on a second run. A mismatch
// prints its index, both values and the seed. Without a GPU every test skips with the CUDA runtime's reason.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/allocator.h"
#include "backend/cuda/check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/optim.h"
#include "backend/cuda/optim_math.h"
#include "backend/cuda/quantize.h"
#include "core/bf16.h"
#include "tests/cuda/gpu_test_util.h"

namespace frugal {
namespace {

using cuda_test::bits;
using cuda_test::DeviceBuffer;

using precision::Fp8Format;

constexpr uint64_t kSeed = 20261203;
// Ragged sizes: one element, below one block, not a multiple of 997 or of the 64 chunks, over a million.
const int64_t kSizes[] = {1, 3, 997, 1000, 65539, 1 << 20 | 77};

double as_double(float x) { return x; }
double as_double(uint8_t x) { return x; }
double as_double(uint16_t x) { return bf16_bits_to_float(x); }

// Random floats of random sign over [2^-lo, 2^hi], with zeros and, when special, infinities and NaNs mixed in.
std::vector<float> random_floats(int64_t n, uint64_t seed, int lo, int hi, bool special) {
    std::mt19937_64 gen(seed);
    std::uniform_real_distribution<float> mant(1.0f, 2.0f);
    std::uniform_int_distribution<int> expo(-lo, hi), coin(0, 255);
    std::vector<float> x(static_cast<size_t>(n));
    for (float& e : x) {
        const int c = coin(gen);
        e = std::ldexp(mant(gen), expo(gen)) * (c % 2 ? -1.0f : 1.0f);
        if (c < 8) e = 0.0f;
        if (special && c == 8) e = std::numeric_limits<float>::infinity();
        if (special && c == 9) e = std::numeric_limits<float>::quiet_NaN();
    }
    return x;
}

// Element-by-element bit equality (NaN = NaN for floats); prints the count and largest errors.
template <typename T>
void expect_bits_equal(const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    int64_t count = 0, first = -1;
    double max_abs = 0, max_rel = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        const double g = as_double(got[i]), w = as_double(want[i]);
        if (bits(got[i]) == bits(want[i]) || (std::isnan(g) && std::isnan(w))) continue;
        if (count++ == 0) first = int64_t(i);
        max_abs = std::max(max_abs, std::fabs(g - w));
        max_rel = std::max(max_rel, std::fabs(g - w) / std::max(std::fabs(w), 1e-300));
    }
    std::printf("  %-44s %9zu elements: %lld differ, largest abs %.3g rel %.3g (tolerance: bit for bit)\n",
                what.c_str(), got.size(), (long long)count, max_abs, max_rel);
    if (count > 0)
        ADD_FAILURE() << what << ": first mismatch at " << first << ": got " << as_double(got[size_t(first)]) << " (0x"
                      << std::hex << bits(got[size_t(first)]) << "), want " << as_double(want[size_t(first)]) << " (0x"
                      << bits(want[size_t(first)]) << ")";
}

std::string tag(const char* what, int64_t n, uint64_t seed) {
    return std::string(what) + " n " + std::to_string(n) + " seed " + std::to_string(seed);
}

// Three steps of AdamW on both backends, each step's outputs fed to the next (M: float or uint16_t moments).
template <typename M>
void check_adamw(bool moments_bf16) {
    backend::Backend& cpu = backend::cpu_backend();
    for (int64_t n : kSizes) {
        const uint64_t seed = kSeed + uint64_t(n) + (moments_bf16 ? 1 : 0);
        std::vector<float> value = random_floats(n, seed, 20, 4, false);
        std::vector<M> m(size_t(n), M(0)), v(size_t(n), M(0));
        DeviceBuffer<float> d_value(value), d_grad(n);
        DeviceBuffer<M> d_m(m), d_v(v);
        for (int step = 1; step <= 3; ++step) {
            const std::vector<float> grad = random_floats(n, seed + 10 * uint64_t(step), 40, 10, false);
            FRUGAL_CUDA_CHECK(cudaMemcpy(d_grad.get(), grad.data(), grad.size() * 4, cudaMemcpyHostToDevice));
            const float b1 = 0.9f, b2 = 0.95f, lr = 3e-4f;
            const float bc1 = 1.0f - std::pow(b1, float(step)), bc2 = 1.0f - std::pow(b2, float(step));
            const float step_size = lr / bc1, inv_sqrt_bc2 = 1.0f / std::sqrt(bc2), eps = 1e-8f, decay = 0.99997f;
            cpu.adamw_update(value.data(), grad.data(), m.data(), v.data(), moments_bf16, n, b1, b2, step_size,
                             inv_sqrt_bc2, eps, decay);
            cuda::adamw_update(nullptr, d_value.get(), d_grad.get(), d_m.get(), d_v.get(), moments_bf16, n, b1, b2,
                               step_size, inv_sqrt_bc2, eps, decay);
        }
        expect_bits_equal(d_value.download(), value, tag(moments_bf16 ? "adamw value (bf16)" : "adamw value", n, seed));
        expect_bits_equal(d_m.download(), m, tag("adamw m", n, seed));
        expect_bits_equal(d_v.download(), v, tag("adamw v", n, seed));
    }
}

TEST(OptimGpu, AdamwWithFp32MomentsEqualsTheCpuBackendBitForBitOverThreeSteps) {
    FRUGAL_REQUIRE_GPU();
    check_adamw<float>(false);
}

TEST(OptimGpu, AdamwWithBf16MomentsEqualsTheCpuBackendBitForBitOverThreeSteps) {
    FRUGAL_REQUIRE_GPU();
    check_adamw<uint16_t>(true);
}

TEST(OptimGpu, SumSquaresIsItsKernelOrderBitForBitRepeatsAndStaysWithinTheBoundOfTheCpu) {
    FRUGAL_REQUIRE_GPU();
    cuda::CudaAllocator alloc(0, nullptr);
    backend::Backend& cpu = backend::cpu_backend();
    EXPECT_EQ(cuda::sum_squares(nullptr, nullptr, 0, alloc), 0.0);
    for (int64_t n : kSizes) {
        const uint64_t seed = kSeed + 5 * uint64_t(n);
        const std::vector<float> x = random_floats(n, seed, 30, 30, false);
        DeviceBuffer<float> d_x(x);
        const double got = cuda::sum_squares(nullptr, d_x.get(), n, alloc);
        const double again = cuda::sum_squares(nullptr, d_x.get(), n, alloc);
        const double oracle = cuda::optim_math::sum_squares_in_kernel_order(x.data(), n),
                     want = cpu.sum_squares(x.data(), n);
        const double rel = want > 0 ? std::fabs(got - want) / want : std::fabs(got - want),
                     tolerance = 2.0 * double(n - 1) * 0x1p-53;
        std::printf("  n %8lld: gpu %.17g cpu %.17g, abs %.3g rel %.3g (tolerance rel %.3g; kernel order exact)\n",
                    (long long)n, got, want, std::fabs(got - want), rel, tolerance);
        EXPECT_EQ(got, oracle) << "n " << n << " seed " << seed;
        EXPECT_EQ(std::memcmp(&got, &again, sizeof got), 0) << "n " << n << ": a second run gave other bits";
        EXPECT_LE(rel, tolerance) << "n " << n << " seed " << seed;
    }
}

TEST(OptimGpu, ScaleAmaxAndFingerprintEqualTheCpuBackend) {
    FRUGAL_REQUIRE_GPU();
    cuda::CudaAllocator alloc(0, nullptr);
    backend::Backend& cpu = backend::cpu_backend();
    EXPECT_EQ(cuda::amax(nullptr, nullptr, 0, alloc), cpu.amax(nullptr, 0));
    EXPECT_EQ(cuda::fingerprint(nullptr, nullptr, 0, alloc), cpu.fingerprint(nullptr, 0));
    for (int64_t n : kSizes) {
        const uint64_t seed = kSeed + 7 * uint64_t(n);
        std::vector<float> x = random_floats(n, seed, 60, 60, true);
        DeviceBuffer<float> d_x(x);
        const float got_amax = cuda::amax(nullptr, d_x.get(), n, alloc), want_amax = cpu.amax(x.data(), n);
        EXPECT_EQ(bits(got_amax), bits(want_amax)) << tag("amax", n, seed) << ": " << got_amax << " vs " << want_amax;
        EXPECT_EQ(cuda::fingerprint(nullptr, d_x.get(), n, alloc), cpu.fingerprint(x.data(), n)) << tag("fp", n, seed);
        for (float factor : {0.5f, 0.7f, 0x1p-130f, std::numeric_limits<float>::infinity()}) {
            cuda::scale(nullptr, d_x.get(), n, factor);
            cpu.scale(x.data(), n, factor);
            expect_bits_equal(d_x.download(), x, tag("scale", n, seed) + " factor " + std::to_string(factor));
        }
    }
}

TEST(OptimGpu, PrecisionGlueEqualsTheCpuBackendBitForBit) {
    FRUGAL_REQUIRE_GPU();
    backend::Backend& cpu = backend::cpu_backend();
    struct Shape {
        int64_t rows, cols;
    };
    for (const Shape s : {Shape{1, 1}, Shape{3, 130}, Shape{129, 257}, Shape{256, 384}})
        for (Fp8Format f : {Fp8Format::kE4M3, Fp8Format::kE5M2})
            for (bool pow2 : {false, true}) {
                const int64_t n = s.rows * s.cols, tile = 128,
                              num_scales = cuda::num_row_tile_scales(s.rows, s.cols, tile);
                const uint64_t seed = kSeed + 11 * uint64_t(n) + (pow2 ? 1 : 0);
                const std::vector<float> x = random_floats(n, seed, 30, 12, true);
                const std::string where = tag(f == Fp8Format::kE4M3 ? "e4m3" : "e5m2", n, seed) + (pow2 ? " pow2" : "");
                DeviceBuffer<float> d_x(x), d_out(n), d_scales(num_scales);
                DeviceBuffer<uint8_t> d_codes(n);
                std::vector<float> want(static_cast<size_t>(n)), want_scales(static_cast<size_t>(num_scales));
                std::vector<uint8_t> want_codes(static_cast<size_t>(n));

                cpu.fake_quant(want.data(), x.data(), n, f, 0.375f);
                cuda::fake_quant(nullptr, d_out.get(), d_x.get(), n, f, 0.375f);
                expect_bits_equal(d_out.download(), want, "fake_quant " + where);
                cpu.fake_quant_row_tiles(want.data(), x.data(), s.rows, s.cols, tile, f, pow2);
                cuda::fake_quant_row_tiles(nullptr, d_out.get(), d_x.get(), s.rows, s.cols, tile, f, pow2);
                expect_bits_equal(d_out.download(), want, "fake_quant_row_tiles " + where);
                cpu.fake_quant_col_tiles(want.data(), x.data(), s.rows, s.cols, tile, f, pow2);
                cuda::fake_quant_col_tiles(nullptr, d_out.get(), d_x.get(), s.rows, s.cols, tile, f, pow2);
                expect_bits_equal(d_out.download(), want, "fake_quant_col_tiles " + where);
                cpu.fake_quant_blocks(want.data(), x.data(), s.rows, s.cols, tile, f, pow2);
                cuda::fake_quant_blocks(nullptr, d_out.get(), d_x.get(), s.rows, s.cols, tile, f, pow2);
                expect_bits_equal(d_out.download(), want, "fake_quant_blocks " + where);
                cpu.round_bf16(want.data(), x.data(), n);
                cuda::round_bf16(nullptr, d_out.get(), d_x.get(), n);
                expect_bits_equal(d_out.download(), want, "round_bf16 " + where);

                cpu.quantize_row_tiles(want_codes.data(), want_scales.data(), x.data(), s.rows, s.cols, tile, f, pow2);
                cuda::quantize_row_tiles(nullptr, d_codes.get(), d_scales.get(), d_x.get(), s.rows, s.cols, tile, f,
                                         pow2);
                expect_bits_equal(d_codes.download(), want_codes, "quantize_row_tiles codes " + where);
                expect_bits_equal(d_scales.download(), want_scales, "quantize_row_tiles scales " + where);
                cpu.dequantize_row_tiles(want.data(), want_codes.data(), want_scales.data(), s.rows, s.cols, tile, f);
                cuda::dequantize_row_tiles(nullptr, d_out.get(), d_codes.get(), d_scales.get(), s.rows, s.cols, tile,
                                           f);
                expect_bits_equal(d_out.download(), want, "dequantize_row_tiles " + where);
            }
}

}  // namespace
}  // namespace frugal
