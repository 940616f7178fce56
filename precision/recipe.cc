#include "precision/recipe.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "precision/quantize.h"

namespace frugal::precision {

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
    explicit Fp32Recipe(const backend::Ops<T>& ops) : ops_(ops) {}
    void forward(T* y, const T* x, const T* w, int64_t n, int64_t in, int64_t out) override {
        ops_.linear_forward(y, x, w, n, in, out);
    }
    void backward(T* dx, T* dw, const T* dy, const T* x, const T* w, int64_t n, int64_t in, int64_t out) override {
        ops_.linear_backward(dx, dw, dy, x, w, n, in, out);
    }
    std::string name() const override { return "fp32"; }

  private:
    const backend::Ops<T>& ops_;
};

// A float buffer of the backend's device that grows once and is reused.
class Buffer {
  public:
    float* grow(backend::Backend& be, int64_t n) {
        if (!t_.defined() || t_.numel() < n || &t_.allocator() != &be.allocator())
            t_ = Tensor::empty({std::max<int64_t>(n, 1)}, DType::kF32, be.allocator());
        return t_.data<float>();
    }
    float* data() const { return t_.data<float>(); }

  private:
    Tensor t_;
};

// Operand scratch of one GEMM call, shared by every recipe on this thread: nothing in it outlives the call that
// fills it (bf16 and fp8-blockwise quantize their activation and gradient operands again where backward needs them).
struct Scratch {
    Buffer a, b;
};
Scratch& scratch() {
    static thread_local Scratch s;
    return s;
}

// A quantized copy of one weight, valid from its first use until invalidate() (see the header).
class WeightCache {
  public:
    // The quantized form of w_OI (numel elements): quantize(out, w) fills it when the cache is empty or holds
    // another tensor; otherwise checks that the weight still matches what was quantized.
    explicit WeightCache(backend::Backend& be) : be_(be) {}
    template <typename Quantize>
    const float* get(const float* w, int64_t numel, Quantize&& quantize) {
        if (!valid_ || w != source_ || numel != numel_) {
            quantize(q_.grow(be_, numel), w);
            source_ = w;
            numel_ = numel;
            fingerprint_ = be_.fingerprint(w, numel);
            valid_ = true;
            return q_.data();
        }
        FRUGAL_CHECK(be_.fingerprint(w, numel) == fingerprint_, "a weight of ", numel,
                     " elements changed since it was quantized and its recipe still holds the old quantized copy: "
                     "call model::Transformer::weights_updated() after every optimizer step and every load of "
                     "weights into a model that has run");
        return q_.data();
    }
    void invalidate() { valid_ = false; }
    // The buffer of the last get() (for delayed scaling, which quantizes on every use into it).
    float* buffer(int64_t numel) { return q_.grow(be_, numel); }

  private:
    // The fingerprint is the backend's (Backend::fingerprint): a few thousand loads per call.
    backend::Backend& be_;
    Buffer q_;
    const float* source_ = nullptr;
    int64_t numel_ = 0;
    uint64_t fingerprint_ = 0;
    bool valid_ = false;
};

class Bf16Recipe final : public MatmulRecipe<float> {
  public:
    explicit Bf16Recipe(const backend::Ops<float>& ops) : ops_(ops), be_(ops.backend()), w_(be_) {}
    void forward(float* y, const float* x, const float* w, int64_t n, int64_t in, int64_t out) override {
        float* xq = scratch().a.grow(be_, n * in);
        be_.round_bf16(xq, x, n * in);
        ops_.linear_forward(y, xq, weight(w, in, out), n, in, out);
    }
    void backward(float* dx, float* dw, const float* dy, const float* x, const float* w, int64_t n, int64_t in,
                  int64_t out) override {
        Scratch& s = scratch();
        float* gq = s.b.grow(be_, n * out);
        be_.round_bf16(gq, dy, n * out);
        float* xq = s.a.grow(be_, n * in);
        be_.round_bf16(xq, x, n * in);
        ops_.linear_backward(dx, dw, gq, xq, weight(w, in, out), n, in, out);
    }
    std::string name() const override { return "bf16"; }
    void weights_updated() override { w_.invalidate(); }

  private:
    const float* weight(const float* w, int64_t in, int64_t out) {
        return w_.get(w, out * in, [&](float* wq, const float* src) { be_.round_bf16(wq, src, out * in); });
    }

