// When a CPU kernel forks an OpenMP team. A team costs a fork and a join whatever the loop does; below a few tens of
// thousands of elements that costs more than the loop itself, and on a loaded machine (ranks that poll MPI, a test
// suite run in parallel) a join that waits for a descheduled thread costs a whole time slice. The kernels' loops are
// independent per row with static schedules, so one thread or a team gives bitwise the same results.
#pragma once

#include <cstdint>

namespace frugal::backend::cpu {

// Elements a kernel touches below which it runs on the calling thread.
inline constexpr int64_t kParallelMinWork = int64_t(1) << 15;

inline bool worth_a_team(int64_t work) { return work >= kParallelMinWork; }

}  // namespace frugal::backend::cpu
