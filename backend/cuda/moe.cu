// The router, dispatch-permutation and token launchers of backend/cuda/moe.h, one translation unit. The arithmetic
// is backend/cuda/moe_math.h's; the kernels only decide who computes what:
//   router rows        grid-stride, one thread per token (E and K are small: a row is a few hundred floats)
//   aux partials       one thread per (group chunk, expert): consecutive threads read consecutive experts of a token
//   aux group sums     one thread per (group, expert), the chunks in order
//   z-loss backward    one thread per logit
//   permute / combine  grid-stride over rows or tokens, one block each, threads over D; combine_backward's dot
//                      product is a pairwise tree in shared memory over kCombineThreads partials
// Every loop is grid-stride, so any shape fits a bounded grid; all index arithmetic is 64-bit.
#include <algorithm>
#include <vector>

#include "backend/cuda/check.h"
#include "backend/cuda/moe.h"
#include "backend/cuda/moe_math.h"
#include "core/error.h"
#include "core/tensor.h"

namespace frugal::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 16;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int grid_for(int64_t work_items, int64_t items_per_block) {
    return int(std::clamp<int64_t>(ceil_div(work_items, items_per_block), 1, kMaxBlocks));
}

void check_launch() { FRUGAL_CUDA_CHECK(cudaGetLastError()); }

__device__ int64_t first_item() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ int64_t item_stride() { return int64_t(gridDim.x) * blockDim.x; }

void check_router_shape(const char* what, int64_t t, int64_t e, int64_t k) {
    FRUGAL_CHECK(t >= 0 && e >= 1, what, ": tokens (", t, ") must not be negative and experts (", e,
                 ") must be at least 1: check moe.num_experts");
    FRUGAL_CHECK(k >= 1 && k <= e, what, ": moe.top_k (", k, ") must be in [1, moe.num_experts (", e,
                 ")]: set moe.top_k to at most the number of experts");
}

void check_groups(const char* what, int64_t groups, int64_t t) {
    FRUGAL_CHECK(groups >= 1 && t % groups == 0, what, ": the ", t, " tokens do not split into ", groups,
                 " aux-loss groups of whole sequences: the groups must be at least 1 and divide the tokens (the "
                 "sequence-wise moe.aux_loss groups by sequence)");
}

// ---- Router rows ----

__global__ void scores_forward_kernel(float* scores_TE, float* lse_T, const float* logits_TE, bool softmax, int64_t t,
                                      int64_t e) {
    for (int64_t i = first_item(); i < t; i += item_stride())
        moe::scores_row(scores_TE + i * e, lse_T + i, logits_TE + i * e, softmax, e);
}

__global__ void select_kernel(int32_t* selected_TK, double* keys_TE, const float* scores_TE, const float* bias_E,
                              int64_t t, int64_t e, int64_t k, int64_t n_group, int64_t topk_group, bool top2_sum) {
    for (int64_t i = first_item(); i < t; i += item_stride())
        moe::select_row(selected_TK + i * k, keys_TE + i * e, scores_TE + i * e, bias_E, e, k, n_group, topk_group,
                        top2_sum);
}

__global__ void weights_kernel(float* weight_TK, const float* scores_TE, const int32_t* selected_TK, bool renormalize,
                               float c, int64_t t, int64_t e, int64_t k) {
    for (int64_t i = first_item(); i < t; i += item_stride())
        moe::weights_row(weight_TK + i * k, scores_TE + i * e, selected_TK + i * k, renormalize, c, k);
}

__global__ void weights_backward_kernel(float* d_scores_TE, const float* d_weight_TK, const float* scores_TE,
                                        const int32_t* selected_TK, bool renormalize, float c, int64_t t, int64_t e,
                                        int64_t k) {
    for (int64_t i = first_item(); i < t; i += item_stride())
        moe::weights_backward_row(d_scores_TE + i * e, d_weight_TK + i * k, scores_TE + i * e, selected_TK + i * k,
                                  renormalize, c, k);
}

__global__ void score_sum_kernel(double* score_sum_T, const float* scores_TE, int64_t t, int64_t e) {
    for (int64_t i = first_item(); i < t; i += item_stride()) score_sum_T[i] = moe::score_sum_row(scores_TE + i * e, e);
}

