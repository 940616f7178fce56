// `frugal`: the command-line entry point. Thin: parses the subcommand and hands over; every error is printed with
// the rank prefix and mapped to an exit code (2 for bad input, 1 for a failure at run time).
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "apps/commands.h"
#include "core/config_fields.h"
#include "core/error.h"
#include "core/log.h"
#include "core/version.h"

namespace {

const char* kUsage =
    "frugal: train Mixture-of-Experts transformers and bill what they cost\n"
    "\n"
    "usage: frugal <command> [options]\n"
    "\n"
    "commands:\n"
    "  launch -n N CONFIG.yaml [options]        start N ranks of `frugal train` (mpirun or srun); also `launch -n N\n"
    "                                           score ...` for expert-parallel scoring\n"
    "  train CONFIG.yaml [--set key=value]...   run a training job (one rank; every rank under mpirun)\n"
    "  prepare-data INPUT... --out DIR          turn text files into token shards\n"
    "  config [--docs | --print CONFIG.yaml]    list configuration keys, or print a resolved config\n"
    "  ckpt inspect|verify PATH                 describe or fully check a checkpoint\n"
    "  report RUN_DIR [--json]                  print a run's cost report (device-hours, dollars, MFU)\n"
    "  estimate MODEL --tokens N --gpu G ...    price a planned training run (GPU-hours, days, dollars, memory)\n"
    "  import-hf HF_DIR --out CKPT.h5           Hugging Face MoE model (deepseek_v3, kimi_k2, deepseek_v2, glm4_moe,\n"
    "                                           dots1, qwen3_moe, qwen2_moe, mixtral, olmoe) to a Frugal checkpoint\n"
    "  export-hf CKPT.h5 --out DIR              Frugal checkpoint to a Hugging Face model directory\n"
    "  score MODEL --text-file FILE [--json]    mean cross-entropy and perplexity of a model on a text\n"
    "\n"
    "Every command that prints results takes --json (one JSON document on stdout, everything else on stderr).\n"
    "\n"
    "options:\n"
    "  -h, --help      this text; `frugal <command> --help` describes a command\n"
    "  --version       print the version\n"
    "\n"
    "Every configuration key is documented in docs/config.md.\n";

const char* kCommands[] = {"launch", "train",    "prepare-data", "config",    "ckpt",
                           "report", "estimate", "import-hf",    "export-hf", "score"};

// "; did you mean 'score'?" when cmd is a near miss of a command, else "".
std::string nearest_command(const std::string& cmd) {
    std::string best;
    size_t best_d = std::string::npos;
    for (const char* c : kCommands) {
        const size_t d = frugal::edit_distance(cmd, c);
        if (d < best_d) {
            best_d = d;
            best = c;
        }
    }
    return best_d <= 2 ? "; did you mean '" + best + "'?" : "";
}

}  // namespace

bool frugal::apps::wants_help(const Args& args) {
    for (const auto& a : args)
        if (a == "-h" || a == "--help") return true;
    return false;
}

int main(int argc, char** argv) {
    using namespace frugal;
    if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "help")) {
        std::fputs(kUsage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!std::strcmp(argv[1], "--version")) {
        std::printf("frugal %s\n", kVersion);
        return 0;
    }
    const std::string cmd = argv[1];
    apps::Args args(argv + 2, argv + argc);
    try {
        if (cmd == "train") return apps::cmd_train(args);
        if (cmd == "prepare-data") return apps::cmd_prepare_data(args);
        if (cmd == "config") return apps::cmd_config(args);
        if (cmd == "launch") return apps::cmd_launch(args);
        if (cmd == "ckpt") return apps::cmd_ckpt(args);
        if (cmd == "report") return apps::cmd_report(args);
        if (cmd == "estimate") return apps::cmd_estimate(args);
        if (cmd == "import-hf") return apps::cmd_import_hf(args);
        if (cmd == "export-hf") return apps::cmd_export_hf(args);
        if (cmd == "score") return apps::cmd_score(args);
        std::fprintf(stderr, "frugal: unknown command '%s'%s\n\n%s", cmd.c_str(), nearest_command(cmd).c_str(), kUsage);
        return 2;
    } catch (const ConfigError& e) {
        log::error(e.what());
        return 2;
    } catch (const Error& e) {
        log::error(e.what(), " [", e.where(), "]");
        return 1;
    } catch (const std::exception& e) {
        log::error(e.what());
        return 1;
    }
}
