#include "trainer/metrics_output.h"

#include <cmath>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include "core/json.h"
#include "core/log.h"

namespace frugal::trainer {

namespace fs = std::filesystem;

MetricsOutput::MetricsOutput(Session& s, int64_t start_step) : s_(s), window_start_(Clock::now()) {
    if (!s.is_root()) return;
    write_file_atomic((fs::path(s.cfg.run.out_dir) / "config.yaml").string(), to_yaml(s.cfg));
    metrics_ = AppendFile((fs::path(s.cfg.run.out_dir) / "metrics.jsonl").string(), start_step == 0);
    tb_ = std::make_unique<TensorBoardWriter>((fs::path(s.cfg.run.out_dir) / "tb").string());
    // A resumed run computes the steps after its checkpoint again: TensorBoard drops what an earlier attempt logged
    // for them.
    if (start_step > 0) tb_->add_session_start(start_step + 1);
}

void MetricsOutput::record_progress(int64_t steps_done) {
    if (s_.is_root())
        write_file_atomic((fs::path(s_.cfg.run.out_dir) / "progress").string(), std::to_string(steps_done) + "\n",
                          false);
}

bool MetricsOutput::due(int64_t steps_done, bool last) const {
    return last || steps_done % s_.cfg.run.log_every == 0 || steps_done == 1;
}

MoeSnapshot MetricsOutput::moe_snapshot() const {
    MoeSnapshot snap;
    const model::ModelConfig& m = s_.cfg.model;
    size_t i = 0;
    for (int64_t l : m.moe_block_indices()) {  // MTP blocks as layers n_layers + k
        const model::MoEStats& st = s_.moe_layers[i++]->router().stats();
        const double micro = double(std::max<int64_t>(st.micro_batches, 1));
        snap.layers.push_back(
            {l, st.tokens_per_expert, st.dropped, st.imbalance(), st.aux_loss / micro, st.z_loss / micro});
    }
    return snap;
}

double MetricsOutput::take_tokens_per_s() {
    const double seconds = std::chrono::duration<double>(Clock::now() - window_start_).count();
    const double rate = double(window_tokens_) / std::max(1e-9, seconds);
    window_start_ = Clock::now();
    window_tokens_ = 0;
    return rate;
}

void MetricsOutput::log_line(const StepMetrics& sm, const MoeSnapshot& moe, const accounting::CostReport& cost,
                             int64_t skipped_steps) {
    std::ostringstream line;
    line << std::fixed << "step " << std::setw(5) << sm.step << "/" << s_.cfg.train.steps << "  loss "
         << std::setprecision(4) << sm.loss;
    if (sm.mtp_loss >= 0) line << "  mtp " << std::setprecision(4) << sm.mtp_loss;
    if (sm.val_loss >= 0) line << "  val " << std::setprecision(4) << sm.val_loss;
    line << "  lr " << std::scientific << std::setprecision(2) << sm.lr << std::fixed << "  gnorm "
         << std::setprecision(3) << sm.grad_norm << "  tok/s " << std::setprecision(0) << sm.tokens_per_s;
    if (!s_.moe_layers.empty()) line << "  imbalance " << std::setprecision(2) << sm.max_imbalance;
    line << "  cost $" << std::setprecision(4) << cost.cost_usd();
    line << "  elapsed " << std::setprecision(1) << sm.elapsed_s << "s";
    log::info(line.str());
    if (!s_.is_root()) return;
    JsonWriter rec;
    rec.begin_object()
        .field("step", sm.step)
        .field("loss", sm.loss)
        .field("aux_loss", sm.aux_loss)
        .field("lr", sm.lr)
        .field("grad_norm", sm.grad_norm)
        .field("tokens_per_s", sm.tokens_per_s)
        .field("max_imbalance", sm.max_imbalance)
        .field("dropped", sm.dropped)
        .field("elapsed_s", sm.elapsed_s);
    if (sm.val_loss >= 0) rec.field("val_loss", sm.val_loss);
    if (sm.mtp_loss >= 0) rec.field("mtp_loss", sm.mtp_loss);
    if (sm.skipped) rec.field("skipped", true);
    if (!moe.layers.empty()) {
        rec.key("moe").begin_array();
        for (const MoeSnapshot::Layer& l : moe.layers)
            rec.begin_object()
                .field("layer", l.layer)
                .array("tokens_per_expert", l.tokens_per_expert)
                .field("dropped", l.dropped)
                .field("imbalance", l.imbalance)
                .field("aux_loss", l.aux_loss)
                .field("z_loss", l.z_loss)
                .end_object();
        rec.end_array();
    }
    metrics_.append(rec.end_object().str());

    const int64_t step = sm.step;
    tb_->add_scalar("train/loss", step, sm.loss);
    tb_->add_scalar("train/aux_loss", step, sm.aux_loss);
    if (sm.mtp_loss >= 0) tb_->add_scalar("train/mtp_loss", step, sm.mtp_loss);
    if (sm.val_loss >= 0) tb_->add_scalar("val/loss", step, sm.val_loss);
    tb_->add_scalar("train/lr", step, sm.lr);
    tb_->add_scalar("train/grad_norm", step, sm.grad_norm);
    tb_->add_scalar("perf/tokens_per_s", step, sm.tokens_per_s);
    tb_->add_scalar("cost/usd_so_far", step, cost.cost_usd());
    tb_->add_scalar("train/skipped_steps", step, double(skipped_steps));
    for (const MoeSnapshot::Layer& l : moe.layers) {
        const std::string prefix = "moe/layer_" + std::to_string(l.layer) + "/";
        tb_->add_scalar(prefix + "imbalance", step, l.imbalance);
        tb_->add_scalar(prefix + "dropped_tokens", step, double(l.dropped));
    }
    tb_->flush();
}

void MetricsOutput::close() {
    if (!s_.is_root()) return;
    metrics_.close();
    tb_->close();
}

}  // namespace frugal::trainer
