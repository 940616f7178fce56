#include "parallel/all_to_all_dispatcher.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "core/error.h"
#include "model/layers/common.h"

namespace frugal::parallel {

using model::ensure;
using model::ensure_zero;

template <typename T>
AllToAllDispatcher<T>::AllToAllDispatcher(const model::Ops<T>& ops, Communicator& ep_comm, int64_t n_experts,
                                          std::string layer, bool fp8, int64_t ranks_per_node)
    : model::Dispatcher<T>(ops),
      be_(ops.backend()),
      comm_(ep_comm),
      n_experts_(n_experts),
      ep_(ep_comm.size()),
      layer_(std::move(layer)),
      fp8_(fp8),
      ranks_per_node_(ranks_per_node > 0 ? ranks_per_node : ep_comm.size()) {
    constexpr bool kIsFloat = std::is_same_v<T, float>;
    FRUGAL_CHECK(!fp8 || kIsFloat, "FP8 dispatch quantizes float rows");
    FRUGAL_CHECK(n_experts % ep_ == 0, "moe.n_experts (", n_experts, ") must be divisible by parallel.ep (", ep_, ")");
    local_ = n_experts / ep_;
    send_rows_.assign(size_t(ep_), 0);
    recv_rows_.assign(size_t(ep_), 0);
    send_cnt_.assign(size_t(ep_), 0);
    send_dsp_.assign(size_t(ep_), 0);
    recv_cnt_.assign(size_t(ep_), 0);
    recv_dsp_.assign(size_t(ep_), 0);
    recv_count_SE_.assign(size_t(ep_ * local_), 0);
    recv_off_SE_.assign(size_t(ep_ * local_), 0);
    exp_off_ES_.assign(size_t(local_ * ep_), 0);
}

template <typename T>
void AllToAllDispatcher<T>::dispatch_prepare(const T* x_TD, const int32_t* expert_TK, int64_t t, int64_t k, int64_t e,
                                             int64_t d) {
    FRUGAL_CHECK(e == n_experts_, "dispatcher built for ", n_experts_, " experts, router has ", e);
    auto& h = this->handle_;
    h.d = d;
    x_TD_ = x_TD;
    model::build_permutation(be_, h.perm, expert_TK, t, k, e);
    T* rows = ensure<T>(this->ops_, h.send_rows_RD, std::max<int64_t>(h.perm.num_rows, 1) * d);
    if (fp8_)
        model::permute_rows(this->ops_, rows, x_TD, h.perm, d);  // quantized whole; FP32 rows are gathered
                                                                 // block by block as they are sent
    for (int64_t j = 0; j < ep_; ++j)
        send_rows_[size_t(j)] = h.perm.offset_E[size_t((j + 1) * local_)] - h.perm.offset_E[size_t(j * local_)];
}

template <typename T>
void AllToAllDispatcher<T>::dispatch_communicate() {
    auto& h = this->handle_;
    const int64_t d = h.d;
    comm_.set_layer(layer_);
    // Counts: rank j receives, from every source S, the E_l counts of its own experts.
    comm_.all_to_all(h.perm.tokens_per_expert_E.data(), recv_count_SE_.data(), local_, DType::kI64);
    num_recv_ = 0;
    for (int64_t s = 0; s < ep_; ++s) {
        int64_t rows = 0;
        for (int64_t e = 0; e < local_; ++e) {
            recv_off_SE_[size_t(s * local_ + e)] = num_recv_ + rows;
            rows += recv_count_SE_[size_t(s * local_ + e)];
        }
        recv_rows_[size_t(s)] = rows;
        num_recv_ += rows;
    }
    int64_t off = 0;
    for (int64_t e = 0; e < local_; ++e)
        for (int64_t s = 0; s < ep_; ++s) {
            exp_off_ES_[size_t(e * ep_ + s)] = off;
            off += recv_count_SE_[size_t(s * local_ + e)];
        }
    T* rows = ensure<T>(this->ops_, expert_rows_RD_, std::max<int64_t>(num_recv_, 1) * d);
    if (fp8_) {
        ensure<T>(this->ops_, recv_rows_RD_, std::max<int64_t>(num_recv_, 1) * d);
        start_forward_fp8(h.send_rows_RD.template data<T>());
    } else {
        start_dispatch_rows(h.send_rows_RD.template data<T>(), rows);
        dispatch_bytes_sent_ = (h.perm.num_rows - send_rows_[size_t(comm_.rank())]) * d * int64_t(sizeof(T));
    }
}

template <typename T>
void AllToAllDispatcher<T>::set_direct_counts(int64_t e, bool forward, bool skip_self) {
    const auto& perm = this->handle_.perm;
    const int64_t d = this->handle_.d;
    for (int64_t j = 0; j < ep_; ++j) {
        // Peer j as destination: its local expert e is global expert j E_l + e, whose rows are contiguous in this
        // rank's permuted order. Peer j as source: its rows for our local expert e, block (e, j) here. The same
        // index j E_l + e names both: global expert g here and (source j, local e) in recv_count_SE.
        const size_t g = size_t(j * local_ + e), es = size_t(e * ep_ + j);
        const bool none = skip_self && j == comm_.rank();
        const int64_t src_cnt = none ? 0 : perm.tokens_per_expert_E[g] * d, src_dsp = perm.offset_E[g] * d;
        const int64_t exp_cnt = none ? 0 : recv_count_SE_[g] * d, exp_dsp = exp_off_ES_[es] * d;
        send_cnt_[size_t(j)] = forward ? src_cnt : exp_cnt;
        send_dsp_[size_t(j)] = forward ? src_dsp : exp_dsp;
        recv_cnt_[size_t(j)] = forward ? exp_cnt : src_cnt;
        recv_dsp_[size_t(j)] = forward ? exp_dsp : src_dsp;
    }
}

template <typename T>
void AllToAllDispatcher<T>::exchange_direct(const T* send, T* recv, bool forward, bool wait) {
    for (int64_t e = 0; e < local_; ++e) {
        set_direct_counts(e, forward, false);
        count_sent(int64_t(sizeof(T)));
        comm_.start_all_to_all_v(send, send_cnt_.data(), send_dsp_.data(), recv, recv_cnt_.data(), recv_dsp_.data(),
                                 DTypeOf<T>::value);
    }
    if (wait) comm_.finish_all();
}

template <typename T>
void AllToAllDispatcher<T>::start_dispatch_rows(T* send, T* expert_rows) {
    const auto& perm = this->handle_.perm;
    const int64_t d = this->handle_.d, me = comm_.rank();
    for (int64_t e = 0; e < local_; ++e) {
        // The rows for local expert e of every other rank, gathered from the tokens into their send blocks...
        for (int64_t j = 0; j < ep_; ++j) {
            const size_t g = size_t(j * local_ + e);
            if (j != me)
                this->ops_.permute_rows(send + perm.offset_E[g] * d, x_TD_, perm.token_of() + perm.offset_E[g],
                                        perm.tokens_per_expert_E[g], d);
        }
        set_direct_counts(e, true, true);
        count_sent(int64_t(sizeof(T)));
        comm_.start_all_to_all_v(send, send_cnt_.data(), send_dsp_.data(), expert_rows, recv_cnt_.data(),
                                 recv_dsp_.data(), DTypeOf<T>::value);
        comm_.progress();
        // ...and this rank's own, gathered straight into their expert-major block while those are in flight.
        const size_t g = size_t(me * local_ + e);
        this->ops_.permute_rows(expert_rows + exp_off_ES_[size_t(e * ep_ + me)] * d, x_TD_,
                                perm.token_of() + perm.offset_E[g], perm.tokens_per_expert_E[g], d);
        comm_.progress();
    }
}

template <typename T>
void AllToAllDispatcher<T>::start_forward_fp8(const T* send) {
    if constexpr (std::is_same_v<T, float>) {
        const int64_t d = this->handle_.d, tile = 128, groups = (d + tile - 1) / tile;
        const int64_t rows_out = this->handle_.perm.num_rows;
        uint8_t* codes_send = ensure<uint8_t>(be_, codes_send_, std::max<int64_t>(rows_out, 1) * d);
        float* scales_send = ensure<float>(be_, scales_send_, std::max<int64_t>(rows_out, 1) * groups);
        uint8_t* codes_recv = ensure<uint8_t>(be_, codes_recv_, std::max<int64_t>(num_recv_, 1) * d);
        float* scales_recv = ensure<float>(be_, scales_recv_, std::max<int64_t>(num_recv_, 1) * groups);
        be_.quantize_row_tiles(codes_send, scales_send, send, rows_out, d, tile, precision::Fp8Format::kE4M3, true);
        start_exchange(codes_send, codes_recv, d, DType::kU8);
        start_exchange(scales_send, scales_recv, groups, DType::kF32);
        dispatch_bytes_sent_ = (rows_out - send_rows_[size_t(comm_.rank())]) * (d + groups * int64_t(sizeof(float)));
    } else {
        (void)send;
    }
}

template <typename T>
void AllToAllDispatcher<T>::dispatch_finish() {
    auto& h = this->handle_;
    comm_.finish_all();
    T* rows = expert_rows_RD_.template data<T>();  // FP32: filled by the exchange, already expert-major
    if constexpr (std::is_same_v<T, float>) {
        if (fp8_) {
            const int64_t d = h.d, tile = 128;
            T* recv = recv_rows_RD_.template data<T>();
            be_.dequantize_row_tiles(recv, codes_recv_.template data<uint8_t>(), scales_recv_.template data<float>(),
                                     num_recv_, d, tile, precision::Fp8Format::kE4M3);
            to_expert_major(rows, recv);
        }
    }
    h.tokens_per_local_expert.assign(size_t(local_), 0);
    for (int64_t s = 0; s < ep_; ++s)
        for (int64_t e = 0; e < local_; ++e)
            h.tokens_per_local_expert[size_t(e)] += recv_count_SE_[size_t(s * local_ + e)];
    h.expert_rows = rows;
    h.num_expert_rows = num_recv_;
}

template <typename T>
void AllToAllDispatcher<T>::start_exchange(const void* send, void* recv, int64_t width, DType dtype) {
    int64_t so = 0, ro = 0;
    for (int64_t j = 0; j < ep_; ++j) {
        send_cnt_[size_t(j)] = send_rows_[size_t(j)] * width;
        send_dsp_[size_t(j)] = so;
        so += send_cnt_[size_t(j)];
        recv_cnt_[size_t(j)] = recv_rows_[size_t(j)] * width;
        recv_dsp_[size_t(j)] = ro;
        ro += recv_cnt_[size_t(j)];
    }
    count_sent(int64_t(dtype_size(dtype)));
    comm_.start_all_to_all_v(send, send_cnt_.data(), send_dsp_.data(), recv, recv_cnt_.data(), recv_dsp_.data(), dtype);
}

template <typename T>
void AllToAllDispatcher<T>::count_sent(int64_t elem_bytes) {
    const int64_t node = comm_.rank() / ranks_per_node_;
    for (int64_t j = 0; j < ep_; ++j)
        if (j / ranks_per_node_ != node) bytes_to_other_nodes_ += send_cnt_[size_t(j)] * elem_bytes;
}

template <typename T>
void AllToAllDispatcher<T>::to_expert_major(T* dst, const T* src) const {
    const int64_t d = this->handle_.d;
    for (int64_t e = 0; e < local_; ++e)
        for (int64_t s = 0; s < ep_; ++s) {
            const int64_t n = recv_count_SE_[size_t(s * local_ + e)];
            be_.copy(dst + exp_off_ES_[size_t(e * ep_ + s)] * d, src + recv_off_SE_[size_t(s * local_ + e)] * d,
                     size_t(n * d) * sizeof(T));
        }
}

template <typename T>
void AllToAllDispatcher<T>::combine_begin(const T* y_rows) {
    auto& h = this->handle_;
    T* y_back = ensure<T>(this->ops_, y_back_RD_, std::max<int64_t>(h.perm.num_rows, 1) * h.d);
    comm_.set_layer(layer_);
    exchange_direct(y_rows, y_back, false, false);
}

template <typename T>
const T* AllToAllDispatcher<T>::combine_rows(const T*) {
    comm_.finish_all();
    return y_back_RD_.template data<T>();
}

template <typename T>
void AllToAllDispatcher<T>::combine_backward_impl(T* dy_rows, T* dweight_TK, const T* dout_TD, const T*,
                                                  const T* weight_TK) {
    auto& h = this->handle_;
    // On the source: gradient of each permuted row and of each routing weight, from the outputs y_back.
    T* d_perm = ensure_zero<T>(this->ops_, grad_send_RD_, std::max<int64_t>(h.perm.num_rows, 1) * h.d);
    model::unpermute_combine_backward(this->ops_, d_perm, dweight_TK, dout_TD, y_back_RD_.template data<T>(), weight_TK,
                                      h.perm, h.d);
    // To the experts, as a dispatch sends it, straight into expert-major order (then added, as backward does).
    T* recv = ensure<T>(this->ops_, grad_recv_RD_, std::max<int64_t>(num_recv_, 1) * h.d);
    comm_.set_layer(layer_);
    exchange_direct(d_perm, recv, true);
    this->ops_.add_inplace(dy_rows, recv, num_recv_ * h.d);
}

template <typename T>
const T* AllToAllDispatcher<T>::dispatch_backward_communicate(const T* dexpert_rows) {
    auto& h = this->handle_;
    T* d_perm = ensure<T>(this->ops_, grad_send_RD_, std::max<int64_t>(h.perm.num_rows, 1) * h.d);
    comm_.set_layer(layer_);
    exchange_direct(dexpert_rows, d_perm, false);
    return d_perm;
}

template class AllToAllDispatcher<float>;
template class AllToAllDispatcher<double>;

}  // namespace frugal::parallel
