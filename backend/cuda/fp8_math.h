// The per-element arithmetic of FP8 (E4M3, E5M2) and BF16 quantization, as FRUGAL_HD inline functions that nvcc
// compiles for the device and g++ for the host, bit for bit what precision/fp8.h and precision/quantize.cc compute on
// the CPU (the reference): encoding with round-to-nearest-even and saturation, decoding, rounding to the FP8 grid
// (fake quantization, the branch-free fake_quant_grid), BF16 rounding, and the scale of a group from its amax.
//
// Invariants:
//   - Only integer operations and IEEE float multiply, add and divide rounded to nearest (__fmul_rn, __fadd_rn,
//     __fdiv_rn on the device, which nvcc never contracts into an FMA nor approximates); no table, no libm call.
//     The translation unit must not be compiled with -ftz=true or --use_fast_math: FP32 subnormals must survive.
//   - NaN results have the bits the CPU (x86-64) produces, not the GPU's canonical 0x7FFFFFFF: a NaN operand of a
//     product is returned quieted, a NaN made from non-NaN operands (0 * inf) is x86's default NaN 0xFFC00000
//     (mul_like_host). A NaN scale gives a NaN whose bits are unspecified.
//   - The power-of-two scale is what the CPU's exp2(floor(log2f(s))) gives, computed without log2f: glibc's log2f
//     rounds to nearest, so an s a few ulps below 2^v has log2f(s) == v and is rounded UP to 2^v (at most 88 ulps
//     below, for |v| >= 128); pow2_like_log2 reproduces that threshold exactly (tests/cuda/test_fp8_math.cc checks
//     every float within 300 ulps of each power of two against libm).
//   - amax ignores NaNs and a group whose amax is 0, infinite or NaN gets scale 1, as precision/quantize.cc does.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FRUGAL_HD __host__ __device__
#else
#define FRUGAL_HD
#endif

namespace frugal::cuda::fp8 {

FRUGAL_HD inline uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(x);
#else
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return u;
#endif
}

FRUGAL_HD inline float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float x;
    std::memcpy(&x, &u, 4);
    return x;
#endif
}

// IEEE operations rounded to nearest even, never fused or approximated.
FRUGAL_HD inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
FRUGAL_HD inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
FRUGAL_HD inline float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

FRUGAL_HD inline int highest_bit(uint32_t u) {  // u != 0
#if defined(__CUDA_ARCH__)
    return 31 - __clz(int(u));
#else
    return 31 - __builtin_clz(u);
#endif
}

FRUGAL_HD inline bool is_nan_bits(uint32_t u) { return (u & 0x7FFFFFFFu) > 0x7F800000u; }

// a * b with the NaN bits of x86-64's SSE/AVX multiply: a NaN operand comes back quieted (a's when both are NaN),
// an invalid product of non-NaN operands (0 * inf) is the default NaN 0xFFC00000.
FRUGAL_HD inline float mul_like_host(float a, float b) {
    const uint32_t ua = float_bits(a), ub = float_bits(b);
    const float r = mul_rn(a, b);
    if (is_nan_bits(ua)) return bits_float(ua | 0x00400000u);
    if (is_nan_bits(ub)) return bits_float(ub | 0x00400000u);
    return is_nan_bits(float_bits(r)) ? bits_float(0xFFC00000u) : r;
}

// The two formats: M mantissa bits, exponent bias, the largest finite code without sign, whether the all-ones
// exponent holds infinities (E5M2) or is a finite binade whose top code is the NaN (E4M3 "fn").
struct E4M3 {
    static constexpr int kM = 3, kBias = 7;
    static constexpr uint32_t kMaxCode = 0x7E;
    static constexpr bool kHasInf = false;
    static constexpr float kMax = 448.0f;
};
struct E5M2 {
    static constexpr int kM = 2, kBias = 15;
    static constexpr uint32_t kMaxCode = 0x7B;
    static constexpr bool kHasInf = true;
    static constexpr float kMax = 57344.0f;
};

