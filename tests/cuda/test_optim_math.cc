// The CUDA optimizer kernels' math (backend/cuda/optim_math.h), compiled by g++, against the CPU kernels it must equal:
// the AdamW element in the form this build's CPU kernel is compiled to (fused or not) against cpu::adamw_update bit
// for bit, with FP32 and BF16 moments; sum_squares in the kernel's order against core/reduce.h within the bound of
// summing non-negative terms in another order; the fingerprint's samples against cpu::fingerprint exactly. Needs no
// GPU. Inputs are random (fixed seeds, printed on failure) over many decades, with zeros, subnormals and infinities.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/optim.h"
#include "backend/cuda/optim_math.h"
#include "core/bf16.h"
#include "core/reduce.h"

namespace frugal {
namespace {

namespace om = cuda::optim_math;

constexpr uint64_t kSeed = 20261202;

uint32_t bits(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return u;
}

// Random floats of random sign whose magnitudes span [2^-lo, 2^hi], with exact zeros mixed in.
std::vector<float> random_floats(int64_t n, uint64_t seed, int lo, int hi) {
    std::mt19937_64 gen(seed);
    std::uniform_real_distribution<float> mant(1.0f, 2.0f);
    std::uniform_int_distribution<int> expo(-lo, hi), coin(0, 31);
    std::vector<float> x(static_cast<size_t>(n));
    for (float& e : x) {
        const int c = coin(gen);
        e = c == 0 ? 0.0f : std::ldexp(mant(gen), expo(gen)) * (c % 2 ? -1.0f : 1.0f);
    }
    return x;
}

// Largest differences between two float arrays (NaN = NaN counts as equal), printed with where and the seed.
struct Mismatch {
    int64_t count = 0, first = -1;
    double max_abs = 0, max_rel = 0;
};
Mismatch compare_bits(const std::vector<float>& got, const std::vector<float>& want) {
    Mismatch r;
    for (size_t i = 0; i < got.size(); ++i) {
        if (bits(got[i]) == bits(want[i]) || (std::isnan(got[i]) && std::isnan(want[i]))) continue;
        if (r.count++ == 0) r.first = int64_t(i);
        const double a = std::fabs(double(got[i]) - double(want[i]));
        r.max_abs = std::max(r.max_abs, a);
        r.max_rel = std::max(r.max_rel, a / std::max(std::fabs(double(want[i])), 1e-300));
    }
    return r;
}

void expect_equal(const char* what, const std::vector<float>& got, const std::vector<float>& want, uint64_t seed) {
    const Mismatch r = compare_bits(got, want);
    std::printf("  %-28s %zu elements: %lld differ, largest abs %.3g rel %.3g (tolerance: bit for bit)\n", what,
                got.size(), (long long)r.count, r.max_abs, r.max_rel);
    EXPECT_EQ(r.count, 0) << what << " (seed " << seed << "): first at " << r.first << ", got " << got[size_t(r.first)]
                          << " want " << want[size_t(r.first)];
}

// The hyperparameters of a few AdamW steps: the defaults early and late in training, and no decay.
std::vector<om::AdamwHyper> hypers() {
    std::vector<om::AdamwHyper> out;
    for (int step : {1, 2, 10, 1000}) {
        const float b1 = 0.9f, b2 = 0.95f, lr = 3e-4f;
        const float bc1 = 1.0f - std::pow(b1, float(step)), bc2 = 1.0f - std::pow(b2, float(step));
        out.push_back({b1, b2, lr / bc1, 1.0f / std::sqrt(bc2), 1e-8f, 1.0f - lr * 0.1f});
    }
    out.push_back({0.8f, 0.999f, 1e-2f, 3.0f, 1e-6f, 1.0f});
    return out;
}

// Runs one step of both implementations on the same inputs and compares value, m and v (M: float or uint16_t).
template <typename M>
void check_adamw_against_cpu(uint64_t seed) {
    const int64_t n = 20011;
    const std::vector<float> grad = random_floats(n, seed, 40, 10), value0 = random_floats(n, seed + 1, 20, 4);
    const std::vector<float> m0 = random_floats(n, seed + 2, 40, 8), v_abs = random_floats(n, seed + 3, 80, 16);
    for (const om::AdamwHyper& h : hypers()) {
        std::vector<float> value_cpu = value0, value_gpu = value0;
        std::vector<M> m_cpu(n), v_cpu(n);
        for (int64_t j = 0; j < n; ++j) {
            const float v = std::fabs(v_abs[size_t(j)]);
            if constexpr (std::is_same_v<M, float>) {
                m_cpu[size_t(j)] = m0[size_t(j)];
                v_cpu[size_t(j)] = v;
            } else {
                m_cpu[size_t(j)] = float_to_bf16_bits(m0[size_t(j)]);
                v_cpu[size_t(j)] = float_to_bf16_bits(v);
            }
        }
        std::vector<M> m_gpu = m_cpu, v_gpu = v_cpu;
        backend::cpu::adamw_update(value_cpu.data(), grad.data(), m_cpu.data(), v_cpu.data(), n, h.b1, h.b2,
                                   h.step_size, h.inv_sqrt_bc2, h.eps, h.decay);
        for (int64_t j = 0; j < n; ++j)
            om::adamw_apply<om::kCpuAdamwFused>(value_gpu.data(), grad.data(), m_gpu.data(), v_gpu.data(), j, h);
        expect_equal("value", value_gpu, value_cpu, seed);
        auto as_float = [](const std::vector<M>& s) {
            std::vector<float> f(s.size());
            for (size_t i = 0; i < s.size(); ++i) f[i] = om::load_moment(s.data(), int64_t(i));
            return f;
        };
        expect_equal("m", as_float(m_gpu), as_float(m_cpu), seed);
        expect_equal("v", as_float(v_gpu), as_float(v_cpu), seed);
    }
}

TEST(CudaOptimMath, AdamwWithFp32MomentsEqualsTheCpuKernelBitForBit) {
    std::printf("  the CPU kernel of this build is %s\n", om::kCpuAdamwFused ? "fused (FMA)" : "unfused");
    check_adamw_against_cpu<float>(kSeed);
}

TEST(CudaOptimMath, AdamwWithBf16MomentsEqualsTheCpuKernelBitForBit) { check_adamw_against_cpu<uint16_t>(kSeed + 100); }

TEST(CudaOptimMath, AdamwKeepsNanAndInfinityWhereTheCpuHasThem) {
    const om::AdamwHyper h = hypers()[0];
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> grad = {nan, inf, -inf, 1.0f, 0.0f, 1e-45f}, value = {1, 1, 1, nan, inf, -2};
    std::vector<float> m = {0, 0, 0, 0, 0, 0}, v = {0, 0, 0, inf, 0, 0};
    std::vector<float> value_cpu = value, m_cpu = m, v_cpu = v;
    backend::cpu::adamw_update(value_cpu.data(), grad.data(), m_cpu.data(), v_cpu.data(), int64_t(grad.size()), h.b1,
                               h.b2, h.step_size, h.inv_sqrt_bc2, h.eps, h.decay);
    for (int64_t j = 0; j < int64_t(grad.size()); ++j)
        om::adamw_apply<om::kCpuAdamwFused>(value.data(), grad.data(), m.data(), v.data(), j, h);
    expect_equal("value (non-finite)", value, value_cpu, 0);
    expect_equal("m (non-finite)", m, m_cpu, 0);
    expect_equal("v (non-finite)", v, v_cpu, 0);
}

TEST(CudaOptimMath, SumSquaresPartsSplitCoreReducesChunksAndCoverEveryElementOnce) {
    for (int64_t n : {int64_t(0), int64_t(1), int64_t(63), int64_t(64), int64_t(1025), int64_t(1) << 40}) {
        EXPECT_EQ(om::part_begin(n, 0), 0);
        EXPECT_EQ(om::part_begin(n, om::kSumParts), n);
        for (int64_t p = 0; p < om::kSumParts; ++p) ASSERT_LE(om::part_begin(n, p), om::part_begin(n, p + 1)) << n;
        for (int64_t c = 0; c <= om::kSumChunks; ++c)
            EXPECT_EQ(om::part_begin(n, c * om::kSumSplits), n * c / om::kSumChunks) << "n " << n << " chunk " << c;
    }
}

TEST(CudaOptimMath, SumSquaresInKernelOrderIsWithinTheReorderingBoundOfCoreReduce) {
    for (int64_t n :
         {int64_t(0), int64_t(1), int64_t(5), int64_t(64), int64_t(1000), int64_t(65537), int64_t(1) << 20}) {
        const uint64_t seed = kSeed + uint64_t(n);
        const std::vector<float> x = random_floats(n, seed, 30, 30);
        const double cpu = frugal::sum_squares(x.data(), n), kernel = om::sum_squares_in_kernel_order(x.data(), n);
        const double abs_err = std::fabs(kernel - cpu), rel = cpu > 0 ? abs_err / cpu : abs_err;
        // Each order of adding non-negative terms is within (n - 1) 2^-53 relative of the exact sum.
        const double tolerance = 2.0 * double(std::max<int64_t>(n - 1, 0)) * 0x1p-53;
        std::printf("  n %8lld: cpu %.17g kernel order %.17g, abs %.3g rel %.3g (tolerance rel %.3g)\n", (long long)n,
                    cpu, kernel, abs_err, rel, tolerance);
        EXPECT_LE(rel, tolerance) << "n " << n << " seed " << seed;
    }
    // Infinity and NaN propagate as on the CPU.
    std::vector<float> x(3000, 1.0f);
    x[1234] = std::numeric_limits<float>::infinity();
    EXPECT_EQ(om::sum_squares_in_kernel_order(x.data(), 3000), frugal::sum_squares(x.data(), 3000));
    x[17] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_TRUE(std::isnan(om::sum_squares_in_kernel_order(x.data(), 3000)));
}

TEST(CudaOptimMath, FingerprintOfTheSampledBitsEqualsTheCpu) {
    for (int64_t n : {int64_t(0), int64_t(1), int64_t(2), int64_t(996), int64_t(997), int64_t(998), int64_t(1994),
                      int64_t(1995), int64_t(100003)}) {
        std::vector<float> x = random_floats(n, kSeed + uint64_t(n), 10, 10);
        if (n > 3) x[size_t(n - 1)] = -std::numeric_limits<float>::quiet_NaN();
        const int64_t k = om::fingerprint_samples(n);
        std::vector<uint32_t> samples_K(static_cast<size_t>(k));
        for (int64_t i = 0; i < k; ++i) samples_K[size_t(i)] = bits(x[size_t(om::fingerprint_index(n, i))]);
        EXPECT_EQ(om::fingerprint_of_samples(samples_K.data(), k), backend::cpu::fingerprint(x.data(), n))
            << "n " << n << ", " << k << " samples";
    }
    // It sees a change of one sampled element's bits, even from 0 to -0.
    std::vector<float> x(5000, 0.0f);
    const uint64_t before = backend::cpu::fingerprint(x.data(), 5000);
    x[997 * 3] = -0.0f;
    const uint32_t changed[] = {bits(0.0f), bits(0.0f), bits(0.0f), bits(-0.0f), bits(0.0f), bits(0.0f), bits(0.0f)};
    ASSERT_EQ(om::fingerprint_samples(5000), 7);
    EXPECT_NE(om::fingerprint_of_samples(changed, 7), before);
    EXPECT_EQ(om::fingerprint_of_samples(changed, 7), backend::cpu::fingerprint(x.data(), 5000));
}

}  // namespace
}  // namespace frugal
