// Validation loss: the first train.eval_batches micro-batches of the validation shard, whatever the layout. Batch i
// goes to data-parallel rank i mod ranks; every rank runs the same number of forward passes (the all-to-all needs
// them all), and a rank without a batch in the last round runs batch 0 with every target ignored.
#pragma once

#include "trainer/session.h"

namespace frugal::trainer {

// Collective: mean cross-entropy over the valid targets of the validation batches. Uses the session's step buffers
// (the training step's tokens are consumed by then).
double evaluate(Session& s);

bool evaluation_due(const TrainConfig& cfg, int64_t steps_done, bool finished);

}  // namespace frugal::trainer