// The FP8 code of y (already scaled): fp8.h's encode_e4m3 / encode_e5m2 (its branch-free bulk form, equal to the
// scalar one on every input). Subnormal range: units of the smallest subnormal, rounded by the 2^23 "magic number"
// addition (ties to even); normal range: round to nearest even on the float's bits, clamped to the largest code.
template <class F>
FRUGAL_HD inline uint8_t encode(float y) {
    constexpr uint32_t kMinNormalBits = (127u + 1u - uint32_t(F::kBias)) << 23;
    constexpr int kShift = 23 - F::kM;
    constexpr uint32_t kRebias = (127u - uint32_t(F::kBias)) << F::kM;
    constexpr uint32_t kSubScaleBits = (127u + uint32_t(F::kBias - 1 + F::kM)) << 23;  // 2^(bias - 1 + M)
    const uint32_t u = float_bits(y);
    const uint32_t sign = (u >> 24) & 0x80u;
    const uint32_t a = u & 0x7FFFFFFFu;
    const uint32_t ac = a < 0x7F000000u ? a : 0x7F000000u;
    const uint32_t r = (ac + ((1u << (kShift - 1)) - 1u) + ((ac >> kShift) & 1u)) >> kShift;
    uint32_t code_n = r > kRebias ? r - kRebias : 0u;
    code_n = code_n > F::kMaxCode ? F::kMaxCode : code_n;
    const float v = mul_rn(bits_float(a < kMinNormalBits ? a : 0u), bits_float(kSubScaleBits));
    const uint32_t code_s = uint32_t(add_rn(add_rn(v, 8388608.0f), -8388608.0f));
    const uint32_t code = a < kMinNormalBits ? code_s : code_n;
    return uint8_t(a > 0x7F800000u ? 0x7Fu : (sign | code));
}

// The FP32 value of a code: fp8.h's decode tables (NaN codes give the quiet NaN 0x7FC00000 with the code's sign).
template <class F>
FRUGAL_HD inline float decode(uint8_t c) {
    constexpr uint32_t kExpMask = (1u << (7 - F::kM)) - 1u, kManMask = (1u << F::kM) - 1u;
    const uint32_t sign = uint32_t(c & 0x80u) << 24;
    const uint32_t exp = (uint32_t(c) >> F::kM) & kExpMask, man = c & kManMask;
    if (exp == kExpMask && (F::kHasInf || man == kManMask))
        return bits_float(sign | (F::kHasInf && man == 0 ? 0x7F800000u : 0x7FC00000u));
    if (exp == 0) {  // subnormal: man units of 2^(1 - bias - M), a normal FP32
        constexpr uint32_t kUnitBits = (127u + 1u - uint32_t(F::kBias) - uint32_t(F::kM)) << 23;
        return bits_float(sign | float_bits(mul_rn(float(man), bits_float(kUnitBits))));
    }
    return bits_float(sign | ((exp + 127u - uint32_t(F::kBias)) << 23) | (man << (23 - F::kM)));
}

// decode(c) * inv, as dequantize_row_tiles computes it.
template <class F>
FRUGAL_HD inline float dequantize(uint8_t c, float inv) {
    return mul_like_host(decode<F>(c), inv);
}

// deq(q(x * scale)) * inv without the code in between: precision/quantize.cc's fake_quant_grid for one element
// (inv is the caller's 1 / scale). NaN inputs give 0x7FC00000 (the decode table's NaN) times inv.
template <class F>
FRUGAL_HD inline float fake_quant(float x, float scale, float inv) {
    constexpr int kShift = 23 - F::kM;
    constexpr uint32_t kMinNormalBits = (127u + 1u - uint32_t(F::kBias)) << 23;
    constexpr uint32_t kRebias = (127u - uint32_t(F::kBias)) << F::kM;
    constexpr uint32_t kMaxBits = (F::kMaxCode + kRebias) << kShift;
    constexpr uint32_t kLowMask = ~((1u << kShift) - 1u);
    constexpr uint32_t kSubScaleBits = (127u + uint32_t(F::kBias - 1 + F::kM)) << 23;
    constexpr uint32_t kSubUnitBits = (127u + 1u - uint32_t(F::kBias) - uint32_t(F::kM)) << 23;
    const uint32_t u = float_bits(mul_rn(x, scale));
    const uint32_t sign = u & 0x80000000u;
    const uint32_t a = u & 0x7FFFFFFFu;
    const uint32_t ac = a < 0x7F000000u ? a : 0x7F000000u;
    uint32_t normal = (ac + ((1u << (kShift - 1)) - 1u) + ((ac >> kShift) & 1u)) & kLowMask;
    normal = normal < kMaxBits ? normal : kMaxBits;
    const uint32_t is_sub = 0u - uint32_t(a < kMinNormalBits), is_nan = 0u - uint32_t(a > 0x7F800000u);
    const float v = mul_rn(bits_float(a & is_sub), bits_float(kSubScaleBits));
    const float units = add_rn(add_rn(v, 8388608.0f), -8388608.0f);
    const uint32_t sub = float_bits(mul_rn(units, bits_float(kSubUnitBits)));
    const uint32_t grid = sign | (sub & is_sub) | (normal & ~is_sub);
    return mul_like_host(bits_float((0x7FC00000u & is_nan) | (grid & ~is_nan)), inv);
}

