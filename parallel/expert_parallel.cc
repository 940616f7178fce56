#include "parallel/expert_parallel.h"

#include "core/error.h"
#include "parallel/all_to_all_dispatcher.h"
#include "parallel/hierarchical_dispatcher.h"

namespace frugal::parallel {

NodeLayout node_layout(Communicator& ep_comm, int64_t ranks_per_node, bool hierarchical) {
    NodeLayout out;
    const int64_t ep = ep_comm.size();
    if (ranks_per_node <= 0 || ep % ranks_per_node != 0) return out;
    out.ranks_per_node = ranks_per_node;
    if (hierarchical && ranks_per_node < ep) {
        const int r = ep_comm.rank(), lanes = int(ranks_per_node);
        out.node_comm = ep_comm.split(r / lanes, r, "node");
        out.rail_comm = ep_comm.split(r % lanes, r, "rail");
    }
    return out;
}

template <typename T>
void use_expert_parallel(model::Transformer<T>& net, Communicator& ep_comm, bool fp8_dispatch, bool overlap_shared,
                         const NodeLayout* layout) {
    const model::ModelConfig& m = net.config();
    const bool hierarchical = layout && layout->hierarchical() && ep_comm.size() > 1;
    FRUGAL_CHECK(!(hierarchical && fp8_dispatch), "the hierarchical dispatch sends FP32 rows, not FP8 ones");
    auto layers = net.moe_layers();
    size_t i = 0;
    for (int64_t l : m.moe_block_indices()) {
        model::MoELayer<T>* layer = layers[i++];
        layer->set_overlap_shared(overlap_shared);
        const std::string name = m.block_name(l) + " MoE dispatch";
        if (hierarchical)
            layer->set_dispatcher(std::make_unique<HierarchicalDispatcher<T>>(
                net.ops(), ep_comm, *layout->node_comm, *layout->rail_comm, m.moe.n_experts, name));
        else if (ep_comm.size() > 1)
            layer->set_dispatcher(std::make_unique<AllToAllDispatcher<T>>(
                net.ops(), ep_comm, m.moe.n_experts, name, fp8_dispatch, layout ? layout->ranks_per_node : 0));
        else
            layer->set_dispatcher(
                std::make_unique<model::LocalDispatcher<T>>(net.ops(), m.moe.n_experts, fp8_dispatch));
    }
    FRUGAL_CHECK(i == layers.size(), "expert parallelism wired ", i, " of ", layers.size(), " MoE layers");
}

template <typename T>
int64_t moe_bytes_to_other_nodes(model::Transformer<T>& net) {
    int64_t bytes = 0;
    for (auto* layer : net.moe_layers()) bytes += layer->dispatcher().bytes_to_other_nodes();
    return bytes;
}

template void use_expert_parallel(model::Transformer<float>&, Communicator&, bool, bool, const NodeLayout*);
template void use_expert_parallel(model::Transformer<double>&, Communicator&, bool, bool, const NodeLayout*);
template int64_t moe_bytes_to_other_nodes(model::Transformer<float>&);
template int64_t moe_bytes_to_other_nodes(model::Transformer<double>&);

}  // namespace frugal::parallel
