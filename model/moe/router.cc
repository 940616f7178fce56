#include "model/moe/router.h"

#include <algorithm>
#include <cmath>

namespace frugal::model {

void MoEStats::reset(int64_t n_experts) {
    tokens_per_expert.assign(size_t(n_experts), 0);
    selected_per_expert.assign(size_t(n_experts), 0);
    dropped = assignments = micro_batches = 0;
    aux_loss = z_loss = 0;
}

double MoEStats::imbalance() const {
    if (tokens_per_expert.empty()) return 1.0;
    int64_t total = 0, mx = 0;
    for (int64_t c : tokens_per_expert) {
        total += c;
        mx = std::max(mx, c);
    }
    if (total == 0) return 1.0;
    return double(mx) * double(tokens_per_expert.size()) / double(total);
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

template <typename T>
Router<T>::Router(ParamStore& store, const ModelConfig& cfg, const std::string& prefix)
    : n_experts_(cfg.moe.n_experts), top_k_(cfg.moe.top_k), d_(cfg.d_model), cfg_(cfg.moe) {
    gate_.w = store.add(prefix + "weight", {n_experts_, d_}, ParamKind::kRouter, cfg.init_std);
    gate_.in = d_;
    gate_.out = n_experts_;
    bias_E_.assign(size_t(n_experts_), 0.0f);
    count_E_.assign(size_t(n_experts_), 0);
    stats_.reset(n_experts_);
}

template <typename T>
void Router<T>::forward(const T* x_TD, int64_t b, int64_t s) {
    const int64_t t = b * s, e = n_experts_, k = top_k_;
    b_ = b;
    s_ = s;
    logits_.resize(size_t(t * e));
    scores_.resize(size_t(t * e));
    lse_.resize(size_t(t));
    weight_.resize(size_t(t * k));
    keys_.resize(size_t(t * e));
    selected_.resize(size_t(t * k));
    expert_.resize(size_t(t * k));
    gate_.forward(logits_.data(), x_TD, t);

    const bool softmax = cfg_.score_func == "softmax";
    const T scale = T(cfg_.routed_scaling_factor);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < t; ++i) {
        const T* l = logits_.data() + i * e;
        T* sc = scores_.data() + i * e;
        T mx = *std::max_element(l, l + e);
        T sum = 0;
        for (int64_t j = 0; j < e; ++j) sum += std::exp(l[j] - mx);
        lse_[size_t(i)] = mx + std::log(sum);
        for (int64_t j = 0; j < e; ++j)
            sc[j] = softmax ? std::exp(l[j] - lse_[size_t(i)]) : T(1) / (T(1) + std::exp(-l[j]));
        // Selection key = score + bias, in double: the bias never enters the weights.
        double* keys = keys_.data() + i * e;
        for (int64_t j = 0; j < e; ++j) keys[j] = double(sc[j]) + double(bias_E_[size_t(j)]);
        int32_t* sel = selected_.data() + i * k;
        topk_indices(sel, keys, e, k);
        T z = 0;
        for (int64_t j = 0; j < k; ++j) z += sc[sel[j]];
        for (int64_t j = 0; j < k; ++j)
            weight_[size_t(i * k + j)] = cfg_.norm_topk_prob ? scale * sc[sel[j]] / z : scale * sc[sel[j]];
    }

    // Capacity dropping in token order: the first `capacity` assignments to an expert are kept.
    std::fill(count_E_.begin(), count_E_.end(), 0);
    int64_t capacity = cfg_.capacity_factor > 0 ? int64_t(std::ceil(cfg_.capacity_factor * double(t * k) / double(e)))
                                                : std::numeric_limits<int64_t>::max();
    int64_t dropped = 0;
    for (int64_t i = 0; i < t * k; ++i) {
        int32_t ex = selected_[size_t(i)];
        stats_.selected_per_expert[size_t(ex)]++;
        if (count_E_[size_t(ex)] < capacity) {
            count_E_[size_t(ex)]++;
            expert_[size_t(i)] = ex;
        } else {
            expert_[size_t(i)] = -1;
            ++dropped;
        }
    }
    for (int64_t j = 0; j < e; ++j) stats_.tokens_per_expert[size_t(j)] += count_E_[size_t(j)];
    stats_.dropped += dropped;
    stats_.assignments += t * k;
    stats_.micro_batches += 1;

    // Load-balancing loss on the router's choice (before dropping). P uses scores normalized over experts
    // (softmax scores already are; sigmoid scores are divided by their row sum, as DeepSeek-V3 eq. 19).
    aux_loss_ = 0;
    if (cfg_.aux_loss != "none" && cfg_.aux_loss_coef > 0) {
        auto norm_score = [&](int64_t i, int64_t j) -> double {
            const T* sc = scores_.data() + i * e;
            if (softmax) return double(sc[j]);
            double sum = 0;
            for (int64_t q = 0; q < e; ++q) sum += double(sc[q]);
            return double(sc[j]) / sum;
        };
        const int64_t groups = cfg_.aux_loss == "seq" ? b : 1;  // seq: one term per sequence, averaged
        const int64_t per = t / groups;
        for (int64_t g = 0; g < groups; ++g) {
            std::vector<double> f(size_t(e), 0.0), p(size_t(e), 0.0);
            for (int64_t i = g * per; i < (g + 1) * per; ++i) {
                for (int64_t j = 0; j < k; ++j) f[size_t(selected_[size_t(i * k + j)])] += 1;
                for (int64_t j = 0; j < e; ++j) p[size_t(j)] += norm_score(i, j);
            }
            double l = 0;
            // Switch: E * sum f_e P_e with f = count/(T K), P = mean score. DeepSeek-V3 seq-wise: f_i = E/(K S) *
            // count, P_i = mean score: the same expression per sequence.
            for (int64_t j = 0; j < e; ++j)
                l += double(e) * f[size_t(j)] / double(per * k) * p[size_t(j)] / double(per);
            aux_loss_ += cfg_.aux_loss_coef * l / double(groups);
        }
    }
    z_loss_ = 0;
    if (cfg_.z_loss_coef > 0) {
        double zs = 0;
        for (int64_t i = 0; i < t; ++i) zs += double(lse_[size_t(i)]) * double(lse_[size_t(i)]);
        z_loss_ = cfg_.z_loss_coef * zs / double(t);
    }
    stats_.aux_loss += aux_loss_;
    stats_.z_loss += z_loss_;
}

template <typename T>
void Router<T>::backward(T* dx_TD, const T* d_weight_TK, const T* x_TD, T aux_scale) {
    const int64_t t = b_ * s_, e = n_experts_, k = top_k_;
    const bool softmax = cfg_.score_func == "softmax";
    const T scale = T(cfg_.routed_scaling_factor);
    dscores_.assign(size_t(t * e), T(0));
    dlogits_.assign(size_t(t * e), T(0));

    // Aux loss gradient with respect to the normalized scores s' (see forward): dL/ds'_{t,e} = coef f_e / (S_g G)
    // with f_e = E count_e / (S_g K), S_g the tokens per group and G the number of groups.
    std::vector<T>& g_aux = g_aux_;
    const bool has_aux = cfg_.aux_loss != "none" && cfg_.aux_loss_coef > 0;
    const int64_t groups = cfg_.aux_loss == "seq" ? b_ : 1;
    const int64_t per = t / groups;
    if (has_aux) {
        g_aux.assign(size_t(groups * e), T(0));
        for (int64_t g = 0; g < groups; ++g) {
            for (int64_t i = g * per; i < (g + 1) * per; ++i)
                for (int64_t j = 0; j < k; ++j) g_aux[size_t(g * e + selected_[size_t(i * k + j)])] += T(1);
            for (int64_t j = 0; j < e; ++j)
                g_aux[size_t(g * e + j)] *=
                    aux_scale * T(cfg_.aux_loss_coef * double(e) / (double(per * k) * double(per) * double(groups)));
        }
    }

#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < t; ++i) {
        const T* sc = scores_.data() + i * e;
        T* ds = dscores_.data() + i * e;
        const int32_t* sel = selected_.data() + i * k;
        const T* dw = d_weight_TK + i * k;
        if (cfg_.norm_topk_prob) {
            // w_j = c s_j / Z, Z = sum of chosen s  =>  ds_j = c (dw_j / Z - sum_q dw_q s_q / Z^2)
            T z = 0, dot = 0;
            for (int64_t j = 0; j < k; ++j) {
                z += sc[sel[j]];
                dot += dw[j] * sc[sel[j]];
            }
            for (int64_t j = 0; j < k; ++j) ds[sel[j]] += scale * (dw[j] / z - dot / (z * z));
        } else {
            for (int64_t j = 0; j < k; ++j) ds[sel[j]] += scale * dw[j];
        }
        if (has_aux) {
            const T* ga = g_aux.data() + (i / per) * e;
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
        T* dl = dlogits_.data() + i * e;
        if (softmax) {
            T dot = 0;
            for (int64_t j = 0; j < e; ++j) dot += sc[j] * ds[j];
            for (int64_t j = 0; j < e; ++j) dl[j] = sc[j] * (ds[j] - dot);
        } else {
            for (int64_t j = 0; j < e; ++j) dl[j] = ds[j] * sc[j] * (T(1) - sc[j]);
        }
        if (cfg_.z_loss_coef > 0) {
            // d/dl (coef/T * lse^2) = coef/T * 2 lse softmax(l)
            const T* l = logits_.data() + i * e;
            T lse = lse_[size_t(i)];
            T c = aux_scale * T(2.0 * cfg_.z_loss_coef / double(t)) * lse;
            for (int64_t j = 0; j < e; ++j) dl[j] += c * std::exp(l[j] - lse);
        }
    }
    gate_.backward(dx_TD, dlogits_.data(), x_TD, t);
}

template <typename T>
void Router<T>::update_bias(const std::vector<int64_t>& selected_per_expert) {
    if (cfg_.bias_update_rate <= 0) return;
    int64_t total = 0;
    for (int64_t c : selected_per_expert) total += c;
    const double mean = double(total) / double(n_experts_);
    for (int64_t j = 0; j < n_experts_; ++j) {
        double load = double(selected_per_expert[size_t(j)]);
        float step = float(cfg_.bias_update_rate);
        if (load > mean)
            bias_E_[size_t(j)] -= step;
        else if (load < mean)
            bias_E_[size_t(j)] += step;
    }
}

template void topk_indices<float>(int32_t*, const float*, int64_t, int64_t);
template void topk_indices<double>(int32_t*, const double*, int64_t, int64_t);
template class Router<float>;
template class Router<double>;

}  // namespace frugal::model
