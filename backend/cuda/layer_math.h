// The per-element and per-row arithmetic of the dense layers' CUDA kernels (backend/cuda/layers.h), as FRUGAL_HD
// inline functions that nvcc compiles for the device and g++ for the host, in the order of operations of the CPU
// kernels (backend/cpu/ops.cc). tests/cuda/test_layer_math.cc runs them on the host (built with -ffp-contract=off, so
// that the host rounds as the device does) against the CPU kernels on random inputs: the CPU's bits where no product
// feeds a sum, an ulp of the product where one does (the CPU kernels are compiled with FMA contraction).
//
// Invariants:
//   - Float products, sums, quotients and square roots are the IEEE operations rounded to nearest (__fmul_rn,
//     __fadd_rn, __fsub_rn, __fdiv_rn, __fsqrt_rn on the device), which nvcc never contracts into an FMA: the
//     differences from the CPU are the order of a reduction (layers.h states each one), exp / log, whose device
//     versions (expf, log) are within 2 ulps of glibc's instead of equal to them, and the CPU compiler's FMAs.
//   - A "step" function is one term of a reduction (acc = acc + term); reductions start from 0 as the CPU's do.
//   - Warp reductions (layers.cu) give lane l the terms j = l, l + 32, l + 64, ... in increasing order, then combine
//     the 32 lane values by the xor butterfly with offsets 16, 8, 4, 2, 1; warp_order_sum below is that order on the
//     host, so the host test can measure what reordering alone costs.
#pragma once

#include <cmath>
#include <cstdint>

#include "backend/cuda/fp8_math.h"

namespace frugal::cuda::layer_math {

constexpr int kWarpSize = 32;

using fp8::add_rn;
using fp8::div_rn;
using fp8::mul_rn;

FRUGAL_HD inline float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}
FRUGAL_HD inline float sqrt_rn(float x) {
#if defined(__CUDA_ARCH__)
    return __fsqrt_rn(x);
#else
    return std::sqrt(x);
#endif
}
FRUGAL_HD inline float exp_f(float x) {
#if defined(__CUDA_ARCH__)
    return expf(x);
#else
    return std::exp(x);
#endif
}
FRUGAL_HD inline double exp_d(double x) {
#if defined(__CUDA_ARCH__)
    return ::exp(x);
#else
    return std::exp(x);
#endif
}
FRUGAL_HD inline double log_d(double x) {
#if defined(__CUDA_ARCH__)
    return ::log(x);
#else
    return std::log(x);
#endif
}
// std::max(a, b) of the CPU: b only when a < b (for NaN-free input the maximum, in any order).
FRUGAL_HD inline float max_step(float a, float b) { return a < b ? b : a; }

// ---- SwiGLU: gu row = [gate(F) | up(F)], out = silu(gate) * up ----

FRUGAL_HD inline float sigmoid(float x) { return div_rn(1.0f, add_rn(1.0f, exp_f(-x))); }
FRUGAL_HD inline float swiglu(float g, float u) { return mul_rn(div_rn(g, add_rn(1.0f, exp_f(-g))), u); }
// dg += d u s(g) (1 + g (1 - s(g))) ; du += d silu(g)
FRUGAL_HD inline void swiglu_backward(float& dg, float& du, float d, float g, float u) {
    const float sg = sigmoid(g);
    const float silu = mul_rn(g, sg);
    du = add_rn(du, mul_rn(d, silu));
    dg = add_rn(dg, mul_rn(mul_rn(mul_rn(d, u), sg), add_rn(1.0f, mul_rn(g, sub_rn(1.0f, sg)))));
}

// ---- RMSNorm: out = x rstd w, rstd = 1 / sqrt(mean(x^2) + eps) ----

