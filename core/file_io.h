// Checked file output: every write, flush, fsync and close is checked, and a failure names the path, the system's
// reason and, when the disk is full, the bytes that were needed and the bytes free. Whole files are written
// atomically (PATH.tmp, fsync, rename, fsync of the directory), so a failure leaves the previous file as it was and
// removes the temporary.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"

namespace frugal {

// A file could not be written: the disk is full, the directory is read-only, the device failed.
class IoError : public Error {
  public:
    using Error::Error;
};

// Bytes free to an unprivileged writer on the file system holding path (or its nearest existing parent); -1 when
// it cannot be determined.
int64_t free_bytes(const std::string& path);

// The message for a failed write of path: the system's reason (errno err) and, for ENOSPC or EDQUOT, how many
// bytes were needed and how many are free.
std::string io_failure(const std::string& what, const std::string& path, int err, int64_t bytes_needed);

// Throws IoError when the file system holding path has fewer than bytes free.
void require_free_space(const std::string& path, int64_t bytes, const std::string& what);

// Writes content to path atomically (readers see the old or the new file, never a part); throws IoError. durable:
// also fsync the file and its directory, so the new file survives a power loss (a progress file rewritten every
// step skips that cost).
void write_file_atomic(const std::string& path, std::string_view content, bool durable = true);

// A file appended to line by line (metrics.jsonl): each append is written through and checked.
class AppendFile {
  public:
    AppendFile() = default;
    AppendFile(const std::string& path, bool truncate);
    ~AppendFile();
    AppendFile(const AppendFile&) = delete;
    AppendFile& operator=(const AppendFile&) = delete;
    AppendFile(AppendFile&& o) noexcept;
    AppendFile& operator=(AppendFile&& o) noexcept;

    bool is_open() const { return fd_ >= 0; }
    void append(std::string_view text);
    // fsync and close; throws IoError on failure.
    void close();

  private:
    std::string path_;
    int fd_ = -1;
};

// Throws ConfigError (exit 2) unless dir exists or can be created and a file can be created in it; key names the
// configuration key or flag that chose it.
void check_writable_dir(const std::string& dir, const std::string& key);

}  // namespace frugal
