// Low-precision number formats, bit-exact, header-only.
//
//   E4M3 ("fn"): 1 sign, 4 exponent (bias 7), 3 mantissa bits; max finite 448 (S.1111.110); no infinities;
//                NaN = S.1111.111; min normal 2^-6; min subnormal 2^-9.
//   E5M2:        1 sign, 5 exponent (bias 15), 2 mantissa bits; max finite 57344 (S.11110.11); infinities
//                S.11111.00; NaN S.11111.{01,10,11}.
//   BF16:        the top 16 bits of an FP32.
//
// Encoding rounds to nearest, ties to even, and saturates: a finite value beyond the largest finite one, or an
// infinity, becomes the largest finite value of the same sign (CUDA's __nv_cvt_float_to_fp8 with __NV_SATFINITE;
// E5M2 then never produces an infinity). Any NaN encodes to 0x7F in both FP8 formats and to 0x7FFF in BF16, the
// canonical NaNs CUDA's conversions produce. Magnitudes at or below half the smallest subnormal become signed zero.
// The tests compare every path against CUDA's host-side conversions and ml_dtypes' tables.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "core/bf16.h"

namespace frugal::precision {

namespace detail {

inline uint32_t float_bits(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return u;
}
inline float bits_float(uint32_t u) {
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}

// Float -> FP8 with E exponent bits, M mantissa bits and the given bias; max_code is the largest finite code
// without sign (0x7E for E4M3, 0x7B for E5M2).
template <int E, int M, int kBias, uint8_t kMaxCode>
inline uint8_t encode_fp8(float x) {
    const uint32_t u = float_bits(x);
    const uint8_t sign = uint8_t((u >> 24) & 0x80u);
    const uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return 0x7F;  // NaN
    const uint32_t exp = a >> 23;
    // Smallest normal of the target: 2^(1 - bias), i.e. FP32 exponent field 127 + 1 - bias.
    constexpr uint32_t kMinNormalExp = 127u + 1u - uint32_t(kBias);
    // Anything at or above 2^(max exponent + 1) saturates (this also covers infinity).
    constexpr uint32_t kOverflowExp = 127u + uint32_t((1 << E) - 1 - kBias) + 1u;
    if (exp >= kOverflowExp) return uint8_t(sign | kMaxCode);
    if (exp >= kMinNormalExp) {
        // Round to nearest even at bit (23 - M) of the FP32 pattern; a carry moves into the exponent as it should.
        constexpr int kShift = 23 - M;
        uint32_t r = a + ((1u << (kShift - 1)) - 1u) + ((a >> kShift) & 1u);
        r >>= kShift;
        const uint32_t code = r - ((127u - uint32_t(kBias)) << M);
        return uint8_t(sign | (code > kMaxCode ? kMaxCode : code));
    }
    // Subnormal range: count units of the smallest subnormal 2^(1 - bias - M), rounding to nearest even (the
    // scaling by a power of two is exact; nearbyint rounds ties to even in the default rounding mode). A result of
    // 2^M is the smallest normal, whose code is exactly 2^M.
    const float units = std::nearbyint(bits_float(a) * std::ldexp(1.0f, kBias - 1 + M));
    return uint8_t(sign | uint8_t(units));
}

template <int E, int M, int kBias, bool kHasInf>
inline float decode_fp8(uint8_t c) {
    const bool neg = c & 0x80;
    const int exp = (c >> M) & ((1 << E) - 1);
    const int man = c & ((1 << M) - 1);
    float v;
    if (kHasInf && exp == (1 << E) - 1) {
        v = man == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
    } else if (!kHasInf && exp == (1 << E) - 1 && man == (1 << M) - 1) {
        v = std::numeric_limits<float>::quiet_NaN();
    } else if (exp == 0) {
        v = std::ldexp(float(man), 1 - kBias - M);
    } else {
        v = std::ldexp(float((1 << M) + man), exp - kBias - M);
    }
    return neg ? -v : v;
}

}  // namespace detail

inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE5M2Max = 57344.0f;

inline uint8_t encode_e4m3(float x) { return detail::encode_fp8<4, 3, 7, 0x7E>(x); }
inline uint8_t encode_e5m2(float x) { return detail::encode_fp8<5, 2, 15, 0x7B>(x); }

// Decoding goes through 256-entry tables built once.
inline const std::array<float, 256>& e4m3_table() {
    static const std::array<float, 256> t = [] {
        std::array<float, 256> a{};
        for (int c = 0; c < 256; ++c) a[size_t(c)] = detail::decode_fp8<4, 3, 7, false>(uint8_t(c));
        return a;
    }();
    return t;
}
inline const std::array<float, 256>& e5m2_table() {
    static const std::array<float, 256> t = [] {
        std::array<float, 256> a{};
        for (int c = 0; c < 256; ++c) a[size_t(c)] = detail::decode_fp8<5, 2, 15, true>(uint8_t(c));
        return a;
    }();
    return t;
}
inline float decode_e4m3(uint8_t c) { return e4m3_table()[c]; }
inline float decode_e5m2(uint8_t c) { return e5m2_table()[c]; }

inline uint16_t encode_bf16(float x) { return float_to_bf16_bits(x); }
inline float decode_bf16(uint16_t b) { return bf16_bits_to_float(b); }

enum class Fp8Format : uint8_t { kE4M3, kE5M2 };

inline float fp8_max(Fp8Format f) { return f == Fp8Format::kE4M3 ? kE4M3Max : kE5M2Max; }

namespace detail {
// Branch-free form of encode_fp8 for the bulk paths, written so that compilers vectorize the loop: both the
// normal-range and the subnormal-range candidates are computed and one is selected. The subnormal candidate uses
// the float "magic number" rounding (adding and subtracting 2^23 rounds to an integer, ties to even, in the
// default rounding mode), valid because the scaled magnitude is below 2^M + 1 there. Equal to encode_fp8 on every
// input (tested).
template <int E, int M, int kBias, uint8_t kMaxCode>
inline void encode_fp8_bulk(uint8_t* out, const float* in, int64_t n, float scale) {
    constexpr uint32_t kMinNormalBits = (127u + 1u - uint32_t(kBias)) << 23;
    constexpr int kShift = 23 - M;
    constexpr uint32_t kRebias = (127u - uint32_t(kBias)) << M;
    const float sub_scale = std::ldexp(1.0f, kBias - 1 + M);
    for (int64_t i = 0; i < n; ++i) {
        const uint32_t u = float_bits(in[i] * scale);
        const uint32_t sign = (u >> 24) & 0x80u;
        const uint32_t a = u & 0x7FFFFFFFu;
        // Normal range; clamp before rebiasing so infinities and huge values saturate without wrapping.
        const uint32_t ac = a < 0x7F000000u ? a : 0x7F000000u;
        const uint32_t r = (ac + ((1u << (kShift - 1)) - 1u) + ((ac >> kShift) & 1u)) >> kShift;
        uint32_t code_n = r > kRebias ? r - kRebias : 0u;
        code_n = code_n > kMaxCode ? kMaxCode : code_n;
        // Subnormal range.
        const float v = bits_float(a < kMinNormalBits ? a : 0u) * sub_scale;
        const uint32_t code_s = uint32_t((v + 8388608.0f) - 8388608.0f);
        const uint32_t code = a < kMinNormalBits ? code_s : code_n;
        out[i] = uint8_t(a > 0x7F800000u ? 0x7Fu : (sign | code));
    }
}
}  // namespace detail

// Bulk versions for the hot path: out[i] = encode(in[i] * scale); decode multiplies by inv_scale.
inline void encode_e4m3(uint8_t* out, const float* in, int64_t n, float scale = 1.0f) {
    detail::encode_fp8_bulk<4, 3, 7, 0x7E>(out, in, n, scale);
}
inline void encode_e5m2(uint8_t* out, const float* in, int64_t n, float scale = 1.0f) {
    detail::encode_fp8_bulk<5, 2, 15, 0x7B>(out, in, n, scale);
}
inline void decode_e4m3(float* out, const uint8_t* in, int64_t n, float inv_scale = 1.0f) {
    const auto& t = e4m3_table();
    for (int64_t i = 0; i < n; ++i) out[i] = t[in[i]] * inv_scale;
}
inline void decode_e5m2(float* out, const uint8_t* in, int64_t n, float inv_scale = 1.0f) {
    const auto& t = e5m2_table();
    for (int64_t i = 0; i < n; ++i) out[i] = t[in[i]] * inv_scale;
}
inline void encode_bf16(uint16_t* out, const float* in, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = encode_bf16(in[i]);
}
inline void decode_bf16(float* out, const uint16_t* in, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = decode_bf16(in[i]);
}

}  // namespace frugal::precision