// Partial j of chunk c (c = g * chunks_per_group + local chunk) at index c * e + j; p_CE may be null.
__global__ void aux_partials_kernel(double* p_CE, int64_t* count_CE, const float* scores_TE, const double* score_sum_T,
                                    const int32_t* selected_TK, int64_t chunks_per_group, int64_t per,
                                    int64_t num_chunks, int64_t e, int64_t k) {
    for (int64_t idx = first_item(); idx < num_chunks * e; idx += item_stride()) {
        const int64_t c = idx / e, j = idx % e;
        const int64_t g = c / chunks_per_group, local = c % chunks_per_group;
        const int64_t begin = g * per + local * kAuxChunk;
        const int64_t end = begin + kAuxChunk < (g + 1) * per ? begin + kAuxChunk : (g + 1) * per;
        moe::aux_chunk_expert(p_CE ? p_CE + idx : nullptr, count_CE + idx, scores_TE, score_sum_T, selected_TK, begin,
                              end, j, e, k);
    }
}

// p_GE and count_GE = the chunks of each group summed in chunk order.
__global__ void aux_group_sums_kernel(double* p_GE, int64_t* count_GE, const double* p_CE, const int64_t* count_CE,
                                      int64_t chunks_per_group, int64_t groups, int64_t e) {
    for (int64_t idx = first_item(); idx < groups * e; idx += item_stride()) {
        const int64_t g = idx / e, j = idx % e;
        double p = 0;
        int64_t n = 0;
        for (int64_t local = 0; local < chunks_per_group; ++local) {
            const int64_t at = (g * chunks_per_group + local) * e + j;
            p = moe::dadd(p, p_CE[at]);
            n += count_CE[at];
        }
        p_GE[idx] = p;
        count_GE[idx] = n;
    }
}

// d_aux_GE = each group's selection counts (summed in chunk order) times the gradient factor.
__global__ void aux_grad_kernel(float* d_aux_GE, const int64_t* count_CE, float factor, int64_t chunks_per_group,
                                int64_t groups, int64_t e) {
    for (int64_t idx = first_item(); idx < groups * e; idx += item_stride()) {
        const int64_t g = idx / e, j = idx % e;
        int64_t n = 0;
        for (int64_t local = 0; local < chunks_per_group; ++local)
            n += count_CE[(g * chunks_per_group + local) * e + j];
        d_aux_GE[idx] = moe::mul(float(n), factor);
    }
}

__global__ void aux_backward_kernel(float* d_scores_TE, const float* scores_TE, const float* d_aux_GE, bool softmax,
                                    int64_t per, int64_t t, int64_t e) {
    for (int64_t i = first_item(); i < t; i += item_stride())
        moe::aux_backward_row(d_scores_TE + i * e, scores_TE + i * e, d_aux_GE + (i / per) * e, softmax, e);
}

__global__ void scores_backward_kernel(float* d_logits_TE, const float* d_scores_TE, const float* scores_TE,
                                       bool softmax, int64_t t, int64_t e) {
    for (int64_t i = first_item(); i < t; i += item_stride())
        moe::scores_backward_row(d_logits_TE + i * e, d_scores_TE + i * e, scores_TE + i * e, softmax, e);
}

__global__ void z_loss_backward_kernel(float* d_logits_TE, const float* logits_TE, const float* lse_T, float c0,
                                       int64_t t, int64_t e) {
    for (int64_t idx = first_item(); idx < t * e; idx += item_stride())
        moe::z_loss_backward_element(d_logits_TE + idx, logits_TE[idx], lse_T[idx / e], c0);
}

// ---- Dispatch permutation: blocks over rows or tokens, threads over D ----

__global__ void permute_rows_kernel(float* rows_RD, const float* x_TD, const int32_t* token_of_row_R, int64_t num_rows,
                                    int64_t d) {
    for (int64_t r = blockIdx.x; r < num_rows; r += gridDim.x) {
        const float* src = x_TD + int64_t(token_of_row_R[r]) * d;
        float* dst = rows_RD + r * d;
        for (int64_t x = threadIdx.x; x < d; x += blockDim.x) dst[x] = src[x];
    }
}

