#include "backend/cpu/router.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/threads.h"

namespace frugal::backend::cpu {

template <typename T>
void router_scores_forward(T* scores_TE, T* lse_T, const T* logits_TE, ScoreFunc func, int64_t t, int64_t e) {
    const bool softmax = func == ScoreFunc::kSoftmax;
#pragma omp parallel for schedule(static) if (worth_a_team(t * e))
    for (int64_t i = 0; i < t; ++i) {
        const T* l = logits_TE + i * e;
        T* sc = scores_TE + i * e;
        T mx = *std::max_element(l, l + e);
        T sum = 0;
        for (int64_t j = 0; j < e; ++j) sum += std::exp(l[j] - mx);
        const T lse = mx + std::log(sum);
        lse_T[i] = lse;
        if (softmax) {
            for (int64_t j = 0; j < e; ++j) sc[j] = std::exp(l[j] - lse);
        } else {
            for (int64_t j = 0; j < e; ++j) sc[j] = T(1) / (T(1) + std::exp(-l[j]));
        }
    }
}

template <typename K>
void topk_indices(int32_t* out_K, const K* keys_E, int64_t e, int64_t k) {
    // k passes of an argmax that skips chosen entries; strict '>' keeps the lowest index among equal keys.
    // O(E K): E <= a few hundred and K <= 8 in every published model, cheaper than a sort.
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

namespace {

// One token's group step of router_select_forward: keys_E of the experts outside the topk_group best groups become
// -infinity. A group is chosen when fewer than topk_group groups rank above it (higher score, or equal score and a
// lower index): the full stable ranking, O(n_group^2) with n_group <= kMaxRouterGroups.
void exclude_unchosen_groups(double* keys_E, int64_t e, int64_t n_group, int64_t topk_group, GroupScore group_score) {
    const int64_t per = e / n_group;
    const double minus_inf = -std::numeric_limits<double>::infinity();
    double score_G[kMaxRouterGroups];
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
        score_G[g] = group_score == GroupScore::kMax ? first : first + second;
    }
    for (int64_t g = 0; g < n_group; ++g) {
        int64_t num_above = 0;
        for (int64_t h = 0; h < n_group; ++h)
            num_above += score_G[h] > score_G[g] || (score_G[h] == score_G[g] && h < g);
        if (num_above >= topk_group) std::fill_n(keys_E + g * per, per, minus_inf);
    }
}

}  // namespace

template <typename T>
void router_select_forward(int32_t* selected_TK, double* keys_TE, const T* scores_TE, const float* bias_E, int64_t t,
                           int64_t e, int64_t k, int64_t n_group, int64_t topk_group, GroupScore group_score) {
    check_router_groups(e, k, n_group, topk_group, group_score);
    const bool grouped = topk_group < n_group;
#pragma omp parallel for schedule(static) if (worth_a_team(t * e))
    for (int64_t i = 0; i < t; ++i) {
        const T* sc = scores_TE + i * e;
        double* keys = keys_TE + i * e;
        for (int64_t j = 0; j < e; ++j) keys[j] = double(sc[j]) + double(bias_E[j]);
        if (grouped) exclude_unchosen_groups(keys, e, n_group, topk_group, group_score);
        topk_indices(selected_TK + i * k, keys, e, k);
    }
}

template <typename T>
void router_weights_forward(T* weight_TK, const T* scores_TE, const int32_t* selected_TK, bool renormalize,
                            double scale, int64_t t, int64_t e, int64_t k) {
    const T c = T(scale);
#pragma omp parallel for schedule(static) if (worth_a_team(t * e))
    for (int64_t i = 0; i < t; ++i) {
        const T* sc = scores_TE + i * e;
        const int32_t* sel = selected_TK + i * k;
        T* w = weight_TK + i * k;
        if (renormalize) {
            T z = 0;
            for (int64_t j = 0; j < k; ++j) z += sc[sel[j]];
            for (int64_t j = 0; j < k; ++j) w[j] = c * sc[sel[j]] / z;
        } else {
            for (int64_t j = 0; j < k; ++j) w[j] = c * sc[sel[j]];
        }
    }
}

void router_capacity_forward(int32_t* expert_TK, int64_t* num_kept_E, int64_t* num_selected_E, int64_t* num_dropped,
                             const int32_t* selected_TK, int64_t capacity, int64_t t, int64_t k, int64_t e) {
    std::fill_n(num_kept_E, e, int64_t(0));
    std::fill_n(num_selected_E, e, int64_t(0));
    int64_t dropped = 0;
    for (int64_t i = 0; i < t * k; ++i) {
        const int32_t ex = selected_TK[i];
        num_selected_E[ex]++;
        if (num_kept_E[ex] < capacity) {
            num_kept_E[ex]++;
            expert_TK[i] = ex;
        } else {
            expert_TK[i] = -1;
            ++dropped;
        }
    }
    *num_dropped = dropped;
}

template <typename T>
void router_aux_loss_forward(double* aux_loss, double* score_sum_T, const T* scores_TE, const int32_t* selected_TK,
                             ScoreFunc func, double coef, int64_t groups, int64_t t, int64_t e, int64_t k) {
    const bool softmax = func == ScoreFunc::kSoftmax;
    if (!softmax) {
        // One row sum per token (eq. 19's denominator), in double and expert order.
#pragma omp parallel for schedule(static) if (worth_a_team(t * e))
        for (int64_t i = 0; i < t; ++i) {
            const T* sc = scores_TE + i * e;
            double sum = 0;
            for (int64_t j = 0; j < e; ++j) sum += double(sc[j]);
            score_sum_T[i] = sum;
        }
    }
    const int64_t per = t / groups;
    std::vector<double> f(static_cast<size_t>(e)), p(static_cast<size_t>(e));
    double total = 0;
    for (int64_t g = 0; g < groups; ++g) {
        std::fill(f.begin(), f.end(), 0.0);
        std::fill(p.begin(), p.end(), 0.0);
        for (int64_t i = g * per; i < (g + 1) * per; ++i) {
            const T* sc = scores_TE + i * e;
            for (int64_t j = 0; j < k; ++j) f[size_t(selected_TK[i * k + j])] += 1;
            if (softmax) {
                for (int64_t j = 0; j < e; ++j) p[size_t(j)] += double(sc[j]);
            } else {
                for (int64_t j = 0; j < e; ++j) p[size_t(j)] += double(sc[j]) / score_sum_T[i];
            }
        }
        double l = 0;
        // Switch: E * sum f_e P_e with f = count/(T K), P = mean score. DeepSeek-V3 seq-wise: f_i = E/(K S) *
        // count, P_i = mean score: the same expression per sequence.
        for (int64_t j = 0; j < e; ++j) l += double(e) * f[size_t(j)] / double(per * k) * p[size_t(j)] / double(per);
        total += coef * l / double(groups);
    }
    *aux_loss = total;
}

template <typename T>
void router_z_loss_forward(double* z_loss, const T* lse_T, double coef, int64_t t) {
    double zs = 0;
    for (int64_t i = 0; i < t; ++i) zs += double(lse_T[i]) * double(lse_T[i]);
    *z_loss = coef * zs / double(t);
}

template <typename T>
void router_weights_backward(T* d_scores_TE, const T* d_weight_TK, const T* scores_TE, const int32_t* selected_TK,
                             bool renormalize, double scale, int64_t t, int64_t e, int64_t k) {
    const T c = T(scale);
#pragma omp parallel for schedule(static) if (worth_a_team(t * e))
    for (int64_t i = 0; i < t; ++i) {
        const T* sc = scores_TE + i * e;
        T* ds = d_scores_TE + i * e;
        const int32_t* sel = selected_TK + i * k;
        const T* dw = d_weight_TK + i * k;
        if (renormalize) {
            // w_j = c s_j / Z, Z = sum of chosen s  =>  ds_j = c (dw_j / Z - sum_q dw_q s_q / Z^2)
            T z = 0, dot = 0;
            for (int64_t j = 0; j < k; ++j) {
                z += sc[sel[j]];
                dot += dw[j] * sc[sel[j]];
            }
            for (int64_t j = 0; j < k; ++j) ds[sel[j]] += c * (dw[j] / z - dot / (z * z));
        } else {
            for (int64_t j = 0; j < k; ++j) ds[sel[j]] += c * dw[j];
        }
    }
}

template <typename T>
void router_aux_loss_backward(T* d_scores_TE, T* d_aux_GE, const T* scores_TE, const int32_t* selected_TK,
                              ScoreFunc func, double coef, T aux_scale, int64_t groups, int64_t t, int64_t e,
                              int64_t k) {
    // Gradient with respect to the normalized scores s' (see forward): dL/ds'_{t,e} = coef f_e / (S_g G) with
    // f_e = E count_e / (S_g K), S_g the tokens per group and G the number of groups.
    const int64_t per = t / groups;
    std::fill_n(d_aux_GE, groups * e, T(0));
    for (int64_t g = 0; g < groups; ++g) {
        for (int64_t i = g * per; i < (g + 1) * per; ++i)
            for (int64_t j = 0; j < k; ++j) d_aux_GE[g * e + selected_TK[i * k + j]] += T(1);
        for (int64_t j = 0; j < e; ++j)
            d_aux_GE[g * e + j] *= aux_scale * T(coef * double(e) / (double(per * k) * double(per) * double(groups)));
    }
    const bool softmax = func == ScoreFunc::kSoftmax;
#pragma omp parallel for schedule(static) if (worth_a_team(t * e))
    for (int64_t i = 0; i < t; ++i) {
        const T* sc = scores_TE + i * e;
        T* ds = d_scores_TE + i * e;
        const T* ga = d_aux_GE + (i / per) * e;
        if (softmax) {
            for (int64_t j = 0; j < e; ++j) ds[j] += ga[j];
        } else {
            // s' = s / sum(s): ds_j = (g_j - sum_q g_q s'_q) / sum(s)
            T sum = 0, dot = 0;
            for (int64_t j = 0; j < e; ++j) sum += sc[j];
            for (int64_t j = 0; j < e; ++j) dot += ga[j] * sc[j] / sum;
            for (int64_t j = 0; j < e; ++j) ds[j] += (ga[j] - dot) / sum;
        }
    }
}

template <typename T>
void router_scores_backward(T* d_logits_TE, const T* d_scores_TE, const T* scores_TE, ScoreFunc func, int64_t t,
                            int64_t e) {
    const bool softmax = func == ScoreFunc::kSoftmax;
#pragma omp parallel for schedule(static) if (worth_a_team(t * e))
    for (int64_t i = 0; i < t; ++i) {
        const T* sc = scores_TE + i * e;
        const T* ds = d_scores_TE + i * e;
        T* dl = d_logits_TE + i * e;
        if (softmax) {
            T dot = 0;
            for (int64_t j = 0; j < e; ++j) dot += sc[j] * ds[j];
            for (int64_t j = 0; j < e; ++j) dl[j] = sc[j] * (ds[j] - dot);
        } else {
            for (int64_t j = 0; j < e; ++j) dl[j] = ds[j] * sc[j] * (T(1) - sc[j]);
        }
    }
}

template <typename T>
void router_z_loss_backward(T* d_logits_TE, const T* logits_TE, const T* lse_T, double coef, T aux_scale, int64_t t,
                            int64_t e) {
    const T c0 = aux_scale * T(2.0 * coef / double(t));
#pragma omp parallel for schedule(static) if (worth_a_team(t * e))
    for (int64_t i = 0; i < t; ++i) {
        // d/dl (coef/T * lse^2) = coef/T * 2 lse softmax(l)
        const T* l = logits_TE + i * e;
        T* dl = d_logits_TE + i * e;
        const T lse = lse_T[i];
        const T c = c0 * lse;
        for (int64_t j = 0; j < e; ++j) dl[j] += c * std::exp(l[j] - lse);
    }
}

template void topk_indices<float>(int32_t*, const float*, int64_t, int64_t);
template void topk_indices<double>(int32_t*, const double*, int64_t, int64_t);

#define FRUGAL_ROUTER_STEPS(T)                                                                                       \
    template void router_scores_forward<T>(T*, T*, const T*, ScoreFunc, int64_t, int64_t);                           \
    template void router_select_forward<T>(int32_t*, double*, const T*, const float*, int64_t, int64_t, int64_t,     \
                                           int64_t, int64_t, GroupScore);                                            \
    template void router_weights_forward<T>(T*, const T*, const int32_t*, bool, double, int64_t, int64_t, int64_t);  \
    template void router_aux_loss_forward<T>(double*, double*, const T*, const int32_t*, ScoreFunc, double, int64_t, \
                                             int64_t, int64_t, int64_t);                                             \
    template void router_z_loss_forward<T>(double*, const T*, double, int64_t);                                      \
    template void router_weights_backward<T>(T*, const T*, const T*, const int32_t*, bool, double, int64_t, int64_t, \
                                             int64_t);                                                               \
    template void router_aux_loss_backward<T>(T*, T*, const T*, const int32_t*, ScoreFunc, double, T, int64_t,       \
                                              int64_t, int64_t, int64_t);                                            \
    template void router_scores_backward<T>(T*, const T*, const T*, ScoreFunc, int64_t, int64_t);                    \
    template void router_z_loss_backward<T>(T*, const T*, const T*, double, T, int64_t, int64_t);
FRUGAL_ROUTER_STEPS(float)
FRUGAL_ROUTER_STEPS(double)
#undef FRUGAL_ROUTER_STEPS

}  // namespace frugal::backend::cpu
