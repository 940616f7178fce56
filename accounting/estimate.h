// `frugal estimate`: the cost of a planned training run, before anyone books a cluster.
#pragma once

#include <string>
#include <vector>

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
    std::string peak_source;  // device_peak(): the catalogue's figure, or for `cpu` one measured on this machine
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

// What one rank of a Frugal run holds in host memory, in bytes: Frugal computes in FP32 and its parameters are the
// optimizer's master weights. (estimate() above models a GPU run in mixed precision instead.)
struct RankMemoryInput {
    model::ModelConfig model;
    int64_t ep = 1;  // routed experts are split over ep ranks; everything else is replicated
    bool with_grads = true;
    bool with_optimizer = true;  // AdamW's two moments
    bool bf16_moments = false;   // precision.optimizer_state: bf16
    // parallel.zero 1: the moments of the replicated parameters split over dp ranks, the experts' over edp.
    int64_t zero_dp = 1, zero_edp = 1;
    int64_t micro_batch = 0;  // sequences of one forward + backward; 0: no activations (a conversion)
    int64_t seq_len = 0;
    bool backward = true;  // false: forward only (scoring), no gradient buffers of the activations
    // The roles (precision.low_precision_layers) whose matmuls a non-FP32 recipe runs: each such Linear keeps an
    // FP32 copy of its rounded weight, and rounds its operands into a scratch shared by all. Empty: precision.recipe
    // fp32.
    std::vector<std::string> low_precision_roles;
    bool blockwise = false;  // fp8-blockwise also rounds the input a second time (column tiles) for the weight gradient
    // fp8-tensorwise and fp8-delayed keep each Linear's rounded input and output gradient from forward to backward
    // (the scales of the forward pass), not in the shared scratch.
    bool per_layer_operands = false;
};

struct RankMemory {
    double params = 0, grads = 0, optimizer = 0, activations = 0;
    double total() const { return params + grads + optimizer + activations; }
};

RankMemory rank_memory(const RankMemoryInput& in);
// "params 1.2 GB, grads 1.2 GB, optimizer 2.4 GB, activations 0.3 GB = 5.1 GB"
std::string format_rank_memory(const RankMemory& need);
// Throws ConfigError (exit 2) when need.total() exceeds 90% of available_per_rank (bytes; < 0: unknown, no check),
// naming both figures and `fix`; `what` says who needs it ("frugal train", "import-hf").
void check_rank_memory(const RankMemory& need, double available_per_rank, const std::string& what,
                       const std::string& fix);

}  // namespace frugal::accounting
