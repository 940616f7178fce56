#include "parallel/hierarchical_dispatcher.h"

#include <algorithm>

#include "core/error.h"
#include "model/layers/common.h"

namespace frugal::parallel {

using model::ensure;
using model::ensure_zero;

template <typename T>
HierarchicalDispatcher<T>::HierarchicalDispatcher(const model::Ops<T>& ops, Communicator& ep_comm,
                                                  Communicator& node_comm, Communicator& rail_comm, int64_t n_experts,
                                                  std::string layer)
    : model::Dispatcher<T>(ops),
      rail_(rail_comm),
      nodes_(rail_comm.size()),
      my_node_(rail_comm.rank()),
      experts_per_node_(n_experts / std::max(rail_comm.size(), 1)),
      first_(int64_t(ep_comm.rank()) * (n_experts / std::max(ep_comm.size(), 1))),
      layer_(std::move(layer)),
      inner_(ops, node_comm, n_experts / std::max(rail_comm.size(), 1), layer_ + " inside the node") {
    const int64_t ep = ep_comm.size(), lanes = node_comm.size();
    FRUGAL_CHECK(nodes_ * lanes == ep && ep_comm.rank() == my_node_ * lanes + node_comm.rank(),
                 "hierarchical dispatch: ", ep, " expert-parallel ranks are not ", nodes_, " nodes of ", lanes,
                 " consecutive ranks");
    FRUGAL_CHECK(n_experts % ep == 0, "moe.n_experts (", n_experts, ") must be divisible by parallel.ep (", ep, ")");
    send_n_.assign(size_t(nodes_), 0);
    send_off_.assign(size_t(nodes_), 0);
    recv_n_.assign(size_t(nodes_), 0);
    recv_off_.assign(size_t(nodes_), 0);
    cnt_s_.assign(size_t(nodes_), 0);
    dsp_s_.assign(size_t(nodes_), 0);
    cnt_r_.assign(size_t(nodes_), 0);
    dsp_r_.assign(size_t(nodes_), 0);
}

template <typename T>
void HierarchicalDispatcher<T>::dispatch_prepare(const T* x_TD, const int32_t* expert_TK, int64_t t, int64_t k,
                                                 int64_t e, int64_t d) {
    FRUGAL_CHECK(e == experts_per_node_ * nodes_, "dispatcher built for ", experts_per_node_ * nodes_,
                 " experts, router has ", e);
    t_ = t;
    k_ = k;
    d_ = d;
    this->handle_.d = d;
    // Which nodes each token goes to (row_of_TN_ as a flag first), and how many tokens each node gets.
    row_of_TN_.assign(size_t(t * nodes_), -1);
    std::fill(send_n_.begin(), send_n_.end(), 0);
    for (int64_t i = 0; i < t; ++i)
        for (int64_t j = 0; j < k; ++j) {
            const int32_t g = expert_TK[i * k + j];
            if (g < 0) continue;
            int32_t& flag = row_of_TN_[size_t(i * nodes_ + g / experts_per_node_)];
            if (flag < 0) {
                flag = 0;
                ++send_n_[size_t(g / experts_per_node_)];
            }
        }
    num_send_ = 0;
    for (int64_t m = 0; m < nodes_; ++m) {
        send_off_[size_t(m)] = num_send_;
        num_send_ += send_n_[size_t(m)];
    }
    // Block m holds node m's tokens in token order, each with its choices as node m's local experts.
    send_tok_.resize(size_t(std::max<int64_t>(num_send_, 1)));
    send_expert_.resize(size_t(std::max<int64_t>(num_send_, 1) * k));
    std::vector<int64_t>& cursor = cnt_s_;  // free until the exchange
    std::copy(send_off_.begin(), send_off_.end(), cursor.begin());
    for (int64_t i = 0; i < t; ++i)
        for (int64_t m = 0; m < nodes_; ++m) {
            int32_t& row = row_of_TN_[size_t(i * nodes_ + m)];
            if (row < 0) continue;
            row = int32_t(cursor[size_t(m)]++);
            send_tok_[size_t(row)] = int32_t(i);
            for (int64_t j = 0; j < k; ++j) {
                const int32_t g = expert_TK[i * k + j];
                send_expert_[size_t(row * k + j)] =
                    g >= 0 && g / experts_per_node_ == m ? int32_t(g - m * experts_per_node_) : -1;
            }
        }
    gather_node_tokens(x_TD);
}

template <typename T>
const T* HierarchicalDispatcher<T>::gather_node_tokens(const T* rows_TD) {
    T* rows = ensure<T>(this->ops_, send_rows_, std::max<int64_t>(num_send_, 1) * d_);
    this->ops_.permute_rows(rows, rows_TD, send_tok_.data(), num_send_, d_);
    return rows;
}

template <typename T>
void HierarchicalDispatcher<T>::rail_counts(int64_t width, bool back) {
    for (int64_t m = 0; m < nodes_; ++m) {
        const size_t i = size_t(m);
        cnt_s_[i] = (back ? recv_n_[i] : send_n_[i]) * width;
        dsp_s_[i] = (back ? recv_off_[i] : send_off_[i]) * width;
        cnt_r_[i] = (back ? send_n_[i] : recv_n_[i]) * width;
        dsp_r_[i] = (back ? send_off_[i] : recv_off_[i]) * width;
    }
}

template <typename T>
void HierarchicalDispatcher<T>::rail_exchange(const void* send, void* recv, int64_t width, DType dtype, bool back,
                                              bool wait) {
    rail_counts(width, back);
    for (int64_t m = 0; m < nodes_; ++m)
        if (m != my_node_) bytes_to_other_nodes_ += cnt_s_[size_t(m)] * int64_t(dtype_size(dtype));
    rail_.set_layer(layer_ + " between nodes");
    rail_.start_all_to_all_v(send, cnt_s_.data(), dsp_s_.data(), recv, cnt_r_.data(), dsp_r_.data(), dtype);
    if (wait) rail_.finish_all();
}

template <typename T>
void HierarchicalDispatcher<T>::dispatch_communicate() {
    rail_.set_layer(layer_ + " between nodes");
    rail_.all_to_all(send_n_.data(), recv_n_.data(), 1, DType::kI64);
    num_u_ = 0;
    for (int64_t n = 0; n < nodes_; ++n) {
        recv_off_[size_t(n)] = num_u_;
        num_u_ += recv_n_[size_t(n)];
    }
    T* rows_u = ensure<T>(this->ops_, rows_U_, std::max<int64_t>(num_u_, 1) * d_);
    expert_U_.resize(size_t(std::max<int64_t>(num_u_, 1) * k_));
    rail_exchange(send_rows_.template data<T>(), rows_u, d_, DTypeOf<T>::value, false, false);
    rail_exchange(send_expert_.data(), expert_U_.data(), k_, DType::kI32, false, false);
}

template <typename T>
void HierarchicalDispatcher<T>::dispatch_finish() {
    rail_.finish_all();
    // The node's tokens, from every node, to this node's experts: a flat dispatch inside the node.
    const model::DispatchHandle<T>& inner =
        inner_.dispatch(rows_U_.template data<T>(), expert_U_.data(), num_u_, k_, experts_per_node_, d_);
    auto& h = this->handle_;
    h.expert_rows = inner.expert_rows;
    h.num_expert_rows = inner.num_expert_rows;
    h.tokens_per_local_expert = inner.tokens_per_local_expert;
}

template <typename T>
void HierarchicalDispatcher<T>::combine_finish(T* out_TD) {
    const T *y_rows = this->combine_y_, *weight_TK = this->combine_w_;
    // The routing weights go with their node-tokens to the forwarding ranks...
    T* w_send = ensure<T>(this->ops_, weight_send_, std::max<int64_t>(num_send_, 1) * k_);
    for (int64_t r = 0; r < num_send_; ++r)
        std::copy_n(weight_TK + int64_t(send_tok_[size_t(r)]) * k_, k_, w_send + r * k_);
    T* w_u = ensure<T>(this->ops_, weight_U_, std::max<int64_t>(num_u_, 1) * k_);
    rail_exchange(w_send, w_u, k_, DTypeOf<T>::value, false);
    // ...which sum each node-token's weighted outputs of their node's experts...
    T* out_u = ensure_zero<T>(this->ops_, out_U_, std::max<int64_t>(num_u_, 1) * d_);
    inner_.combine(out_u, y_rows, w_u);
    // ...and send that one row back; the source adds the nodes' rows in node order.
    T* back = ensure<T>(this->ops_, back_rows_, std::max<int64_t>(num_send_, 1) * d_);
    rail_exchange(out_u, back, d_, DTypeOf<T>::value, true);
    this->ops_.permute_rows_backward(out_TD, back, row_of_TN_.data(), t_, nodes_, d_);
}

template <typename T>
void HierarchicalDispatcher<T>::combine_backward_impl(T* dy_rows, T* dweight_TK, const T* dout_TD, const T* y_rows,
                                                      const T*) {
    // The output gradient goes out as the tokens did (rows_U_ holds it: the node-tokens' inputs are not needed
    // after the dispatch)...
    T* dout_u = ensure<T>(this->ops_, rows_U_, std::max<int64_t>(num_u_, 1) * d_);
    rail_exchange(gather_node_tokens(dout_TD), dout_u, d_, DTypeOf<T>::value, false);
    // ...the forwarding ranks run the node's combine backward with the weights the combine brought...
    T* dw_u = ensure_zero<T>(this->ops_, dweight_U_, std::max<int64_t>(num_u_, 1) * k_);
    inner_.combine_backward(dy_rows, dw_u, dout_u, y_rows, weight_U_.template data<T>());
    // ...and return each choice's weight gradient, which only the node of its expert computed.
    T* dw_back = ensure<T>(this->ops_, dweight_back_, std::max<int64_t>(num_send_, 1) * k_);
    rail_exchange(dw_u, dw_back, k_, DTypeOf<T>::value, true);
    for (int64_t r = 0; r < num_send_; ++r) {
        const int64_t i = send_tok_[size_t(r)];
        for (int64_t j = 0; j < k_; ++j)
            if (send_expert_[size_t(r * k_ + j)] >= 0) dweight_TK[i * k_ + j] += dw_back[r * k_ + j];
    }
}

template <typename T>
void HierarchicalDispatcher<T>::dispatch_backward(T* dx_TD, const T* dexpert_rows) {
    // Each node-token's input gradient, summed over its node's choices on the forwarding rank, back to the source.
    T* dx_u = ensure_zero<T>(this->ops_, out_U_, std::max<int64_t>(num_u_, 1) * d_);
    inner_.dispatch_backward(dx_u, dexpert_rows);
    T* back = ensure<T>(this->ops_, back_rows_, std::max<int64_t>(num_send_, 1) * d_);
    rail_exchange(dx_u, back, d_, DTypeOf<T>::value, true);
    this->ops_.permute_rows_backward(dx_TD, back, row_of_TN_.data(), t_, nodes_, d_);
}

template class HierarchicalDispatcher<float>;
template class HierarchicalDispatcher<double>;

}  // namespace frugal::parallel