__global__ void permute_rows_backward_kernel(float* dx_TD, const float* drows_RD, const int32_t* row_of_TK, int64_t t,
                                             int64_t k, int64_t d) {
    for (int64_t i = blockIdx.x; i < t; i += gridDim.x) {
        const int32_t* rows_K = row_of_TK + i * k;
        for (int64_t x = threadIdx.x; x < d; x += blockDim.x) {
            float acc = dx_TD[i * d + x];
            for (int64_t j = 0; j < k; ++j)
                if (rows_K[j] >= 0) acc = moe::add(acc, drows_RD[int64_t(rows_K[j]) * d + x]);
            dx_TD[i * d + x] = acc;
        }
    }
}

__global__ void unpermute_combine_kernel(float* out_TD, const float* rows_RD, const float* weight_TK,
                                         const int32_t* row_of_TK, int64_t t, int64_t k, int64_t d) {
    for (int64_t i = blockIdx.x; i < t; i += gridDim.x) {
        const int32_t* rows_K = row_of_TK + i * k;
        for (int64_t x = threadIdx.x; x < d; x += blockDim.x) {
            float acc = out_TD[i * d + x];
            for (int64_t j = 0; j < k; ++j)
                if (rows_K[j] >= 0)
                    moe::combine_element(&acc, weight_TK[i * k + j], rows_RD[int64_t(rows_K[j]) * d + x]);
            out_TD[i * d + x] = acc;
        }
    }
}

// One block of kCombineThreads per token; a token's rows are distinct, so no two blocks write one row of drows_RD.
__global__ void __launch_bounds__(moe::kCombineThreads)
    unpermute_combine_backward_kernel(float* drows_RD, float* dweight_TK, const float* dout_TD, const float* rows_RD,
                                      const float* weight_TK, const int32_t* row_of_TK, int64_t t, int64_t k,
                                      int64_t d) {
    __shared__ float partial[moe::kCombineThreads];
    const int tid = int(threadIdx.x);
    for (int64_t i = blockIdx.x; i < t; i += gridDim.x) {
        for (int64_t j = 0; j < k; ++j) {
            const int64_t r = row_of_TK[i * k + j];
            if (r < 0) continue;  // the same for every thread of the block
            partial[tid] = moe::combine_backward_thread(drows_RD + r * d, dout_TD + i * d, rows_RD + r * d,
                                                        weight_TK[i * k + j], d, tid);
            __syncthreads();
            for (int s = moe::kCombineThreads / 2; s > 0; s /= 2) {
                if (tid < s) partial[tid] = moe::add(partial[tid], partial[tid + s]);
                __syncthreads();
            }
            if (tid == 0) dweight_TK[i * k + j] = moe::add(dweight_TK[i * k + j], partial[0]);
            __syncthreads();
        }
    }
}

// ---- Host copies ----

template <typename T>
std::vector<T> download(cudaStream_t stream, const T* src, int64_t n) {
    std::vector<T> host(size_t(std::max<int64_t>(n, 0)));
    if (n > 0)
        FRUGAL_CUDA_CHECK(cudaMemcpyAsync(host.data(), src, size_t(n) * sizeof(T), cudaMemcpyDeviceToHost, stream));
    FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream));
    return host;
}

template <typename T>
void upload(cudaStream_t stream, T* dst, const std::vector<T>& host, int64_t n) {
    if (n > 0)
        FRUGAL_CUDA_CHECK(cudaMemcpyAsync(dst, host.data(), size_t(n) * sizeof(T), cudaMemcpyHostToDevice, stream));
}

}  // namespace

// ---- Router forward ----

void router_scores_forward(cudaStream_t stream, float* scores_TE, float* lse_T, const float* logits_TE, ScoreFunc func,
                           int64_t t, int64_t e) {
    FRUGAL_CHECK(t >= 0 && e >= 1, "router_scores_forward: tokens (", t, ") and experts (", e,
                 ") must be >= 0 and >= 1: check moe.num_experts");
    if (t == 0) return;
    scores_forward_kernel<<<grid_for(t, kThreads), kThreads, 0, stream>>>(scores_TE, lse_T, logits_TE,
                                                                          func == ScoreFunc::kSoftmax, t, e);
    check_launch();
}

void router_select_forward(cudaStream_t stream, int32_t* selected_TK, double* keys_TE, const float* scores_TE,
                           const float* bias_E, int64_t t, int64_t e, int64_t k, int64_t n_group, int64_t topk_group,
                           GroupScore group_score) {
    check_router_shape("router_select_forward", t, e, k);
    backend::check_router_groups(e, k, n_group, topk_group, group_score);
    if (t == 0) return;
    select_kernel<<<grid_for(t, kThreads), kThreads, 0, stream>>>(
        selected_TK, keys_TE, scores_TE, bias_E, t, e, k, n_group, topk_group, group_score == GroupScore::kTop2Sum);
    check_launch();
}

