#include "launch/launcher.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/flags.h"
#include "core/log.h"
#include "core/signals.h"

namespace frugal::launch {

namespace fs = std::filesystem;

const std::vector<Flag>& launch_flags() {
    static const std::vector<Flag> kFlags = {
        {"-n,--ranks", "N", "ranks to start"},
        {"--set", "key=value", "configuration override for every rank (repeatable)", true},
        {"--hostfile", "FILE", "mpirun host file for multi-node runs"},
        {"--max-restarts", "K", "relaunch after a failure, up to K times (not after a configuration error, exit 2)"},
        {"--dry-run", "", "print the command instead of running it"},
        {"--slurm-script", "OUT", "write an sbatch script for --nodes K x --gpus-per-node G ranks instead of running"},
        {"--nodes", "K", "with --slurm-script: nodes of the allocation (default 1)"},
        {"--gpus-per-node", "G", "with --slurm-script: ranks per node, one per device"},
        {"--time", "HH:MM:SS", "with --slurm-script: the job's time limit (default 24:00:00)"}};
    return kFlags;
}

namespace {
int parse_int(const std::string& flag, const std::string& v, int min) {
    char* end = nullptr;
    long x = std::strtol(v.c_str(), &end, 10);
    FRUGAL_CONFIG_CHECK(!v.empty() && *end == '\0', flag, ": expected an integer, got '", v, "'");
    FRUGAL_CONFIG_CHECK(x >= min, flag, " = ", x, " must be at least ", min);
    return int(x);
}
}  // namespace

LaunchOptions parse_launch_args(const std::vector<std::string>& args) {
    LaunchOptions o;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        auto value = [&]() -> const std::string& {
            if (i + 1 >= args.size() || args[i + 1].rfind("--", 0) == 0) {
                for (const Flag& f : launch_flags())
                    if (("," + f.name + ",").find("," + a + ",") != std::string::npos)
                        FRUGAL_CONFIG_ERROR(missing_value_message("frugal launch", f, launch_flags()));
                FRUGAL_CONFIG_ERROR("frugal launch: ", a, " needs a value (see frugal launch --help)");
            }
            return args[++i];
        };
        if (a == "--") {
            o.mpirun_args.assign(args.begin() + long(i) + 1, args.end());
            break;
        } else if ((a == "score" || a == "import-hf" || a == "export-hf") && o.config.empty() && o.command == "train") {
            // Everything up to a lone "--" belongs to that command.
            o.command = a;
            for (++i; i < args.size() && args[i] != "--"; ++i) o.command_args.push_back(args[i]);
            --i;
        } else if (a == "-n" || a == "--ranks") {
            o.ranks = parse_int(a, value(), 1);
        } else if (a == "--set") {
            o.overrides.push_back(value());
            FRUGAL_CONFIG_CHECK(o.overrides.back().find('=') != std::string::npos, "--set ", o.overrides.back(),
                                ": expected key=value");
        } else if (a == "--hostfile") {
            o.hostfile = value();
        } else if (a == "--max-restarts") {
            o.max_restarts = parse_int(a, value(), 0);
        } else if (a == "--dry-run") {
            o.dry_run = true;
        } else if (a == "--slurm-script") {
            o.slurm_script = value();
        } else if (a == "--nodes") {
            o.nodes = parse_int(a, value(), 1);
        } else if (a == "--gpus-per-node") {
            o.gpus_per_node = parse_int(a, value(), 1);
        } else if (a == "--time") {
            o.time_limit = value();
        } else if (a.rfind("-", 0) == 0) {
            FRUGAL_CONFIG_ERROR(unknown_flag_message("frugal launch", a, launch_flags()));
        } else {
            FRUGAL_CONFIG_CHECK(o.config.empty(), "frugal launch: two config files given ('", o.config, "' and '", a,
                                "'): pass one");
            o.config = a;
        }
    }
    if (o.command != "train") {
        FRUGAL_CONFIG_CHECK(o.config.empty() && o.overrides.empty(), "frugal launch ... ", o.command,
                            " takes no CONFIG or --set (the model comes from its arguments)");
        FRUGAL_CONFIG_CHECK(o.slurm_script.empty(), "--slurm-script writes training jobs only");
        FRUGAL_CONFIG_CHECK(o.ranks > 0, "frugal launch: give the number of ranks with -n N");
        return o;
    }
    FRUGAL_CONFIG_CHECK(!o.config.empty(), "frugal launch: no config file given (see frugal launch --help)");
    FRUGAL_CONFIG_CHECK(fs::exists(o.config), "config file ", o.config, " does not exist");
    if (o.slurm_script.empty()) {
        FRUGAL_CONFIG_CHECK(o.ranks > 0, "frugal launch: give the number of ranks with -n N");
    } else {
        FRUGAL_CONFIG_CHECK(o.gpus_per_node > 0,
                            "--slurm-script needs --gpus-per-node G (ranks per node, one per device)");
    }
    return o;
}

