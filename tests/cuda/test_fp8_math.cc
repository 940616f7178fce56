// backend/cuda/fp8_math.h (the CUDA kernels' per-element arithmetic, compiled here for the host) against the CPU
// reference (precision/fp8.h, precision/quantize.cc), bit for bit: encode, decode, dequantize, fake quantization,
// BF16 rounding, the scale from an amax and its power-of-two rounding, and the amax step. Inputs: every BF16 bit
// pattern as a float, a stride of about a million patterns through all 2^32 floats, and specials (zeros, FP32
// subnormals, the largest floats, infinities, NaNs of both signs and several payloads, ties between FP8 codes),
// under scales 1, 0.375, 1024, powers of two and the degenerate 0 and infinity. Runs without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "backend/cuda/fp8_math.h"
#include "precision/quantize.h"

namespace frugal {
namespace {

namespace fp8 = cuda::fp8;
using precision::Fp8Format;

constexpr uint32_t kStride = 4099;  // a prime: 2^32 / 4099 = 1,047,809 patterns covering every exponent and sign

float from_bits(uint32_t u) { return fp8::bits_float(u); }

std::string hex(float x) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%a (0x%08X)", double(x), fp8::float_bits(x));
    return buf;
}

// Every BF16 pattern, the stride through all floats, and the special values.
std::vector<float> test_floats() {
    std::vector<float> v;
    for (uint32_t b = 0; b < 65536; ++b) v.push_back(from_bits(b << 16));
    for (uint64_t u = 0; u < (uint64_t(1) << 32); u += kStride) v.push_back(from_bits(uint32_t(u)));
    const float specials[] = {0.0f,
                              -0.0f,
                              1.0f,
                              -1.0f,
                              448.0f,
                              -448.0f,
                              464.0f,
                              479.99f,
                              480.0f,
                              57344.0f,
                              61440.0f,
                              65536.0f,
                              std::numeric_limits<float>::max(),
                              -std::numeric_limits<float>::max(),
                              std::numeric_limits<float>::min(),
                              std::numeric_limits<float>::denorm_min(),
                              -std::numeric_limits<float>::denorm_min(),
                              INFINITY,
                              -INFINITY};
    v.insert(v.end(), std::begin(specials), std::end(specials));
    for (uint32_t u : {0x00000001u, 0x007FFFFFu, 0x80400000u, 0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF800001u,
                       0x7FFFFFFFu, 0x7FA00000u})
        v.push_back(from_bits(u));
    // Midpoints between adjacent codes of both formats (ties) and one float either side.
    for (int fmt = 0; fmt < 2; ++fmt)
        for (int c = 0; c < 127; ++c) {
            const float lo = fmt ? precision::decode_e5m2(uint8_t(c)) : precision::decode_e4m3(uint8_t(c));
            const float hi = fmt ? precision::decode_e5m2(uint8_t(c + 1)) : precision::decode_e4m3(uint8_t(c + 1));
            if (!std::isfinite(lo) || !std::isfinite(hi)) continue;
            const float mid = 0.5f * (lo + hi);
            for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
                v.push_back(x);
                v.push_back(-x);
            }
        }
    return v;
}

// 1, 0.375, 1024, powers of two over the range the recipes produce, and the degenerate 0 and infinity.
std::vector<float> test_scales() {
    return {1.0f, 0.375f, 1024.0f, 0x1p-24f, 0x1p-7f, 0x1p3f, 0x1p17f, 0x1p40f, 0.0f, INFINITY};
}

const char* name(Fp8Format f) { return f == Fp8Format::kE4M3 ? "e4m3" : "e5m2"; }

// Counts mismatches between got and want (bitwise), reporting the first few with the input and scale.
struct Mismatches {
    std::string what;
    int64_t count = 0;
    void check(uint32_t got, uint32_t want, float x, float scale) {
        if (got == want) return;
        if (count++ < 5)
            ADD_FAILURE() << what << " of x = " << hex(x) << " at scale " << hex(scale) << ": cuda 0x" << std::hex
                          << got << ", cpu 0x" << want;
    }
    ~Mismatches() { EXPECT_EQ(count, 0) << what << ": mismatches in total"; }
};

