// AdamW (Loshchilov & Hutter, arXiv 1711.05101) on FP32 master weights with FP32 moments, decoupled weight decay,
// global-norm clipping and the learning-rate schedule. The optimizer sees flat float buffers only (OptimParam);
// which parameters decay is decided by the caller from OptimConfig::no_decay. The updates, the norm and the scaling
// run as the backend's kernels (backend/backend.h) on the device that holds the parameters.
#pragma once

#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/config_fields.h"
#include "core/tensor.h"

namespace frugal::optim {

struct OptimConfig {
    double lr = 3e-3;
    double min_lr = 3e-4;
    int64_t warmup_steps = 20;
    std::string schedule = "cosine";  // cosine | linear | constant (after warmup)
    double weight_decay = 0.1;
    double beta1 = 0.9;
    double beta2 = 0.95;
    double eps = 1e-8;
    double grad_clip = 1.0;  // max global L2 norm; 0 = no clipping
    std::vector<std::string> no_decay = {"norm", "bias", "embedding"};

    void register_fields(ConfigFields& f, const std::string& prefix);
    void validate() const;
};

// Learning rate at step (0-based) of total: linear warmup from lr/warmup to lr, then decay to min_lr.
double lr_at(const OptimConfig& cfg, int64_t step, int64_t total_steps);

struct OptimParam {
    float* value;
    float* grad;
    int64_t numel;
    bool decay;
    bool frozen = false;  // never updated (fine-tuning with a frozen router or embedding)
};

class AdamW {
  public:
    // bf16_state: keep the moments in BF16 (rounded to nearest even after every update), halving their memory;
    // the update itself is computed in FP32.
    AdamW(const OptimConfig& cfg, std::vector<OptimParam> params, bool bf16_state = false,
          backend::Backend& be = backend::cpu_backend());
    // One update with learning rate lr; increments the step count used for bias correction.
    void step(double lr);
    int64_t steps_taken() const { return t_; }
    // Bytes of the two moments this optimizer holds.
    int64_t state_bytes() const;
    void set_steps_taken(int64_t t) { t_ = t; }
    bool bf16_state() const { return bf16_state_; }
    std::vector<Tensor>& exp_avg() { return m_; }
    std::vector<Tensor>& exp_avg_sq() { return v_; }

  private:
    backend::Backend& be_;
    OptimConfig cfg_;
    std::vector<OptimParam> params_;
    std::vector<Tensor> m_, v_;
    int64_t t_ = 0;
    bool bf16_state_ = false;
};

// Sum of squares of all gradients (double accumulation); the caller all-reduces it across ranks when sharded.
double grad_sq_sum(const std::vector<OptimParam>& params, backend::Backend& be = backend::cpu_backend());
void scale_grads(const std::vector<OptimParam>& params, float factor, backend::Backend& be = backend::cpu_backend());

}  // namespace frugal::optim