Environment current_environment() {
    Environment e;
    e.cores = int(std::max(1u, std::thread::hardware_concurrency()));
    e.in_slurm = std::getenv("SLURM_JOB_ID") != nullptr;
    e.is_root = ::geteuid() == 0;
    return e;
}

std::vector<std::string> build_command(const LaunchOptions& opt, const Environment& env) {
    std::vector<std::string> cmd;
    if (env.in_slurm) {
        // Inside an allocation srun knows the nodes; --kill-on-bad-exit stops every task when one fails.
        cmd = {"srun", "-n", std::to_string(opt.ranks), "--kill-on-bad-exit=1"};
    } else {
        cmd = {"mpirun", "-n", std::to_string(opt.ranks)};
        if (env.is_root) cmd.push_back("--allow-run-as-root");
        if (!opt.hostfile.empty()) {
            cmd.insert(cmd.end(), {"--hostfile", opt.hostfile});
        } else if (opt.ranks > env.cores) {
            // More ranks than cores: let them share, unbound (binding would pin several ranks to one core).
            cmd.insert(cmd.end(), {"--oversubscribe", "--bind-to", "none"});
            cmd.insert(cmd.end(), {"-x", "OMP_NUM_THREADS=1"});
        } else {
            // One block of cores per rank, its OpenMP threads inside it.
            const int threads = env.cores / opt.ranks;
            cmd.insert(cmd.end(), {"--map-by", "slot:PE=" + std::to_string(threads), "--bind-to", "core"});
            cmd.insert(cmd.end(), {"-x", "OMP_NUM_THREADS=" + std::to_string(threads)});
        }
        // Remote ranks get the launching shell's search paths.
        for (const char* v : {"PATH", "LD_LIBRARY_PATH"})
            if (std::getenv(v)) cmd.insert(cmd.end(), {"-x", v});
    }
    cmd.insert(cmd.end(), opt.mpirun_args.begin(), opt.mpirun_args.end());
    if (opt.command != "train") {
        cmd.insert(cmd.end(), {opt.frugal_binary, opt.command});
        cmd.insert(cmd.end(), opt.command_args.begin(), opt.command_args.end());
        return cmd;
    }
    cmd.insert(cmd.end(), {opt.frugal_binary, "train", fs::absolute(opt.config).string()});
    for (const auto& s : opt.overrides) cmd.insert(cmd.end(), {"--set", s});
    return cmd;
}

std::string shell_quote(const std::string& arg) {
    if (!arg.empty() &&
        arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,+@%") ==
            std::string::npos)
        return arg;
    std::string out = "'";
    for (char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

namespace {
std::string join_command(const std::vector<std::string>& cmd) {
    std::string s;
    for (const auto& a : cmd) s += (s.empty() ? "" : " ") + shell_quote(a);
    return s;
}

volatile std::sig_atomic_t g_signals_received = 0, g_last_signal = 0;
void on_launcher_signal(int sig) {
    g_last_signal = sig;
    g_signals_received = g_signals_received + 1;
}

// SIGINT, SIGTERM and SIGHUP interrupt the wait for the job (no SA_RESTART), which then forwards them.
void install_launcher_handlers() {
    struct sigaction sa {};
    sa.sa_handler = on_launcher_signal;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
}

// The first signal asks the ranks to stop at a step boundary: SIGUSR1, which mpirun and srun forward to every rank
// (mpirun answers SIGTERM itself by killing the ranks a moment later). The second stops the job at once through
// mpirun (SIGTERM), the third kills its whole process group.
void forward_signal(pid_t child, int count, int sig) {
    if (count == 1) {
        log::warn("launch: ", signal_name(sig),
                  " received: asking every rank to stop at the end of its step (and checkpoint when "
                  "checkpoint.every is set); send it again to stop at once");
        ::kill(child, SIGUSR1);
    } else if (count == 2) {
        log::warn("launch: ", signal_name(sig), " received again: stopping the job now");
        ::kill(child, SIGTERM);
    } else {
        ::kill(-child, SIGKILL);
    }
}

// Runs cmd, waits, returns its exit code (128 + signal when killed by one). The job runs in its own process group,
// so a Ctrl-C in the terminal reaches the launcher, which forwards it (forward_signal), and not mpirun directly;
// its standard input is /dev/null, so a background mpirun never stops on reading the terminal; and it gets SIGTERM
// if the launcher dies.
int run_once(const std::vector<std::string>& cmd, int stdout_fd) {
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    FRUGAL_CHECK(pid >= 0, "fork failed while starting ", cmd[0]);
    if (pid == 0) {
        ::setpgid(0, 0);
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != parent) std::_Exit(1);
        const int null_fd = ::open("/dev/null", O_RDONLY);
        if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
        if (stdout_fd >= 0) ::dup2(stdout_fd, STDOUT_FILENO);
        for (int sig : {SIGINT, SIGTERM, SIGHUP}) std::signal(sig, SIG_DFL);
        std::vector<char*> argv;
        for (const auto& a : cmd) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        ::execvp(argv[0], argv.data());
        std::fprintf(stderr, "error: cannot run %s: %s (is it installed and on PATH?)\n", argv[0],
                     std::strerror(errno));
        std::_Exit(127);
    }
    ::setpgid(pid, pid);
    int status = 0, forwarded = 0;
    while (::waitpid(pid, &status, 0) < 0) {
        FRUGAL_CHECK(errno == EINTR, "waiting for ", cmd[0], " failed: ", std::strerror(errno));
        while (forwarded < g_signals_received) forward_signal(pid, ++forwarded, int(g_last_signal));
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 1;
}

// Exit codes of ranks that stopped on a signal at a step boundary (frugal train: 128 + the signal).
bool is_stop_code(int rc) {
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGUSR1})
        if (rc == stop_exit_code(sig)) return true;
    return false;
}

}  // namespace

