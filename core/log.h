// Logging with a rank prefix: "[rank 0] message". Rank and world are set once at start-up by the trainer; by
// default only rank 0 prints info lines, every rank prints warnings and errors.
#pragma once

#include <string>

#include "core/error.h"

namespace frugal::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void set_rank(int rank, int world_size);
void set_level(Level level);
int rank();
void write(Level level, const std::string& message);

template <typename... Args>
void info(const Args&... args) {
    write(Level::kInfo, detail::concat(args...));
}
template <typename... Args>
void warn(const Args&... args) {
    write(Level::kWarn, detail::concat(args...));
}
template <typename... Args>
void error(const Args&... args) {
    write(Level::kError, detail::concat(args...));
}
template <typename... Args>
void debug(const Args&... args) {
    write(Level::kDebug, detail::concat(args...));
}

}  // namespace frugal::log