void router_weights_forward(cudaStream_t stream, float* weight_TK, const float* scores_TE, const int32_t* selected_TK,
                            bool renormalize, double scale, int64_t t, int64_t e, int64_t k) {
    check_router_shape("router_weights_forward", t, e, k);
    if (t == 0) return;
    weights_kernel<<<grid_for(t, kThreads), kThreads, 0, stream>>>(weight_TK, scores_TE, selected_TK, renormalize,
                                                                   float(scale), t, e, k);
    check_launch();
}

double router_aux_loss_forward(cudaStream_t stream, double* score_sum_T, const float* scores_TE,
                               const int32_t* selected_TK, ScoreFunc func, double coef, int64_t groups, int64_t t,
                               int64_t e, int64_t k, Allocator& alloc) {
    check_router_shape("router_aux_loss_forward", t, e, k);
    check_groups("router_aux_loss_forward", groups, t);
    const bool softmax = func == ScoreFunc::kSoftmax;
    FRUGAL_CHECK(softmax || score_sum_T != nullptr || t == 0,
                 "router_aux_loss_forward: sigmoid scores need the row sums' scratch score_sum_T");
    const int64_t per = t / groups;
    const int64_t chunks_per_group = ceil_div(per, kAuxChunk), num_chunks = groups * chunks_per_group;
    std::vector<int64_t> count_GE(size_t(groups * e), 0);
    std::vector<double> p_GE(size_t(groups * e), 0.0);
    if (num_chunks > 0) {
        if (!softmax) {
            score_sum_kernel<<<grid_for(t, kThreads), kThreads, 0, stream>>>(score_sum_T, scores_TE, t, e);
            check_launch();
        }
        Tensor p_CE = Tensor::empty({num_chunks * e}, DType::kF64, alloc);
        Tensor count_CE = Tensor::empty({num_chunks * e}, DType::kI64, alloc);
        Tensor sums_GE = Tensor::empty({groups * e}, DType::kF64, alloc);
        Tensor counts_GE = Tensor::empty({groups * e}, DType::kI64, alloc);
        aux_partials_kernel<<<grid_for(num_chunks * e, kThreads), kThreads, 0, stream>>>(
            p_CE.data<double>(), count_CE.data<int64_t>(), scores_TE, softmax ? nullptr : score_sum_T, selected_TK,
            chunks_per_group, per, num_chunks, e, k);
        check_launch();
        aux_group_sums_kernel<<<grid_for(groups * e, kThreads), kThreads, 0, stream>>>(
            sums_GE.data<double>(), counts_GE.data<int64_t>(), p_CE.data<double>(), count_CE.data<int64_t>(),
            chunks_per_group, groups, e);
        check_launch();
        p_GE = download(stream, sums_GE.data<double>(), groups * e);
        count_GE = download(stream, counts_GE.data<int64_t>(), groups * e);
    }
    return moe::aux_loss_from_sums(count_GE.data(), p_GE.data(), coef, groups, per, e, k);
}

double router_z_loss_forward(cudaStream_t stream, const float* lse_T, double coef, int64_t t) {
    FRUGAL_CHECK(t >= 0, "router_z_loss_forward: tokens (", t, ") must not be negative");
    const std::vector<float> lse = download(stream, lse_T, t);
    return moe::z_loss_sum(lse.data(), coef, t);
}

// ---- Router backward ----

void router_weights_backward(cudaStream_t stream, float* d_scores_TE, const float* d_weight_TK, const float* scores_TE,
                             const int32_t* selected_TK, bool renormalize, double scale, int64_t t, int64_t e,
                             int64_t k) {
    check_router_shape("router_weights_backward", t, e, k);
    if (t == 0) return;
    weights_backward_kernel<<<grid_for(t, kThreads), kThreads, 0, stream>>>(
        d_scores_TE, d_weight_TK, scores_TE, selected_TK, renormalize, float(scale), t, e, k);
    check_launch();
}

