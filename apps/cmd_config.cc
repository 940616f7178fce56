#include <cstdio>

#include "apps/commands.h"
#include "core/error.h"
#include "trainer/run_config.h"

namespace frugal::apps {

namespace {
const char* kHelp =
    "usage: frugal config --docs\n"
    "       frugal config --print CONFIG.yaml [--set key=value]...\n"
    "\n"
    "  --docs    print the reference of every configuration key (the text of docs/config.md)\n"
    "  --print   load and validate CONFIG with its overrides, print the resolved configuration as YAML\n";
}

int cmd_config(const Args& args) {
    if (args.empty() || wants_help(args)) {
        std::fputs(kHelp, args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    if (args[0] == "--docs") {
        std::fputs(trainer::config_docs().c_str(), stdout);
        return 0;
    }
    if (args[0] == "--print") {
        FRUGAL_CONFIG_CHECK(args.size() >= 2, "frugal config --print needs a config file");
        std::vector<std::string> overrides;
        for (size_t i = 2; i < args.size(); ++i) {
            FRUGAL_CONFIG_CHECK(args[i] == "--set" && i + 1 < args.size(), "unexpected argument '", args[i],
                                "' (see frugal config --help)");
            overrides.push_back(args[++i]);
        }
        trainer::TrainConfig cfg = trainer::load_config(args[1], overrides, 1);
        std::fputs(trainer::to_yaml(cfg).c_str(), stdout);
        return 0;
    }
    FRUGAL_CONFIG_ERROR("frugal config: unknown option '", args[0], "' (see frugal config --help)");
}

}  // namespace frugal::apps