// core/bf16.h: round to nearest even on the top 16 bits; NaN becomes 0x7FFF.
FRUGAL_HD inline uint16_t encode_bf16(float x) {
    const uint32_t u = float_bits(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;
    return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
FRUGAL_HD inline float decode_bf16(uint16_t b) { return bits_float(uint32_t(b) << 16); }
FRUGAL_HD inline float round_bf16(float x) { return decode_bf16(encode_bf16(x)); }

// 2^n for n in [-149, 128] (128 gives infinity, as exp2f does).
FRUGAL_HD inline float pow2(int n) {
    return n >= -126 ? bits_float(uint32_t(n + 127) << 23) : bits_float(1u << (n + 149));
}

// exp2(floor(log2f(s))) for s >= 0 or infinite, as glibc computes it (log2f correctly rounded). With s in
// [2^e, 2^v), v = e + 1, write s = 2^v (1 - k 2^-24); log2f(s) rounds up to v when v - log2(s) is below half the
// gap between v and the float under it, i.e. when k <= 2^24 (1 - 2^-h) = floor(2^j ln 2) (to 1e-4) with
// h = 2^(j - 24) the half gap: j = floor(log2 |v|), less one when v > 0 is a power of two (the gap below a power of
// two is half the one above). v = 0 never rounds up (log2f of [1/2, 1) is a negative float).
FRUGAL_HD inline float pow2_like_log2(float s) {
    const uint32_t u = float_bits(s);
    if (u == 0 || u >= 0x7F800000u) return s;
    int e;
    uint32_t m24;  // s = m24 2^(e - 23), m24 in [2^23, 2^24)
    if (u >= 0x00800000u) {
        e = int(u >> 23) - 127;
        m24 = (u & 0x007FFFFFu) | 0x00800000u;
    } else {
        const int p = highest_bit(u);
        e = p - 149;
        m24 = u << (23 - p);
    }
    const uint32_t k = (1u << 24) - m24;
    const int v = e + 1;
    if (v == 0) return pow2(e);
    const uint32_t av = uint32_t(v > 0 ? v : -v);
    const int j = highest_bit(av) - (v > 0 && (av & (av - 1u)) == 0 ? 1 : 0);
    // floor(2^j ln 2) (0, 0, 1, 2, 5, 11, 22, 44, 88 for j = -1 .. 7), with ln 2 = 0xB17217F7 / 2^32 (to 2^-32).
    const uint32_t max_k = j < 0 ? 0u : uint32_t((uint64_t(0xB17217F7u) << j) >> 32);
    return pow2(k <= max_k ? v : e);
}

// The scale of a group with this amax: fp8_max / amax, 1 when amax is 0, infinite or NaN, optionally rounded down
// to a power of two as the CPU rounds it (precision/quantize.cc scale_for).
template <class F>
FRUGAL_HD inline float scale_for(float amax, bool power_of_2) {
    const uint32_t u = float_bits(amax);
    if ((u & 0x80000000u) || u == 0 || u >= 0x7F800000u) return 1.0f;  // not > 0, or not finite
    const float s = div_rn(F::kMax, amax);
    return power_of_2 ? pow2_like_log2(s) : s;
}

// One step of precision::amax: std::max(m, |x|), which keeps m when x is NaN.
FRUGAL_HD inline float amax_step(float m, float x) {
    const float ax = bits_float(float_bits(x) & 0x7FFFFFFFu);
    return m < ax ? ax : m;
}

}  // namespace frugal::cuda::fp8
