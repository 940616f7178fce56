#include <cstdio>

#include "apps/commands.h"
#include "apps/mpi_job.h"
#include "core/error.h"
#include "core/flags.h"
#include "core/log.h"
#include "core/signals.h"
#include "parallel/mpi_comm.h"
#include "trainer/trainer.h"

namespace frugal::apps {

namespace {
const std::vector<Flag> kFlags = {
    {"--set", "key=value", "override one configuration key (repeatable), e.g. --set train.steps=100", true}};

const char* kHelp =
    "usage: frugal train CONFIG.yaml [--set key=value]...\n"
    "\n"
    "Trains the model CONFIG describes on the token shards of data.dir. Writes run.out_dir/config.yaml (the\n"
    "resolved configuration) and run.out_dir/metrics.jsonl (one JSON object per logged step), and prints a\n"
    "progress line every run.log_every steps.\n"
    "\n"
    "Started by mpirun or srun (or `frugal launch`), every rank runs this command; the ranks share the experts\n"
    "(parallel.ep) and the global batch.\n"
    "\n"
    "%FLAGS%\n"
    "SIGTERM, SIGINT, SIGHUP or SIGUSR1 (what `frugal launch` forwards, and Slurm sends before a time limit) stop\n"
    "every rank at the end of the current step, after a checkpoint when checkpoint.every is set; a second signal\n"
    "stops at once.\n"
    "\n"
    "Exit codes: 0 done, 1 failure while running, 2 bad configuration or arguments, 3 a collective timed out,\n"
    "128 + N stopped by signal N at a step boundary (143 SIGTERM, 130 SIGINT, 129 SIGHUP, 138 SIGUSR1).\n";

struct Args2 {
    std::string config_path;
    std::vector<std::string> overrides;
};

std::string help() {
    std::string h = kHelp;
    h.replace(h.find("%FLAGS%"), 7, flags_help(kFlags));
    return h;
}

Args2 parse(const Args& args) {
    const ParsedFlags f = parse_flags("frugal train", kFlags, args);
    Args2 a;
    a.overrides = f.all("--set");
    FRUGAL_CONFIG_CHECK(f.positional.size() <= 1, "frugal train: two config files given ('", f.positional[0], "' and '",
                        f.positional.size() > 1 ? f.positional[1] : "", "'): pass one");
    FRUGAL_CONFIG_CHECK(!f.positional.empty(), "frugal train: no config file given (see frugal train --help)");
    a.config_path = f.positional[0];
    return a;
}
}  // namespace

int cmd_train(const Args& args) {
    if (wants_help(args)) {
        std::fputs(help().c_str(), stdout);
        return 0;
    }
    install_stop_handlers();
    if (!parallel::launched_by_mpi()) {
        Args2 a = parse(args);
        trainer::TrainConfig cfg = trainer::load_config(a.config_path, a.overrides, 1);
        const int sig = trainer::train(cfg).stop_signal;
        return sig ? stop_exit_code(sig) : 0;
    }

    // Under mpirun/srun: every rank runs the same command.
    trainer::TrainConfig cfg;
    int sig = 0;
    const int rc = run_mpi_job(
        [&] {
            int size = 1;
            MPI_Comm_size(MPI_COMM_WORLD, &size);
            Args2 a = parse(args);
            cfg = trainer::load_config(a.config_path, a.overrides, size);
            return cfg.parallel.timeout_s;
        },
        [&](parallel::Communicator& world) { sig = trainer::train(cfg, world).stop_signal; });
    return rc == 0 && sig ? stop_exit_code(sig) : rc;
}

}  // namespace frugal::apps
