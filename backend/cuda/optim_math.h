// The per-element and per-block arithmetic of the CUDA optimizer kernels (backend/cuda/optim.cu), as FRUGAL_HD inline
// functions that nvcc compiles for the device and g++ for the host, so a host test checks the device's math against
// the CPU's (backend/cpu/optim.cc, core/reduce.h):
//   - one AdamW element (FP32 or BF16 moments), bit for bit backend/cpu/optim.cc's adamw_update as it is compiled;
//   - the fixed order of sum_squares: 64 chunks as core/reduce.h splits them, each cut into kSumSplits parts, one
//     thread block per part (per-thread sums in double over a stride of kSumThreads, then a pairwise tree over the
//     block's threads), the parts of a chunk and then the chunks added in index order;
//   - the FNV-1a fingerprint over every 997th element's bits and the last one (cpu::fingerprint).
//
// Invariants:
//   - Every float operation is IEEE, rounded to nearest, in the CPU kernel's order; the device path uses __fmul_rn,
//     __fadd_rn, __fdiv_rn, __fsqrt_rn and __fmaf_rn, which nvcc neither contracts nor approximates; the host path
//     keeps unfused products unfused (a volatile store stops g++'s contraction). The translation unit must not be
//     compiled with --use_fast_math or -ftz=true.
//   - g++ compiles backend/cpu/optim.cc with -ffp-contract=fast (its C++ default): where the target has FMA
//     (-march=native on an FMA CPU) and optimizes at -O2 or above (its FMA-forming pass is off at -O0 and -O1), it
//     fuses four of the update's products into FMAs (objdump of optim.cc.o shows them: m, v, the denominator and the
//     decayed value). kCpuAdamwFused says whether the CPU kernel of this build does so (from __FMA__ and
//     __OPTIMIZE__, which cannot tell -O1 from -O2), and the launcher picks the same form, so the bits agree; read it
//     in host code only (the device pass defines neither). tests/cuda/test_optim_math.cc checks the chosen form
//     against cpu::adamw_update bit for bit, so a build whose CPU kernel is compiled otherwise fails there.
//   - NaN results of AdamW are NaN; their payload bits may differ from the CPU's (x86 keeps an operand's payload, the
//     GPU gives 0x7FFFFFFF). Every non-NaN result, and every BF16 moment (NaN is stored as 0x7FFF), is the CPU's.
//   - sum_squares: each product double(x) * double(x) is exact, so only the order of the additions differs from
//     core/reduce.h (sequential within a chunk there). The terms are non-negative, so each order is within
//     (n - 1) 2^-53 relative of the exact sum and the two results within 2 (n - 1) 2^-53 of each other; the
//     order depends only on n (never on the device or the launch), so the result's bits repeat run after run.
#pragma once

#include <cmath>
#include <cstdint>

#include "backend/cuda/fp8_math.h"

namespace frugal::cuda::optim_math {

#if defined(__FMA__) && defined(__OPTIMIZE__) && defined(__GNUC__) && !defined(__clang__)
inline constexpr bool kCpuAdamwFused = true;
#else
inline constexpr bool kCpuAdamwFused = false;
#endif

// ---- IEEE float operations, rounded to nearest ----

FRUGAL_HD inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    volatile float p = a * b;
    return p;
#endif
}
FRUGAL_HD inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    volatile float s = a + b;
    return s;
#endif
}
FRUGAL_HD inline float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    volatile float s = a - b;
    return s;
#endif
}
FRUGAL_HD inline float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}
FRUGAL_HD inline float sqrt_rn(float a) {
#if defined(__CUDA_ARCH__)
    return __fsqrt_rn(a);
#else
    return std::sqrt(a);
#endif
}
// a * b + c with one rounding.
FRUGAL_HD inline float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
    return __fmaf_rn(a, b, c);
#else
    return std::fma(a, b, c);
#endif
}
// a * b + c, fused (one rounding) or not (two), as the CPU kernel's build does it.
template <bool kFused>
FRUGAL_HD inline float mul_add(float a, float b, float c) {
    if constexpr (kFused)
        return fma_rn(a, b, c);
    else
        return add_rn(mul_rn(a, b), c);
}

// ---- AdamW (optim/adamw.h; backend.h's adamw_update) ----

struct AdamwHyper {
    float b1, b2, step_size, inv_sqrt_bc2, eps, decay;
};

struct AdamwElement {
    float value, m, v;  // the updated weight and moments (the moments before any BF16 rounding)
};

// m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g g; value = value decay - step_size m / (sqrt(v) inv_sqrt_bc2 + eps),
// each product and sum in backend/cpu/optim.cc's order.
template <bool kFused>
FRUGAL_HD inline AdamwElement adamw_element(float value, float grad, float m, float v, const AdamwHyper& h) {
    const float mj = mul_add<kFused>(h.b1, m, mul_rn(sub_rn(1.0f, h.b1), grad));
    const float vj = mul_add<kFused>(h.b2, v, mul_rn(mul_rn(sub_rn(1.0f, h.b2), grad), grad));
    const float denom = mul_add<kFused>(sqrt_rn(vj), h.inv_sqrt_bc2, h.eps);
    const float step = div_rn(mul_rn(h.step_size, mj), denom);
    return {mul_add<kFused>(value, h.decay, -step), mj, vj};
}

