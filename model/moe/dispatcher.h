// Token dispatcher: moves each token's row to the experts the router chose, and the experts' outputs back.
//
// Structure (Megatron's MoE dispatchers, DeepEP's handle): every direction has a prepare step (local
// permutation), a communicating step (the only one that may talk to other ranks) and a finishing step. dispatch()
// returns a handle that combine() and both backward passes reuse, so the routing plan is computed once.
//
// The permutation is stable: rows are grouped by expert, and within an expert ordered by (token, choice). With
// R = number of kept assignments (T*K - dropped):
//   rows_RD[r]              = x_TD[token_of_row_R[r]]
//   row_of_TK[t*K + k]      = r such that row r carries choice k of token t, or -1 if that choice was dropped
//   expert rows [offset_E[e], offset_E[e] + tokens_per_expert_E[e]) belong to expert e
// Combine is out_TD[t] += sum_k weight_TK[t,k] * y_RD[row_of_TK[t,k]].
//
// LocalDispatcher is the single-process implementation (its communicating steps are empty); the all-to-all
// dispatcher of parallel/ reuses the same permutation functions and plugs in through this interface.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/layers/common.h"

namespace frugal::model {

struct Permutation {
    int64_t num_tokens = 0, top_k = 0, num_experts = 0, num_rows = 0;
    std::vector<int64_t> tokens_per_expert_E;  // host
    std::vector<int64_t> offset_E;             // host, E + 1 entries
    Tensor row_of_TK;                          // int32 [T*K] on the backend's device, -1 where dropped
    Tensor token_of_row_R;                     // int32 [R] on the backend's device
    const int32_t* row_of() const { return row_of_TK.data<int32_t>(); }
    const int32_t* token_of() const { return token_of_row_R.data<int32_t>(); }
};

// Builds the stable permutation from expert_TK (entries -1 are dropped assignments) with the backend's kernel. No
// allocation once the buffers have grown to the largest micro-batch.
void build_permutation(backend::Backend& be, Permutation& perm, const int32_t* expert_TK, int64_t t, int64_t k,
                       int64_t e);

// The backend's permutation kernels (backend/backend.h) on a Permutation:
// rows_RD[r] = x_TD[token_of_row[r]]
template <typename T>
void permute_rows(const Ops<T>& ops, T* rows_RD, const T* x_TD, const Permutation& perm, int64_t d) {
    ops.permute_rows(rows_RD, x_TD, perm.token_of(), perm.num_rows, d);
}
// dx_TD[token_of_row[r]] += drows_RD[r]
template <typename T>
void permute_rows_backward(const Ops<T>& ops, T* dx_TD, const T* drows_RD, const Permutation& perm, int64_t d) {
    ops.permute_rows_backward(dx_TD, drows_RD, perm.row_of(), perm.num_tokens, perm.top_k, d);
}
// out_TD[t] += sum_k weight_TK[t,k] * rows_RD[row_of_TK[t,k]]
template <typename T>
void unpermute_combine(const Ops<T>& ops, T* out_TD, const T* rows_RD, const T* weight_TK, const Permutation& perm,
                       int64_t d) {
    ops.unpermute_combine(out_TD, rows_RD, weight_TK, perm.row_of(), perm.num_tokens, perm.top_k, d);
}
// drows_RD[r] += weight * dout_TD[t] ; dweight_TK[t,k] += <dout_TD[t], rows_RD[r]>
template <typename T>
void unpermute_combine_backward(const Ops<T>& ops, T* drows_RD, T* dweight_TK, const T* dout_TD, const T* rows_RD,
                                const T* weight_TK, const Permutation& perm, int64_t d) {
    ops.unpermute_combine_backward(drows_RD, dweight_TK, dout_TD, rows_RD, weight_TK, perm.row_of(), perm.num_tokens,
                                   perm.top_k, d);
}

// What dispatch() hands to the experts and what combine() needs back.
template <typename T>
struct DispatchHandle {
    Permutation perm;  // source side: this rank's tokens
    int64_t d = 0;
    Tensor send_rows_RD;                           // permuted rows before communication
    std::vector<int64_t> tokens_per_local_expert;  // rows received for each local expert, contiguous in order
    T* expert_rows = nullptr;                      // [sum(tokens_per_local_expert), D], input of the experts
    int64_t num_expert_rows = 0;
};

template <typename T>
class Dispatcher {
  public:
    explicit Dispatcher(const Ops<T>& ops) : ops_(ops) {}
    virtual ~Dispatcher() = default;
    virtual int64_t first_local_expert() const = 0;
    virtual int64_t num_local_experts() const = 0;