FRUGAL_HD inline float sum_sq_step(float acc, float x) { return add_rn(acc, mul_rn(x, x)); }
FRUGAL_HD inline float rmsnorm_rstd(float sum_sq, int64_t d, double eps) {
    return div_rn(1.0f, sqrt_rn(add_rn(div_rn(sum_sq, float(d)), float(eps))));
}
FRUGAL_HD inline float rmsnorm_out(float x, float rstd, float w) { return mul_rn(mul_rn(x, rstd), w); }
// dx_j = r w_j g_j - x_j c with c = r^3 / d sum_k w_k g_k x_k
FRUGAL_HD inline float rmsnorm_dot_step(float acc, float w, float g, float x) {
    return add_rn(acc, mul_rn(mul_rn(w, g), x));
}
FRUGAL_HD inline float rmsnorm_coef(float dot, float rstd, int64_t d) {
    return div_rn(mul_rn(mul_rn(mul_rn(dot, rstd), rstd), rstd), float(d));
}
FRUGAL_HD inline float rmsnorm_dx(float dx, float rstd, float w, float g, float x, float coef) {
    return add_rn(dx, sub_rn(mul_rn(mul_rn(rstd, w), g), mul_rn(x, coef)));
}
// One row's term of dw_j = sum over rows of g_j x_j r.
FRUGAL_HD inline float rmsnorm_dw_term(float g, float x, float rstd) { return mul_rn(mul_rn(g, x), rstd); }

// ---- Rotary embedding, rotate-half: (a, b) = (v[j], v[j + hd/2]) ----

FRUGAL_HD inline void rope_rotate(float& a, float& b, float c, float s, bool inverse) {
    const float sign = inverse ? -1.0f : 1.0f;
    const float a0 = a, b0 = b;
    a = sub_rn(mul_rn(a0, c), mul_rn(mul_rn(sign, b0), s));
    b = add_rn(mul_rn(b0, c), mul_rn(mul_rn(sign, a0), s));
}

// ---- Cross-entropy: loss = log sum_j exp(l_j - max) + max - l_target ----

// Forward accumulates the exponentials in double, as the CPU does.
FRUGAL_HD inline double ce_exp_step(double acc, float logit, float mx) {
    return acc + exp_d(double(sub_rn(logit, mx)));
}
FRUGAL_HD inline float ce_row_loss(double sum_exp, float mx, float target_logit) {
    return float(log_d(sum_exp) + double(mx) - double(target_logit));
}
// Backward accumulates them in float.
FRUGAL_HD inline float ce_sum_step(float acc, float logit, float mx) { return add_rn(acc, exp_f(sub_rn(logit, mx))); }
FRUGAL_HD inline float ce_inv(float scale, float sum_exp) { return div_rn(scale, sum_exp); }
// dlogit += exp(l - max) scale / sum, then -= scale at the target (two roundings, as the CPU's two statements).
FRUGAL_HD inline float ce_grad(float dlogit, float logit, float mx, float inv, bool is_target, float scale) {
    const float r = add_rn(dlogit, mul_rn(exp_f(sub_rn(logit, mx)), inv));
    return is_target ? sub_rn(r, scale) : r;
}

// ---- Shared experts' sigmoid gate: out = g shared, g = sigmoid(logit) ----

FRUGAL_HD inline float gate_out(float g, float shared) { return mul_rn(g, shared); }
FRUGAL_HD inline float gate_dot_step(float acc, float dout, float shared) { return add_rn(acc, mul_rn(dout, shared)); }
FRUGAL_HD inline float gate_d_shared(float g, float dout) { return mul_rn(g, dout); }
FRUGAL_HD inline float gate_d_logit(float g, float dot) { return mul_rn(mul_rn(g, sub_rn(1.0f, g)), dot); }

// ---- The warp reduction order, on the host ----

// The sum of terms(j) for j in [0, n) in the order a warp reduction of layers.cu adds them: lane l sums its strided
// terms from 0 with step(acc, j), then the xor butterfly combines lanes with combine(a, b).
template <typename Acc, class Step, class Combine>
Acc warp_order_sum(int64_t n, Step step, Combine combine) {
    Acc lanes[kWarpSize];
    for (int l = 0; l < kWarpSize; ++l) {
        lanes[l] = Acc(0);
        for (int64_t j = l; j < n; j += kWarpSize) lanes[l] = step(lanes[l], j);
    }
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
        Acc next[kWarpSize];
        for (int l = 0; l < kWarpSize; ++l) next[l] = combine(lanes[l], lanes[l ^ offset]);
        for (int l = 0; l < kWarpSize; ++l) lanes[l] = next[l];
    }
    return lanes[0];
}

}  // namespace frugal::cuda::layer_math
