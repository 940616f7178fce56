#include "accounting/report.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include "core/error.h"
#include "core/json.h"

namespace frugal::accounting {

double CostReport::device_hours() const {
    double s = 0;
    for (double x : device_seconds) s += x;
    return s / 3600.0;
}

double CostReport::mfu() const {
    const double peak = peak_tflops_per_device * 1e12 * double(ranks);
    return peak > 0 ? tokens_per_s() * flops_per_token / peak : 0;
}

double CostReport::projection_device_hours() const {
    const double tps = tokens_per_s();
    return tps > 0 ? projection_tokens / tps * double(ranks) / 3600.0 : 0;
}

std::string to_json(const CostReport& r) {
    JsonWriter w;
    w.begin_object()
        .field("device", r.device)
        .field("device_name", r.device_name)
        .field("price_per_hour", r.price_per_hour)
        .field("ranks", r.ranks)
        .field("device_hours", r.device_hours())
        .field("cost_usd", r.cost_usd());
    w.key("phases").begin_object();
    for (int i = 0; i < kNumPhases; ++i) {
        const double h = r.device_seconds[size_t(i)] / 3600.0;
        w.key(phase_name(Phase(i)))
            .begin_object()
            .field("device_hours", h)
            .field("share", r.device_hours() > 0 ? h / r.device_hours() : 0.0)
            .field("cost_usd", h * r.price_per_hour)
            .end_object();
    }
    w.end_object()
        .field("tokens", r.tokens)
        .field("train_seconds", r.train_seconds)
        .field("tokens_per_s", r.tokens_per_s())
        .field("flops_per_token", r.flops_per_token)
        .field("peak_tflops_per_device", r.peak_tflops_per_device)
        .field("peak_source", r.peak_source)
        .field("mfu", r.mfu());
    w.key("projection")
        .begin_object()
        .field("tokens", r.projection_tokens)
        .field("device_hours", r.projection_device_hours())
        .field("cost_usd", r.projection_device_hours() * r.price_per_hour)
        .field("wall_days", r.projection_device_hours() / double(r.ranks) / 24.0)
        .end_object();
    return w.end_object().str();
}

CostReport read_cost_json(const std::string& path) {
    YAML::Node n;
    try {
        n = YAML::LoadFile(path);  // JSON is YAML
    } catch (const YAML::Exception& e) {
        FRUGAL_CONFIG_ERROR("cannot read ", path, ": ", e.what(), " (is it a Frugal run directory?)");
    }
    CostReport r;
    try {
        r.device = n["device"].as<std::string>();
        r.device_name = n["device_name"].as<std::string>();
        r.price_per_hour = n["price_per_hour"].as<double>();
        r.ranks = n["ranks"].as<int64_t>();
        for (int i = 0; i < kNumPhases; ++i)
            r.device_seconds[size_t(i)] = n["phases"][phase_name(Phase(i))]["device_hours"].as<double>() * 3600.0;
        r.tokens = n["tokens"].as<double>();
        r.train_seconds = n["train_seconds"].as<double>();
        r.flops_per_token = n["flops_per_token"].as<double>();
        r.peak_tflops_per_device = n["peak_tflops_per_device"].as<double>();
        if (n["peak_source"]) r.peak_source = n["peak_source"].as<std::string>();
        r.projection_tokens = n["projection"]["tokens"].as<double>();
    } catch (const YAML::Exception& e) {
        FRUGAL_CONFIG_ERROR(path, " lacks a field of the cost report: ", e.what());
    }
    return r;
}

namespace {
std::string dollars(double v) {
    std::ostringstream os;
    os << std::fixed << std::setprecision(v >= 100 ? 2 : 4) << "$" << v;
    return os.str();
}
}  // namespace

std::string format_report(const CostReport& r) {
    std::ostringstream os;
    os << std::fixed;
    os << "cost report: " << r.ranks << " x " << r.device_name << " (" << r.device << ") at $" << std::setprecision(2)
       << r.price_per_hour << " per device-hour\n";
    os << "  phase            device-hours    share      dollars\n";
    for (int i = 0; i < kNumPhases; ++i) {
        const double h = r.device_seconds[size_t(i)] / 3600.0;
        os << "  " << std::left << std::setw(15) << phase_name(Phase(i)) << std::right << std::setw(14)
           << std::setprecision(5) << h << std::setw(8) << std::setprecision(1)
           << (r.device_hours() > 0 ? 100 * h / r.device_hours() : 0) << "%" << std::setw(13)
           << dollars(h * r.price_per_hour) << "\n";
    }
    os << "  " << std::left << std::setw(15) << "total" << std::right << std::setw(14) << std::setprecision(5)
       << r.device_hours() << std::setw(9) << "100.0%" << std::setw(13) << dollars(r.cost_usd()) << "\n";
    os << std::setprecision(1) << "  throughput " << r.tokens_per_s() << " tokens/s, " << std::setprecision(2)
       << r.flops_per_token / 1e6 << " MFLOP/token (6 per matmul parameter + causal attention); MFU "
       << std::setprecision(2) << 100 * r.mfu() << "% of " << r.ranks << " x " << std::setprecision(3)
       << r.peak_tflops_per_device << " TFLOP/s peak";
    if (!r.peak_source.empty()) os << " (" << r.peak_source << ")";
    os << "\n";
    if (r.projection_tokens > 0 && r.tokens_per_s() > 0)
        os << std::setprecision(0) << "  projection: " << r.projection_tokens
           << " tokens at this throughput = " << std::setprecision(2) << r.projection_device_hours()
           << " device-hours, " << r.projection_device_hours() / double(r.ranks) / 24.0 << " days on " << r.ranks
           << " devices, $" << r.projection_device_hours() * r.price_per_hour << "\n";
    return os.str();
}

}  // namespace frugal::accounting
