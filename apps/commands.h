// Subcommands of the `frugal` CLI. Each takes its own arguments (after the subcommand name) and returns the exit
// code; bad usage throws ConfigError (exit code 2), runtime failures throw Error (exit code 1).
#pragma once

#include <string>
#include <vector>

namespace frugal::apps {

using Args = std::vector<std::string>;

int cmd_train(const Args& args);
int cmd_prepare_data(const Args& args);
int cmd_config(const Args& args);
int cmd_launch(const Args& args);
int cmd_ckpt(const Args& args);
int cmd_report(const Args& args);
int cmd_estimate(const Args& args);
int cmd_import_hf(const Args& args);
int cmd_export_hf(const Args& args);
int cmd_score(const Args& args);

// True when args hold -h or --help.
bool wants_help(const Args& args);
// True when args hold --json: known before the arguments are checked, so that a command's stdout is redirected
// (JsonStdout) before anything can log.
bool wants_json(const Args& args);

}  // namespace frugal::apps
