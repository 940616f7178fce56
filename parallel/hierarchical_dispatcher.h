// Node-aware expert-parallel dispatch (parallel.dispatch: hierarchical; DeepEP's normal kernels, which send over
// RDMA between nodes and over NVLink inside one). The ep ranks of a group span N nodes of L = ep / N consecutive
// ranks: rank j is on node j / L, in lane j % L, and holds experts [j E_l, (j+1) E_l) as with the flat dispatcher.
//
// Dispatch, per MoE layer and micro-batch:
//   1. between nodes, over the rail of this rank's lane (the N ranks of that lane, one per node): each token goes
//      to each node holding at least one of its experts once, whatever the number of its experts there, to the
//      rank of the same lane, with its top-k choices as that node's local expert ids (-1 for the others). The
//      "node-tokens" of node m are this rank's tokens with an expert there, in token order, block m of the send.
//   2. inside the node: the node-tokens received from every node (this one included: that block is a copy) are
//      dispatched over the node's L ranks and L E_l experts by a flat AllToAllDispatcher, which places them where
//      the experts read them.
// Combine reverses it: the routing weights go to the forwarding rank, whose node dispatcher sums each node-token's
// weighted expert outputs of that node (in choice order) and sends that one row back over the rail; the source adds
// the nodes' rows in node order. The combine's backward sends the output gradient like a dispatch (one row per
// node-token) and returns the routing weights' gradients; the dispatch's backward returns one input-gradient row
// per node-token, summed over that node's choices.
//
// The experts' inputs and outputs are the flat dispatcher's, row for row. What changes is the order of additions:
// the combine and the input gradient add per node and then over nodes (flat adds in choice order), and the experts
// see their rows grouped by forwarding rank, so their weight gradients add in another order. The order is fixed:
// runs stay bitwise reproducible, and equal to flat ones to float reassociation. FP32/FP64 rows only.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "parallel/all_to_all_dispatcher.h"

namespace frugal::parallel {

template <typename T>
class HierarchicalDispatcher final : public model::Dispatcher<T> {
  public:
    // ep_comm: the expert-parallel group, its ranks by ep_rank; node_comm: this rank's node, the L ranks ordered by
    // lane; rail_comm: this rank's lane, the N ranks ordered by node. layer: name for messages.
    HierarchicalDispatcher(const model::Ops<T>& ops, Communicator& ep_comm, Communicator& node_comm,
                           Communicator& rail_comm, int64_t n_experts, std::string layer);
    int64_t first_local_expert() const override { return first_; }
    int64_t num_local_experts() const override { return inner_.num_local_experts(); }
    void progress() override { rail_.progress(); }
    int64_t bytes_to_other_nodes() const override { return bytes_to_other_nodes_; }
    // The combine runs whole in combine_finish() (its three exchanges depend on one another); combine_start()
    // only records its inputs.
    void combine_finish(T* out_TD) override;
    void dispatch_backward(T* dx_TD, const T* dexpert_rows) override;

    // Node-tokens this rank sent to each node in the last dispatch (tests and statistics).
    const std::vector<int64_t>& node_tokens_sent() const { return send_n_; }

  protected:
    void dispatch_prepare(const T* x_TD, const int32_t* expert_TK, int64_t t, int64_t k, int64_t e, int64_t d) override;
    void dispatch_communicate() override;
    void dispatch_finish() override;
    void combine_backward_impl(T* dy_rows, T* dweight_TK, const T* dout_TD, const T* y_rows,
                               const T* weight_TK) override;

  private:
    // Over the rail, block m of send (send_n_[m] node-tokens of width elements) to node m, block n of recv from
    // node n (recv_n_[n]); back: the other way. Counts what leaves for other nodes.
    void rail_counts(int64_t width, bool back);
    void rail_exchange(const void* send, void* recv, int64_t width, DType dtype, bool back, bool wait = true);
    // The node-tokens' rows of rows_TD (one per token), block by node, into send_rows_.
    const T* gather_node_tokens(const T* rows_TD);

    Communicator& rail_;
    int64_t nodes_, my_node_, experts_per_node_, first_;
    std::string layer_;
    AllToAllDispatcher<T> inner_;
    int64_t t_ = 0, k_ = 0, d_ = 0, num_u_ = 0, num_send_ = 0;  // num_send_: node-tokens sent, all nodes
    // Source side: node-token r of block m carries token send_tok_[r] with choices send_expert_[r k ..].
    std::vector<int64_t> send_n_, send_off_, recv_n_, recv_off_;  // [N]
    std::vector<int32_t> send_tok_, send_expert_;
    std::vector<int32_t> row_of_TN_;  // [T, N]: the node-token of token t for node m, or -1
    // Forwarding side: the node-tokens received, [U, ...].
    std::vector<int32_t> expert_U_;
    std::vector<int64_t> cnt_s_, dsp_s_, cnt_r_, dsp_r_;  // rail counts, [N]
    Tensor send_rows_, rows_U_, out_U_, back_rows_;
    Tensor weight_send_, weight_U_, dweight_U_, dweight_back_;
    int64_t bytes_to_other_nodes_ = 0;
};

}  // namespace frugal::parallel
