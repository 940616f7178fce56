#include "trainer/fault.h"

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/error.h"
#include "core/log.h"

namespace frugal::trainer {

namespace fs = std::filesystem;

namespace {

// The configured fault, once per run directory.
void inject_fault(const TrainConfig& cfg) {
    const fs::path marker = fs::path(cfg.run.out_dir) / "fault_injected";
    if (fs::exists(marker)) return;
    fs::create_directories(cfg.run.out_dir);
    std::ofstream(marker) << "rank " << cfg.fault.kill_rank << " step " << cfg.fault.at_step << "\n";
    if (cfg.fault.kind == "throw")
        FRUGAL_THROW("injected fault (fault.kind: throw) at step ", cfg.fault.at_step, " on rank ",
                     cfg.fault.kill_rank);
    if (cfg.fault.kind == "hang") {
        log::error("injected fault: rank ", cfg.fault.kill_rank, " stops responding at step ", cfg.fault.at_step);
        for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    log::error("injected fault: rank ", cfg.fault.kill_rank, " kills itself (SIGKILL) at step ", cfg.fault.at_step);
    std::raise(SIGKILL);
}

}  // namespace

void inject_fault_at_step(const TrainConfig& cfg, int64_t rank, int64_t step) {
    if (cfg.fault.kill_rank == rank && cfg.fault.at_step == step && cfg.fault.kind != "kill_in_checkpoint")
        inject_fault(cfg);
}

std::function<void()> checkpoint_fault(const TrainConfig& cfg, int64_t step) {
    if (cfg.fault.kind == "kill_in_checkpoint" && cfg.fault.kill_rank == 0 && cfg.fault.at_step == step)
        return [&cfg] { inject_fault(cfg); };
    return {};
}

}  // namespace frugal::trainer