template <class F>
void check_encode(Fp8Format fmt, const std::vector<float>& xs) {
    std::vector<uint8_t> bulk(xs.size());
    for (float s : test_scales()) {
        if (fmt == Fp8Format::kE4M3)
            precision::encode_e4m3(bulk.data(), xs.data(), int64_t(xs.size()), s);
        else
            precision::encode_e5m2(bulk.data(), xs.data(), int64_t(xs.size()), s);
        Mismatches m{std::string("encode ") + name(fmt)};
        for (size_t i = 0; i < xs.size(); ++i) {
            const uint8_t got = fp8::encode<F>(fp8::mul_rn(xs[i], s));
            m.check(got, bulk[i], xs[i], s);
            const float y = xs[i] * s;
            m.check(got, fmt == Fp8Format::kE4M3 ? precision::encode_e4m3(y) : precision::encode_e5m2(y), xs[i], s);
        }
    }
}

TEST(Fp8Math, EncodingEqualsTheCpuEncodersOnEveryTestedFloatAndScale) {
    const auto xs = test_floats();
    check_encode<fp8::E4M3>(Fp8Format::kE4M3, xs);
    check_encode<fp8::E5M2>(Fp8Format::kE5M2, xs);
}

template <class F>
void check_decode(Fp8Format fmt) {
    Mismatches m{std::string("decode ") + name(fmt)};
    for (int c = 0; c < 256; ++c) {
        const float want =
            fmt == Fp8Format::kE4M3 ? precision::decode_e4m3(uint8_t(c)) : precision::decode_e5m2(uint8_t(c));
        m.check(fp8::float_bits(fp8::decode<F>(uint8_t(c))), fp8::float_bits(want), float(c), 1.0f);
        for (float s : test_scales()) {
            const float inv = 1.0f / s;
            const uint8_t code = uint8_t(c);
            float want_deq;
            if (fmt == Fp8Format::kE4M3)
                precision::decode_e4m3(&want_deq, &code, 1, inv);
            else
                precision::decode_e5m2(&want_deq, &code, 1, inv);
            m.check(fp8::float_bits(fp8::dequantize<F>(code, inv)), fp8::float_bits(want_deq), float(c), s);
        }
    }
}

TEST(Fp8Math, DecodingAndDequantizingEqualTheCpuTablesOnEveryCode) {
    check_decode<fp8::E4M3>(Fp8Format::kE4M3);
    check_decode<fp8::E5M2>(Fp8Format::kE5M2);
}

template <class F>
void check_fake_quant(Fp8Format fmt, const std::vector<float>& xs) {
    std::vector<float> want(xs.size());
    for (float s : test_scales()) {
        precision::fake_quant(want.data(), xs.data(), int64_t(xs.size()), fmt, s);
        const float inv = 1.0f / s;
        Mismatches m{std::string("fake_quant ") + name(fmt)};
        for (size_t i = 0; i < xs.size(); ++i)
            m.check(fp8::float_bits(fp8::fake_quant<F>(xs[i], s, inv)), fp8::float_bits(want[i]), xs[i], s);
    }
}

TEST(Fp8Math, FakeQuantizationEqualsTheCpuGridRoundingOnEveryTestedFloatAndScale) {
    const auto xs = test_floats();
    check_fake_quant<fp8::E4M3>(Fp8Format::kE4M3, xs);
    check_fake_quant<fp8::E5M2>(Fp8Format::kE5M2, xs);
}

TEST(Fp8Math, Bf16RoundingEqualsTheCpuOnEveryTestedFloat) {
    const auto xs = test_floats();
    std::vector<float> want(xs.size());
    precision::round_bf16(want.data(), xs.data(), int64_t(xs.size()));
    Mismatches m{"bf16"};
    for (size_t i = 0; i < xs.size(); ++i) {
        m.check(fp8::encode_bf16(xs[i]), precision::encode_bf16(xs[i]), xs[i], 1.0f);
        m.check(fp8::float_bits(fp8::round_bf16(xs[i])), fp8::float_bits(want[i]), xs[i], 1.0f);
    }
}

