#include "precision/recipe.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/ops.h"
#include "core/error.h"
#include "precision/quantize.h"

namespace frugal::precision {

namespace ops = backend::cpu;

void PrecisionConfig::register_fields(ConfigFields& f, const std::string& p) {
    f.add(p + "recipe", &recipe,
          "number format of the linear layers' matrix products: fp32 (reference), bf16, fp8-tensorwise (current "
          "per-tensor scaling), fp8-delayed (Transformer Engine's delayed scaling), fp8-blockwise (DeepSeek-V3: 1x128 "
          "activation tiles, 128x128 weight blocks)",
          {"fp32", "bf16", "fp8-tensorwise", "fp8-delayed", "fp8-blockwise"});
    f.add(p + "amax_history_len", &amax_history_len, "fp8-delayed: amax history length (Transformer Engine: 1024)", 1);
    f.add(p + "margin", &margin, "fp8-delayed: scales are divided by 2^margin", 0, 16);
    f.add(p + "power_of_2_scales", &power_of_2_scales, "fp8-blockwise: round scales down to powers of two");
    f.add(p + "block_size", &block_size, "fp8-blockwise: tile length of activations and block edge of weights", 1);
    f.add(p + "low_precision_layers", &low_precision_layers,
          "linear layers that use the recipe; the others (and embedding, router, norms, attention core) stay FP32",
          {"attention", "dense_ffn", "experts", "shared_experts", "head"});
    f.add(p + "optimizer_state", &optimizer_state, "AdamW moments in fp32 or bf16 (master weights are always fp32)",
          {"fp32", "bf16"});
    f.add(p + "fp8_dispatch", &fp8_dispatch,
          "quantize tokens to E4M3 (1x128 tiles, power-of-two scales) before the dispatch all-to-all; combine stays "
          "in full precision");
}

void PrecisionConfig::validate() const {}

bool PrecisionConfig::low_precision(const std::string& role) const {
    return std::find(low_precision_layers.begin(), low_precision_layers.end(), role) != low_precision_layers.end();
}

float AmaxHistory::scale_and_record(float current, float fp8_max, int64_t margin) {
    float a = current;
    if (!history_.empty()) a = *std::max_element(history_.begin(), history_.end());
    history_.push_back(current);
    if (int64_t(history_.size()) > length_) history_.pop_front();
    float s = (a > 0 && std::isfinite(a)) ? fp8_max / a : 1.0f;
    return std::ldexp(s, -int(margin));
}

void AmaxHistory::save(float* out) const {
    out[0] = float(history_.size());
    std::fill_n(out + 1, length_, 0.0f);
    std::copy(history_.begin(), history_.end(), out + 1);
}

void AmaxHistory::load(const float* in) {
    const int64_t n = std::clamp<int64_t>(int64_t(in[0]), 0, length_);
    history_.assign(in + 1, in + 1 + n);
}

namespace {

template <typename T>
class Fp32Recipe final : public MatmulRecipe<T> {
  public:
    void forward(T* y, const T* x, const T* w, int64_t n, int64_t in, int64_t out) override {
        ops::linear_forward(y, x, w, n, in, out);
    }
    void backward(T* dx, T* dw, const T* dy, const T* x, const T* w, int64_t n, int64_t in, int64_t out) override {
        ops::linear_backward(dx, dw, dy, x, w, n, in, out);
    }
    std::string name() const override { return "fp32"; }
};

// Scratch that grows once and is reused.
float* grow(std::vector<float>& v, int64_t n) {
    if (int64_t(v.size()) < n) v.resize(size_t(n));
    return v.data();
}

class Bf16Recipe final : public MatmulRecipe<float> {
  public:
    void forward(float* y, const float* x, const float* w, int64_t n, int64_t in, int64_t out) override {
        float* xq = grow(x_, n * in);
        float* wq = grow(w_, out * in);
        round_bf16(xq, x, n * in);
        round_bf16(wq, w, out * in);
        ops::linear_forward(y, xq, wq, n, in, out);
    }
    void backward(float* dx, float* dw, const float* dy, const float* x, const float* w, int64_t n, int64_t in,
                  int64_t out) override {
        float* gq = grow(g_, n * out);
        round_bf16(gq, dy, n * out);
        float* xq = grow(x_, n * in);
        float* wq = grow(w_, out * in);
        round_bf16(xq, x, n * in);
        round_bf16(wq, w, out * in);
        ops::linear_backward(dx, dw, gq, xq, wq, n, in, out);
    }
    std::string name() const override { return "bf16"; }

  private:
    std::vector<float> x_, w_, g_;
};

enum class Fp8Mode { kTensorwise, kDelayed, kBlockwise };

class Fp8Recipe final : public MatmulRecipe<float> {
  public:
    Fp8Recipe(Fp8Mode mode, const PrecisionConfig& cfg)
        : mode_(mode), cfg_(cfg), hx_(cfg.amax_history_len), hw_(cfg.amax_history_len), hg_(cfg.amax_history_len) {}

