#include "parallel/parallel_dims.h"

#include <string>

#include "core/error.h"

namespace frugal::parallel {

namespace {
std::string divisors(int64_t n) {
    std::string out;
    for (int64_t d = 1; d <= n; ++d)
        if (n % d == 0) out += (out.empty() ? "" : ", ") + std::to_string(d);
    return out;
}
}  // namespace

ParallelDims ParallelDims::make(int world, int rank, int64_t ep, int64_t n_experts) {
    FRUGAL_CONFIG_CHECK(ep >= 1 && world % ep == 0, "parallel.ep (", ep, ") must divide the world size (", world,
                        "): set parallel.ep to one of ", divisors(world));
    FRUGAL_CONFIG_CHECK(n_experts == 0 || n_experts % ep == 0, "parallel.ep (", ep, ") must divide moe.n_experts (",
                        n_experts, "): set parallel.ep to one of the common divisors of ", n_experts, " and ", world);
    ParallelDims d;
    d.world = world;
    d.rank = rank;
    d.ep = int(ep);
    d.ep_rank = rank % d.ep;
    d.edp = world / d.ep;
    d.edp_rank = rank / d.ep;
    return d;
}

}  // namespace frugal::parallel
