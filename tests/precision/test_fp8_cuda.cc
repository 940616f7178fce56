// Frugal's FP8 and BF16 encoders against CUDA's host-side conversions (cuda_fp8.h, cuda_bf16.h compile with g++):
// every BF16 bit pattern, 10^7 random float bit patterns, and constructed cases (exact midpoints between adjacent
// codes and their neighbours, subnormals, overflow, infinities, NaNs of every sign and payload).
#include <gtest/gtest.h>

#include <random>

#include "precision/fp8.h"

#ifdef FRUGAL_HAVE_CUDA_FP8_HEADERS
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#endif

namespace frugal {
namespace {

using namespace precision;

#ifdef FRUGAL_HAVE_CUDA_FP8_HEADERS
struct Mismatches {
    int64_t checked = 0, e4m3 = 0, e5m2 = 0, bf16 = 0;
};

void check(float x, Mismatches& m) {
    ++m.checked;
    const uint8_t c4 = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
    const uint8_t c5 = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2);
    const __nv_bfloat16 b = __float2bfloat16_rn(x);
    uint16_t cb;
    std::memcpy(&cb, &b, 2);
    if (c4 != encode_e4m3(x) && m.e4m3++ < 5)
        ADD_FAILURE() << "e4m3 of " << std::hexfloat << x << ": cuda " << int(c4) << ", frugal " << int(encode_e4m3(x));
    if (c5 != encode_e5m2(x) && m.e5m2++ < 5)
        ADD_FAILURE() << "e5m2 of " << std::hexfloat << x << ": cuda " << int(c5) << ", frugal " << int(encode_e5m2(x));
    uint8_t b4 = 0, b5 = 0;
    encode_e4m3(&b4, &x, 1);  // the bulk (vectorizable) path
    encode_e5m2(&b5, &x, 1);
    if (b4 != c4 && m.e4m3++ < 5) ADD_FAILURE() << "bulk e4m3 of " << std::hexfloat << x << ": " << int(b4);
    if (b5 != c5 && m.e5m2++ < 5) ADD_FAILURE() << "bulk e5m2 of " << std::hexfloat << x << ": " << int(b5);
    if (cb != encode_bf16(x) && m.bf16++ < 5)
        ADD_FAILURE() << "bf16 of " << std::hexfloat << x << ": cuda " << cb << ", frugal " << encode_bf16(x);
}
#endif

TEST(Fp8Cuda, EncodersMatchCudaConversions) {
#ifndef FRUGAL_HAVE_CUDA_FP8_HEADERS
    GTEST_SKIP() << "cuda_fp8.h not found at configure time (CUDA toolkit absent): the exhaustive comparison needs it";
#else
    Mismatches m;
    // Every BF16 bit pattern, as a float.
    for (uint32_t b = 0; b < 65536; ++b) check(detail::bits_float(b << 16), m);
    // Random bit patterns: every exponent, sign, NaN payload.
    std::mt19937 gen(20261129);
    for (int i = 0; i < 10'000'000; ++i) check(detail::bits_float(gen()), m);
    // Random values in the FP8 ranges themselves, where most rounding happens.
    std::uniform_real_distribution<float> mant(1.0f, 2.0f);
    std::uniform_int_distribution<int> ex(-30, 17);
    for (int i = 0; i < 1'000'000; ++i) check((i & 1 ? -1.0f : 1.0f) * std::ldexp(mant(gen), ex(gen)), m);
    // Midpoints between adjacent codes (ties) and one float either side, for both formats, both signs.
    using Decode = float (*)(uint8_t);
    for (Decode decode : {Decode(decode_e4m3), Decode(decode_e5m2)}) {
        for (int c = 0; c < 127; ++c) {
            float lo = decode(uint8_t(c)), hi = decode(uint8_t(c + 1));
            if (!std::isfinite(lo) || !std::isfinite(hi)) continue;
            float mid = 0.5f * (lo + hi);
            for (float v : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY), lo, hi}) {
                check(v, m);
                check(-v, m);
            }
        }
    }
    // Overflow boundaries, infinities, NaNs, zeros and FP32 subnormals.
    for (float v : {448.0f, 464.0f, 479.9f, 480.0f, 57344.0f, 61440.0f, 65536.0f, 3.4e38f, INFINITY})
        for (float s : {1.0f, -1.0f}) check(s * v, m);
    for (uint32_t nan : {0x7FC00000u, 0x7F800001u, 0xFFC00000u, 0xFF800001u, 0x7FFFFFFFu})
        check(detail::bits_float(nan), m);
    check(0.0f, m);
    check(-0.0f, m);
    for (uint32_t sub = 1; sub < 0x00800000u; sub += 997) check(detail::bits_float(sub), m);
    EXPECT_EQ(m.e4m3 + m.e5m2 + m.bf16, 0) << m.checked << " values checked";
    std::printf("checked %lld values against CUDA's conversions\n", (long long)m.checked);
#endif
}

// FP16 (safetensors F16 export): every half code decodes and encodes back to itself; the encoder matches CUDA's
// __float2half_rn on every BF16 pattern, 10^7 random float bit patterns, every midpoint between adjacent halves and
// its neighbours, and the overflow boundary.
TEST(Fp8Cuda, HalfEncoderRoundTripsAndMatchesCuda) {
    for (uint32_t h = 0; h < 65536; ++h) {
        const float x = half_bits_to_float(uint16_t(h));
        if (std::isnan(x)) continue;
        ASSERT_EQ(float_to_half_bits(x), h) << "half code " << h;
    }
    EXPECT_EQ(float_to_half_bits(65504.0f), 0x7BFF);
    EXPECT_EQ(float_to_half_bits(65519.996f), 0x7BFF);
    EXPECT_EQ(float_to_half_bits(65520.0f), 0x7C00);               // the tie rounds to even: infinity
    EXPECT_EQ(float_to_half_bits(std::ldexp(1.0f, -25)), 0x0000);  // tie between 0 and the smallest subnormal
    EXPECT_EQ(float_to_half_bits(std::ldexp(3.0f, -26)), 0x0001);
#ifndef FRUGAL_HAVE_CUDA_FP8_HEADERS
    GTEST_SKIP() << "cuda_fp16.h not found at configure time: the comparison with CUDA needs it";
#else
    int64_t checked = 0, bad = 0;
    auto check_half = [&](float x) {
        ++checked;
        const __half c = __float2half_rn(x);
        uint16_t cb;
        std::memcpy(&cb, &c, 2);
        if (cb != float_to_half_bits(x) && bad++ < 5)
            ADD_FAILURE() << "f16 of " << std::hexfloat << x << ": cuda " << cb << ", frugal " << float_to_half_bits(x);
    };
    for (uint32_t b = 0; b < 65536; ++b) check_half(detail::bits_float(b << 16));
    std::mt19937 gen(20261130);
    for (int i = 0; i < 10'000'000; ++i) check_half(detail::bits_float(gen()));
    for (uint32_t h = 0; h < 0x7BFF; ++h) {
        const float lo = half_bits_to_float(uint16_t(h)), hi = half_bits_to_float(uint16_t(h + 1));
        const float mid = 0.5f * (lo + hi);
        for (float v : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
            check_half(v);
            check_half(-v);
        }
    }
    for (float v : {65504.0f, 65519.0f, 65520.0f, 65536.0f, INFINITY}) check_half(v);
    EXPECT_EQ(bad, 0) << checked << " values checked";
#endif
}

}  // namespace
}  // namespace frugal
