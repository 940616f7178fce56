// The cost report of a run: device-hours and dollars per phase, MFU against the device's peak (and where that peak
// came from: the catalogue, or a measurement on the machine for the `cpu` device; accounting/cpu_peak.h), and a
// projection of the same model trained on a configured number of tokens at the measured throughput. Written to
// run.out_dir/cost.json; `frugal report RUN_DIR` prints it again.
#pragma once

#include <string>

#include "accounting/cpu_peak.h"
#include "accounting/hardware.h"
#include "accounting/meter.h"

namespace frugal::accounting {

struct CostReport {
    std::string device, device_name;
    double price_per_hour = 0;
    int64_t ranks = 1;
    PhaseSeconds device_seconds{};  // summed over ranks and over every attempt of the run
    double tokens = 0;              // tokens trained in this attempt
    double train_seconds = 0;       // wall time of those tokens
    double flops_per_token = 0;
    double peak_tflops_per_device = 0;
    std::string peak_source;  // how peak_tflops_per_device was obtained; "" in cost.json files older than the field
    double projection_tokens = 0;

    void set_peak(const PeakFigure& peak) {
        peak_tflops_per_device = peak.tflops;
        peak_source = peak.source;
    }

    double device_hours() const;
    double cost_usd() const { return device_hours() * price_per_hour; }
    double tokens_per_s() const { return train_seconds > 0 ? tokens / train_seconds : 0; }
    double mfu() const;
    double projection_device_hours() const;
};

std::string to_json(const CostReport& r);
CostReport read_cost_json(const std::string& path);
std::string format_report(const CostReport& r);

}  // namespace frugal::accounting
