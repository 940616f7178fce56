#include "trainer/trainer.h"

#include <chrono>
#include <filesystem>
#include <iomanip>

#include "accounting/meter.h"
#include "checkpoint/hf.h"
#include "core/file_io.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/signals.h"
#include "trainer/checkpointing.h"
#include "trainer/cost_meter.h"
#include "trainer/evaluation.h"
#include "trainer/fault.h"
#include "trainer/metrics_output.h"
#include "trainer/run_guard.h"
#include "trainer/session.h"
#include "trainer/step.h"

namespace frugal::trainer {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

bool is_inside(const std::string& path, const std::string& dir) {
    const std::string p = fs::weakly_canonical(fs::absolute(path)).string(),
                      d = fs::weakly_canonical(fs::absolute(dir)).string();
    return p == d || (p.size() > d.size() && p.compare(0, d.size(), d) == 0 && p[d.size()] == '/');
}

// What the run holds while it writes (rank 0): every directory it will write is writable and locked, and the
// export target can be replaced. Checked before anything is built, so a mistake costs nothing.
struct OutputClaim {
    DirLock out_dir, ckpt_dir;
};
OutputClaim claim_outputs(const TrainConfig& cfg) {
    OutputClaim claim;
    check_writable_dir(cfg.run.out_dir, "run.out_dir");
    claim.out_dir = DirLock(cfg.run.out_dir, "run.out_dir");
    const std::string ckpt_dir = checkpoint_dir(cfg);
    if (cfg.checkpoint.every > 0 || cfg.checkpoint.resume == "auto") {
        check_writable_dir(ckpt_dir, "checkpoint.dir");
        if (!is_inside(ckpt_dir, cfg.run.out_dir)) claim.ckpt_dir = DirLock(ckpt_dir, "checkpoint.dir");
    }
    if (!cfg.checkpoint.export_hf.empty()) {
        checkpoint::check_export_target(cfg.checkpoint.export_hf, "checkpoint.export_hf", false);
        check_writable_dir(fs::absolute(cfg.checkpoint.export_hf).parent_path().string(), "checkpoint.export_hf");
    }
    return claim;
}

// Collective: a stop request (SIGTERM, SIGINT, ...) on any rank stops every rank after this step, with a
// checkpoint. Returns the signal (0: none).
int agree_on_stop(parallel::Communicator& world) {
    int64_t stop = stop_signal();
    world.set_layer("stop request");
    world.all_reduce(&stop, 1, DType::kI64, parallel::ReduceOp::kMax);
    return int(stop);
}

void summarize(TrainResult& result, const Session& s, double seconds) {
    result.seconds = seconds;
    result.tokens = int64_t(result.history.size()) * s.tokens_per_step();
    if (!result.history.empty()) {
        result.first_loss = result.history.front().loss;
        result.final_loss = result.history.back().loss;
        result.final_val_loss = result.history.back().val_loss;
    }
}

}  // namespace

TrainResult train(TrainConfig& cfg, const std::function<void(const StepMetrics&)>& on_step) {
    parallel::SingleProcessComm world;
    return train(cfg, world, on_step);
}

