// One training step on this rank, as DESIGN.md draws it: load the global batch's micro-batches for this rank ->
// for each, forward + backward with the loss scales of model/transformer.h -> gradient synchronization -> global
// gradient norm -> NaN/Inf guard (train.nonfinite) -> clip -> AdamW -> expert loads summed over ranks -> expert-bias
// update. Every collective runs on every rank in the same order, whatever the step's outcome.
#pragma once

#include <vector>

#include "accounting/meter.h"
#include "trainer/session.h"
#include "trainer/trainer.h"

namespace frugal::trainer {

class TrainStep {
  public:
    explicit TrainStep(Session& s);

    // Collective: step `step` (0-based), whose first global sample is first_sample. Returns its metrics without
    // the validation loss and the rates (the loop adds those); charges data, compute and communication time.
    StepMetrics run(int64_t step, int64_t first_sample, accounting::Meter& meter);

    int64_t skipped_steps() const { return skipped_steps_; }
    int64_t skipped_in_a_row() const { return skipped_in_a_row_; }

  private:
    // This rank's micro-batches into the session's buffers; valid_ gets the number of valid targets among them: of
    // the main loss, then of each MTP module.
    void load_batch(int64_t first_sample);
    // Forward and backward of every micro-batch, valid_ holding the global counts; sums_[0] += cross-entropy,
    // sums_[1] += scaled aux + z losses, sums_[2 + k] += MTP module k's cross-entropy.
    void forward_backward();
    // The update, unless the loss or gradient norm is not finite (then skipped, or an error: train.nonfinite).
    void update(StepMetrics& sm);
    // Expert loads of every MoE layer summed over ranks, into the routers' statistics and (after an update) their
    // bias; the step's worst imbalance and dropped tokens into sm.
    void reduce_expert_load(StepMetrics& sm);

    Session& s_;
    std::vector<int64_t> counts_;  // [selected per expert (E), processed per expert (E), dropped (1)]
    std::vector<int64_t> valid_;   // [main, MTP module 1..D] valid targets
    std::vector<double> sums_;     // [cross-entropy, scaled aux + z, MTP module 1..D cross-entropy]
    std::vector<int32_t> shift_tokens_, shift_targets_;  // host scratch of model::mtp_shift
    int64_t skipped_steps_ = 0, skipped_in_a_row_ = 0;
};

}  // namespace frugal::trainer
