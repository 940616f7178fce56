#include "core/log.h"

#include <cstdio>
#include <mutex>

namespace frugal::log {
namespace {
int g_rank = 0;
int g_world = 1;
Level g_level = Level::kInfo;
std::mutex g_mutex;
}  // namespace

void set_rank(int rank, int world_size) {
    g_rank = rank;
    g_world = world_size;
}
void set_level(Level level) { g_level = level; }
int rank() { return g_rank; }

void write(Level level, const std::string& message) {
    if (level < g_level) return;
    // Info lines come from rank 0 only: N copies of the same progress line help nobody.
    if (level <= Level::kInfo && g_rank != 0) return;
    std::lock_guard<std::mutex> lock(g_mutex);
    FILE* stream = level >= Level::kWarn ? stderr : stdout;
    const char* tag = level == Level::kWarn ? "warning: " : level == Level::kError ? "error: " : "";
    if (g_world > 1)
        std::fprintf(stream, "[rank %d] %s%s\n", g_rank, tag, message.c_str());
    else
        std::fprintf(stream, "%s%s\n", tag, message.c_str());
    std::fflush(stream);
}

}  // namespace frugal::log
