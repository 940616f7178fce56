// Shared by the benchmarks: the median of repeated timings (robust to the noise of a shared machine).
#pragma once

#include <algorithm>
#include <vector>

namespace frugal::bench {

inline double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace frugal::bench
