// BF16 storage: the top 16 bits of an FP32, rounded to nearest even; NaN becomes the canonical 0x7FFF (as CUDA's
// __float2bfloat16_rn). precision/fp8.h exposes these as frugal::precision::encode_bf16 / decode_bf16; they live in
// core so that every module (the optimizer's BF16 moments among them) can store BF16.
// IEEE FP16 (1 sign, 5 exponent bits, 10 mantissa bits, bias 15) for safetensors F16: round to nearest even,
// overflow to infinity, subnormals kept, NaN to the canonical 0x7FFF (as CUDA's __float2half_rn).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace frugal {

inline uint16_t float_to_bf16_bits(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;
    return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

inline float bf16_bits_to_float(uint16_t b) {
    const uint32_t u = uint32_t(b) << 16;
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}

inline uint16_t float_to_half_bits(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return 0x7FFF;
    // 65520 = 0x477FF000 is the midpoint between the largest half (65504) and 2^16: it and above round to infinity.
    if (a >= 0x477FF000u) return uint16_t(sign | 0x7C00u);
    if (a < 0x38800000u) {  // below 2^-14: a subnormal half, in units of 2^-24 (the scaling is exact)
        float f;
        std::memcpy(&f, &a, 4);
        return uint16_t(sign | uint16_t(std::nearbyint(f * 16777216.0f)));
    }
    // Normal: rebias the exponent (127 - 15 = 112) and round the 13 dropped mantissa bits to nearest even.
    const uint32_t h = a - 0x38000000u;
    return uint16_t(sign | ((h + 0xFFFu + ((h >> 13) & 1u)) >> 13));
}

inline float half_bits_to_float(uint16_t h) {
    const int exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    float v;
    if (exp == 0)
        v = std::ldexp(float(man), -24);
    else if (exp == 31)
        v = man ? NAN : INFINITY;
    else
        v = std::ldexp(float(man + 1024), exp - 25);
    return (h >> 15) ? -v : v;
}

}  // namespace frugal
