#include <cstdio>

#include "apps/commands.h"
#include "core/error.h"
#include "trainer/trainer.h"

namespace frugal::apps {

namespace {
const char* kHelp =
    "usage: frugal train CONFIG.yaml [--set key=value]...\n"
    "\n"
    "Trains the model CONFIG describes on the token shards of data.dir. Writes run.out_dir/config.yaml (the\n"
    "resolved configuration) and run.out_dir/metrics.jsonl (one JSON object per logged step), and prints a\n"
    "progress line every run.log_every steps.\n"
    "\n"
    "  --set key=value   override one configuration key (repeatable), e.g. --set train.steps=50\n"
    "\n"
    "Exit codes: 0 done, 1 failure while running, 2 bad configuration or arguments.\n";
}

int cmd_train(const Args& args) {
    if (wants_help(args)) {
        std::fputs(kHelp, stdout);
        return 0;
    }
    std::string config_path;
    std::vector<std::string> overrides;
    for (size_t i = 0; i < args.size(); ++i) {
        if (args[i] == "--set") {
            FRUGAL_CONFIG_CHECK(i + 1 < args.size(), "--set needs key=value, e.g. --set train.steps=100");
            overrides.push_back(args[++i]);
        } else if (args[i].rfind("--set=", 0) == 0) {
            overrides.push_back(args[i].substr(6));
        } else if (args[i].rfind("-", 0) == 0) {
            FRUGAL_CONFIG_ERROR("frugal train: unknown option '", args[i], "' (see frugal train --help)");
        } else {
            FRUGAL_CONFIG_CHECK(config_path.empty(), "frugal train: two config files given ('", config_path, "' and '",
                                args[i], "'): pass one");
            config_path = args[i];
        }
    }
    FRUGAL_CONFIG_CHECK(!config_path.empty(), "frugal train: no config file given (see frugal train --help)");
    trainer::TrainConfig cfg = trainer::load_config(config_path, overrides, 1);
    trainer::train(cfg);
    return 0;
}

}  // namespace frugal::apps
