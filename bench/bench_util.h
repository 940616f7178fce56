// Shared by the benchmarks: the median of repeated timings (robust to the noise of a shared machine).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace frugal::bench {

inline double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// The raw-I/O ceiling of the file benchmarks: seconds to write buf to path sequentially and fsync it, then to read
// it back (from the page cache: it was just written).
inline std::pair<double, double> raw_write_read(const std::string& path, std::vector<char>& buf) {
    using Clock = std::chrono::steady_clock;
    auto t0 = Clock::now();
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    FRUGAL_CHECK(fd >= 0, "cannot write ", path);
    FRUGAL_CHECK(::write(fd, buf.data(), buf.size()) == ssize_t(buf.size()), "short write");
    ::fsync(fd);
    ::close(fd);
    const double write_s = std::chrono::duration<double>(Clock::now() - t0).count();
    t0 = Clock::now();
    fd = ::open(path.c_str(), O_RDONLY);
    FRUGAL_CHECK(::read(fd, buf.data(), buf.size()) == ssize_t(buf.size()), "short read");
    ::close(fd);
    return {write_s, std::chrono::duration<double>(Clock::now() - t0).count()};
}

}  // namespace frugal::bench