    const backend::Ops<float>& ops_;
    backend::Backend& be_;
    WeightCache w_;
};

enum class Fp8Mode { kTensorwise, kDelayed, kBlockwise };

class Fp8Recipe final : public MatmulRecipe<float> {
  public:
    Fp8Recipe(Fp8Mode mode, const PrecisionConfig& cfg, const backend::Ops<float>& ops)
        : ops_(ops),
          be_(ops.backend()),
          mode_(mode),
          cfg_(cfg),
          hx_(cfg.amax_history_len),
          hw_(cfg.amax_history_len),
          hg_(cfg.amax_history_len),
          w_(be_) {}

    void forward(float* y, const float* x, const float* w, int64_t n, int64_t in, int64_t out) override {
        if (mode_ == Fp8Mode::kBlockwise) {
            float* xq = scratch().a.grow(be_, n * in);
            be_.fake_quant_row_tiles(xq, x, n, in, cfg_.block_size, Fp8Format::kE4M3, cfg_.power_of_2_scales);
            ops_.linear_forward(y, xq, weight(w, in, out), n, in, out);
            return;
        }
        // Per-tensor: backward reuses this forward's E4M3 activation, so it is kept per recipe.
        float* xq = xq_.grow(be_, n * in);
        be_.fake_quant(xq, x, n * in, Fp8Format::kE4M3, tensor_scale(hx_, x, n * in, Fp8Format::kE4M3));
        const float* wq = weight(w, in, out);
        if (mode_ == Fp8Mode::kDelayed) {
            float* fresh = w_.buffer(out * in);
            be_.fake_quant(fresh, w, out * in, Fp8Format::kE4M3, tensor_scale(hw_, w, out * in, Fp8Format::kE4M3));
            wq = fresh;
        }
        ops_.linear_forward(y, xq, wq, n, in, out);
    }

    void backward(float* dx, float* dw, const float* dy, const float* x, const float* w, int64_t n, int64_t in,
                  int64_t out) override {
        if (mode_ == Fp8Mode::kBlockwise) {
            blockwise_backward(dx, dw, dy, x, w, n, in, out);
            return;
        }
        // Per-tensor: E5M2 gradients against the E4M3 operands of the forward pass (delayed scaling: the weight
        // quantized by that forward, still in the buffer).
        float* gq = gq_.grow(be_, n * out);
        be_.fake_quant(gq, dy, n * out, Fp8Format::kE5M2, tensor_scale(hg_, dy, n * out, Fp8Format::kE5M2));
        const float* wq = mode_ == Fp8Mode::kDelayed ? w_.buffer(out * in) : weight(w, in, out);
        ops_.linear_backward(dx, dw, gq, xq_.data(), wq, n, in, out);
    }

    std::string name() const override {
        return mode_ == Fp8Mode::kTensorwise ? "fp8-tensorwise"
               : mode_ == Fp8Mode::kDelayed  ? "fp8-delayed"
                                             : "fp8-blockwise";
    }
    void weights_updated() override { w_.invalidate(); }

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
    // The cached E4M3 weight: 128 x 128 blocks (blockwise) or one scale from the weight's amax (tensorwise), both
    // functions of the weight alone. Delayed scaling does not use it (its scale depends on the history).
    const float* weight(const float* w, int64_t in, int64_t out) {
        if (mode_ == Fp8Mode::kDelayed) return nullptr;
        return w_.get(w, out * in, [&](float* wq, const float* src) {
            if (mode_ == Fp8Mode::kBlockwise)
                be_.fake_quant_blocks(wq, src, out, in, cfg_.block_size, Fp8Format::kE4M3, cfg_.power_of_2_scales);
            else
                be_.fake_quant(wq, src, out * in, Fp8Format::kE4M3,
                               scale_for(be_.amax(src, out * in), Fp8Format::kE4M3, false));
        });
    }

