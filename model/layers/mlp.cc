#include "model/layers/mlp.h"

namespace frugal::model {

template <typename T>
MLP<T>::MLP(const Ops<T>& ops, ParamStore& store, const std::string& prefix, int64_t d_model, int64_t d_hidden,
            double std, double out_std, std::string role)
    : ops_(ops), d_(d_model), f_(d_hidden), role_(std::move(role)) {
    w13_ = Linear<T>(ops, store, prefix + "w13.weight", d_, 2 * f_, std);
    w2_ = Linear<T>(ops, store, prefix + "w2.weight", f_, d_, out_std);
}

template <typename T>
void MLP<T>::forward_hidden(const T* x_ND, int64_t n) {
    T* gu = ensure<T>(ops_, gu_N2F_, n * 2 * f_);
    T* h = ensure<T>(ops_, h_NF_, n * f_);
    w13_.forward(gu, x_ND, n);
    ops_.swiglu_forward(h, gu, n, f_);
}

template <typename T>
void MLP<T>::forward_output(T* out_ND, int64_t n) {
    w2_.forward(out_ND, h_NF_.data<T>(), n);
}

template <typename T>
void MLP<T>::backward(T* dx_ND, const T* dout_ND, const T* x_ND, int64_t n) {
    T* dh = ensure_zero<T>(ops_, dh_NF_, n * f_);
    T* dgu = ensure_zero<T>(ops_, dgu_N2F_, n * 2 * f_);
    w2_.backward(dh, dout_ND, h_NF_.data<T>(), n);
    ops_.swiglu_backward(dgu, dh, gu_N2F_.data<T>(), n, f_);
    w13_.backward(dx_ND, dgu, x_ND, n);
}

template class MLP<float>;
template class MLP<double>;

}  // namespace frugal::model
