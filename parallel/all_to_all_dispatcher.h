// Expert-parallel token dispatcher: the ep ranks of a group each hold E_l = E / ep consecutive experts (rank j:
// experts [j E_l, (j+1) E_l)) and exchange token rows by all-to-all (Megatron's MoEAlltoAllTokenDispatcher).
//
// Dispatch, per MoE layer and micro-batch (D = model dim, S = source rank, e = local expert):
//   prepare      build_permutation over all E experts; send_rows_RD (R_send rows) is grouped by global expert,
//                so the rows for rank j are the contiguous range offset_E[j E_l] .. offset_E[(j+1) E_l]
//   communicate  all_to_all of the per-expert counts: send_counts_E viewed as [ep, E_l] -> recv_count_SE [ep, E_l]
//                all_to_all_v of the rows:  send block j = rows for rank j (sum_e count_E[j E_l + e] rows x D)
//                recv_rows_RD layout: [S][e][rows], block (S, e) at row recv_off_SE[S][e]
//                expert_rows_RD layout: [e][S][rows], block (e, S) at row exp_off_ES[e][S]; tokens of local
//                expert e = sum_S recv_count_SE[S][e]. The rows land there directly: one all_to_all_v per local
//                expert e, whose send block j is global expert j E_l + e (contiguous on the source) and whose
//                receive block S is (e, S) (contiguous here), so no regrouping copy is made. The FP32 rows are
//                gathered from the tokens expert by expert, each exchange started as soon as its rows are, and
//                this rank's own rows are gathered straight into their expert-major block (MPI never copies them).
//                The exchanges are in flight between dispatch_start() and dispatch_wait(), where the MoE layer
//                runs its shared experts.
// Combine mirrors it: expert outputs [e][S] -> one all_to_all_v per local expert back -> rows in the source's
// permuted order (y_back_RD) -> weighted un-permute on the source rank.
// FP8 dispatch sends codes and scales in one exchange in arrival layout [S][e] (recv_off_SE) and dequantizes them
// into expert-major order.
// Backward: combine's backward runs on the source rank (it has y_back) and sends row gradients forward like a
// dispatch; dispatch's backward sends expert-input gradients back like a combine.
//
// Every buffer is a member that grows to the largest micro-batch and is reused across steps. A rank, or an
// expert, that receives no tokens takes part in every exchange with zero counts.
#pragma once

#include <vector>

#include "model/moe/dispatcher.h"
#include "model/transformer.h"
#include "parallel/communicator.h"

namespace frugal::parallel {

template <typename T>
class AllToAllDispatcher final : public model::Dispatcher<T> {
  public:
    // ep_comm: the expert-parallel group (its rank is this rank's ep_rank). layer: name for messages.
    // fp8: quantize the dispatched rows to E4M3 in 1 x 128 tiles with power-of-two scales (DeepSeek-V3 section
    // 3.3) and send codes and scales; the receiver dequantizes. Combine and every backward exchange stay in T.
    // ranks_per_node: consecutive ranks of ep_comm that share a node, for bytes_to_other_nodes() (0: all of them).
    AllToAllDispatcher(const model::Ops<T>& ops, Communicator& ep_comm, int64_t n_experts, std::string layer,
                       bool fp8 = false, int64_t ranks_per_node = 0);
    int64_t first_local_expert() const override { return int64_t(comm_.rank()) * local_; }
    int64_t num_local_experts() const override { return local_; }

    // Per-rank row counts of the last dispatch (for tests and statistics).
    const std::vector<int64_t>& send_rows_per_rank() const { return send_rows_; }
    const std::vector<int64_t>& recv_rows_per_rank() const { return recv_rows_; }
    // Received rows in arrival layout [S][e][rows] (tests read the source tags here).
    const std::vector<int64_t>& recv_count_SE() const { return recv_count_SE_; }
    // Bytes this rank sent to other ranks in the last dispatch (rows it keeps are not counted).
    int64_t dispatch_bytes_sent() const { return dispatch_bytes_sent_; }
    void progress() override { comm_.progress(); }
    int64_t bytes_to_other_nodes() const override { return bytes_to_other_nodes_; }

  protected:
    void dispatch_prepare(const T* x_TD, const int32_t* expert_TK, int64_t t, int64_t k, int64_t e, int64_t d) override;
    void dispatch_communicate() override;
    void dispatch_finish() override;
    void combine_begin(const T* y_rows) override;
    const T* combine_rows(const T* y_rows) override;
    void combine_backward_impl(T* dy_rows, T* dweight_TK, const T* dout_TD, const T* y_rows,
                               const T* weight_TK) override;
    const T* dispatch_backward_communicate(const T* dexpert_rows) override;

  private:
    // [S][e] arrival layout -> [e][S] expert layout (the FP8 path).
    void to_expert_major(T* dst, const T* src) const;
    // The counts of the exchange for local expert e between the sources' permuted order and the expert-major
    // layout; forward: permuted -> expert-major (dispatch), else back (combine). skip_self: this rank's own block
    // is left out (moved without MPI).
    void set_direct_counts(int64_t e, bool forward, bool skip_self);
    // Rows between the sources' permuted order and the expert-major layout, one all_to_all_v per local expert,
    // all in flight together; returns when they are done (wait) or once they are started.
    void exchange_direct(const T* send, T* recv, bool forward, bool wait = true);
    // The FP32 dispatch: for each local expert, gathers the token rows bound for the other ranks into send and
    // starts their exchange, then gathers this rank's own rows straight into expert_rows.
    void start_dispatch_rows(T* send, T* expert_rows);
    // The FP8 dispatch: codes [R_send, D] u8 and scales [R_send, ceil(D / 128)] f32 of the permuted rows go out in
    // arrival layout; dispatch_finish() dequantizes them into expert-major order.
    void start_forward_fp8(const T* send);
    // Starts rows (width elements of dtype each) from the sources to the experts in arrival layout [S][e].
    void start_exchange(const void* send, void* recv, int64_t width, DType dtype);
    // Adds what send_cnt_ sends to ranks on other nodes (elements of elem_bytes) to bytes_to_other_nodes_.
    void count_sent(int64_t elem_bytes);

    backend::Backend& be_;
    Communicator& comm_;
    int64_t n_experts_, local_, ep_;
    std::string layer_;
    std::vector<int64_t> send_rows_, recv_rows_;                      // [ep] rows
    std::vector<int64_t> send_cnt_, send_dsp_, recv_cnt_, recv_dsp_;  // [ep] elements
    std::vector<int64_t> recv_count_SE_, recv_off_SE_, exp_off_ES_;
    int64_t num_recv_ = 0;
    bool fp8_;
    int64_t dispatch_bytes_sent_ = 0;
    int64_t ranks_per_node_, bytes_to_other_nodes_ = 0;
    const T* x_TD_ = nullptr;           // the tokens of the dispatch in flight
    Tensor codes_send_, codes_recv_;    // uint8 E4M3 codes, [rows, D]
    Tensor scales_send_, scales_recv_;  // float, [rows, ceil(D / 128)]
    Tensor recv_rows_RD_, expert_rows_RD_, y_back_RD_, grad_send_RD_, grad_recv_RD_;
};

}  // namespace frugal::parallel