// The amaxes: the stride through all positive floats, the specials, and the amaxes whose scale fp8_max / amax lands
// within a few ulps of each power of two (where the power-of-two rounding is delicate).
std::vector<float> test_amaxes() {
    std::vector<float> v;
    for (uint64_t u = 0; u < 0x80000000u; u += kStride / 4) v.push_back(from_bits(uint32_t(u)));
    for (float a : {0.0f, -0.0f, -1.0f, INFINITY, -INFINITY, NAN, -NAN, std::numeric_limits<float>::max(),
                    std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min(), 448.0f, 57344.0f})
        v.push_back(a);
    for (float fmax : {448.0f, 57344.0f})
        for (int e = -140; e <= 127; ++e) {
            const float a = fmax / std::ldexp(1.0f, e);
            uint32_t u = fp8::float_bits(a);
            for (uint32_t d = 0; d < 200 && u > d; ++d) {
                v.push_back(from_bits(u + d));
                v.push_back(from_bits(u - d));
            }
        }
    return v;
}

template <class F>
void check_scale_for(Fp8Format fmt, const std::vector<float>& amaxes) {
    for (bool pow2 : {false, true}) {
        Mismatches m{std::string("scale_for ") + name(fmt) + (pow2 ? " pow2" : "")};
        for (float a : amaxes)
            m.check(fp8::float_bits(fp8::scale_for<F>(a, pow2)), fp8::float_bits(precision::scale_for(a, fmt, pow2)), a,
                    1.0f);
    }
}

TEST(Fp8Math, ScaleFromAmaxEqualsTheCpuOnASweepOfAmaxesWithAndWithoutPowerOfTwoRounding) {
    const auto amaxes = test_amaxes();
    check_scale_for<fp8::E4M3>(Fp8Format::kE4M3, amaxes);
    check_scale_for<fp8::E5M2>(Fp8Format::kE5M2, amaxes);
}

TEST(Fp8Math, PowerOfTwoRoundingEqualsLibmWithin300UlpsOfEveryPowerOfTwo) {
    Mismatches m{"pow2_like_log2"};
    int64_t rounded_up = 0;
    for (int v = -149; v <= 128; ++v) {
        const uint32_t p = v == 128 ? 0x7F800000u : fp8::float_bits(std::ldexp(1.0f, v));
        for (uint32_t d = 0; d <= 300; ++d)
            for (uint32_t u : {p - d, p + d}) {
                if (u == 0 || u > 0x7F800000u) continue;
                const float s = from_bits(u);
                const float want = std::exp2(std::floor(std::log2(s)));
                rounded_up += want > s;
                m.check(fp8::float_bits(fp8::pow2_like_log2(s)), fp8::float_bits(want), s, 1.0f);
            }
    }
    // log2f rounding up just below a power of two is what the emulation is about: make sure it was exercised.
    EXPECT_GT(rounded_up, 1000);
}

TEST(Fp8Math, AmaxStepsEqualTheCpuAmaxIgnoringNaNs) {
    const auto xs = test_floats();
    const int64_t n = int64_t(xs.size());
    for (int64_t len : {int64_t(1), int64_t(7), int64_t(128), int64_t(4099)}) {
        Mismatches m{"amax over " + std::to_string(len)};
        for (int64_t i0 = 0; i0 + len <= n; i0 += len * 3 + 1) {
            float got = 0.0f;
            for (int64_t i = i0; i < i0 + len; ++i) got = fp8::amax_step(got, xs[size_t(i)]);
            m.check(fp8::float_bits(got), fp8::float_bits(precision::amax(xs.data() + i0, len)), xs[size_t(i0)],
                    float(len));
        }
    }
    const float with_nan[] = {1.0f, NAN, -3.0f, -NAN, 2.0f};
    EXPECT_EQ(fp8::float_bits(precision::amax(with_nan, 5)), fp8::float_bits(3.0f));
}

}  // namespace
}  // namespace frugal
