#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "apps/cli_output.h"
#include "apps/commands.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/flags.h"
#include "core/log.h"
#include "launch/launcher.h"

namespace frugal::apps {

namespace {
const char* kHelp =
    "usage: frugal launch -n N CONFIG [--set key=value]... [--hostfile FILE] [--max-restarts K] [--dry-run]\n"
    "                     [-- MPIRUN-ARGS...]\n"
    "       frugal launch -n N score|import-hf|export-hf ARGS...\n"
    "       frugal launch --slurm-script OUT --nodes K --gpus-per-node G [--time HH:MM:SS] CONFIG [--set ...]\n"
    "\n"
    "Starts N ranks of `frugal train CONFIG` (or of `frugal score|import-hf|export-hf ...`, expert parallel: see\n"
    "their --help) with mpirun, or with srun inside a Slurm allocation. Options may come before or after CONFIG\n"
    "(before the command name otherwise).\n"
    "More ranks than cores are oversubscribed; otherwise each rank is bound to its own\n"
    "cores with OMP_NUM_THREADS set to match. The exit code is the job's; when one rank fails every rank stops.\n"
    "With --hostfile, mpirun gets TCP keepalives to the other hosts' Open MPI daemons (a value after -- wins), so\n"
    "a host that dies or a network that fails ends the job in seconds, with exit code 4 and the host named; the\n"
    "launcher names the rank, host and signal of a rank that was killed.\n"
    "\n"
    "%FLAGS%"
    "  -- ARGS                 passed to mpirun (or srun) unchanged\n"
    "\n"
    "With score|import-hf|export-hf ... --json the job's rank 0 prints the one JSON document on stdout and the\n"
    "launcher writes nothing there (its own lines go to stderr).\n"
    "\n"
    "Ctrl-C, SIGTERM or SIGHUP asks every rank to stop at the end of its step (with a checkpoint when\n"
    "checkpoint.every is set) and exits 128 + the signal; a second one stops the job at once. A stopped job is not\n"
    "restarted; continue it with --set checkpoint.resume=auto.\n"
    "\n"
    "See docs/launching.md.\n";

std::string self_path() {
    std::error_code ec;
    auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
    FRUGAL_CHECK(!ec, "cannot locate the frugal executable (/proc/self/exe): ", ec.message());
    return p.string();
}

// True when the launched command prints a JSON document.
bool job_prints_json(const launch::LaunchOptions& opt) {
    return opt.command != "train" &&
           std::find(opt.command_args.begin(), opt.command_args.end(), "--json") != opt.command_args.end();
}
}  // namespace

int cmd_launch(const Args& args) {
    if (wants_help(args)) {
        std::string h = kHelp;
        h.replace(h.find("%FLAGS%"), 7, flags_help(launch::launch_flags()));
        std::fputs(h.c_str(), stdout);
        return 0;
    }
    launch::LaunchOptions opt = launch::parse_launch_args(args);
    opt.frugal_binary = self_path();
    JsonStdout out(job_prints_json(opt));
    opt.job_stdout_fd = job_prints_json(opt) ? out.document_fd() : -1;
    if (!opt.slurm_script.empty()) {
        write_file_atomic(opt.slurm_script, launch::slurm_script(opt));
        std::filesystem::permissions(opt.slurm_script, std::filesystem::perms::owner_exec,
                                     std::filesystem::perm_options::add);
        log::info("launch: wrote ", opt.slurm_script, " (", opt.nodes, " node(s) x ", opt.gpus_per_node,
                  " rank(s)); submit it with: sbatch ", opt.slurm_script);
        return 0;
    }
    return launch::run_job(opt);
}

}  // namespace frugal::apps
