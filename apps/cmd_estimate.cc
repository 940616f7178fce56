#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "accounting/estimate.h"
#include "accounting/model_source.h"
#include "accounting/report.h"
#include "apps/cli_output.h"
#include "apps/commands.h"
#include "core/error.h"
#include "core/flags.h"

namespace frugal::apps {

namespace {
const char* kHelp =
    "usage: frugal estimate MODEL --tokens N --gpu DEVICE --gpus N\n"
    "                       [--mfu X | --gpu-hours-per-trillion-tokens X | --tokens-per-gpu-second X |\n"
    "                        --from-run RUN_DIR] [--seq-len N] [--ep N --pp N --tp N --zero N] [--fp8]\n"
    "                       [--price DOLLARS] [--hardware FILE] [--json]\n"
    "\n"
    "Prices a planned training run: parameters (total, activated, activated without embedding and head),\n"
    "FLOPs per token, total FLOPs, GPU-hours, wall-clock days, dollars, the MFU assumed or implied, and memory per\n"
    "GPU under the layout (warning when it does not fit).\n"
    "\n"
    "MODEL: a preset (deepseek-v3, qwen3-235b-a22b, qwen3-30b-a3b, mixtral-8x7b), a Frugal YAML, or a Hugging\n"
    "Face config.json (deepseek_v3, kimi_k2, deepseek_v2, qwen3_moe, qwen2_moe, mixtral, olmoe, glm4_moe, dots1,\n"
    "minimax_m2, ernie4_5_moe), labelled with its family and routing (softmax or sigmoid).\n"
    "Numbers accept the suffixes K, M, B, T (14.8T tokens, 180K GPU-hours per trillion tokens).\n"
    "--from-run takes the tokens per device-second a frugal run measured (RUN_DIR/cost.json).\n"
    "--fp8 measures MFU against the FP8 peak. Activation memory assumes a fused (flash) attention kernel unless\n"
    "--no-flash-attention. See docs/accounting.md.\n";

const std::vector<Flag> kFlags = {
    {"--tokens", "N", "tokens to train on (required), e.g. 14.8T"},
    {"--gpu", "DEVICE", "device of the hardware catalogue (required), e.g. h800"},
    {"--gpus", "N", "devices the run uses (required)"},
    {"--mfu", "X", "assumed model FLOPs utilization, a fraction (one throughput source is required)"},
    {"--gpu-hours-per-trillion-tokens", "X", "throughput source: a published GPU-hours per trillion tokens"},
    {"--tokens-per-gpu-second", "X", "throughput source: tokens per device-second"},
    {"--from-run", "RUN_DIR", "throughput source: the tokens per device-second RUN_DIR/cost.json measured"},
    {"--seq-len", "N", "sequence length of the activation-memory estimate"},
    {"--ep", "N", "expert-parallel ranks of the memory layout"},
    {"--pp", "N", "pipeline-parallel stages of the memory layout"},
    {"--tp", "N", "tensor-parallel ranks of the memory layout"},
    {"--zero", "N", "ZeRO stage (0, 1, 2 or 3) of the memory layout"},
    {"--fp8", "", "measure MFU against the device's FP8 peak"},
    {"--no-flash-attention", "", "activation memory without a fused attention kernel"},
    {"--price", "DOLLARS", "dollars per device-hour (default: the catalogue's)"},
    {"--hardware", "FILE", "hardware catalogue YAML (default: configs/hardware.yaml)"},
    {"--json", "",
     "print one JSON object: model, total_params, active_params, active_params_without_embeddings, mtp_params, "
     "flops_per_token, total_flops, tokens, gpu, gpus, tokens_per_gpu_second, gpu_hours, wall_days, cost_usd, mfu, "
     "peak_tflops, memory_per_gpu_bytes {weights, gradients, optimizer, activations, total, capacity}, fits"}};

// More GPUs than any cluster; keeps tp x pp x ep and the per-GPU divisions far from overflow.
constexpr int64_t kMaxRanks = int64_t(1) << 24;

int64_t zero_stage(const std::string& v) {
    FRUGAL_CONFIG_CHECK(v == "0" || v == "1" || v == "2" || v == "3", "--zero '", v,
                        "' must be a ZeRO stage: 0, 1, 2 or 3");
    return v[0] - '0';
}

std::string presets_dir() {
    // configs/models next to the working directory, else next to the executable's source tree.
    if (std::filesystem::is_directory("configs/models")) return "configs/models";
    std::error_code ec;
    auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        auto p = exe.parent_path().parent_path() / "configs" / "models";
        if (std::filesystem::is_directory(p)) return p.string();
    }
    return "configs/models";
}
}  // namespace