    DispatchHandle<T>& dispatch(const T* x_TD, const int32_t* expert_TK, int64_t t, int64_t k, int64_t e, int64_t d) {
        dispatch_start(x_TD, expert_TK, t, k, e, d);
        return dispatch_wait();
    }
    // dispatch() in two halves, so that work which needs no exchanged row (the shared experts) runs while the rows
    // are in flight: dispatch_start() permutes and starts the exchange, dispatch_wait() completes it. x_TD must
    // stay as it is in between.
    void dispatch_start(const T* x_TD, const int32_t* expert_TK, int64_t t, int64_t k, int64_t e, int64_t d) {
        dispatch_prepare(x_TD, expert_TK, t, k, e, d);
        dispatch_communicate();
    }
    DispatchHandle<T>& dispatch_wait() {
        dispatch_finish();
        return handle_;
    }
    // Lets a started dispatch move data while the caller computes (a no-op without communication).
    virtual void progress() {}
    // Bytes this rank has sent to ranks on other nodes, every exchange of every step so far (0 on one node).
    virtual int64_t bytes_to_other_nodes() const { return 0; }
    // out_TD += weighted expert outputs; y_rows is laid out like handle.expert_rows.
    void combine(T* out_TD, const T* y_rows, const T* weight_TK) {
        combine_start(y_rows, weight_TK);
        combine_finish(out_TD);
    }
    // combine() in two halves, as dispatch: combine_start() starts sending the expert outputs back and
    // combine_finish() completes it and adds the weighted rows into out_TD; y_rows and weight_TK stay as they are
    // in between, and out_TD may be written until combine_finish().
    virtual void combine_start(const T* y_rows, const T* weight_TK) {
        combine_y_ = y_rows;
        combine_w_ = weight_TK;
        combine_begin(y_rows);
    }
    virtual void combine_finish(T* out_TD) {
        const T* back = combine_rows(combine_y_);
        unpermute_combine(ops_, out_TD, back, combine_w_, handle_.perm, handle_.d);
    }
    // dy_rows (layout of expert_rows) += ..., dweight_TK += ...; y_rows as given to combine().
    void combine_backward(T* dy_rows, T* dweight_TK, const T* dout_TD, const T* y_rows, const T* weight_TK) {
        combine_backward_impl(dy_rows, dweight_TK, dout_TD, y_rows, weight_TK);
    }
    // dx_TD += gradient of the dispatched rows.
    virtual void dispatch_backward(T* dx_TD, const T* dexpert_rows) {
        const T* back = dispatch_backward_communicate(dexpert_rows);
        permute_rows_backward(ops_, dx_TD, back, handle_.perm, handle_.d);
    }
    DispatchHandle<T>& handle() { return handle_; }

  protected:
    virtual void dispatch_prepare(const T* x_TD, const int32_t* expert_TK, int64_t t, int64_t k, int64_t e,
                                  int64_t d) = 0;
    virtual void dispatch_communicate() = 0;  // starts the exchange; may return before it is done
    virtual void dispatch_finish() = 0;       // completes it
    // Starts sending the expert outputs back (nothing to send on one rank)...
    virtual void combine_begin(const T*) {}
    // ...and returns them in the source's permuted order once they are back (the identity on one rank).
    virtual const T* combine_rows(const T* y_rows) { return y_rows; }
    virtual void combine_backward_impl(T* dy_rows, T* dweight_TK, const T* dout_TD, const T* y_rows,
                                       const T* weight_TK) = 0;
    virtual const T* dispatch_backward_communicate(const T* dexpert_rows) { return dexpert_rows; }
    const Ops<T>& ops_;
    DispatchHandle<T> handle_;
    const T* combine_y_ = nullptr;  // the combine in flight
    const T* combine_w_ = nullptr;
};

// Single process: every expert is local, the communicating steps are the identity.
template <typename T>
class LocalDispatcher final : public Dispatcher<T> {
  public:
    // fp8: the rows pass through the same E4M3 1 x 128 quantization as the FP8 all-to-all dispatch (so one rank
    // computes what many do).
    LocalDispatcher(const Ops<T>& ops, int64_t n_experts, bool fp8 = false)
        : Dispatcher<T>(ops), n_experts_(n_experts), fp8_(fp8) {}
    int64_t first_local_expert() const override { return 0; }
    int64_t num_local_experts() const override { return n_experts_; }

  protected:
    void dispatch_prepare(const T* x_TD, const int32_t* expert_TK, int64_t t, int64_t k, int64_t e, int64_t d) override;
    void dispatch_communicate() override {}
    void dispatch_finish() override;
    void combine_backward_impl(T* dy_rows, T* dweight_TK, const T* dout_TD, const T* y_rows,
                               const T* weight_TK) override {
        unpermute_combine_backward(this->ops_, dy_rows, dweight_TK, dout_TD, y_rows, weight_TK, this->handle_.perm,
                                   this->handle_.d);
    }

  private:
    int64_t n_experts_;
    bool fp8_;
};

}  // namespace frugal::model
