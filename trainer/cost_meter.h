// The run's bill as it runs: the meter's phases summed over ranks, plus what the checkpoint carried from earlier
// attempts and what a failure lost since that checkpoint; priced by accounting.device (configs/hardware.yaml) and
// written to run.out_dir/cost.json at every log line and at the end (rank 0).
#pragma once

#include <string>

#include "accounting/meter.h"
#include "accounting/report.h"
#include "parallel/communicator.h"
#include "trainer/run_config.h"

namespace frugal::trainer {

class RunCost {
  public:
    // Collective (rank 0's carried seconds are broadcast). carried: the phases a resumed checkpoint carried; on a
    // resume (checkpoint.resume: auto) rank 0 adds, as lost, what the previous attempt spent after that checkpoint.
    RunCost(const TrainConfig& cfg, parallel::Communicator& world, int64_t ranks, accounting::Meter& meter,
            const accounting::PhaseSeconds& carried);

    // Collective: device-seconds per phase of every rank and attempt so far.
    accounting::PhaseSeconds totals();
    // Collective: the report with the device-seconds so far and this attempt's tokens and wall time; rank 0 writes
    // it to cost.json (durable: fsync'ed, for the final report).
    const accounting::CostReport& update(double tokens, double train_seconds, bool durable);
    const accounting::CostReport& report() const { return report_; }
    const std::string& path() const { return path_; }

  private:
    parallel::Communicator& world_;
    accounting::Meter& meter_;
    accounting::CostReport report_;
    accounting::PhaseSeconds carried_;
    std::string path_;
};

// The phases as a JSON object (checkpoints carry it), and back.
std::string phases_json(const accounting::PhaseSeconds& p);
accounting::PhaseSeconds parse_phases(const std::string& json);

}  // namespace frugal::trainer
