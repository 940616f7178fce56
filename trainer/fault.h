// Fault injection (fault.* keys): a drill of the failure paths a long run meets — a rank that throws, one that hangs
// and one that dies, at a given step or in the middle of writing a checkpoint. Each fault fires once per run
// directory (a marker file), so a restarted run goes past it.
#pragma once

#include <cstdint>
#include <functional>

#include "trainer/run_config.h"

namespace frugal::trainer {

// At the start of step `step` (1-based) on `rank`: fires the configured throw, hang or kill when due.
void inject_fault_at_step(const TrainConfig& cfg, int64_t rank, int64_t step);

// The fault to fire between writing and committing the checkpoint of step `step` (fault.kind: kill_in_checkpoint,
// with fault.kill_rank 0: checkpoint::save runs it on rank 0), for checkpoint::save; empty when none is due.
std::function<void()> checkpoint_fault(const TrainConfig& cfg, int64_t step);

}  // namespace frugal::trainer
