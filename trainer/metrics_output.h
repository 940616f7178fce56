// What a run tells its user as it goes (rank 0 writes the files): a progress line every run.log_every steps (and
// at the first and last) with loss, validation loss, learning rate, gradient norm, tokens/s, expert imbalance,
// cost so far and elapsed time; the same figures plus per-layer MoE statistics as one JSON record per line in
// run.out_dir/metrics.jsonl; the same scalars as TensorBoard event files in run.out_dir/tb/ (docs/tensorboard.md);
// the resolved config in run.out_dir/config.yaml; the last completed step in run.out_dir/progress (for the
// accounting of lost steps after a failure).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "accounting/report.h"
#include "core/file_io.h"
#include "trainer/session.h"
#include "trainer/tensorboard.h"
#include "trainer/trainer.h"

namespace frugal::trainer {

// The MoE layers' statistics of one step, taken before validation (whose forward passes also go through the
// routers).
struct MoeSnapshot {
    struct Layer {
        int64_t layer;                           // index among all layers
        std::vector<int64_t> tokens_per_expert;  // assignments processed, per global expert
        int64_t dropped;
        double imbalance, aux_loss, z_loss;  // aux and z loss: means over the step's micro-batches
    };
    std::vector<Layer> layers;  // empty without MoE layers
};

class MetricsOutput {
  public:
    // Writes config.yaml and opens metrics.jsonl (truncated on a fresh start, appended to on a resume).
    MetricsOutput(Session& s, int64_t start_step);

    // Counts a step's tokens toward the next progress line's tokens/s.
    void count_step(int64_t tokens) { window_tokens_ += tokens; }
    void record_progress(int64_t steps_done);
    bool due(int64_t steps_done, bool last) const;
    MoeSnapshot moe_snapshot() const;
    // Tokens per second since the previous progress line; starts the next window.
    double take_tokens_per_s();
    // skipped_steps: steps skipped so far in this attempt (train.nonfinite: skip).
    void log_line(const StepMetrics& sm, const MoeSnapshot& moe, const accounting::CostReport& cost,
                  int64_t skipped_steps);
    void close();

  private:
    using Clock = std::chrono::steady_clock;
    Session& s_;
    AppendFile metrics_;
    std::unique_ptr<TensorBoardWriter> tb_;
    Clock::time_point window_start_;
    int64_t window_tokens_ = 0;
};

}  // namespace frugal::trainer
