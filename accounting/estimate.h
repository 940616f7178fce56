// `frugal estimate`: the cost of a planned training run, before anyone books a cluster.
#pragma once

#include <string>

#include "accounting/flops.h"
#include "accounting/hardware.h"

namespace frugal::accounting {

// "14.8T", "180K", "2.5e9", "1000": K = 1e3, M = 1e6, B (or G) = 1e9, T = 1e12. Throws ConfigError naming `what`.
double parse_count(const std::string& text, const std::string& what);

struct EstimateInput {
    model::ModelConfig model;
    std::string model_label;
    double tokens = 0;
    Device device;
    double price_per_hour = 0;  // 0: the device's
    int64_t gpus = 1;
    int64_t seq_len = 0;  // 0: model.max_seq_len
    // Exactly one throughput source (the others < 0).
    double mfu = -1, gpu_hours_per_trillion = -1, tokens_per_gpu_second = -1;
    bool fp8 = false;  // MFU against the FP8 peak
    int64_t ep = 1, pp = 1, tp = 1, zero = 1;
    bool flash_attention = true;  // attention scores are not stored (fused attention kernel)
};

struct Estimate {
    ParamCounts params;
    double mtp_params = 0;
    double flops_per_token = 0, total_flops = 0;
    double tokens_per_gpu_second = 0, gpu_hours = 0, wall_days = 0, cost_usd = 0, mfu = 0, peak_tflops = 0;
    // Memory per GPU in bytes.
    double mem_weights = 0, mem_grads = 0, mem_optimizer = 0, mem_activations = 0, mem_total = 0, mem_capacity = 0;
    bool fits = true;
};

// Throws ConfigError unless the layout can exist: tp divides model.n_heads, ep divides moe.n_experts, pp is at most
// n_layers, tp x pp divides the GPUs and ep divides the data-parallel ranks gpus / (tp x pp); the message lists the
// legal choices.
void check_layout(const EstimateInput& in);
// A count that must be a whole number in [1, max] (parse_count's value for --gpus, --tp, ...).
int64_t whole_count(double v, const std::string& what, int64_t max);

Estimate estimate(const EstimateInput& in);
std::string format_estimate(const EstimateInput& in, const Estimate& e);
std::string estimate_json(const EstimateInput& in, const Estimate& e);

}  // namespace frugal::accounting
