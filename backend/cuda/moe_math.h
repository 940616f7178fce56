// The per-row and per-element arithmetic of the CUDA router, dispatch-permutation and token kernels
// (backend/cuda/moe.cu), as FRUGAL_HD inline functions that nvcc compiles for the device and g++ for the host, in
// exactly the order of operations of the CPU kernels (backend/cpu/router.cc, backend/cpu/moe.cc, backend/cpu/ops.cc);
// and the host steps the CUDA launchers run on host copies (capacity dropping, the counting sort, the bias update,
// the token checks, the z-loss sum), the CPU's loops restated so that frugal_cuda does not link the CPU backend.
// tests/cuda/test_moe_math.cc checks every function here against the CPU kernels on the host.
//
// Legend: T tokens, E experts, K choices per token, G aux-loss groups, R kept rows, D row width, N positions.
//
// Invariants:
//   - Float and double products, sums and quotients go through mul/add/sub/div (dmul/dadd/ddiv), which are
//     __fmul_rn-style intrinsics on the device: nvcc never contracts them into an FMA, so a device row computes what
//     the CPU (built with -std=c++20, hence -ffp-contract=off, and without -ffast-math) computes, operation for
//     operation. The only differences on the device are expf/logf against glibc's (CUDA's expf is within 2 ulps,
//     logf within 1) and the block-tree order of combine_backward's dot product (block_dot_order states it).
//   - The selection (topk_row, exclude_groups_row) compares doubles only: given the same scores and bias it equals
//     the CPU's bit for bit, ties to the lower expert index (and to the lower group index).
//   - The translation unit must not be compiled with --use_fast_math or -ftz=true.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/fp8_math.h"
#include "core/error.h"

