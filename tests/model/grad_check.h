// Central-difference gradient checks in double.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "model/moe/router.h"
#include "model/params.h"
#include "tests/util.h"

namespace frugal::test {

// Compares analytic[i] with (loss(x_i + eps) - loss(x_i - eps)) / 2 eps on up to max_checks indices of x.
inline void check_gradient(const std::function<double()>& loss, double* x, const double* analytic, int64_t n,
                           const std::string& what, int64_t max_checks = 24, double eps = 1e-6, double atol = 1e-8,
                           double rtol = 1e-6) {
    rng::Stream pick(99, what);
    const int64_t checks = std::min(n, max_checks);
    double worst = 0;
    for (int64_t c = 0; c < checks; ++c) {
        const int64_t i = n <= max_checks ? c : int64_t(pick.below(uint64_t(n), uint64_t(c)));
        const double orig = x[i];
        x[i] = orig + eps;
        const double lp = loss();
        x[i] = orig - eps;
        const double lm = loss();
        x[i] = orig;
        const double num = (lp - lm) / (2 * eps);
        const double err = std::fabs(num - analytic[i]);
        worst = std::max(worst, err);
        if (!(err <= atol + rtol * std::fabs(num))) {
            ADD_FAILURE() << what << "[" << i << "]: analytic " << analytic[i] << ", numeric " << num << ", error "
                          << err;
            return;
        }
    }
}

// Every parameter of a store, each on a sample of its elements.
inline void check_all_params(model::ParamStore& store, const std::function<double()>& loss, int64_t per_param = 12) {
    // Snapshot the analytic gradients first: the numeric loss() calls run forward passes only, but keep the
    // comparison independent of any buffer reuse.
    std::vector<std::vector<double>> grads;
    for (model::Param* p : store.params()) {
        const double* g = p->grad.data<double>();
        grads.emplace_back(g, g + p->grad.numel());
    }
    for (size_t i = 0; i < store.params().size(); ++i) {
        model::Param* p = store.params()[i];
        check_gradient(loss, p->value.data<double>(), grads[i].data(), p->value.numel(), p->name, per_param);
    }
}

// Smallest gap between the k-th and (k+1)-th selection key of any token: must exceed the perturbation for the
// routing to stay fixed inside a central difference.
template <typename T>
double min_topk_margin(const T* scores_TE, const std::vector<float>& bias, int64_t t, int64_t e, int64_t k) {
    double margin = 1e30;
    std::vector<double> keys(static_cast<size_t>(e));
    for (int64_t i = 0; i < t; ++i) {
        for (int64_t j = 0; j < e; ++j)
            keys[static_cast<size_t>(j)] = double(scores_TE[i * e + j]) + double(bias[static_cast<size_t>(j)]);
        std::sort(keys.begin(), keys.end(), std::greater<double>());
        if (k < e) margin = std::min(margin, keys[static_cast<size_t>(k - 1)] - keys[static_cast<size_t>(k)]);
    }
    return margin;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}

// An attention layer (forward(out, x, pos, b, s, doc_start), backward(dx, dout, x, pos, b, s, doc_start)) whose
// parameters are all of store, on 2 windows of 5 tokens: L = sum(out * R) over x and every parameter. doc_mask: the
// first window holds documents [0, 2) and [2, 5), so positions restart and no query of the second sees the first.
template <typename Layer>
void check_attention_layer(Layer& attn, model::ParamStore& store, int64_t d, bool doc_mask, const std::string& what) {
    const int64_t b = 2, s = 5, n = b * s;
    std::vector<int32_t> pos(static_cast<size_t>(n)), start(static_cast<size_t>(n), 0);
    for (int64_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = int32_t(i % s);
    if (doc_mask)
        for (int64_t i = 2; i < s; ++i) {
            start[static_cast<size_t>(i)] = 2;
            pos[static_cast<size_t>(i)] = int32_t(i - 2);
        }
    const int32_t* st = doc_mask ? start.data() : nullptr;
    std::vector<double> x = random_vec<double>(n * d, 8), r = random_vec<double>(n * d, 9);
    std::vector<double> out(static_cast<size_t>(n * d)), dx(static_cast<size_t>(n * d), 0.0);
    auto loss = [&] {
        attn.forward(out.data(), x.data(), pos.data(), b, s, st);
        return dot(out, r);
    };
    loss();
    attn.backward(dx.data(), r.data(), x.data(), pos.data(), b, s, st);
    check_gradient(loss, x.data(), dx.data(), n * d, what + " x");
    check_all_params(store, loss);
}

}  // namespace frugal::test