    void blockwise_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, int64_t n,
                            int64_t in, int64_t out) {
        Scratch& s = scratch();
        float* gq = s.b.grow(be_, n * out);
        // dgrad reduces over `out`: gradient tiles 1 x 128 along it; the weight keeps its 128 x 128 blocks.
        if (dx) {
            be_.fake_quant_row_tiles(gq, dy, n, out, cfg_.block_size, Fp8Format::kE4M3, cfg_.power_of_2_scales);
            ops_.linear_backward(dx, static_cast<float*>(nullptr), gq, x, weight(w, in, out), n, in, out);
        }
        // wgrad reduces over the tokens: gradient and activation tiles 128 x 1.
        if (dw) {
            float* xw = s.a.grow(be_, n * in);
            be_.fake_quant_col_tiles(gq, dy, n, out, cfg_.block_size, Fp8Format::kE4M3, cfg_.power_of_2_scales);
            be_.fake_quant_col_tiles(xw, x, n, in, cfg_.block_size, Fp8Format::kE4M3, cfg_.power_of_2_scales);
            ops_.linear_backward(static_cast<float*>(nullptr), dw, gq, xw, w, n, in, out);
        }
    }

    float tensor_scale(AmaxHistory& h, const float* t, int64_t n, Fp8Format fmt) {
        const float a = be_.amax(t, n);
        if (mode_ == Fp8Mode::kDelayed) return h.scale_and_record(a, fp8_max(fmt), cfg_.margin);
        return scale_for(a, fmt, false);
    }

    const backend::Ops<float>& ops_;
    backend::Backend& be_;
    Fp8Mode mode_;
    PrecisionConfig cfg_;
    AmaxHistory hx_, hw_, hg_;
    WeightCache w_;
    Buffer xq_, gq_;
};

}  // namespace

template <typename T>
std::unique_ptr<MatmulRecipe<T>> make_fp32_recipe(const backend::Ops<T>& ops) {
    return std::make_unique<Fp32Recipe<T>>(ops);
}

// A backend's native product (Backend::make_native_matmul) as a recipe.
class NativeRecipe final : public MatmulRecipe<float> {
  public:
    NativeRecipe(std::unique_ptr<backend::NativeMatmul> impl, std::string name)
        : impl_(std::move(impl)), name_(std::move(name)) {}
    void forward(float* y, const float* x, const float* w, int64_t n, int64_t in, int64_t out) override {
        impl_->forward(y, x, w, n, in, out);
    }
    void backward(float* dx, float* dw, const float* dy, const float* x, const float* w, int64_t n, int64_t in,
                  int64_t out) override {
        impl_->backward(dx, dw, dy, x, w, n, in, out);
    }
    std::string name() const override { return name_; }
    void weights_updated() override { impl_->weights_updated(); }

  private:
    std::unique_ptr<backend::NativeMatmul> impl_;
    std::string name_;
};

template <>
std::unique_ptr<MatmulRecipe<float>> make_matmul_recipe<float>(const PrecisionConfig& cfg, const std::string& role,
                                                               const backend::Ops<float>& ops) {
    if (cfg.recipe == "fp32" || !cfg.low_precision(role)) return make_fp32_recipe<float>(ops);
    if (auto native = ops.backend().make_native_matmul({cfg.recipe, cfg.block_size, cfg.power_of_2_scales}))
        return std::make_unique<NativeRecipe>(std::move(native), cfg.recipe);
    if (cfg.recipe == "bf16") return std::make_unique<Bf16Recipe>(ops);
    if (cfg.recipe == "fp8-tensorwise") return std::make_unique<Fp8Recipe>(Fp8Mode::kTensorwise, cfg, ops);
    if (cfg.recipe == "fp8-delayed") return std::make_unique<Fp8Recipe>(Fp8Mode::kDelayed, cfg, ops);
    if (cfg.recipe == "fp8-blockwise") return std::make_unique<Fp8Recipe>(Fp8Mode::kBlockwise, cfg, ops);
    FRUGAL_CONFIG_ERROR("precision.recipe '", cfg.recipe, "' is unknown");
}

template <>
std::unique_ptr<MatmulRecipe<double>> make_matmul_recipe<double>(const PrecisionConfig& cfg, const std::string& role,
                                                                 const backend::Ops<double>& ops) {
    FRUGAL_CHECK(cfg.recipe == "fp32" || !cfg.low_precision(role), "precision.recipe '", cfg.recipe,
                 "' runs in float; the double-precision model (gradient checks) supports fp32 only");
    return make_fp32_recipe<double>(ops);
}

template std::unique_ptr<MatmulRecipe<float>> make_fp32_recipe<float>(const backend::Ops<float>&);
template std::unique_ptr<MatmulRecipe<double>> make_fp32_recipe<double>(const backend::Ops<double>&);

}  // namespace frugal::precision
