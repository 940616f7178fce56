#include "optim/adamw.h"

#include <cmath>

#include "core/error.h"

namespace frugal::optim {

void OptimConfig::register_fields(ConfigFields& f, const std::string& p) {
    f.add(p + "lr", &lr, "peak learning rate", 0.0, 10.0);
    f.add(p + "min_lr", &min_lr, "learning rate at the end of the decay", 0.0, 10.0);
    f.add(p + "warmup_steps", &warmup_steps, "steps of linear warmup from lr / warmup_steps to lr", 0);
    f.add(p + "schedule", &schedule, "decay after warmup", {"cosine", "linear", "constant"});
    f.add(p + "weight_decay", &weight_decay, "decoupled weight decay (AdamW)", 0.0, 10.0);
    f.add(p + "beta1", &beta1, "AdamW first-moment decay", 0.0, 0.999999);
    f.add(p + "beta2", &beta2, "AdamW second-moment decay", 0.0, 0.999999999);
    f.add(p + "eps", &eps, "AdamW epsilon", 0.0, 1.0);
    f.add(p + "grad_clip", &grad_clip, "clip gradients to this global L2 norm; 0 = no clipping", 0.0);
    f.add(p + "no_decay", &no_decay, "parameter kinds exempt from weight decay",
          {"norm", "bias", "embedding", "router"});
}

void OptimConfig::validate() const {
    FRUGAL_CONFIG_CHECK(min_lr <= lr, "optim.min_lr (", min_lr, ") exceeds optim.lr (", lr,
                        "): set min_lr to at most lr");
}

double lr_at(const OptimConfig& cfg, int64_t step, int64_t total_steps) {
    if (cfg.warmup_steps > 0 && step < cfg.warmup_steps) return cfg.lr * double(step + 1) / double(cfg.warmup_steps);
    if (cfg.schedule == "constant") return cfg.lr;
    const int64_t decay_steps = std::max<int64_t>(1, total_steps - cfg.warmup_steps - 1);
    double progress = std::min(1.0, double(step - cfg.warmup_steps) / double(decay_steps));
    double factor = cfg.schedule == "cosine" ? 0.5 * (1.0 + std::cos(M_PI * progress)) : 1.0 - progress;
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * factor;
}

AdamW::AdamW(const OptimConfig& cfg, std::vector<OptimParam> params, bool bf16_state, backend::Backend& be)
    : be_(be), cfg_(cfg), params_(std::move(params)), bf16_state_(bf16_state) {
    const DType dtype = bf16_state ? DType::kBF16 : DType::kF32;
    for (const OptimParam& p : params_) {
        m_.push_back(Tensor::zeros({p.numel}, dtype, be_.allocator()));
        v_.push_back(Tensor::zeros({p.numel}, dtype, be_.allocator()));
    }
}

int64_t AdamW::state_bytes() const {
    int64_t n = 0;
    for (size_t i = 0; i < m_.size(); ++i) n += int64_t(m_[i].nbytes() + v_[i].nbytes());
    return n;
}

void AdamW::step(double lr) {
    ++t_;
    const double bc1 = 1.0 - std::pow(cfg_.beta1, double(t_));
    const double bc2 = 1.0 - std::pow(cfg_.beta2, double(t_));
    const float b1 = float(cfg_.beta1), b2 = float(cfg_.beta2);
    const float step_size = float(lr / bc1);
    const float inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
    const float eps = float(cfg_.eps);
    for (size_t i = 0; i < params_.size(); ++i) {
        const OptimParam& p = params_[i];
        if (p.frozen) continue;
        const float decay = p.decay ? float(1.0 - lr * cfg_.weight_decay) : 1.0f;
        be_.adamw_update(p.value, p.grad, m_[i].raw_data(), v_[i].raw_data(), bf16_state_, p.numel, b1, b2, step_size,
                         inv_sqrt_bc2, eps, decay);
    }
}

double grad_sq_sum(const std::vector<OptimParam>& params, backend::Backend& be) {
    double total = 0;
    for (const OptimParam& p : params) total += be.sum_squares(p.grad, p.numel);
    return total;
}

void scale_grads(const std::vector<OptimParam>& params, float factor, backend::Backend& be) {
    for (const OptimParam& p : params) be.scale(p.grad, p.numel, factor);
}

}  // namespace frugal::optim
