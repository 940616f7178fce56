#include "trainer/cost_meter.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>

#include "accounting/flops.h"
#include "accounting/hardware.h"
#include "core/file_io.h"
#include "core/json.h"
#include "core/log.h"

namespace frugal::trainer {

namespace fs = std::filesystem;

namespace {

// Device-seconds the previous attempt of this run spent after the state it resumes from: its last cost.json total
// minus what the checkpoint carried.
double lost_device_seconds(const TrainConfig& cfg, const accounting::PhaseSeconds& carried) {
    const fs::path cost = fs::path(cfg.run.out_dir) / "cost.json";
    if (!fs::exists(cost)) return 0;
    try {
        accounting::CostReport prev = accounting::read_cost_json(cost.string());
        double carried_total = 0;
        for (double x : carried) carried_total += x;
        const double lost = prev.device_hours() * 3600.0 - carried_total;
        if (lost > 0) log::warn("accounting: ", lost / 3600.0, " device-hours of the previous attempt were lost");
        return std::max(0.0, lost);
    } catch (const Error&) {
        return 0;
    }
}

}  // namespace

RunCost::RunCost(const TrainConfig& cfg, parallel::Communicator& world, int64_t ranks, accounting::Meter& meter,
                 const accounting::PhaseSeconds& carried)
    : world_(world), meter_(meter), carried_(carried), path_((fs::path(cfg.run.out_dir) / "cost.json").string()) {
    const auto catalogue = accounting::load_catalogue(cfg.accounting.hardware);
    const accounting::Device device = accounting::find_device(catalogue, cfg.accounting.device, "accounting.device");
    report_.device = device.key;
    report_.device_name = device.name;
    report_.price_per_hour = cfg.accounting.price_per_hour > 0 ? cfg.accounting.price_per_hour : device.price_per_hour;
    report_.ranks = ranks;
    report_.flops_per_token = accounting::training_flops_per_token(cfg.model, cfg.train.seq_len);
    // The cpu device's peak is measured here, on this rank's threads (the session has set them).
    report_.set_peak(accounting::device_peak(device, cfg.precision.recipe.rfind("fp8", 0) == 0, ranks));
    report_.projection_tokens = cfg.accounting.projection_tokens;
    if (world.rank() == 0 && cfg.checkpoint.resume == "auto")
        carried_[size_t(accounting::Phase::kLost)] += lost_device_seconds(cfg, carried_);
    world.set_layer("accounting");
    world.broadcast(carried_.data(), accounting::kNumPhases, DType::kF64, 0);
}

accounting::PhaseSeconds RunCost::totals() {
    accounting::PhaseSeconds mine = meter_.snapshot();
    world_.set_layer("accounting");
    world_.all_reduce(mine.data(), accounting::kNumPhases, DType::kF64, parallel::ReduceOp::kSum);
    for (int i = 0; i < accounting::kNumPhases; ++i) mine[size_t(i)] += carried_[size_t(i)];
    return mine;
}

const accounting::CostReport& RunCost::update(double tokens, double train_seconds, bool durable) {
    report_.device_seconds = totals();
    report_.tokens = tokens;
    report_.train_seconds = train_seconds;
    if (world_.rank() == 0) write_file_atomic(path_, accounting::to_json(report_), durable);
    return report_;
}

std::string phases_json(const accounting::PhaseSeconds& p) {
    JsonWriter w;
    w.begin_object();
    for (int i = 0; i < accounting::kNumPhases; ++i)
        w.field(accounting::phase_name(accounting::Phase(i)), p[size_t(i)]);
    std::string out = w.end_object().str();
    out.pop_back();  // the document's final newline
    return out;
}

accounting::PhaseSeconds parse_phases(const std::string& json) {
    accounting::PhaseSeconds p{};
    if (json.empty()) return p;
    YAML::Node n = YAML::Load(json);
    for (int i = 0; i < accounting::kNumPhases; ++i)
        if (n[accounting::phase_name(accounting::Phase(i))])
            p[size_t(i)] = n[accounting::phase_name(accounting::Phase(i))].as<double>();
    return p;
}

}  // namespace frugal::trainer
