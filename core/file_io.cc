#include "core/file_io.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace frugal {

namespace fs = std::filesystem;

namespace {

// The nearest existing directory at or above path.
std::string existing_dir(const std::string& path) {
    std::error_code ec;
    fs::path p = fs::absolute(path, ec);
    while (!p.empty() && !fs::is_directory(p, ec)) {
        if (p == p.parent_path()) break;
        p = p.parent_path();
    }
    return p.empty() ? "/" : p.string();
}

std::string human_bytes(int64_t b) {
    char buf[64];
    if (b >= (int64_t(1) << 30))
        std::snprintf(buf, sizeof(buf), "%.2f GiB", double(b) / double(int64_t(1) << 30));
    else if (b >= (int64_t(1) << 20))
        std::snprintf(buf, sizeof(buf), "%.2f MiB", double(b) / double(int64_t(1) << 20));
    else
        std::snprintf(buf, sizeof(buf), "%lld bytes", (long long)b);
    return buf;
}

// Writes all of data to fd; returns 0 or the errno of the failure.
int write_all(int fd, const char* data, size_t n) {
    while (n > 0) {
        const ssize_t w = ::write(fd, data, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        data += w;
        n -= size_t(w);
    }
    return 0;
}

int fsync_dir(const std::string& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
    if (fd < 0) return errno;
    const int rc = ::fsync(fd) == 0 ? 0 : errno;
    ::close(fd);
    return rc;
}

}  // namespace

int64_t free_bytes(const std::string& path) {
    struct statvfs st {};
    if (::statvfs(existing_dir(path).c_str(), &st) != 0) return -1;
    return int64_t(st.f_bavail) * int64_t(st.f_frsize);
}

std::string io_failure(const std::string& what, const std::string& path, int err, int64_t bytes_needed) {
    std::string msg = what + " " + path + " failed: " + std::strerror(err);
    if (err == ENOSPC || err == EDQUOT) {
        msg += ": the disk is full";
        if (bytes_needed > 0) msg += " (" + human_bytes(bytes_needed) + " needed";
        const int64_t avail = free_bytes(path);
        if (avail >= 0)
            msg += std::string(bytes_needed > 0 ? ", " : " (") + human_bytes(avail) + " free)";
        else if (bytes_needed > 0)
            msg += ")";
        msg += "; free space on " + existing_dir(path) + " or write elsewhere";
    } else if (err == EROFS || err == EACCES || err == EPERM) {
        msg += "; choose a writable location";
    }
    return msg;
}

void require_free_space(const std::string& path, int64_t bytes, const std::string& what) {
    const int64_t avail = free_bytes(path);
    if (avail >= 0 && avail < bytes)
        throw IoError(detail::where(__FILE__, __LINE__),
                      what + " " + path + " needs " + human_bytes(bytes) + " but only " + human_bytes(avail) +
                          " are free on " + existing_dir(path) +
                          ": the disk is full; free space or write elsewhere (nothing was written)");
}

void write_file_atomic(const std::string& path, std::string_view content, bool durable) {
    const std::string tmp = path + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw IoError(detail::where(__FILE__, __LINE__), io_failure("creating", tmp, errno, 0));
    int err = write_all(fd, content.data(), content.size());
    if (err == 0 && durable && ::fsync(fd) != 0) err = errno;
    if (::close(fd) != 0 && err == 0) err = errno;
    if (err == 0 && std::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
    if (err != 0) {
        ::unlink(tmp.c_str());
        throw IoError(detail::where(__FILE__, __LINE__), io_failure("writing", path, err, int64_t(content.size())));
    }
    if (durable) fsync_dir(existing_dir(fs::path(path).parent_path().string()));
}

AppendFile::AppendFile(const std::string& path, bool truncate) : path_(path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : O_APPEND), 0644);
    if (fd_ < 0) throw IoError(detail::where(__FILE__, __LINE__), io_failure("opening", path, errno, 0));
}

AppendFile::~AppendFile() {
    if (fd_ >= 0) ::close(fd_);
}

AppendFile::AppendFile(AppendFile&& o) noexcept : path_(std::move(o.path_)), fd_(o.fd_) { o.fd_ = -1; }

AppendFile& AppendFile::operator=(AppendFile&& o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) ::close(fd_);
        path_ = std::move(o.path_);
        fd_ = o.fd_;
        o.fd_ = -1;
    }
    return *this;
}

void AppendFile::append(std::string_view text) {
    FRUGAL_CHECK(fd_ >= 0, "append to ", path_, " after close");
    if (const int err = write_all(fd_, text.data(), text.size()); err != 0)
        throw IoError(detail::where(__FILE__, __LINE__), io_failure("writing", path_, err, int64_t(text.size())));
}

void AppendFile::close() {
    if (fd_ < 0) return;
    int err = ::fsync(fd_) == 0 ? 0 : errno;
    if (err == EINVAL) err = 0;  // a pipe or a special file cannot be synced
    if (::close(fd_) != 0 && err == 0) err = errno;
    fd_ = -1;
    if (err != 0) throw IoError(detail::where(__FILE__, __LINE__), io_failure("writing", path_, err, 0));
}

void check_writable_dir(const std::string& dir, const std::string& key) {
    std::error_code ec;
    if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
        FRUGAL_CONFIG_ERROR(key, " = ", dir, " is a file, not a directory: choose a directory path");
    fs::create_directories(dir, ec);
    if (ec)
        FRUGAL_CONFIG_ERROR(key, " = ", dir, ": cannot create it (", ec.message(),
                            "): choose a writable location or create it first");
    const std::string probe = (fs::path(dir) / ".frugal-write-test").string();
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        const int err = errno;
        FRUGAL_CONFIG_ERROR(key, " = ", dir, " is not writable (", std::strerror(err),
                            "): choose a writable location or fix its permissions");
    }
    ::close(fd);
    ::unlink(probe.c_str());
}

}  // namespace frugal
