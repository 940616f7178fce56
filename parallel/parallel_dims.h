// The process layout. Every rank is data-parallel (it reads its own micro-batches); parallel.ep consecutive ranks
// form an expert-parallel group that holds one copy of all experts, each rank n_experts / ep of them; the ranks
// with the same position in their expert-parallel groups form an expert-data-parallel group (the replicas of the
// same experts).
//
//   ep_rank  = rank mod ep        ep group  = ranks [ (rank div ep) * ep, ... + ep )
//   edp_rank = rank div ep        edp group = ranks { ep_rank + i * ep : i < world / ep }
//
// Consecutive ranks share a node under mpirun's default by-slot mapping, so the all-to-all stays inside a node
// when ep is at most the ranks per node.
#pragma once

#include <cstdint>

#include "model/moe/moe_layer.h"

namespace frugal::parallel {

struct ParallelDims {
    int world = 1, rank = 0;
    int ep = 1, ep_rank = 0;
    int edp = 1, edp_rank = 0;

    // Checks the layout (ConfigError, exit code 2, naming the legal choices) before anything is allocated.
    static ParallelDims make(int world, int rank, int64_t ep, int64_t n_experts);
    model::ExpertShard expert_shard(int64_t n_experts) const { return {ep_rank * (n_experts / ep), n_experts / ep}; }
};

}  // namespace frugal::parallel