int run_job(const LaunchOptions& opt) {
    const Environment env = current_environment();
    std::vector<std::string> cmd = build_command(opt, env);
    if (opt.dry_run) {
        std::printf("%s\n", join_command(cmd).c_str());
        return 0;
    }
    log::info("launch: ", join_command(cmd));
    install_launcher_handlers();
    for (int attempt = 0;; ++attempt) {
        if (attempt == 1) {
            // Relaunches continue from the newest checkpoint that verifies (none yet: from the start).
            cmd.insert(cmd.end(), {"--set", "checkpoint.resume=auto"});
        }
        const int rc = run_once(cmd, opt.job_stdout_fd);
        if (rc == 0) return 0;
        if (g_signals_received > 0) {
            // Stopped on request: never restarted.
            const int sig = int(g_last_signal);
            log::warn("launch: stopped by ", signal_name(sig), " (job exit code ", rc, ")",
                      is_stop_code(rc) ? ": every rank stopped at a step boundary; with checkpoint.every set, continue "
                                         "with --set checkpoint.resume=auto"
                                       : "");
            return stop_exit_code(sig);
        }
        if (is_stop_code(rc)) {
            log::warn("launch: the ranks were stopped by a signal from outside (exit code ", rc,
                      ", e.g. Slurm's before a time limit) at a step boundary; not restarting");
            return rc;
        }
        // Exit code 2 is a configuration error: running it again cannot help.
        if (rc == 2 || attempt >= opt.max_restarts) {
            if (opt.max_restarts > 0 && rc != 2)
                log::error("launch: the job failed with exit code ", rc, " after ", attempt, " restart(s); giving up");
            return rc;
        }
        log::warn("launch: the job failed with exit code ", rc, "; restart ", attempt + 1, " of ", opt.max_restarts);
    }
}

std::string slurm_script(const LaunchOptions& opt) {
    const std::string config = fs::absolute(opt.config).string();
    const std::string name = "frugal-" + fs::path(opt.config).stem().string();
    std::ostringstream s;
    s << "#!/bin/bash\n"
      << "# Generated by `frugal launch --slurm-script`: " << opt.nodes << " node(s) x " << opt.gpus_per_node
      << " rank(s), one per device. Submit with: sbatch " << opt.slurm_script << "\n"
      << "#SBATCH --job-name=" << name << "\n"
      << "#SBATCH --nodes=" << opt.nodes << "\n"
      << "#SBATCH --ntasks-per-node=" << opt.gpus_per_node << "\n"
      << "#SBATCH --gpus-per-node=" << opt.gpus_per_node << "\n"
      << "#SBATCH --time=" << opt.time_limit << "\n"
      << "#SBATCH --output=" << name << "-%j.out\n"
      << "set -euo pipefail\n"
      << "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}\n"
      << "# Inside the allocation `frugal launch` starts the ranks with srun (--kill-on-bad-exit: one failing rank\n"
      << "# stops them all) and relaunches after a failure up to --max-restarts times.\n"
      << shell_quote(opt.frugal_binary) << " launch -n " << opt.nodes * opt.gpus_per_node << " " << shell_quote(config);
    for (const auto& o : opt.overrides) s << " --set " << shell_quote(o);
    if (opt.max_restarts > 0) s << " --max-restarts " << opt.max_restarts;
    if (!opt.mpirun_args.empty()) {
        s << " --";
        for (const auto& a : opt.mpirun_args) s << " " << shell_quote(a);
    }
    s << "\n";
    return s.str();
}

}  // namespace frugal::launch
