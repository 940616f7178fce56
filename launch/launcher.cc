#include "launch/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
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
            // TCP keepalives on the connections between mpirun and the Open MPI daemons of the other hosts: a host
            // that dies or a network that goes down and stays down ends the job in about 11 s (Open MPI's default
            // is 300 + 9 x 20 s; without them a partition can leave mpirun and a remote daemon waiting on each
            // other for ever). A value given after "--" wins.
            for (const auto& [key, value] : multi_host_keepalives()) {
                if (std::find(opt.mpirun_args.begin(), opt.mpirun_args.end(), key) == opt.mpirun_args.end())
                    cmd.insert(cmd.end(), {"--mca", key, value});
            }
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

const std::vector<std::pair<std::string, std::string>>& multi_host_keepalives() {
    static const std::vector<std::pair<std::string, std::string>> kKeepalives = {
        {"oob_tcp_keepalive_time", "5"}, {"oob_tcp_keepalive_intvl", "2"}, {"oob_tcp_keepalive_probes", "3"}};
    return kKeepalives;
}

JobFailure read_job_failure(const std::string& output, int rc) {
    JobFailure f;
    auto after = [&](const std::string& key, size_t from) -> std::string {
        const size_t p = output.find(key, from);
        if (p == std::string::npos) return {};
        size_t b = p + key.size();
        while (b < output.size() && output[b] == ' ') ++b;  // "Peer host:  HOST"
        size_t e = b;
        while (e < output.size() && !std::isspace(static_cast<unsigned char>(output[e])) && output[e] != ',') ++e;
        return output.substr(b, e - b);
    };
    // mpirun's words for a daemon it lost: the connection to it failed (a partition, a dead host), or the process
    // that started it (the rsh/ssh agent) died (its processes were killed), which Open MPI reports as a launch
    // failure.
    size_t from = std::string::npos;
    for (const char* words : {"lost communication with a remote daemon", "daemon has unexpectedly failed",
                              "unable to reliably start one or more daemons"})
        from = std::min(from, output.find(words));
    if (from != std::string::npos || rc == 205) {
        f.lost_host = true;
        if (from == std::string::npos) from = 0;
        const size_t remote = output.find("Remote daemon:", from);  // "Remote daemon: [[job,0],1] on node HOST"
        if (remote != std::string::npos) f.host = after(" on node ", remote);
        // The TCP transport's "peer hung up" names the host at the other end.
        if (f.host.empty()) f.host = after("Peer host:", 0);
    }
    // "mpirun noticed that process rank 3 with PID 123 on node HOST exited on signal 9 (Killed)."
    const size_t noticed = output.find("noticed that process rank ");
    if (noticed != std::string::npos) {
        f.rank = std::atoi(after("process rank ", noticed).c_str());
        if (f.host.empty()) f.host = after(" on node ", noticed);
        const std::string sig = after("exited on signal ", noticed);
        if (!sig.empty()) f.signal = std::atoi(sig.c_str());
    }
    return f;
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
// if the launcher dies. Its standard error passes through the launcher, which keeps the last 64 KiB in *err_tail
// to explain a failure (read_job_failure).
int run_once(const std::vector<std::string>& cmd, int stdout_fd, std::string* err_tail) {
    const pid_t parent = ::getpid();
    int err_pipe[2] = {-1, -1};
    FRUGAL_CHECK(::pipe2(err_pipe, O_CLOEXEC) == 0, "pipe failed while starting ", cmd[0]);
    pid_t pid = ::fork();
    FRUGAL_CHECK(pid >= 0, "fork failed while starting ", cmd[0]);
    if (pid == 0) {
        ::setpgid(0, 0);
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != parent) std::_Exit(1);
        const int null_fd = ::open("/dev/null", O_RDONLY);
        if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
        if (stdout_fd >= 0) ::dup2(stdout_fd, STDOUT_FILENO);
        ::dup2(err_pipe[1], STDERR_FILENO);
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
    ::close(err_pipe[1]);
    // Copy the job's standard error through until every writer has closed it, or for at most 2 s after mpirun
    // exited (a process it left behind may hold the pipe).
    char buf[4096];
    int forwarded = 0, status = 0;
    bool exited = false;
    auto exited_at = std::chrono::steady_clock::now();
    for (;;) {
        while (forwarded < g_signals_received) forward_signal(pid, ++forwarded, int(g_last_signal));
        if (!exited && ::waitpid(pid, &status, WNOHANG) == pid) {
            exited = true;
            exited_at = std::chrono::steady_clock::now();
        }
        if (exited && std::chrono::steady_clock::now() - exited_at > std::chrono::seconds(2)) break;
        pollfd p{err_pipe[0], POLLIN, 0};
        if (::poll(&p, 1, 200) <= 0) continue;  // a signal (EINTR) or a quiet moment
        const ssize_t n = ::read(err_pipe[0], buf, sizeof(buf));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t w = 0; w < n;) {
            const ssize_t k = ::write(STDERR_FILENO, buf + w, size_t(n - w));
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) break;
            w += k;
        }
        if (err_tail) {
            err_tail->append(buf, size_t(n));
            if (err_tail->size() > (size_t(1) << 16)) err_tail->erase(0, err_tail->size() - (size_t(1) << 15));
        }
    }
    ::close(err_pipe[0]);
    while (!exited && ::waitpid(pid, &status, 0) < 0) {
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
        std::string err_tail;
        int rc = run_once(cmd, opt.job_stdout_fd, &err_tail);
        if (rc == 0) return 0;
        const JobFailure failure = read_job_failure(err_tail, rc);
        if (failure.lost_host && g_signals_received == 0) {
            log::error("launch: host ", failure.host.empty() ? std::string("(unknown)") : failure.host,
                       " was lost: mpirun stopped hearing from its Open MPI daemon there (mpirun exit code ", rc,
                       "), so the host died, its processes were killed, or the network to it went down (at "
                       "start-up: the daemon could not be started there, see mpirun's message above). Every rank "
                       "has been stopped. Check the host and the network, then relaunch (the run continues from "
                       "its last checkpoint with --set checkpoint.resume=auto, or pass --max-restarts)");
            rc = kExitHostLost;
        } else if (failure.rank >= 0 && g_signals_received == 0) {
            log::error("launch: rank ", failure.rank, failure.host.empty() ? "" : " on host " + failure.host,
                       failure.signal > 0 ? " was killed by signal " + std::to_string(failure.signal) + " (" +
                                                signal_name(failure.signal) + ")"
                                          : std::string(" failed"),
                       "; every other rank has been stopped (job exit code ", rc, ")");
        }
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
        log::warn("launch: the job failed with exit code ", rc, "; restart ", attempt + 1, " of ", opt.max_restarts,
                  rc == kExitHostLost ? " in " + std::to_string(kHostLostRestartDelaySeconds) +
                                            " s, for the host or the network to come back"
                                      : std::string());
        if (rc == kExitHostLost) {
            const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(kHostLostRestartDelaySeconds);
            while (std::chrono::steady_clock::now() < until && g_signals_received == 0)
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
            if (g_signals_received > 0) {
                log::warn("launch: stopped by ", signal_name(int(g_last_signal)), " before the restart");
                return stop_exit_code(int(g_last_signal));
            }
        }
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