    void forward(float* y, const float* x, const float* w, int64_t n, int64_t in, int64_t out) override {
        float* xq = grow(xq_, n * in);
        float* wq = grow(wq_, out * in);
        if (mode_ == Fp8Mode::kBlockwise) {
            fake_quant_row_tiles(xq, x, n, in, cfg_.block_size, Fp8Format::kE4M3, cfg_.power_of_2_scales);
            fake_quant_blocks(wq, w, out, in, cfg_.block_size, Fp8Format::kE4M3, cfg_.power_of_2_scales);
        } else {
            fake_quant(xq, x, n * in, Fp8Format::kE4M3, tensor_scale(hx_, x, n * in, Fp8Format::kE4M3));
            fake_quant(wq, w, out * in, Fp8Format::kE4M3, tensor_scale(hw_, w, out * in, Fp8Format::kE4M3));
        }
        ops::linear_forward(y, xq, wq, n, in, out);
    }

    void backward(float* dx, float* dw, const float* dy, const float* x, const float* w, int64_t n, int64_t in,
                  int64_t out) override {
        (void)w;  // the weight quantized by forward() is the one this backward must use
        float* gq = grow(gq_, n * out);
        if (mode_ == Fp8Mode::kBlockwise) {
            // dgrad reduces over `out`: gradient tiles 1 x 128 along it; the weight keeps its 128 x 128 blocks.
            if (dx) {
                fake_quant_row_tiles(gq, dy, n, out, cfg_.block_size, Fp8Format::kE4M3, cfg_.power_of_2_scales);
                ops::linear_backward(dx, static_cast<float*>(nullptr), gq, xq_.data(), wq_.data(), n, in, out);
            }
            // wgrad reduces over the tokens: gradient and activation tiles 128 x 1.
            if (dw) {
                float* xw = grow(xw_, n * in);
                fake_quant_col_tiles(gq, dy, n, out, cfg_.block_size, Fp8Format::kE4M3, cfg_.power_of_2_scales);
                fake_quant_col_tiles(xw, x, n, in, cfg_.block_size, Fp8Format::kE4M3, cfg_.power_of_2_scales);
                ops::linear_backward(static_cast<float*>(nullptr), dw, gq, xw, wq_.data(), n, in, out);
            }
            return;
        }
        // Per-tensor: E5M2 gradients against the E4M3 operands of the forward pass.
        fake_quant(gq, dy, n * out, Fp8Format::kE5M2, tensor_scale(hg_, dy, n * out, Fp8Format::kE5M2));
        ops::linear_backward(dx, dw, gq, xq_.data(), wq_.data(), n, in, out);
    }

    std::string name() const override {
        return mode_ == Fp8Mode::kTensorwise ? "fp8-tensorwise"
               : mode_ == Fp8Mode::kDelayed  ? "fp8-delayed"
                                             : "fp8-blockwise";
    }

    int64_t state_size() const override { return mode_ == Fp8Mode::kDelayed ? 3 * hx_.state_size() : 0; }
    void save_state(float* out) const override {
        if (mode_ != Fp8Mode::kDelayed) return;  // state_size() is 0: nothing to write
        for (const AmaxHistory* h : {&hx_, &hw_, &hg_}) {
            h->save(out);
            out += h->state_size();
        }
    }
    void load_state(const float* in) override {
        if (mode_ != Fp8Mode::kDelayed) return;
        for (AmaxHistory* h : {&hx_, &hw_, &hg_}) {
            h->load(in);
            in += h->state_size();
        }
    }

  private:
    float tensor_scale(AmaxHistory& h, const float* t, int64_t n, Fp8Format fmt) {
        const float a = amax(t, n);
        if (mode_ == Fp8Mode::kDelayed) return h.scale_and_record(a, fp8_max(fmt), cfg_.margin);
        return scale_for(a, fmt, false);
    }

    Fp8Mode mode_;
    PrecisionConfig cfg_;
    AmaxHistory hx_, hw_, hg_;
    std::vector<float> xq_, wq_, gq_, xw_;
};

}  // namespace

template <typename T>
std::unique_ptr<MatmulRecipe<T>> make_fp32_recipe() {
    return std::make_unique<Fp32Recipe<T>>();
}

template <>
std::unique_ptr<MatmulRecipe<float>> make_matmul_recipe<float>(const PrecisionConfig& cfg, const std::string& role) {
    if (cfg.recipe == "fp32" || !cfg.low_precision(role)) return make_fp32_recipe<float>();
    if (cfg.recipe == "bf16") return std::make_unique<Bf16Recipe>();
    if (cfg.recipe == "fp8-tensorwise") return std::make_unique<Fp8Recipe>(Fp8Mode::kTensorwise, cfg);
    if (cfg.recipe == "fp8-delayed") return std::make_unique<Fp8Recipe>(Fp8Mode::kDelayed, cfg);
    if (cfg.recipe == "fp8-blockwise") return std::make_unique<Fp8Recipe>(Fp8Mode::kBlockwise, cfg);
    FRUGAL_CONFIG_ERROR("precision.recipe '", cfg.recipe, "' is unknown");
}

template <>
std::unique_ptr<MatmulRecipe<double>> make_matmul_recipe<double>(const PrecisionConfig& cfg, const std::string& role) {
    FRUGAL_CHECK(cfg.recipe == "fp32" || !cfg.low_precision(role), "precision.recipe '", cfg.recipe,
                 "' runs in float; the double-precision model (gradient checks) supports fp32 only");
    return make_fp32_recipe<double>();
}

template std::unique_ptr<MatmulRecipe<float>> make_fp32_recipe<float>();
template std::unique_ptr<MatmulRecipe<double>> make_fp32_recipe<double>();

}  // namespace frugal::precision
