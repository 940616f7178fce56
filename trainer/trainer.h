// The training loop: the only place that wires model, optimizer, data and parallelism together. It reads as the
// loop it is; each piece has its own file:
//   session.h        the layout, communicators, loaders, model, optimizer and step buffers, built once
//   step.h           one training step (forward/backward of every micro-batch, gradient sync, NaN/Inf guard, clip,
//                    AdamW, expert loads and bias) returning its metrics
//   checkpointing.h  what a checkpoint holds, where a run starts (fresh or resumed), the periodic save, the export
//   evaluation.h     the validation loss, every train.eval_every steps and after the last one
//   metrics_output.h progress lines, metrics.jsonl, config.yaml, progress
//   cost_meter.h     the run's device-seconds and dollars, cost.json
//   fault.h          fault injection (fault.*)
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "trainer/run_config.h"

namespace frugal::trainer {

struct StepMetrics {
    int64_t step = 0;      // 1-based: steps completed
    double loss = 0;       // mean cross-entropy over the global batch
    double aux_loss = 0;   // balancing + z loss, summed over layers, mean over micro-batches
    double mtp_loss = -1;  // mean over the MTP modules of their mean cross-entropy (< 0 without MTP modules)
    double val_loss = -1;  // < 0 when validation did not run this step
    double lr = 0;
    double grad_norm = 0;
    double tokens_per_s = 0;
    double max_imbalance = 1;  // worst max/mean expert load over the MoE layers
    int64_t dropped = 0;
    double elapsed_s = 0;
    bool skipped = false;
};

struct TrainResult {
    std::vector<StepMetrics> history;  // every step
    double first_loss = 0, final_loss = 0, final_val_loss = -1;
    int64_t tokens = 0;
    double seconds = 0;
    int64_t skipped_steps = 0;
    int stop_signal = 0;  // the signal that stopped the run early (0: it ran to train.steps)
};

// Runs cfg (already validated) on the ranks of world; every rank calls it. on_step, if set, is called after every
// step (tests use it). The first overload runs on a single process.
TrainResult train(TrainConfig& cfg, const std::function<void(const StepMetrics&)>& on_step = {});
TrainResult train(TrainConfig& cfg, parallel::Communicator& world,
                  const std::function<void(const StepMetrics&)>& on_step = {});

}  // namespace frugal::trainer
