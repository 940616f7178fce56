// frugal ckpt inspect|verify: describe a checkpoint, or check every dataset of it, as text or (--json) as one
// JSON object.
#include <cstdio>

#include "apps/cli_output.h"
#include "apps/commands.h"
#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/flags.h"
#include "core/json.h"

namespace frugal::apps {

namespace {
const std::vector<Flag> kFlags = {
    {"--json", "",
     "one JSON object instead of text: inspect gives path, step, tokens_seen, data_position, world_size, ep, "
     "frugal_version, seed, parameters, datasets, bytes_with_optimizer, model_config (the model:, moe: and "
     "precision: sections as YAML text); verify gives path, ok, datasets, bytes, error"}};

std::string help() {
    return "usage: frugal ckpt inspect PATH [--json]\n"
           "       frugal ckpt verify PATH [--json]\n"
           "\n"
           "  inspect   step, tokens seen, the layout that wrote it, parameter count, sizes and a summary of its "
           "config\n"
           "  verify    full integrity check (manifest, every dataset's shape, dtype and checksum); exit 0 only when\n"
           "            everything verifies\n"
           "\n"
           "PATH is a checkpoint file (run.out_dir/checkpoints/step_NNNNNNNN.h5). The format: "
           "docs/checkpoint-format.md.\n\n" +
           flags_help(kFlags);
}

int verify(const std::string& path, bool json) {
    JsonStdout out(json);
    const checkpoint::VerifyReport r = checkpoint::verify(path);
    if (json) {
        out.print(JsonWriter()
                      .begin_object()
                      .field("path", path)
                      .field("ok", r.ok)
                      .field("datasets", r.datasets)
                      .field("bytes", r.bytes)
                      .field("error", r.error)
                      .end_object()
                      .str());
    } else if (r.ok) {
        char line[64];
        std::snprintf(line, sizeof line, ", %lld datasets, %.1f MB\n", (long long)r.datasets, double(r.bytes) / 1e6);
        out.print(path + ": verified" + line);
    }
    if (!r.ok) std::fprintf(stderr, "%s: does NOT verify: %s\n", path.c_str(), r.error.c_str());
    return r.ok ? 0 : 1;
}

// The model:, moe: and precision: sections of the stored configuration.
std::string model_sections(const std::string& config_yaml) {
    std::string out;
    bool in_model = false;
    size_t pos = 0;
    while (pos < config_yaml.size()) {
        size_t end = config_yaml.find('\n', pos);
        if (end == std::string::npos) end = config_yaml.size();
        const std::string line = config_yaml.substr(pos, end - pos);
        if (!line.empty() && line[0] != ' ') in_model = line == "model:" || line == "moe:" || line == "precision:";
        if (in_model) out += line + "\n";
        pos = end + 1;
    }
    return out;
}

int inspect(const std::string& path, bool json) {
    JsonStdout out(json);
    const checkpoint::TrainingState st = checkpoint::read_state(path);
    const auto manifest = checkpoint::read_manifest(path);
    int64_t params = 0, bytes = 0;
    for (const auto& e : manifest) {
        const int64_t n = shape_numel(e.shape);
        bytes += n * 4;
        if (e.name.rfind("params/", 0) == 0) params += n;
    }
    const std::string model = model_sections(st.config_yaml);
    if (json) {
        out.print(JsonWriter()
                      .begin_object()
                      .field("path", path)
                      .field("step", st.step)
                      .field("tokens_seen", st.tokens_seen)
                      .field("data_position", st.data_position)
                      .field("world_size", st.world_size)
                      .field("ep", st.ep)
                      .field("frugal_version", st.frugal_version)
                      .field("seed", st.seed)
                      .field("parameters", params)
                      .field("datasets", int64_t(manifest.size()))
                      .field("bytes_with_optimizer", bytes)
                      .field("model_config", model)
                      .end_object()
                      .str());
        return 0;
    }
    char buf[512];
    std::string text;
    auto add = [&](const char* fmt, auto... v) {
        std::snprintf(buf, sizeof buf, fmt, v...);
        text += buf;
    };
    add("checkpoint        %s\n", path.c_str());
    add("step              %lld (tokens seen %lld, next sample %lld)\n", (long long)st.step, (long long)st.tokens_seen,
        (long long)st.data_position);
    add("written by        %lld ranks, parallel.ep %lld, frugal %s\n", (long long)st.world_size, (long long)st.ep,
        st.frugal_version.c_str());
    add("parameters        %lld in %zu datasets (%.1f MB with optimizer state)\n", (long long)params, manifest.size(),
        double(bytes) / 1e6);
    add("seed              %lld\n", (long long)st.seed);
    text += "config (model)\n";
    size_t pos = 0;
    while (pos < model.size()) {
        const size_t end = model.find('\n', pos);
        text += "  " + model.substr(pos, end - pos) + "\n";
        pos = end + 1;
    }
    out.print(text);
    return 0;
}
}  // namespace

int cmd_ckpt(const Args& args) {
    const ParsedFlags f = parse_flags("frugal ckpt", kFlags, args);
    if (args.empty() || f.has("--help")) {
        std::fputs(help().c_str(), args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    const std::vector<std::string>& p = f.positional;
    FRUGAL_CONFIG_CHECK(!p.empty() && (p[0] == "inspect" || p[0] == "verify"), "frugal ckpt: unknown subcommand '",
                        p.empty() ? "" : p[0], "' (inspect or verify)");
    FRUGAL_CONFIG_CHECK(p.size() == 2, "frugal ckpt ", p[0], ": give exactly one checkpoint path");
    return p[0] == "verify" ? verify(p[1], f.has("--json")) : inspect(p[1], f.has("--json"));
}

}  // namespace frugal::apps
