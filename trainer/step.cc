#include "trainer/step.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "core/log.h"

namespace frugal::trainer {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

TrainStep::TrainStep(Session& s)
    : s_(s),
      counts_(size_t(2 * std::max<int64_t>(s.cfg.model.moe.n_experts, 1) + 1)),
      valid_(size_t(1 + s.cfg.model.mtp_modules)),
      sums_(size_t(2 + s.cfg.model.mtp_modules)) {}

void TrainStep::load_batch(int64_t first_sample) {
    const int64_t micro = s_.cfg.train.micro_batch, seq = s_.cfg.train.seq_len, n = micro * seq;
    std::fill(valid_.begin(), valid_.end(), int64_t(0));
    shift_tokens_.resize(size_t(n));
    shift_targets_.resize(size_t(n));
    for (int64_t m = 0; m < s_.accum; ++m) {
        int32_t* targets_BS = s_.batch.targets_BS(m);
        s_.train_data.micro_batch(s_.batch.tokens_BS(m), targets_BS, first_sample, m, micro, s_.dims.rank,
                                  s_.dims.world);
        for (int64_t i = 0; i < n; ++i) valid_[0] += targets_BS[i] != model::kIgnoreIndex;
        // Each MTP depth loses the targets past its window: counted here so its loss is a mean over its own.
        for (size_t k = 1; k < valid_.size(); ++k) {
            model::mtp_shift(shift_tokens_.data(), shift_targets_.data(), targets_BS, micro, seq, int64_t(k));
            for (int64_t i = 0; i < n; ++i) valid_[k] += shift_targets_[size_t(i)] != model::kIgnoreIndex;
        }
    }
}

void TrainStep::forward_backward() {
    const int64_t micro = s_.cfg.train.micro_batch, seq = s_.cfg.train.seq_len;
    // The global batch's mean cross-entropy and the mean over its micro-batches of the aux and z losses; each MTP
    // module's mean cross-entropy, weighted lambda / D (DeepSeek-V3 eq. 25).
    const float ce_scale = valid_[0] > 0 ? 1.0f / float(valid_[0]) : 0.0f;
    const float aux_scale = 1.0f / float(s_.accum * s_.dims.world);
    std::vector<float> mtp_scales;
    const double mtp_weight = s_.cfg.model.mtp_loss_weight / double(std::max<size_t>(valid_.size() - 1, 1));
    for (size_t k = 1; k < valid_.size(); ++k)
        mtp_scales.push_back(valid_[k] > 0 ? float(mtp_weight / double(valid_[k])) : 0.0f);
    for (int64_t m = 0; m < s_.accum; ++m) {
        const model::ForwardResult r = s_.net.forward(s_.batch.tokens_BS(m), s_.batch.targets_BS(m), micro, seq,
                                                      s_.batch.document_starts_BS(m, s_.train_data));
        sums_[0] += r.ce_sum;
        sums_[1] += (r.aux_loss + r.z_loss) * aux_scale;
        for (size_t k = 0; k < r.mtp_ce_sum.size(); ++k) sums_[2 + k] += r.mtp_ce_sum[k];
        s_.net.backward(ce_scale, aux_scale, mtp_scales);
    }
}

void TrainStep::update(StepMetrics& sm) {
    const TrainConfig& cfg = s_.cfg;
    if (!std::isfinite(sm.loss) || !std::isfinite(sm.grad_norm)) {
        ++skipped_steps_;
        ++skipped_in_a_row_;
        FRUGAL_CHECK(cfg.train.nonfinite == "skip", "step ", sm.step, ": loss ", sm.loss, ", gradient norm ",
                     sm.grad_norm,
                     " is not finite; stopping (train.nonfinite: stop). Lower optim.lr or raise optim.warmup_steps");
        FRUGAL_CHECK(skipped_in_a_row_ <= cfg.train.max_skipped_steps, "step ", sm.step, ": ", skipped_in_a_row_,
                     " non-finite steps in a row (train.max_skipped_steps = ", cfg.train.max_skipped_steps,
                     "); stopping. Lower optim.lr or raise optim.warmup_steps");
        log::warn("step ", sm.step, ": loss ", sm.loss, ", gradient norm ", sm.grad_norm,
                  " is not finite; update skipped (train.nonfinite: skip)");
        sm.skipped = true;
        return;
    }
    skipped_in_a_row_ = 0;
    if (cfg.optim.grad_clip > 0 && sm.grad_norm > cfg.optim.grad_clip)
        optim::scale_grads(s_.oparams, float(cfg.optim.grad_clip / sm.grad_norm), s_.net.ops().backend());
    s_.opt.step(sm.lr);
    s_.grad_sync.gather_params();
    s_.net.weights_updated();
}

void TrainStep::reduce_expert_load(StepMetrics& sm) {
    // Summed over every rank: the bias update and the statistics see the global batch, so every replica of an
    // expert moves its bias the same way.
    const int64_t e = s_.cfg.model.moe.n_experts;
    for (auto* layer : s_.moe_layers) {
        model::MoEStats& st = layer->router().stats();
        std::copy(st.selected_per_expert.begin(), st.selected_per_expert.end(), counts_.begin());
        std::copy(st.tokens_per_expert.begin(), st.tokens_per_expert.end(), counts_.begin() + e);
        counts_[size_t(2 * e)] = st.dropped;
        s_.world.set_layer("expert load");
        s_.world.all_reduce(counts_.data(), 2 * e + 1, DType::kI64, parallel::ReduceOp::kSum);
        std::copy(counts_.begin(), counts_.begin() + e, st.selected_per_expert.begin());
        std::copy(counts_.begin() + e, counts_.begin() + 2 * e, st.tokens_per_expert.begin());
        st.dropped = counts_[size_t(2 * e)];
        if (!sm.skipped) layer->router().update_bias(st.selected_per_expert);
        sm.max_imbalance = std::max(sm.max_imbalance, st.imbalance());
        sm.dropped += st.dropped;
    }
}

StepMetrics TrainStep::run(int64_t step, int64_t first_sample, accounting::Meter& meter) {
    for (auto* layer : s_.moe_layers) layer->router().stats().reset(s_.cfg.model.moe.n_experts);
    s_.net.params().zero_grad();
    {
        accounting::Meter::Scope data(meter, accounting::Phase::kData);
        load_batch(first_sample);
    }
    const double comm0 = s_.world.context().wait_seconds;
    const auto t_compute = Clock::now();
    s_.world.set_layer("token count");
    s_.world.all_reduce(valid_.data(), int64_t(valid_.size()), DType::kI64, parallel::ReduceOp::kSum);
    const int64_t total_valid = valid_[0];
    std::fill(sums_.begin(), sums_.end(), 0.0);
    forward_backward();
    s_.grad_sync.sync();
    for (const optim::OptimParam& p : s_.oparams)
        if (p.frozen) s_.net.ops().fill(p.grad, p.numel, 0.0f);  // no gradient: out of the norm and the clipping
    s_.world.set_layer("loss");
    s_.world.all_reduce(sums_.data(), int64_t(sums_.size()), DType::kF64, parallel::ReduceOp::kSum);

    StepMetrics sm;
    sm.step = step + 1;
    sm.loss = total_valid > 0 ? sums_[0] / double(total_valid) : 0.0;
    sm.aux_loss = sums_[1];
    if (valid_.size() > 1) {
        sm.mtp_loss = 0;
        for (size_t k = 1; k < valid_.size(); ++k)
            sm.mtp_loss += valid_[k] > 0 ? sums_[1 + k] / double(valid_[k]) : 0.0;
        sm.mtp_loss /= double(valid_.size() - 1);
    }
    sm.grad_norm = std::sqrt(s_.grad_sync.grad_sq_norm());
    sm.lr = optim::lr_at(s_.cfg.optim, step, s_.cfg.train.steps);
    update(sm);
    reduce_expert_load(sm);
    const double comm = s_.world.context().wait_seconds - comm0;
    meter.charge(accounting::Phase::kCompute, seconds_since(t_compute) - comm);
    meter.charge(accounting::Phase::kCommunication, comm);
    return sm;
}

}  // namespace frugal::trainer
