// Wiring a model's MoE layers to their dispatchers: flat all-to-all over the expert-parallel group, or the
// node-aware hierarchical one when the group spans nodes (parallel.dispatch), or the local one on a single rank.
#pragma once

#include <memory>

#include "model/transformer.h"
#include "parallel/communicator.h"

namespace frugal::parallel {

// How the expert-parallel group lies on nodes: ranks_per_node consecutive ranks share one (0: unknown, as for a
// layout with uneven hosts), and, for the hierarchical dispatch, the communicators of this rank's node and of its
// lane (the ranks at the same place on every node). Every MoE layer's dispatcher shares them.
struct NodeLayout {
    int64_t ranks_per_node = 0;
    std::unique_ptr<Communicator> node_comm, rail_comm;
    bool hierarchical() const { return node_comm != nullptr; }
};

// For ranks_per_node consecutive ranks per node. hierarchical: also split ep_comm into its nodes and rails when it
// spans more than one node (collective on ep_comm).
NodeLayout node_layout(Communicator& ep_comm, int64_t ranks_per_node, bool hierarchical);

// Gives every MoE layer of net its dispatcher: when the group has more than one rank (net must then hold that
// rank's expert shard), the hierarchical one if layout says so, else the flat all-to-all; the local one otherwise.
// overlap_shared: the shared experts run while the dispatch is in flight (MoELayer::set_overlap_shared).
template <typename T>
void use_expert_parallel(model::Transformer<T>& net, Communicator& ep_comm, bool fp8_dispatch,
                         bool overlap_shared = true, const NodeLayout* layout = nullptr);

// Bytes this rank's dispatchers have sent to other nodes so far (0 when the layout is unknown or one node).
template <typename T>
int64_t moe_bytes_to_other_nodes(model::Transformer<T>& net);

}  // namespace frugal::parallel