int cmd_estimate(const Args& args) {
    const ParsedFlags f = parse_flags("frugal estimate", kFlags, args);
    if (args.empty() || f.has("--help")) {
        std::fputs((std::string(kHelp) + "\n" + flags_help(kFlags)).c_str(), args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    accounting::EstimateInput in;
    const std::string gpu = f.get("--gpu"), hardware = f.get("--hardware"), from_run = f.get("--from-run");
    const bool json = f.has("--json");
    JsonStdout out(json);
    auto count = [&](const char* flag, double fallback) {
        return f.has(flag) ? accounting::parse_count(f.get(flag), flag) : fallback;
    };
    const double tokens = count("--tokens", -1), gpus = count("--gpus", -1);
    in.mfu = count("--mfu", in.mfu);
    in.gpu_hours_per_trillion = count("--gpu-hours-per-trillion-tokens", in.gpu_hours_per_trillion);
    in.tokens_per_gpu_second = count("--tokens-per-gpu-second", in.tokens_per_gpu_second);
    in.price_per_hour = count("--price", in.price_per_hour);
    if (f.has("--seq-len")) in.seq_len = accounting::whole_count(count("--seq-len", 0), "--seq-len", int64_t(1) << 24);
    if (f.has("--ep")) in.ep = accounting::whole_count(count("--ep", 0), "--ep", kMaxRanks);
    if (f.has("--pp")) in.pp = accounting::whole_count(count("--pp", 0), "--pp", kMaxRanks);
    if (f.has("--tp")) in.tp = accounting::whole_count(count("--tp", 0), "--tp", kMaxRanks);
    if (f.has("--zero")) in.zero = zero_stage(f.get("--zero"));
    if (f.has("--fp8")) in.fp8 = true;
    if (f.has("--no-flash-attention")) in.flash_attention = false;
    FRUGAL_CONFIG_CHECK(f.positional.size() <= 1, "frugal estimate: two models given ('", f.positional[0], "' and '",
                        f.positional.size() > 1 ? f.positional[1] : "", "')");
    const std::string model_source = f.positional.empty() ? "" : f.positional[0];
    FRUGAL_CONFIG_CHECK(!model_source.empty(), "frugal estimate: no MODEL given (see --help)");
    FRUGAL_CONFIG_CHECK(tokens > 0, "frugal estimate: --tokens N is required, e.g. --tokens 14.8T");
    FRUGAL_CONFIG_CHECK(!gpu.empty(), "frugal estimate: --gpu DEVICE is required, e.g. --gpu h800");
    FRUGAL_CONFIG_CHECK(gpus >= 1, "frugal estimate: --gpus N is required, e.g. --gpus 2048");
    FRUGAL_CONFIG_CHECK(in.zero >= 0 && in.zero <= 3, "--zero ", in.zero, " must be a ZeRO stage: 0, 1, 2 or 3");
    const int sources =
        (in.mfu > 0) + (in.gpu_hours_per_trillion > 0) + (in.tokens_per_gpu_second > 0) + !from_run.empty();
    FRUGAL_CONFIG_CHECK(sources == 1,
                        "give exactly one of --mfu, --gpu-hours-per-trillion-tokens, "
                        "--tokens-per-gpu-second, --from-run (",
                        sources, " given)");
    FRUGAL_CONFIG_CHECK(in.mfu <= 0 || in.mfu <= 1, "--mfu ", in.mfu, " must be a fraction (e.g. 0.4)");
    if (!from_run.empty()) {
        auto r = accounting::read_cost_json((std::filesystem::path(from_run) / "cost.json").string());
        in.tokens_per_gpu_second = r.tokens_per_s() / double(r.ranks);
    }
    in.tokens = tokens;
    in.gpus = accounting::whole_count(gpus, "--gpus", kMaxRanks);
    in.model = accounting::load_model(model_source, presets_dir(), &in.model_label);
    in.device = accounting::find_device(accounting::load_catalogue(hardware), gpu, "--gpu");
    const accounting::Estimate e = accounting::estimate(in);
    out.print(json ? accounting::estimate_json(in, e) : accounting::format_estimate(in, e));
    return 0;
}

}  // namespace frugal::apps
