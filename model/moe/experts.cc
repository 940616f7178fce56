#include "model/moe/experts.h"

#include <cmath>

namespace frugal::model {

template <typename T>
Experts<T>::Experts(const Ops<T>& ops, ParamStore& store, const ModelConfig& cfg, const std::string& prefix,
                    int64_t first_expert, int64_t num_local)
    : ops_(ops), d_(cfg.d_model), f_(cfg.moe.d_expert), num_local_(num_local) {
    const int64_t e = cfg.moe.n_experts;
    const double out_std = cfg.init_std / std::sqrt(2.0 * double(cfg.n_layers));
    w13_ = store.add(prefix + "w13", {num_local, 2 * f_, d_}, ParamKind::kWeight, cfg.init_std, true, {e, 2 * f_, d_},
                     first_expert * 2 * f_ * d_);
    w2_ = store.add(prefix + "w2", {num_local, d_, f_}, ParamKind::kWeight, out_std, true, {e, d_, f_},
                    first_expert * d_ * f_);
    for (int64_t i = 0; i < num_local; ++i) {
        r13_.push_back(precision::make_fp32_recipe<T>(ops_));
        r2_.push_back(precision::make_fp32_recipe<T>(ops_));
    }
}

template <typename T>
void Experts<T>::set_precision(const precision::PrecisionConfig& cfg) {
    r13_.clear();
    r2_.clear();
    for (int64_t e = 0; e < num_local_; ++e) {
        r13_.push_back(precision::make_matmul_recipe<T>(cfg, "experts", ops_));
        r2_.push_back(precision::make_matmul_recipe<T>(cfg, "experts", ops_));
    }
}

template <typename T>
void Experts<T>::forward(T* y_RD, const T* x_RD, const std::vector<int64_t>& tokens_per_expert) {
    int64_t rows = 0;
    for (int64_t c : tokens_per_expert) rows += c;
    T* gu = ensure<T>(ops_, gu_R2F_, std::max<int64_t>(rows, 1) * 2 * f_);
    T* h = ensure<T>(ops_, h_RF_, std::max<int64_t>(rows, 1) * f_);
    const T* w13 = value<T>(w13_);
    const T* w2 = value<T>(w2_);
    int64_t off = 0;
    for (int64_t e = 0; e < num_local_; ++e) {
        const int64_t n = tokens_per_expert[size_t(e)];
        if (n == 0) continue;  // an expert with no tokens does no work and touches no buffer
        r13_[size_t(e)]->forward(gu + off * 2 * f_, x_RD + off * d_, w13 + e * 2 * f_ * d_, n, d_, 2 * f_);
        ops_.swiglu_forward(h + off * f_, gu + off * 2 * f_, n, f_);
        r2_[size_t(e)]->forward(y_RD + off * d_, h + off * f_, w2 + e * d_ * f_, n, f_, d_);
        off += n;
    }
}

template <typename T>
void Experts<T>::backward(T* dx_RD, const T* dy_RD, const T* x_RD, const std::vector<int64_t>& tokens_per_expert) {
    int64_t rows = 0;
    for (int64_t c : tokens_per_expert) rows += c;
    T* dh = ensure_zero<T>(ops_, dh_RF_, std::max<int64_t>(rows, 1) * f_);
    T* dgu = ensure_zero<T>(ops_, dgu_R2F_, std::max<int64_t>(rows, 1) * 2 * f_);
    const T* gu = gu_R2F_.data<T>();
    const T* h = h_RF_.data<T>();
    const T* w13 = value<T>(w13_);
    const T* w2 = value<T>(w2_);
    T* dw13 = grad<T>(w13_);
    T* dw2 = grad<T>(w2_);
    int64_t off = 0;
    for (int64_t e = 0; e < num_local_; ++e) {
        const int64_t n = tokens_per_expert[size_t(e)];
        if (n == 0) continue;
        r2_[size_t(e)]->backward(dh + off * f_, dw2 + e * d_ * f_, dy_RD + off * d_, h + off * f_, w2 + e * d_ * f_, n,
                                 f_, d_);
        ops_.swiglu_backward(dgu + off * 2 * f_, dh + off * f_, gu + off * 2 * f_, n, f_);
        r13_[size_t(e)]->backward(dx_RD + off * d_, dw13 + e * 2 * f_ * d_, dgu + off * 2 * f_, x_RD + off * d_,
                                  w13 + e * 2 * f_ * d_, n, d_, 2 * f_);
        off += n;
    }
}

template <typename T>
void Experts<T>::forward_reference(T* y_RD, const T* x_RD, const std::vector<int64_t>& tokens_per_expert) const {
    const T* w13 = value<T>(w13_);
    const T* w2 = value<T>(w2_);
    std::vector<double> hidden(static_cast<size_t>(f_));
    int64_t r = 0;
    for (int64_t e = 0; e < num_local_; ++e) {
        for (int64_t i = 0; i < tokens_per_expert[size_t(e)]; ++i, ++r) {
            const T* x = x_RD + r * d_;
            for (int64_t j = 0; j < f_; ++j) {
                double g = 0, u = 0;
                for (int64_t p = 0; p < d_; ++p) {
                    g += double(w13[(e * 2 * f_ + j) * d_ + p]) * double(x[p]);
                    u += double(w13[(e * 2 * f_ + f_ + j) * d_ + p]) * double(x[p]);
                }
                hidden[size_t(j)] = g / (1.0 + std::exp(-g)) * u;
            }
            for (int64_t p = 0; p < d_; ++p) {
                double acc = 0;
                for (int64_t j = 0; j < f_; ++j) acc += double(w2[(e * d_ + p) * f_ + j]) * hidden[size_t(j)];
                y_RD[r * d_ + p] = T(acc);
            }
        }
    }
}

template class Experts<float>;
template class Experts<double>;

}  // namespace frugal::model
