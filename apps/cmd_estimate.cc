#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "accounting/estimate.h"
#include "accounting/model_source.h"
#include "accounting/report.h"
#include "apps/commands.h"
#include "core/error.h"

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
    "Face config.json (deepseek_v3, deepseek_v2, qwen3_moe, qwen2_moe, mixtral, olmoe, glm4_moe, ernie4_5_moe).\n"
    "Numbers accept the suffixes K, M, B, T (14.8T tokens, 180K GPU-hours per trillion tokens).\n"
    "--from-run takes the tokens per device-second a frugal run measured (RUN_DIR/cost.json).\n"
    "--fp8 measures MFU against the FP8 peak. Activation memory assumes a fused (flash) attention kernel unless\n"
    "--no-flash-attention. --json prints one JSON object. See docs/accounting.md.\n";

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
    if (args.empty() || wants_help(args)) {
        std::fputs(kHelp, args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    accounting::EstimateInput in;
    std::string model_source, gpu, hardware, from_run;
    bool json = false;
    double tokens = -1, gpus = -1;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        auto value = [&]() -> const std::string& {
            FRUGAL_CONFIG_CHECK(i + 1 < args.size(), a, " needs a value (see frugal estimate --help)");
            return args[++i];
        };
        auto count = [&]() { return accounting::parse_count(value(), a); };
        if (a == "--tokens")
            tokens = count();
        else if (a == "--gpu")
            gpu = value();
        else if (a == "--gpus")
            gpus = count();
        else if (a == "--mfu")
            in.mfu = count();
        else if (a == "--gpu-hours-per-trillion-tokens")
            in.gpu_hours_per_trillion = count();
        else if (a == "--tokens-per-gpu-second")
            in.tokens_per_gpu_second = count();
        else if (a == "--from-run")
            from_run = value();
        else if (a == "--seq-len")
            in.seq_len = accounting::whole_count(count(), a, int64_t(1) << 24);
        else if (a == "--ep")
            in.ep = accounting::whole_count(count(), a, kMaxRanks);
        else if (a == "--pp")
            in.pp = accounting::whole_count(count(), a, kMaxRanks);
        else if (a == "--tp")
            in.tp = accounting::whole_count(count(), a, kMaxRanks);
        else if (a == "--zero")
            in.zero = zero_stage(value());
        else if (a == "--fp8")
            in.fp8 = true;
        else if (a == "--no-flash-attention")
            in.flash_attention = false;
        else if (a == "--price")
            in.price_per_hour = count();
        else if (a == "--hardware")
            hardware = value();
        else if (a == "--json")
            json = true;
        else if (a.rfind("-", 0) == 0)
            FRUGAL_CONFIG_ERROR("frugal estimate: unknown option '", a, "' (see --help)");
        else {
            FRUGAL_CONFIG_CHECK(model_source.empty(), "frugal estimate: two models given ('", model_source, "' and '",
                                a, "')");
            model_source = a;
        }
    }
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
    std::fputs((json ? accounting::estimate_json(in, e) : accounting::format_estimate(in, e)).c_str(), stdout);
    return 0;
}

}  // namespace frugal::apps