// The moments' storage: FP32 as is, BF16 as core/bf16.h rounds it (nearest even, NaN to 0x7FFF).
FRUGAL_HD inline float load_moment(const float* s, int64_t j) { return s[j]; }
FRUGAL_HD inline float load_moment(const uint16_t* s, int64_t j) { return fp8::decode_bf16(s[j]); }
FRUGAL_HD inline void store_moment(float* s, int64_t j, float x) { s[j] = x; }
FRUGAL_HD inline void store_moment(uint16_t* s, int64_t j, float x) { s[j] = fp8::encode_bf16(x); }

// Element j of the update over arrays (M is float or uint16_t).
template <bool kFused, typename M>
FRUGAL_HD inline void adamw_apply(float* value, const float* grad, M* m, M* v, int64_t j, const AdamwHyper& h) {
    const AdamwElement r = adamw_element<kFused>(value[j], grad[j], load_moment(m, j), load_moment(v, j), h);
    store_moment(m, j, r.m);
    store_moment(v, j, r.v);
    value[j] = r.value;
}

// ---- sum_squares: fixed chunks, parts, per-thread strides and a block tree ----

inline constexpr int64_t kSumChunks = 64;  // core/reduce.h's kChunks
inline constexpr int64_t kSumSplits = 16;  // parts (thread blocks) per chunk
inline constexpr int64_t kSumParts = kSumChunks * kSumSplits;
inline constexpr int kSumThreads = 256;  // threads per block: a power of two (the tree halves it)

// Part p = c * kSumSplits + s covers [part_begin(n, p), part_begin(n, p + 1)) of chunk c = [n c / 64, n (c + 1) / 64).
FRUGAL_HD inline int64_t part_begin(int64_t n, int64_t p) {
    const int64_t c = p / kSumSplits, s = p - c * kSumSplits;
    if (c == kSumChunks) return n;
    const int64_t begin = n * c / kSumChunks, end = n * (c + 1) / kSumChunks;
    return begin + (end - begin) * s / kSumSplits;
}

FRUGAL_HD inline double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __dadd_rn(a, b);
#else
    volatile double s = a + b;
    return s;
#endif
}
// s + x^2 in double; the square of a float is exact in double, so fusing it would not change the bits either.
FRUGAL_HD inline double add_square(double s, float x) {
    const double d = double(x);
    return add_rn(s, d * d);
}

// Thread t of part p: the elements begin + t, begin + t + kSumThreads, ... below end, in that order.
FRUGAL_HD inline double thread_sum(const float* x, int64_t begin, int64_t end, int t) {
    double s = 0.0;
    for (int64_t j = begin + t; j < end; j += kSumThreads) s = add_square(s, x[j]);
    return s;
}

// One level of the block's tree: values_T[t] += values_T[t + half] for t < half (half = 128, 64, ..., 1).
FRUGAL_HD inline double tree_add(double a, double b) { return add_rn(a, b); }

// The total of the parts' sums: the parts of each chunk in order, then the chunks in order.
FRUGAL_HD inline double combine_parts(const double* part_sums_P) {
    double total = 0.0;
    for (int64_t c = 0; c < kSumChunks; ++c) {
        double chunk = 0.0;
        for (int64_t s = 0; s < kSumSplits; ++s) chunk = add_rn(chunk, part_sums_P[c * kSumSplits + s]);
        total = add_rn(total, chunk);
    }
    return total;
}

// The kernel's whole order on the host (the oracle of the GPU test, and of the bound against core/reduce.h).
inline double sum_squares_in_kernel_order(const float* x, int64_t n) {
    double part_sums_P[kSumParts];
    double values_T[kSumThreads];
    for (int64_t p = 0; p < kSumParts; ++p) {
        const int64_t begin = part_begin(n, p), end = part_begin(n, p + 1);
        for (int t = 0; t < kSumThreads; ++t) values_T[t] = thread_sum(x, begin, end, t);
        for (int half = kSumThreads / 2; half > 0; half /= 2)
            for (int t = 0; t < half; ++t) values_T[t] = tree_add(values_T[t], values_T[t + half]);
        part_sums_P[p] = values_T[0];
    }
    return combine_parts(part_sums_P);
}

// ---- fingerprint (cpu::fingerprint) ----

inline constexpr int64_t kFingerprintStride = 997;
inline constexpr uint64_t kFnvOffset = 1469598103934665603ull;
inline constexpr uint64_t kFnvPrime = 1099511628211ull;

// Elements 0, 997, 2 * 997, ... below n and then n - 1 (twice when n - 1 is a multiple of 997, as the CPU mixes it).
FRUGAL_HD inline int64_t fingerprint_samples(int64_t n) {
    return n > 0 ? (n + kFingerprintStride - 1) / kFingerprintStride + 1 : 0;
}
FRUGAL_HD inline int64_t fingerprint_index(int64_t n, int64_t k) {
    return k + 1 < fingerprint_samples(n) ? k * kFingerprintStride : n - 1;
}
FRUGAL_HD inline uint64_t fnv1a_step(uint64_t h, uint32_t bits) { return (h ^ bits) * kFnvPrime; }

inline uint64_t fingerprint_of_samples(const uint32_t* bits_K, int64_t num_samples) {
    uint64_t h = kFnvOffset;
    for (int64_t k = 0; k < num_samples; ++k) h = fnv1a_step(h, bits_K[k]);
    return h;
}

}  // namespace frugal::cuda::optim_math
