// BF16 storage: the top 16 bits of an FP32, rounded to nearest even; NaN becomes the canonical 0x7FFF (as CUDA's
// __float2bfloat16_rn). precision/fp8.h exposes these as frugal::precision::encode_bf16 / decode_bf16; they live in
// core so that every module (the optimizer's BF16 moments among them) can store BF16.
#pragma once

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

}  // namespace frugal
