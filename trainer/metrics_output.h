// What a run tells its user as it goes (rank 0 writes the files): a progress line every run.log_every steps (and
// at the first and last) with loss, validation loss, learning rate, gradient norm, tokens/s, expert imbalance,
// cost so far and elapsed time; the same figures plus per-layer MoE statistics as one JSON record per line in
// run.out_dir/metrics.jsonl; the resolved config in run.out_dir/config.yaml; the last completed step in
// run.out_dir/progress (for the accounting of lost steps after a failure).
#pragma once

#include <chrono>
#include <string>

#include "accounting/report.h"
#include "core/file_io.h"
#include "trainer/session.h"
#include "trainer/trainer.h"

namespace frugal::trainer {

class MetricsOutput {
  public:
    // Writes config.yaml and opens metrics.jsonl (truncated on a fresh start, appended to on a resume).
    MetricsOutput(Session& s, int64_t start_step);

    // Counts a step's tokens toward the next progress line's tokens/s.
    void count_step(int64_t tokens) { window_tokens_ += tokens; }
    void record_progress(int64_t steps_done);
    bool due(int64_t steps_done, bool last) const;
    // Per-layer MoE statistics of the step just taken, as JSON; taken before validation, whose forward passes also
    // go through the routers ("" without MoE layers).
    std::string moe_stats_json() const;
    // Tokens per second since the previous progress line; starts the next window.
    double take_tokens_per_s();
    void log_line(const StepMetrics& sm, const std::string& moe_json, const accounting::CostReport& cost);
    void close();

  private:
    using Clock = std::chrono::steady_clock;
    Session& s_;
    AppendFile metrics_;
    Clock::time_point window_start_;
    int64_t window_tokens_ = 0;
};

// v as JSON: null when not finite.
std::string json_number(double v);

}  // namespace frugal::trainer