void router_aux_loss_backward(cudaStream_t stream, float* d_scores_TE, float* d_aux_GE, const float* scores_TE,
                              const int32_t* selected_TK, ScoreFunc func, double coef, float aux_scale, int64_t groups,
                              int64_t t, int64_t e, int64_t k, Allocator& alloc) {
    check_router_shape("router_aux_loss_backward", t, e, k);
    check_groups("router_aux_loss_backward", groups, t);
    if (t == 0) return;
    const int64_t per = t / groups;
    const int64_t chunks_per_group = ceil_div(per, kAuxChunk), num_chunks = groups * chunks_per_group;
    Tensor count_CE = Tensor::empty({num_chunks * e}, DType::kI64, alloc);
    aux_partials_kernel<<<grid_for(num_chunks * e, kThreads), kThreads, 0, stream>>>(
        nullptr, count_CE.data<int64_t>(), scores_TE, nullptr, selected_TK, chunks_per_group, per, num_chunks, e, k);
    check_launch();
    const float factor = moe::aux_grad_factor(coef, aux_scale, groups, per, e, k);
    aux_grad_kernel<<<grid_for(groups * e, kThreads), kThreads, 0, stream>>>(d_aux_GE, count_CE.data<int64_t>(), factor,
                                                                             chunks_per_group, groups, e);
    check_launch();
    aux_backward_kernel<<<grid_for(t, kThreads), kThreads, 0, stream>>>(d_scores_TE, scores_TE, d_aux_GE,
                                                                        func == ScoreFunc::kSoftmax, per, t, e);
    check_launch();
}

void router_scores_backward(cudaStream_t stream, float* d_logits_TE, const float* d_scores_TE, const float* scores_TE,
                            ScoreFunc func, int64_t t, int64_t e) {
    FRUGAL_CHECK(t >= 0 && e >= 1, "router_scores_backward: tokens (", t, ") and experts (", e,
                 ") must be >= 0 and >= 1: check moe.num_experts");
    if (t == 0) return;
    scores_backward_kernel<<<grid_for(t, kThreads), kThreads, 0, stream>>>(d_logits_TE, d_scores_TE, scores_TE,
                                                                           func == ScoreFunc::kSoftmax, t, e);
    check_launch();
}

void router_z_loss_backward(cudaStream_t stream, float* d_logits_TE, const float* logits_TE, const float* lse_T,
                            double coef, float aux_scale, int64_t t, int64_t e) {
    FRUGAL_CHECK(t >= 0 && e >= 1, "router_z_loss_backward: tokens (", t, ") and experts (", e,
                 ") must be >= 0 and >= 1: check moe.num_experts");
    if (t == 0) return;
    z_loss_backward_kernel<<<grid_for(t * e, kThreads), kThreads, 0, stream>>>(
        d_logits_TE, logits_TE, lse_T, moe::z_grad_factor(coef, aux_scale, t), t, e);
    check_launch();
}

// ---- Dispatch permutation ----

void permute_rows(cudaStream_t stream, float* rows_RD, const float* x_TD, const int32_t* token_of_row_R,
                  int64_t num_rows, int64_t d) {
    FRUGAL_CHECK(num_rows >= 0 && d >= 0, "permute_rows: rows (", num_rows, ") and width (", d,
                 ") must not be negative");
    if (num_rows == 0 || d == 0) return;
    permute_rows_kernel<<<grid_for(num_rows, 1), kThreads, 0, stream>>>(rows_RD, x_TD, token_of_row_R, num_rows, d);
    check_launch();
}

void permute_rows_backward(cudaStream_t stream, float* dx_TD, const float* drows_RD, const int32_t* row_of_TK,
                           int64_t t, int64_t k, int64_t d) {
    FRUGAL_CHECK(t >= 0 && k >= 0 && d >= 0, "permute_rows_backward: tokens (", t, "), choices (", k, ") and width (",
                 d, ") must not be negative");
    if (t == 0 || d == 0) return;
    permute_rows_backward_kernel<<<grid_for(t, 1), kThreads, 0, stream>>>(dx_TD, drows_RD, row_of_TK, t, k, d);
    check_launch();
}

