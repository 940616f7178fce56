// Small layers and helpers shared by the model: scratch buffers that grow once and are reused across steps (no
// allocation in the step loop), Linear (optional bias), RMSNorm and the rotary tables.
//
// Every layer computes through the backend it was built with (backend/backend.h): it holds that backend's Ops<T>
// table, its buffers come from the backend's allocator, and no loop over tensor elements runs in model code.
//
// Legend: N rows (tokens), D model dim, I/O in/out features, hd head dim, P positions.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/tensor.h"
#include "model/config.h"
#include "model/params.h"
#include "precision/recipe.h"

namespace frugal::model {

template <typename T>
using Ops = backend::Ops<T>;

// Returns a buffer of at least numel elements of the backend's device, reallocating only when it must grow.
template <typename U>
U* ensure(backend::Backend& be, Tensor& buf, int64_t numel) {
    if (!buf.defined() || buf.numel() < numel) buf = Tensor::empty({numel}, DTypeOf<U>::value, be.allocator());
    return buf.data<U>();
}
template <typename T>
T* ensure(const Ops<T>& ops, Tensor& buf, int64_t numel) {
    return ensure<T>(ops.backend(), buf, numel);
}
// Same, zero-filled (for gradient accumulators that backward adds into).
template <typename T>
T* ensure_zero(const Ops<T>& ops, Tensor& buf, int64_t numel) {
    T* p = ensure<T>(ops, buf, numel);
    ops.fill(p, numel, T(0));
    return p;
}

template <typename T>
T* value(Param* p) {
    return p->value.data<T>();
}
template <typename T>
T* grad(Param* p) {
    return p->grad.data<T>();
}

// y_NO = x_NI w_OI^T (+ b_O). The weight lives in the ParamStore; this object is a view with the dims and the
// precision recipe of its matrix products (FP32 until set_precision() gives it another): the layer code is the same
// for every number format. The optional bias ("NAME.bias" beside "NAME.weight") is added in T after the product.
template <typename T>
struct Linear {
    const Ops<T>* ops = nullptr;
    Param* w = nullptr;
    Param* b = nullptr;
    int64_t in = 0, out = 0;
    std::unique_ptr<precision::MatmulRecipe<T>> recipe;

    Linear() = default;
    Linear(const Ops<T>& o, ParamStore& store, const std::string& name, int64_t in_features, int64_t out_features,
           double std, bool bias = false)
        : ops(&o),
          w(store.add(name, {out_features, in_features}, ParamKind::kWeight, std)),
          in(in_features),
          out(out_features),
          recipe(precision::make_fp32_recipe<T>(o)) {
        if (bias) b = store.add(name.substr(0, name.rfind('.')) + ".bias", {out_features}, ParamKind::kBias, 0.0);
    }
    // A view of a weight another layer registered (the tied head, the router's gate).
    Linear(const Ops<T>& o, Param* weight, int64_t in_features, int64_t out_features)
        : ops(&o), w(weight), in(in_features), out(out_features), recipe(precision::make_fp32_recipe<T>(o)) {}
    void forward(T* y_NO, const T* x_NI, int64_t n) const {
        recipe->forward(y_NO, x_NI, value<T>(w), n, in, out);
        if (b) ops->bias_add(y_NO, value<T>(b), n, out);
    }
    // dx_NI += dy w ; dw += dy^T x ; db += sum over rows of dy  (dx may be null)
    void backward(T* dx_NI, const T* dy_NO, const T* x_NI, int64_t n) const {
        recipe->backward(dx_NI, grad<T>(w), dy_NO, x_NI, value<T>(w), n, in, out);
        if (b) ops->bias_backward(grad<T>(b), dy_NO, n, out);
    }
    void set_precision(const precision::PrecisionConfig& cfg, const std::string& role) {
        recipe = precision::make_matmul_recipe<T>(cfg, role, *ops);
    }
};

template <typename T>
struct RMSNorm {
    const Ops<T>* ops = nullptr;
    Param* w = nullptr;
    int64_t d = 0;
    double eps = 1e-6;

    RMSNorm() = default;
    RMSNorm(const Ops<T>& o, ParamStore& store, const std::string& name, int64_t dim, double epsilon)
        : ops(&o), w(store.add(name, {dim}, ParamKind::kNorm, 0.0)), d(dim), eps(epsilon) {}
    void forward(T* out_ND, T* rstd_N, const T* x_ND, int64_t n) const {
        ops->rmsnorm_forward(out_ND, rstd_N, x_ND, value<T>(w), n, d, eps);
    }
    void backward(T* dx_ND, const T* dout_ND, const T* x_ND, const T* rstd_N, int64_t n) const {
        ops->rmsnorm_backward(dx_ND, grad<T>(w), dout_ND, x_ND, value<T>(w), rstd_N, n, d);
    }
};

// The rotary frequencies of cfg, inv_freq_j for j < rope_dim / 2, in double: theta^(-2j/r) (r = rope_dim), or with
// rope_scaling yarn the blend transformers' _compute_yarn_parameters computes (model/config.h).
std::vector<double> rope_inv_freq(const ModelConfig& cfg);

// cos/sin of position p times inv_freq_j (rope_inv_freq), times the YaRN attention factor, computed on the host in
// double, rounded once and copied to the backend's device: cos_PH, sin_PH [max_pos, rot_dim/2].
template <typename T>
struct RopeTable {
    Tensor cos_PH, sin_PH;
    int64_t rot_dim = 0;

    RopeTable() = default;
    RopeTable(backend::Backend& be, const ModelConfig& cfg)
        : RopeTable(be, cfg.max_seq_len, rope_inv_freq(cfg), cfg.rope_attention_factor()) {}
    // Unscaled: inv_freq_j = theta^(-2j/rot_dim).
    RopeTable(backend::Backend& be, int64_t max_pos, int64_t rot, double theta)
        : RopeTable(be, max_pos, plain_inv_freq(rot, theta), 1.0) {}
    RopeTable(backend::Backend& be, int64_t max_pos, const std::vector<double>& inv_freq, double factor)
        : rot_dim(2 * int64_t(inv_freq.size())) {
        const int64_t half = rot_dim / 2;
        std::vector<T> c(size_t(max_pos * half)), s(size_t(max_pos * half));
        for (int64_t p = 0; p < max_pos; ++p)
            for (int64_t j = 0; j < half; ++j) {
                const double angle = double(p) * inv_freq[size_t(j)];
                c[size_t(p * half + j)] = T(std::cos(angle) * factor);
                s[size_t(p * half + j)] = T(std::sin(angle) * factor);
            }
        cos_PH = Tensor::empty({max_pos, half}, DTypeOf<T>::value, be.allocator());
        sin_PH = Tensor::empty({max_pos, half}, DTypeOf<T>::value, be.allocator());
        be.copy_to_device(cos_PH.raw_data(), c.data(), c.size() * sizeof(T));
        be.copy_to_device(sin_PH.raw_data(), s.data(), s.size() * sizeof(T));
    }
    const T* cos() const { return cos_PH.data<T>(); }
    const T* sin() const { return sin_PH.data<T>(); }

    static std::vector<double> plain_inv_freq(int64_t rot, double theta) {
        std::vector<double> f(size_t(rot / 2));
        for (int64_t j = 0; j < rot / 2; ++j) f[size_t(j)] = std::pow(theta, -2.0 * double(j) / double(rot));
        return f;
    }
};

}  // namespace frugal::model
