// A run owns its output: one process writes a run.out_dir at a time (a lock naming the holder), the run has an id
// that its checkpoints carry (retention deletes only that run's files), a fresh run refuses a checkpoint directory
// that holds another run's checkpoints instead of overwriting them, and a resumed run continues the same run: the
// seed and the model must match the checkpoint's, a changed data set is said by name.
#pragma once

#include <string>

namespace frugal::trainer {

// An exclusive lock on DIR/.lock (flock: released when the process ends, however it ends). Throws ConfigError naming
// the process that holds it.
class DirLock {
  public:
    DirLock() = default;
    DirLock(const std::string& dir, const std::string& key);
    ~DirLock();
    DirLock(const DirLock&) = delete;
    DirLock& operator=(const DirLock&) = delete;
    DirLock(DirLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
    DirLock& operator=(DirLock&& o) noexcept;

  private:
    int fd_ = -1;
};

// 32 hex digits from the system's random source.
std::string new_run_id();

// Throws ConfigError when ckpt_dir already holds checkpoints (a fresh run would overwrite or outlive them).
void check_fresh_start(const std::string& ckpt_dir, bool resume_auto);

// Compares the configuration a checkpoint was written with against this run's (both as written by to_yaml): a
// different seed or model is a ConfigError naming every differing key and both values; other differences of the
// data and routing settings are logged as warnings.
void check_resume_compatible(const std::string& ckpt_path, const std::string& ckpt_yaml, const std::string& run_yaml);

}  // namespace frugal::trainer