namespace frugal::cuda::moe {

// ---- IEEE arithmetic rounded to nearest, never contracted ----

FRUGAL_HD inline float mul(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
FRUGAL_HD inline float add(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
FRUGAL_HD inline float sub(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}
FRUGAL_HD inline float div(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}
FRUGAL_HD inline double dadd(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __dadd_rn(a, b);
#else
    return a + b;
#endif
}
FRUGAL_HD inline double ddiv(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __ddiv_rn(a, b);
#else
    return a / b;
#endif
}
FRUGAL_HD inline float exp_f(float x) {
#if defined(__CUDA_ARCH__)
    return expf(x);
#else
    return std::exp(x);
#endif
}
FRUGAL_HD inline float log_f(float x) {
#if defined(__CUDA_ARCH__)
    return logf(x);
#else
    return std::log(x);
#endif
}

// ---- Router rows (one token: E scores, K choices) ----

// scores_E = softmax or sigmoid of logits_E, *lse = logsumexp(logits_E); e >= 1. The maximum is std::max_element's
// (the first of equal maxima, a later element replaces it only when strictly larger).
FRUGAL_HD inline void scores_row(float* scores_E, float* lse, const float* logits_E, bool softmax, int64_t e) {
    float mx = logits_E[0];
    for (int64_t j = 1; j < e; ++j)
        if (mx < logits_E[j]) mx = logits_E[j];
    float sum = 0;
    for (int64_t j = 0; j < e; ++j) sum = add(sum, exp_f(sub(logits_E[j], mx)));
    const float l = add(mx, log_f(sum));
    *lse = l;
    if (softmax) {
        for (int64_t j = 0; j < e; ++j) scores_E[j] = exp_f(sub(logits_E[j], l));
    } else {
        for (int64_t j = 0; j < e; ++j) scores_E[j] = div(1.0f, add(1.0f, exp_f(-logits_E[j])));
    }
}

// Indices of the k largest keys, descending, ties toward the lower index: k passes of an argmax skipping the chosen.
FRUGAL_HD inline void topk_row(int32_t* out_K, const double* keys_E, int64_t e, int64_t k) {
    for (int64_t j = 0; j < k; ++j) {
        int32_t best = -1;
        for (int64_t i = 0; i < e; ++i) {
            bool taken = false;
            for (int64_t p = 0; p < j; ++p) taken |= out_K[p] == int32_t(i);
            if (taken) continue;
            if (best < 0 || keys_E[i] > keys_E[best]) best = int32_t(i);
        }
        out_K[j] = best;
    }
}

// Group-limited routing's step between keys and top-k (backend/cpu/router.h's router_select_forward): the keys of
// experts outside the topk_group best of n_group consecutive groups become -infinity. A group scores the sum of its
// two largest keys (top2_sum) or its largest; it is chosen when fewer than topk_group groups rank above it (higher
// score, or equal and a lower index). n_group <= backend::kMaxRouterGroups (the group scores are on the stack).
FRUGAL_HD inline void exclude_groups_row(double* keys_E, int64_t e, int64_t n_group, int64_t topk_group,
                                         bool top2_sum) {
    const int64_t per = e / n_group;
    const double minus_inf = -double(INFINITY);
    double score_G[backend::kMaxRouterGroups];
    for (int64_t g = 0; g < n_group; ++g) {
        const double* x = keys_E + g * per;
        double first = x[0], second = minus_inf;
        for (int64_t j = 1; j < per; ++j) {
            if (x[j] > first) {
                second = first;
                first = x[j];
            } else if (x[j] > second) {
                second = x[j];
            }
        }
        score_G[g] = top2_sum ? dadd(first, second) : first;
    }
    for (int64_t g = 0; g < n_group; ++g) {
        int64_t num_above = 0;
        for (int64_t h = 0; h < n_group; ++h)
            num_above += score_G[h] > score_G[g] || (score_G[h] == score_G[g] && h < g);
        if (num_above >= topk_group)
            for (int64_t j = 0; j < per; ++j) keys_E[g * per + j] = minus_inf;
    }
}

// keys_E = double(score) + double(bias); the groups' exclusion when topk_group < n_group; selected_K = top-k of
// keys_E.
FRUGAL_HD inline void select_row(int32_t* selected_K, double* keys_E, const float* scores_E, const float* bias_E,
                                 int64_t e, int64_t k, int64_t n_group, int64_t topk_group, bool top2_sum) {
    for (int64_t j = 0; j < e; ++j) keys_E[j] = dadd(double(scores_E[j]), double(bias_E[j]));
    if (topk_group < n_group) exclude_groups_row(keys_E, e, n_group, topk_group, top2_sum);
    topk_row(selected_K, keys_E, e, k);
}

// weight_K = c * chosen score (over the chosen scores' sum when renormalize); c = float(scale).
FRUGAL_HD inline void weights_row(float* weight_K, const float* scores_E, const int32_t* selected_K, bool renormalize,
                                  float c, int64_t k) {
    if (renormalize) {
        float z = 0;
        for (int64_t j = 0; j < k; ++j) z = add(z, scores_E[selected_K[j]]);
        for (int64_t j = 0; j < k; ++j) weight_K[j] = div(mul(c, scores_E[selected_K[j]]), z);
    } else {
        for (int64_t j = 0; j < k; ++j) weight_K[j] = mul(c, scores_E[selected_K[j]]);
    }
}

// d_scores_E += d(weight_K)/d(scores) applied to d_weight_K.
FRUGAL_HD inline void weights_backward_row(float* d_scores_E, const float* d_weight_K, const float* scores_E,
                                           const int32_t* selected_K, bool renormalize, float c, int64_t k) {
    if (renormalize) {
        float z = 0, dot = 0;
        for (int64_t j = 0; j < k; ++j) {
            z = add(z, scores_E[selected_K[j]]);
            dot = add(dot, mul(d_weight_K[j], scores_E[selected_K[j]]));
        }
        for (int64_t j = 0; j < k; ++j) {
            float& ds = d_scores_E[selected_K[j]];
            ds = add(ds, mul(c, sub(div(d_weight_K[j], z), div(dot, mul(z, z)))));
        }
    } else {
        for (int64_t j = 0; j < k; ++j) {
            float& ds = d_scores_E[selected_K[j]];
            ds = add(ds, mul(c, d_weight_K[j]));
        }
    }
}

// The sigmoid row sum of the balancing loss (DeepSeek-V3 eq. 19's denominator), in double and expert order.
FRUGAL_HD inline double score_sum_row(const float* scores_E, int64_t e) {
    double sum = 0;
    for (int64_t j = 0; j < e; ++j) sum = dadd(sum, double(scores_E[j]));
    return sum;
}

// One expert j over tokens [begin, end) of a group: *count = the choices of expert j (integer), *p (when not null) =
// the sum in token order of the normalized scores (score / score_sum_T[i] for sigmoid, where score_sum_T is not
// null). The balancing loss and its gradient are sums of these chunks.
FRUGAL_HD inline void aux_chunk_expert(double* p, int64_t* count, const float* scores_TE, const double* score_sum_T,
                                       const int32_t* selected_TK, int64_t begin, int64_t end, int64_t j, int64_t e,
                                       int64_t k) {
    double sum = 0;
    int64_t n = 0;
    for (int64_t i = begin; i < end; ++i) {
        for (int64_t q = 0; q < k; ++q) n += selected_TK[i * k + q] == int32_t(j);
        if (p) {
            const double s = double(scores_TE[i * e + j]);
            sum = dadd(sum, score_sum_T ? ddiv(s, score_sum_T[i]) : s);
        }
    }
    if (p) *p = sum;
    *count = n;
}

// The coefficient-weighted balancing loss from each group's counts f_GE and score sums p_GE (G x E, row-major), in
// the CPU's order: coef / G * sum_g E * sum_e f_ge / (S K) * p_ge / S with S = T / G tokens per group.
inline double aux_loss_from_sums(const int64_t* count_GE, const double* p_GE, double coef, int64_t groups, int64_t per,
                                 int64_t e, int64_t k) {
    double total = 0;
    for (int64_t g = 0; g < groups; ++g) {
        double l = 0;
        for (int64_t j = 0; j < e; ++j)
            l += double(e) * double(count_GE[g * e + j]) / double(per * k) * p_GE[g * e + j] / double(per);
        total += coef * l / double(groups);
    }
    return total;
}

// The factor each group's selection count is multiplied by in the balancing loss's gradient by the normalized
// scores: aux_scale * coef E / (S K S G), rounded to float as the CPU rounds it.
inline float aux_grad_factor(double coef, float aux_scale, int64_t groups, int64_t per, int64_t e, int64_t k) {
    return aux_scale * float(coef * double(e) / (double(per * k) * double(per) * double(groups)));
}

// d_scores_E += the balancing loss's gradient through the normalization, from d_aux_E (the gradient by each
// normalized score of the token's group).
FRUGAL_HD inline void aux_backward_row(float* d_scores_E, const float* scores_E, const float* d_aux_E, bool softmax,
                                       int64_t e) {
    if (softmax) {
        for (int64_t j = 0; j < e; ++j) d_scores_E[j] = add(d_scores_E[j], d_aux_E[j]);
    } else {
        float sum = 0, dot = 0;
        for (int64_t j = 0; j < e; ++j) sum = add(sum, scores_E[j]);
        for (int64_t j = 0; j < e; ++j) dot = add(dot, div(mul(d_aux_E[j], scores_E[j]), sum));
        for (int64_t j = 0; j < e; ++j) d_scores_E[j] = add(d_scores_E[j], div(sub(d_aux_E[j], dot), sum));
    }
}

// WRITES d_logits_E from d_scores_E through softmax or sigmoid.
FRUGAL_HD inline void scores_backward_row(float* d_logits_E, const float* d_scores_E, const float* scores_E,
                                          bool softmax, int64_t e) {
    if (softmax) {
        float dot = 0;
        for (int64_t j = 0; j < e; ++j) dot = add(dot, mul(scores_E[j], d_scores_E[j]));
        for (int64_t j = 0; j < e; ++j) d_logits_E[j] = mul(scores_E[j], sub(d_scores_E[j], dot));
    } else {
        for (int64_t j = 0; j < e; ++j) d_logits_E[j] = mul(mul(d_scores_E[j], scores_E[j]), sub(1.0f, scores_E[j]));
    }
}

// The z loss's gradient factor aux_scale * 2 coef / T, rounded to float as the CPU rounds it.
inline float z_grad_factor(double coef, float aux_scale, int64_t t) {
    return aux_scale * float(2.0 * coef / double(t));
}

// One logit's z-loss gradient: *d_logit += (c0 lse) exp(logit - lse).
FRUGAL_HD inline void z_loss_backward_element(float* d_logit, float logit, float lse, float c0) {
    *d_logit = add(*d_logit, mul(mul(c0, lse), exp_f(sub(logit, lse))));
}

// coef * mean of lse^2, in double and token order.
inline double z_loss_sum(const float* lse_T, double coef, int64_t t) {
    double zs = 0;
    for (int64_t i = 0; i < t; ++i) zs += double(lse_T[i]) * double(lse_T[i]);
    return coef * zs / double(t);
}

// ---- Dispatch permutation elements ----

// The combine's weighted add of one element of a row: *out += w * row.
FRUGAL_HD inline void combine_element(float* out, float w, float row) { *out = add(*out, mul(w, row)); }

// The threads of one unpermute_combine_backward block: thread `tid` of kCombineThreads adds w dout into elements
// tid, tid + kCombineThreads, ... of drow_D and returns its partial dot product <dout, row> over them (in that
// order); the block then sums the partials by the pairwise tree of block_tree_sum.
constexpr int kCombineThreads = 256;
FRUGAL_HD inline float combine_backward_thread(float* drow_D, const float* dout_D, const float* row_D, float w,
                                               int64_t d, int tid) {
    float dot = 0;
    for (int64_t x = tid; x < d; x += kCombineThreads) {
        drow_D[x] = add(drow_D[x], mul(w, dout_D[x]));
        dot = add(dot, mul(dout_D[x], row_D[x]));
    }
    return dot;
}
// The kernel's tree over kCombineThreads partials: for s = 128, 64, ..., 1: p[i] += p[i + s] for i < s.
inline float block_tree_sum(float* partial_256) {
    for (int s = kCombineThreads / 2; s > 0; s /= 2)
        for (int i = 0; i < s; ++i) partial_256[i] = add(partial_256[i], partial_256[i + s]);
    return partial_256[0];
}

// ---- Host steps (run on host copies by the launchers) ----

// backend/cpu/router.h's router_capacity_forward: the first `capacity` choices of each expert in (token, choice)
// order are kept. Returns the number dropped. An expert index outside [0, e) is an Error (it would index the counts).
inline int64_t capacity_host(int32_t* expert_TK, int64_t* num_kept_E, int64_t* num_selected_E,
                             const int32_t* selected_TK, int64_t capacity, int64_t t, int64_t k, int64_t e) {
    for (int64_t j = 0; j < e; ++j) num_kept_E[j] = num_selected_E[j] = 0;
    int64_t dropped = 0;
    for (int64_t i = 0; i < t * k; ++i) {
        const int32_t ex = selected_TK[i];
        FRUGAL_CHECK(ex >= 0 && ex < e, "router selection ", ex, " of choice ", i % k, " of token ", i / k,
                     " is outside the experts [0, ", e, ")");
        num_selected_E[ex]++;
        if (num_kept_E[ex] < capacity) {
            num_kept_E[ex]++;
            expert_TK[i] = ex;
        } else {
            expert_TK[i] = -1;
            ++dropped;
        }
    }
    return dropped;
}

// backend/cpu/moe.h's build_permutation: the counting sort of expert_TK (-1: dropped), stable in (token, choice)
// order. Returns R.
inline int64_t permutation_host(int32_t* row_of_TK, int32_t* token_of_row_R, int64_t* tokens_per_expert_E,
                                int64_t* offset_E, const int32_t* expert_TK, int64_t t, int64_t k, int64_t e) {
    for (int64_t j = 0; j < e; ++j) tokens_per_expert_E[j] = 0;
    for (int64_t i = 0; i < t * k; ++i) {
        const int32_t ex = expert_TK[i];
        if (ex < 0) continue;
        FRUGAL_CHECK(ex < e, "expert index ", ex, " out of range [0, ", e, ")");
        tokens_per_expert_E[ex]++;
    }
    offset_E[0] = 0;
    for (int64_t j = 0; j < e; ++j) offset_E[j + 1] = offset_E[j] + tokens_per_expert_E[j];
    std::vector<int64_t> cursor_E(offset_E, offset_E + e);
    for (int64_t i = 0; i < t * k; ++i) {
        const int32_t ex = expert_TK[i];
        if (ex < 0) {
            row_of_TK[i] = -1;
            continue;
        }
        const int64_t r = cursor_E[size_t(ex)]++;
        row_of_TK[i] = int32_t(r);
        token_of_row_R[r] = int32_t(i / k);
    }
    return offset_E[e];
}

// Backend::router_bias_update on a host copy of bias_E: += rate where the expert's load is below the mean, -= rate
// where above (DeepSeek-V3 section 2.1.2).
inline void bias_update_host(float* bias_E, const int64_t* selected_E, double rate, int64_t e) {
    int64_t total = 0;
    for (int64_t j = 0; j < e; ++j) total += selected_E[j];
    const double mean = double(total) / double(e);
    const float step = float(rate);
    for (int64_t j = 0; j < e; ++j) {
        const double load = double(selected_E[j]);
        if (load > mean)
            bias_E[j] -= step;
        else if (load < mean)
            bias_E[j] += step;
    }
}

// Backend::prepare_tokens into host buffers (backend/cpu/ops.h's prepare_tokens, the same checks and messages).
inline int64_t prepare_tokens_host(int32_t* tokens_N, int32_t* targets_N, int32_t* pos_N, int32_t* start_N,
                                   const int32_t* tokens_in, const int32_t* targets_in, const int32_t* doc_start_in,
                                   int64_t n, int64_t s, int64_t v, int32_t ignore_index) {
    int64_t num_valid = 0;
    for (int64_t i = 0; i < n; ++i) {
        FRUGAL_CHECK(tokens_in[i] >= 0 && tokens_in[i] < v, "token id ", tokens_in[i], " at position ", i,
                     " is outside the vocabulary [0, ", v, "): check model.vocab_size against the data");
        FRUGAL_CHECK(targets_in[i] == ignore_index || (targets_in[i] >= 0 && targets_in[i] < v), "target id ",
                     targets_in[i], " at position ", i, " is outside the vocabulary [0, ", v,
                     "): check model.vocab_size against the data");
        tokens_N[i] = tokens_in[i];
        targets_N[i] = targets_in[i];
        start_N[i] = doc_start_in ? doc_start_in[i] : 0;
        FRUGAL_CHECK(start_N[i] >= 0 && start_N[i] <= i % s, "document start ", start_N[i], " of position ", i % s,
                     " is outside its window");
        pos_N[i] = int32_t(i % s) - start_N[i];
        num_valid += targets_in[i] != ignore_index;
    }
    return num_valid;
}

}  // namespace frugal::cuda::moe
