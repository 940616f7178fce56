#include "trainer/run_guard.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/log.h"

namespace frugal::trainer {

namespace fs = std::filesystem;

DirLock::DirLock(const std::string& dir, const std::string& key) {
    const std::string path = (fs::path(dir) / ".lock").string();
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0)
        FRUGAL_CONFIG_ERROR(key, " = ", dir, ": cannot create its lock file ", path, " (", std::strerror(errno),
                            "): choose a writable location");
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
        std::string holder;
        std::getline(std::ifstream(path), holder);
        ::close(fd_);
        fd_ = -1;
        FRUGAL_CONFIG_ERROR(key, " = ", dir, " is in use by another run (", holder.empty() ? "unknown process" : holder,
                            "): wait for it to finish, stop it, or choose another ", key);
    }
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    const std::time_t now = std::time(nullptr);
    char when[64] = {};
    std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
    const std::string holder =
        "pid " + std::to_string(::getpid()) + " on host " + std::string(host) + " since " + when + "\n";
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, holder.data(), holder.size(), 0) != ssize_t(holder.size()))
        log::warn("cannot record the lock holder in ", path, ": ", std::strerror(errno));
}

DirLock::~DirLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the flock
}

DirLock& DirLock::operator=(DirLock&& o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = o.fd_;
        o.fd_ = -1;
    }
    return *this;
}

std::string new_run_id() {
    std::random_device rd;
    std::ostringstream os;
    for (int i = 0; i < 4; ++i) {
        char part[9];
        std::snprintf(part, sizeof(part), "%08x", unsigned(rd()));
        os << part;
    }
    return os.str();
}

void check_fresh_start(const std::string& ckpt_dir, bool resume_auto) {
    const std::vector<std::string> existing = checkpoint::list_checkpoints(ckpt_dir);
    if (existing.empty()) return;
    if (resume_auto)
        FRUGAL_CONFIG_ERROR("checkpoint.resume: auto found no checkpoint that verifies in ", ckpt_dir, ", which holds ",
                            existing.size(), " checkpoint file(s) (newest ",
                            fs::path(existing.front()).filename().string(),
                            "): a fresh run would overwrite them. Move them away (`frugal ckpt verify` says what is "
                            "wrong with them), or set run.out_dir or checkpoint.dir to a new directory");
    FRUGAL_CONFIG_ERROR(ckpt_dir, " holds the checkpoints of an earlier run (", existing.size(), " file(s), newest ",
                        fs::path(existing.front()).filename().string(),
                        ") and this run starts fresh (checkpoint.resume: none), which would overwrite them: continue "
                        "that run with --set checkpoint.resume=auto, or set run.out_dir or checkpoint.dir to a new "
                        "directory");
}

namespace {

// key path ("model.d_model") -> scalar text of a YAML document.
void flatten(const YAML::Node& n, const std::string& prefix, std::map<std::string, std::string>& out) {
    if (n.IsMap()) {
        for (const auto& kv : n) flatten(kv.second, prefix + kv.first.as<std::string>() + ".", out);
    } else if (n.IsSequence()) {
        std::string s;
        for (const auto& e : n) s += (s.empty() ? "" : ",") + (e.IsScalar() ? e.as<std::string>() : std::string("?"));
        out[prefix.substr(0, prefix.size() - 1)] = "[" + s + "]";
    } else if (n.IsScalar()) {
        out[prefix.substr(0, prefix.size() - 1)] = n.as<std::string>();
    }
}

std::map<std::string, std::string> flat_yaml(const std::string& text) {
    std::map<std::string, std::string> out;
    try {
        flatten(YAML::Load(text), "", out);
    } catch (const YAML::Exception&) {
        out.clear();
    }
    return out;
}

// Keys whose change makes a resumed run a different run: the seed (every random draw depends on it) and what
// defines the model's function. Routing coefficients, the data and the schedule may change on resume (with a
// warning for the data and routing settings).
bool defines_the_run(const std::string& key) {
    if (key == "run.seed") return true;
    if (key.rfind("model.", 0) == 0)
        return key != "model.init_from" && key != "model.init_std" && key != "model.max_seq_len";
    for (const char* k :
         {"moe.n_experts", "moe.top_k", "moe.d_expert", "moe.n_shared_experts", "moe.shared_expert_gate",
          "moe.score_func", "moe.norm_topk_prob", "moe.routed_scaling_factor"})
        if (key == k) return true;
    return false;
}

}  // namespace

void check_resume_compatible(const std::string& ckpt_path, const std::string& ckpt_yaml, const std::string& run_yaml) {
    const auto before = flat_yaml(ckpt_yaml), now = flat_yaml(run_yaml);
    if (before.empty()) {
        log::warn("cannot read the configuration stored in ", ckpt_path, "; resuming without comparing it");
        return;
    }
    std::string refused;
    for (const auto& [key, value] : now) {
        const auto it = before.find(key);
        if (it == before.end() || it->second == value) continue;
        const std::string change = key + ": " + it->second + " in the checkpoint, " + value + " now";
        if (defines_the_run(key))
            refused += (refused.empty() ? "" : "; ") + change;
        else if (key.rfind("data.", 0) == 0 || key.rfind("moe.", 0) == 0)
            log::warn("resuming ", ckpt_path, " with a changed setting: ", change);
    }
    if (!refused.empty())
        FRUGAL_CONFIG_ERROR("checkpoint.resume: auto found ", ckpt_path, ", written by another run (", refused,
                            "): set these back to continue it, or set run.out_dir or checkpoint.dir to a new "
                            "directory to start a new run");
}

}  // namespace frugal::trainer