void unpermute_combine(cudaStream_t stream, float* out_TD, const float* rows_RD, const float* weight_TK,
                       const int32_t* row_of_TK, int64_t t, int64_t k, int64_t d) {
    FRUGAL_CHECK(t >= 0 && k >= 0 && d >= 0, "unpermute_combine: tokens (", t, "), choices (", k, ") and width (", d,
                 ") must not be negative");
    if (t == 0 || d == 0) return;
    unpermute_combine_kernel<<<grid_for(t, 1), kThreads, 0, stream>>>(out_TD, rows_RD, weight_TK, row_of_TK, t, k, d);
    check_launch();
}

void unpermute_combine_backward(cudaStream_t stream, float* drows_RD, float* dweight_TK, const float* dout_TD,
                                const float* rows_RD, const float* weight_TK, const int32_t* row_of_TK, int64_t t,
                                int64_t k, int64_t d) {
    FRUGAL_CHECK(t >= 0 && k >= 0 && d >= 0, "unpermute_combine_backward: tokens (", t, "), choices (", k,
                 ") and width (", d, ") must not be negative");
    if (t == 0) return;
    unpermute_combine_backward_kernel<<<grid_for(t, 1), moe::kCombineThreads, 0, stream>>>(
        drows_RD, dweight_TK, dout_TD, rows_RD, weight_TK, row_of_TK, t, k, d);
    check_launch();
}

// ---- Routing integers and tokens ----

int64_t router_capacity(cudaStream_t stream, int32_t* expert_TK, int64_t* num_kept_E_host, int64_t* num_selected_E_host,
                        const int32_t* selected_TK, int64_t capacity, int64_t t, int64_t k, int64_t e) {
    check_router_shape("router_capacity", t, e, k);
    const std::vector<int32_t> selected = download(stream, selected_TK, t * k);
    std::vector<int32_t> expert(selected.size());
    const int64_t dropped =
        moe::capacity_host(expert.data(), num_kept_E_host, num_selected_E_host, selected.data(), capacity, t, k, e);
    upload(stream, expert_TK, expert, t * k);
    FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream));
    return dropped;
}

void router_bias_update(cudaStream_t stream, float* bias_E, const int64_t* selected_E_host, double rate, int64_t e) {
    FRUGAL_CHECK(e >= 1, "router_bias_update: experts (", e, ") must be at least 1: check moe.num_experts");
    std::vector<float> bias = download(stream, bias_E, e);
    moe::bias_update_host(bias.data(), selected_E_host, rate, e);
    upload(stream, bias_E, bias, e);
    FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream));
}

int64_t build_permutation(cudaStream_t stream, int32_t* row_of_TK, int32_t* token_of_row_R,
                          int64_t* tokens_per_expert_E_host, int64_t* offset_E_host, const int32_t* expert_TK,
                          int64_t t, int64_t k, int64_t e) {
    check_router_shape("build_permutation", t, e, k);
    const std::vector<int32_t> expert = download(stream, expert_TK, t * k);
    std::vector<int32_t> row_of(expert.size()), token_of_row(expert.size());
    const int64_t num_rows = moe::permutation_host(row_of.data(), token_of_row.data(), tokens_per_expert_E_host,
                                                   offset_E_host, expert.data(), t, k, e);
    upload(stream, row_of_TK, row_of, t * k);
    upload(stream, token_of_row_R, token_of_row, num_rows);
    FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream));
    return num_rows;
}

int64_t prepare_tokens(cudaStream_t stream, int32_t* tokens_N, int32_t* targets_N, int32_t* pos_N, int32_t* start_N,
                       const int32_t* tokens_host, const int32_t* targets_host, const int32_t* doc_start_host,
                       int64_t n, int64_t s, int64_t v, int32_t ignore_index) {
    FRUGAL_CHECK(n >= 0 && s >= 1, "prepare_tokens: positions (", n, ") must not be negative and the sequence length (",
                 s, ") must be at least 1: check model.seq_len");
    const size_t count = size_t(n);
    std::vector<int32_t> tokens(count), targets(count), pos(count), start(count);
    const int64_t num_valid =
        moe::prepare_tokens_host(tokens.data(), targets.data(), pos.data(), start.data(), tokens_host, targets_host,
                                 doc_start_host, n, s, v, ignore_index);
    upload(stream, tokens_N, tokens, n);
    upload(stream, targets_N, targets, n);
    upload(stream, pos_N, pos, n);
    upload(stream, start_N, start, n);
    FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream));
    return num_valid;
}

}  // namespace frugal::cuda