TrainResult train(TrainConfig& cfg, parallel::Communicator& world,
                  const std::function<void(const StepMetrics&)>& on_step) {
    accounting::Meter meter;
    const parallel::ParallelDims dims =
        parallel::ParallelDims::make(world.size(), world.rank(), cfg.parallel.ep, cfg.model.moe.n_experts);
    OutputClaim claim;
    if (dims.rank == 0) claim = claim_outputs(cfg);
    Session s(cfg, world, dims);
    Checkpointer checkpoints(s);
    const StartPoint start = checkpoints.start();
    MetricsOutput out(s, start.step);
    log_session(s);
    RunCost cost(cfg, world, dims.world, meter, start.accounting);
    TrainStep train_step(s);

    TrainResult result;
    meter.charge(accounting::Phase::kStartup, meter.wall());
    const auto t_start = Clock::now();
    for (int64_t step = start.step; step < cfg.train.steps; ++step) {
        // Global index of this step's first sample: continues from where the checkpoint left the data stream.
        const int64_t first_sample = start.data_position + (step - start.step) * cfg.train.global_batch;
        const int64_t done = step + 1;
        world.set_step(done);
        inject_fault_at_step(cfg, dims.rank, done);
        StepMetrics sm = train_step.run(step, first_sample, meter);
        out.count_step(s.tokens_per_step());
        const int stop = agree_on_stop(world);
        const bool finished = done == cfg.train.steps, last = finished || stop != 0;
        out.record_progress(done);
        if (checkpoints.due(done, last))
            checkpoints.save(done, first_sample + cfg.train.global_batch, cost.totals(), meter);
        const bool log_step = out.due(done, last);
        const MoeSnapshot moe = log_step ? out.moe_snapshot() : MoeSnapshot{};
        if (evaluation_due(cfg, done, finished)) {
            accounting::Meter::Scope eval(meter, accounting::Phase::kEvaluation);
            sm.val_loss = evaluate(s);
        }
        sm.elapsed_s = seconds_since(t_start);
        if (log_step) {
            sm.tokens_per_s = out.take_tokens_per_s();
            const double tokens = double((done - start.step) * s.tokens_per_step());
            out.log_line(sm, moe, cost.update(tokens, seconds_since(t_start), false), train_step.skipped_steps());
        }
        if (on_step) on_step(sm);
        result.history.push_back(sm);
        if (stop != 0) {
            result.stop_signal = stop;
            log::warn("stopped by ", signal_name(stop), " after step ", done, " of ", cfg.train.steps,
                      cfg.checkpoint.every > 0 ? "; continue with --set checkpoint.resume=auto"
                                               : " (no checkpoint: checkpoint.every is 0)");
            break;
        }
    }
    summarize(result, s, seconds_since(t_start));
    result.skipped_steps = train_step.skipped_steps();
    if (!cfg.checkpoint.export_hf.empty() && start.step < cfg.train.steps && result.stop_signal == 0)
        export_final_model(s);
    const accounting::CostReport& report = cost.update(double(result.tokens), result.seconds, true);
    out.close();
    const int64_t steps_run = int64_t(result.history.size());
    FRUGAL_CHECK(train_step.skipped_in_a_row() == 0, "the run ended with ", train_step.skipped_in_a_row(),
                 " step(s) in a row whose loss or gradient norm was not finite (", result.skipped_steps, " of ",
                 steps_run,
                 " skipped under train.nonfinite: skip): the model is not training. Lower optim.lr, raise "
                 "optim.warmup_steps, or check the data; the last checkpoint holds the last finite state");
    log::info(result.stop_signal ? "stopped: " : "done: ", steps_run, " steps, ", result.tokens, " tokens in ",
              std::fixed, std::setprecision(1), result.seconds, " s (", std::setprecision(0),
              double(result.tokens) / result.seconds, " tokens/s); loss ", std::setprecision(4), result.first_loss,
              " -> ", result.final_loss, ", validation loss ", result.final_val_loss, "; skipped steps ",
              result.skipped_steps, "; outputs in ", cfg.run.out_dir);
    log::info("memory: peak resident ", std::setprecision(3), double(peak_rss_bytes()) / 1e9, " GB on rank 0");
    if (s.node_layout.ranks_per_node > 0 && s.node_layout.ranks_per_node < s.dims.ep && steps_run > 0) {
        const double bytes = double(parallel::moe_bytes_to_other_nodes(s.net));
        log::info("MoE exchange: rank 0 sent ", std::fixed, std::setprecision(2), bytes / 1e6, " MB to other nodes in ", steps_run,
                  " steps (", bytes / 1e6 / double(steps_run), " MB per step, evaluation included; ",
                  "parallel.dispatch: ", cfg.parallel.dispatch, ")");
    }
    log::info(accounting::format_report(report), "  written to ", cost.path());
    return result;
}

}  // namespace frugal::trainer
