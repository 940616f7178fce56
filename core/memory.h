// Resident memory of this process (Linux), for the memory lines of the tools that load large models.
#pragma once

#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace frugal {

// Resident set size now, in bytes (0 when /proc is unavailable).
inline int64_t current_rss_bytes() {
    long pages_total = 0, pages_resident = 0;
    FILE* f = std::fopen("/proc/self/statm", "r");
    if (!f) return 0;
    const int got = std::fscanf(f, "%ld %ld", &pages_total, &pages_resident);
    std::fclose(f);
    return got == 2 ? int64_t(pages_resident) * int64_t(::sysconf(_SC_PAGESIZE)) : 0;
}

// Highest resident set size so far, in bytes.
inline int64_t peak_rss_bytes() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return int64_t(u.ru_maxrss) * 1024;  // kilobytes on Linux
}

// Memory the kernel can give without swapping (MemAvailable of /proc/meminfo), in bytes; -1 when unknown.
inline int64_t available_memory_bytes() {
    FILE* f = std::fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    long long kb = -1;
    while (std::fgets(line, sizeof(line), f))
        if (std::sscanf(line, "MemAvailable: %lld kB", &kb) == 1) break;
    std::fclose(f);
    return kb < 0 ? -1 : int64_t(kb) * 1024;
}

// How many ranks of this job share this machine, and so its memory: Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE, MPICH's
// MPI_LOCALNRANKS, Slurm's SLURM_NTASKS_PER_NODE (set by srun --ntasks-per-node), else world_size (all ranks on one
// machine: the cautious answer).
inline int64_t ranks_on_this_machine(int64_t world_size) {
    for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"}) {
        const char* v = std::getenv(var);
        char* end = nullptr;
        const long long n = v ? std::strtoll(v, &end, 10) : 0;
        if (v && end != v && *end == '\0' && n >= 1) return n;
    }
    return world_size < 1 ? 1 : world_size;
}

}  // namespace frugal
