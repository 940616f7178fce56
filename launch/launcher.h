// The launcher: turns `frugal launch` into an mpirun (or, inside a Slurm allocation, srun) command line that starts
// N ranks of `frugal train`, runs it, and relaunches it after a failure up to --max-restarts times. It also writes
// sbatch scripts for multi-node runs. No training logic lives here.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/flags.h"

namespace frugal::launch {

struct LaunchOptions {
    int ranks = 0;
    std::string config;
    // `frugal launch -n N score|import-hf|export-hf ARGS...` runs that command on every rank instead of
    // `frugal train CONFIG`.
    std::string command = "train";
    std::vector<std::string> command_args;
    std::vector<std::string> overrides;  // key=value, passed as --set
    std::string hostfile;
    int max_restarts = 0;
    bool dry_run = false;
    std::vector<std::string> mpirun_args;  // after "--"
    std::string slurm_script;              // write an sbatch script here instead of running
    int nodes = 1;
    int gpus_per_node = 0;
    std::string time_limit = "24:00:00";
    std::string frugal_binary;  // absolute path of the frugal executable
    // The job's stdout when >= 0 (the launcher's own stdout otherwise): with `score ... --json` the launcher sends
    // its own lines to stderr and the job alone writes the document.
    int job_stdout_fd = -1;
};

// The flags of `frugal launch` (its --help lists them); the command after them and "-- MPIRUN-ARGS" are not flags.
const std::vector<Flag>& launch_flags();

// Parses the arguments after `launch`; throws ConfigError (exit code 2) on bad usage.
LaunchOptions parse_launch_args(const std::vector<std::string>& args);

struct Environment {
    int cores = 1;
    bool in_slurm = false;  // SLURM_JOB_ID is set
    bool is_root = false;
};
Environment current_environment();

// The command that starts the job, one argument per element.
std::vector<std::string> build_command(const LaunchOptions& opt, const Environment& env);
// Quotes an argument for display in a shell.
std::string shell_quote(const std::string& arg);

// frugal launch's exit code when mpirun lost a host (its Open MPI daemon stopped answering: the host died, its
// processes were killed, or the network to it failed). docs/launching.md lists every exit code.
inline constexpr int kExitHostLost = 4;
// Under --max-restarts, a job that lost a host is relaunched after this long rather than at once.
inline constexpr int kHostLostRestartDelaySeconds = 10;

// The Open MPI settings a multi-host job (--hostfile) gets unless given after "--": TCP keepalives between mpirun
// and the remote daemons, so a lost host or a partition ends the job in seconds.
const std::vector<std::pair<std::string, std::string>>& multi_host_keepalives();

// What mpirun's standard error (and exit code) say about a failed job.
struct JobFailure {
    bool lost_host = false;  // mpirun lost a remote daemon (exit code 205, or its message)
    std::string host;        // the host named, when there is one
    int rank = -1;           // the rank mpirun noticed failing first
    int signal = 0;          // the signal that killed it, when one did
};
JobFailure read_job_failure(const std::string& mpirun_stderr, int rc);

// Runs the job (with restarts); returns the exit code of the last attempt.
int run_job(const LaunchOptions& opt);

// An sbatch script for opt.nodes nodes with opt.gpus_per_node ranks (one per GPU) each.
std::string slurm_script(const LaunchOptions& opt);

}  // namespace frugal::launch
