#include <cstdio>

#include "apps/commands.h"
#include "checkpoint/checkpoint.h"
#include "core/error.h"

namespace frugal::apps {

namespace {
const char* kHelp =
    "usage: frugal ckpt inspect PATH\n"
    "       frugal ckpt verify PATH\n"
    "\n"
    "  inspect   step, tokens seen, the layout that wrote it, parameter count, sizes and a summary of its config\n"
    "  verify    full integrity check (manifest, every dataset's shape, dtype and checksum); exit 0 only when\n"
    "            everything verifies\n"
    "\n"
    "PATH is a checkpoint file (run.out_dir/checkpoints/step_NNNNNNNN.h5). The format: docs/checkpoint-format.md.\n";
}

int cmd_ckpt(const Args& args) {
    if (args.empty() || wants_help(args)) {
        std::fputs(kHelp, args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    FRUGAL_CONFIG_CHECK(args.size() == 2, "frugal ckpt ", args[0], ": give exactly one checkpoint path");
    const std::string& path = args[1];
    if (args[0] == "verify") {
        checkpoint::VerifyReport r = checkpoint::verify(path);
        if (!r.ok) {
            std::fprintf(stderr, "%s: does NOT verify: %s\n", path.c_str(), r.error.c_str());
            return 1;
        }
        std::printf("%s: verified, %lld datasets, %.1f MB\n", path.c_str(), (long long)r.datasets, r.bytes / 1e6);
        return 0;
    }
    if (args[0] == "inspect") {
        checkpoint::TrainingState st = checkpoint::read_state(path);
        auto manifest = checkpoint::read_manifest(path);
        int64_t params = 0, bytes = 0;
        for (const auto& e : manifest) {
            const int64_t n = shape_numel(e.shape);
            bytes += n * 4;
            if (e.name.rfind("params/", 0) == 0) params += n;
        }
        std::printf("checkpoint        %s\n", path.c_str());
        std::printf("step              %lld (tokens seen %lld, next sample %lld)\n", (long long)st.step,
                    (long long)st.tokens_seen, (long long)st.data_position);
        std::printf("written by        %lld ranks, parallel.ep %lld, frugal %s\n", (long long)st.world_size,
                    (long long)st.ep, st.frugal_version.c_str());
        std::printf("parameters        %lld in %zu datasets (%.1f MB with optimizer state)\n", (long long)params,
                    manifest.size(), bytes / 1e6);
        std::printf("seed              %lld\n", (long long)st.seed);
        std::printf("config (model)\n");
        bool in_model = false;
        size_t pos = 0;
        while (pos < st.config_yaml.size()) {
            size_t end = st.config_yaml.find('\n', pos);
            if (end == std::string::npos) end = st.config_yaml.size();
            std::string line = st.config_yaml.substr(pos, end - pos);
            if (!line.empty() && line[0] != ' ') in_model = line == "model:" || line == "moe:" || line == "precision:";
            if (in_model) std::printf("  %s\n", line.c_str());
            pos = end + 1;
        }
        return 0;
    }
    FRUGAL_CONFIG_ERROR("frugal ckpt: unknown subcommand '", args[0], "' (inspect or verify)");
}

}  // namespace frugal::apps
