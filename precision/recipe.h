// Precision recipes of the matrix products (precision.recipe), the object a Linear holds so that model code never
// branches on the number format (DESIGN.md):
//
//   fp32            plain FP32 GEMMs (the reference)
//   bf16            operands rounded to BF16, FP32 accumulation
//   fp8-tensorwise  one scale per tensor from this step's amax; E4M3 activations and weights, E5M2 gradients
//   fp8-delayed     Transformer Engine's DelayedScaling: scale = (fp8_max / max(amax history)) / 2^margin, the
//                   history (precision.amax_history_len) updated with each use's amax; E4M3 forward, E5M2
//                   gradients ("HYBRID"); the first use, with an empty history, scales from its own amax
//   fp8-blockwise   DeepSeek-V3 section 3.3: E4M3 for every tensor; activations and gradients in 1 x 128 tiles
//                   along the reduction dimension of each GEMM (so the weight-gradient GEMM sees 128 x 1 tiles),
//                   weights in 128 x 128 blocks; online amax; optional power-of-two scales
//
// All three GEMMs of a linear layer (forward, input gradient, weight gradient) take quantized operands; see
// precision/quantize.h for how the CPU emulation relates to FP8 hardware. Every recipe computes through the backend
// whose Ops table it was made with: its GEMMs, quantizers and operand buffers are that backend's.
//
// Weight cache (bf16, fp8-tensorwise, fp8-blockwise): a recipe quantizes its weight on first use and keeps the
// quantized copy for every later forward and backward until weights_updated(), so the weights are quantized once
// per optimizer step, not once per micro-batch. The caller's contract: call weights_updated() on every recipe
// whose weights changed (model::Transformer::weights_updated() after each optimizer step and each load into a model
// that has already run). A fresh recipe has an empty cache. A missed call does not go unnoticed: each use of the
// cache compares a fingerprint of a strided sample of the weight (every 997th element and the last) with the one
// taken when it was quantized, and a difference is an error naming weights_updated(). fp8-delayed quantizes its
// weight on every use (its scale moves with the amax history) and keeps no cache.
// Activation and gradient operands of bf16 and fp8-blockwise are quantized into one scratch per thread shared by
// all recipes (grown once), not into per-layer or per-expert copies.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/config_fields.h"
#include "core/tensor.h"

namespace frugal::precision {

struct PrecisionConfig {
    std::string recipe = "fp32";
    int64_t amax_history_len = 1024;
    int64_t margin = 0;
    bool power_of_2_scales = true;
    int64_t block_size = 128;
    // Which linear layers run in the recipe's format; every other matmul (embedding, output head unless listed,
    // router, attention core) stays FP32. Default: DeepSeek-V3's choice.
    std::vector<std::string> low_precision_layers = {"attention", "dense_ffn", "experts", "shared_experts"};
    std::string optimizer_state = "fp32";  // fp32 | bf16 AdamW moments
    bool fp8_dispatch = false;

    void register_fields(ConfigFields& f, const std::string& prefix);
    void validate() const;
    bool low_precision(const std::string& role) const;
};

// y_NO = x_NI w_OI^T, and its two backward products, in some number format.
template <typename T>
class MatmulRecipe {
  public:
    virtual ~MatmulRecipe() = default;
    virtual void forward(T* y_NO, const T* x_NI, const T* w_OI, int64_t n, int64_t in, int64_t out) = 0;
    // dx_NI += dy_NO w_OI ; dw_OI += dy_NO^T x_NI  (either output may be null)
    virtual void backward(T* dx_NI, T* dw_OI, const T* dy_NO, const T* x_NI, const T* w_OI, int64_t n, int64_t in,
                          int64_t out) = 0;
    virtual std::string name() const = 0;
    // The weights changed (optimizer step, load): the next use quantizes them again.
    virtual void weights_updated() {}
    // State carried from step to step (delayed scaling's amax histories), for checkpoints: its size in floats
    // (0: stateless), and saving it to / restoring it from that many floats.
    virtual int64_t state_size() const { return 0; }
    virtual void save_state(float*) const {}
    virtual void load_state(const float*) {}
};

// The recipe for a linear layer of the given role ("attention", "dense_ffn", "experts", "shared_experts",
// "head"): the configured one when the role is listed in low_precision_layers, FP32 otherwise. Each call returns a
// new object (delayed scaling keeps per-layer history).
template <typename T>
std::unique_ptr<MatmulRecipe<T>> make_matmul_recipe(const PrecisionConfig& cfg, const std::string& role,
                                                    const backend::Ops<T>& ops);
template <typename T>
std::unique_ptr<MatmulRecipe<T>> make_fp32_recipe(const backend::Ops<T>& ops);

// The amax history of delayed scaling (exposed for tests).
class AmaxHistory {
  public:
    explicit AmaxHistory(int64_t length) : length_(length) {}
    // Scale for this use: from the history's maximum, or from `current` when the history is empty; then records
    // `current`.
    float scale_and_record(float current, float fp8_max, int64_t margin);
    size_t size() const { return history_.size(); }
    // Checkpoint form: 1 + length floats, the number of entries then the entries (zero-padded).
    int64_t state_size() const { return 1 + length_; }
    void save(float* out) const;
    void load(const float* in);

  private:
    int64_t length_;
    std::deque<float> history_;
};

}  // namespace frugal::precision
