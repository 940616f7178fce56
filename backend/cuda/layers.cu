// The dense layers' kernels (backend/cuda/layers.h), one translation unit. The arithmetic is layer_math.h's; the
// kernels decide who reads what:
//   elementwise     grid-stride loop, one element (or one rotary pair) per thread per step
//   rows            one warp per row, grid-stride over rows: lanes read consecutive columns (coalesced), a sum or
//                   maximum is a lane-strided sequential pass then the xor butterfly, broadcast from lane 0
//   column sums     pass 1: a thread per (chunk of kColumnChunkRows rows, column) sums its rows in order into a
//                   partial; pass 2: a thread per column adds the partials in chunk order to the gradient
//   embedding grad  cub::DeviceRadixSort (stable) orders (token id, row) by token id; the first position of each
//                   id's run sums that run's rows in order into the id's weight row, one thread per column
// Every grid is bounded (kMaxBlocks) and every loop grid-stride, so any shape fits; index arithmetic is 64-bit.
// The split of every reduction depends on the shapes only.
#include <cub/device/device_radix_sort.cuh>
#include <limits>

#include "backend/cuda/check.h"
#include "backend/cuda/layer_math.h"
#include "backend/cuda/layers.h"
#include "core/error.h"
#include "core/tensor.h"

namespace frugal::cuda {
namespace {

namespace lm = layer_math;

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / lm::kWarpSize;
constexpr int64_t kMaxBlocks = int64_t(1) << 16;
constexpr unsigned kFullMask = 0xFFFFFFFFu;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int grid_for(int64_t work_items, int64_t items_per_block) {
    const int64_t blocks = ceil_div(work_items, items_per_block);
    return int(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

void check_launch() { FRUGAL_CUDA_CHECK(cudaGetLastError()); }

void check_dims(const char* op, int64_t rows, int64_t cols) {
    FRUGAL_CHECK(rows >= 0 && cols >= 0, op, ": rows (", rows, ") and columns (", cols,
                 ") must not be negative: check the layer's shapes");
}

__device__ int64_t thread_index() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ int64_t thread_count() { return int64_t(gridDim.x) * blockDim.x; }
__device__ int64_t warp_index() { return int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); }
__device__ int64_t warp_count() { return int64_t(gridDim.x) * kWarpsPerBlock; }
__device__ int lane_index() { return int(threadIdx.x) & (lm::kWarpSize - 1); }

// The butterfly of layer_math.h's warp order; every lane returns lane 0's value.
__device__ float warp_sum(float v) {
    for (int offset = lm::kWarpSize / 2; offset > 0; offset /= 2)
        v = lm::add_rn(v, __shfl_xor_sync(kFullMask, v, offset));
    return __shfl_sync(kFullMask, v, 0);
}
__device__ double warp_sum(double v) {
    for (int offset = lm::kWarpSize / 2; offset > 0; offset /= 2)
        v = __dadd_rn(v, __shfl_xor_sync(kFullMask, v, offset));
    return __shfl_sync(kFullMask, v, 0);
}
__device__ float warp_max(float v) {
    for (int offset = lm::kWarpSize / 2; offset > 0; offset /= 2)
        v = lm::max_step(v, __shfl_xor_sync(kFullMask, v, offset));
    return __shfl_sync(kFullMask, v, 0);
}

// ---- Elementwise ----

__global__ void fill_kernel(float* x, int64_t n, float value) {
    for (int64_t i = thread_index(); i < n; i += thread_count()) x[i] = value;
}

__global__ void add_kernel(float* out, const float* a, const float* b, int64_t n) {
    for (int64_t i = thread_index(); i < n; i += thread_count()) out[i] = lm::add_rn(a[i], b[i]);
}

__global__ void add_inplace_kernel(float* y, const float* x, int64_t n) {
    for (int64_t i = thread_index(); i < n; i += thread_count()) y[i] = lm::add_rn(y[i], x[i]);
}

__global__ void bias_add_kernel(float* y, const float* b, int64_t n, int64_t out) {
    for (int64_t i = thread_index(); i < n * out; i += thread_count()) y[i] = lm::add_rn(y[i], b[i % out]);
}

__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* wte, int64_t n, int64_t d) {
    for (int64_t i = thread_index(); i < n * d; i += thread_count()) {
        const int64_t r = i / d;
        out[i] = wte[int64_t(tokens[r]) * d + (i - r * d)];
    }
}

__global__ void rope_kernel(float* x, int64_t row_stride, int64_t head_stride, const int32_t* pos, const float* cos_ph,
                            const float* sin_ph, int64_t n, int64_t heads, int64_t half, bool inverse) {
    const int64_t per_row = heads * half;
    for (int64_t i = thread_index(); i < n * per_row; i += thread_count()) {
        const int64_t r = i / per_row, rest = i - r * per_row, h = rest / half, j = rest - h * half;
        const int64_t table = int64_t(pos[r]) * half + j;
        float* v = x + r * row_stride + h * head_stride;
        float a = v[j], b = v[j + half];
        lm::rope_rotate(a, b, cos_ph[table], sin_ph[table], inverse);
        v[j] = a;
        v[j + half] = b;
    }
}

__global__ void strided_copy_kernel(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows,
                                    int64_t cols, int64_t src_repeat) {
    for (int64_t i = thread_index(); i < rows * cols; i += thread_count()) {
        const int64_t r = i / cols, c = i - r * cols;
        dst[r * ld_dst + c] = src[(r / src_repeat) * ld_src + c];
    }
}

__global__ void strided_add_kernel(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows,
                                   int64_t cols, int64_t dst_repeat) {
    const int64_t dst_rows = (rows + dst_repeat - 1) / dst_repeat;
    for (int64_t i = thread_index(); i < dst_rows * cols; i += thread_count()) {
        const int64_t q = i / cols, c = i - q * cols;
        float acc = dst[q * ld_dst + c];
        const int64_t end = q * dst_repeat + dst_repeat < rows ? q * dst_repeat + dst_repeat : rows;
        for (int64_t r = q * dst_repeat; r < end; ++r) acc = lm::add_rn(acc, src[r * ld_src + c]);
        dst[q * ld_dst + c] = acc;
    }
}

__global__ void swiglu_forward_kernel(float* out, const float* gu, int64_t n, int64_t f) {
    for (int64_t i = thread_index(); i < n * f; i += thread_count()) {
        const int64_t r = i / f, j = i - r * f;
        const float* row = gu + r * 2 * f;
        out[i] = lm::swiglu(row[j], row[f + j]);
    }
}

__global__ void swiglu_backward_kernel(float* dgu, const float* dout, const float* gu, int64_t n, int64_t f) {
    for (int64_t i = thread_index(); i < n * f; i += thread_count()) {
        const int64_t r = i / f, j = i - r * f;
        const float* row = gu + r * 2 * f;
        float* drow = dgu + r * 2 * f;
        float dg = drow[j], du = drow[f + j];
        lm::swiglu_backward(dg, du, dout[i], row[j], row[f + j]);
        drow[j] = dg;
        drow[f + j] = du;
    }
}

__global__ void f32_to_bf16_kernel(uint16_t* out, const float* in, int64_t n) {
    for (int64_t i = thread_index(); i < n; i += thread_count()) out[i] = fp8::encode_bf16(in[i]);
}

__global__ void bf16_to_f32_kernel(float* out, const uint16_t* in, int64_t n) {
    for (int64_t i = thread_index(); i < n; i += thread_count()) out[i] = fp8::decode_bf16(in[i]);
}

// ---- Column sums: dst_O += sum over rows of term(r, o) ----

struct BiasTerm {
    const float* dy;
    int64_t out;
    __device__ float operator()(int64_t r, int64_t o) const { return dy[r * out + o]; }
};

struct RmsnormDwTerm {
    const float* dout;
    const float* x;
    const float* rstd;
    int64_t d;
    __device__ float operator()(int64_t r, int64_t o) const {
        return lm::rmsnorm_dw_term(dout[r * d + o], x[r * d + o], rstd[r]);
    }
};

// partial_CO[c, o] = sum of term(r, o) over the rows r of chunk c, in row order.
template <class Term>
__global__ void column_partials_kernel(float* partial, Term term, int64_t n, int64_t out) {
    const int64_t col_blocks = (out + blockDim.x - 1) / blockDim.x,
                  chunks = (n + kColumnChunkRows - 1) / kColumnChunkRows;
    for (int64_t item = blockIdx.x; item < chunks * col_blocks; item += gridDim.x) {
        const int64_t c = item / col_blocks, o = (item - c * col_blocks) * blockDim.x + threadIdx.x;
        if (o >= out) continue;
        const int64_t r1 = min(n, (c + 1) * kColumnChunkRows);
        float acc = 0.0f;
        for (int64_t r = c * kColumnChunkRows; r < r1; ++r) acc = lm::add_rn(acc, term(r, o));
        partial[c * out + o] = acc;
    }
}

__global__ void column_finish_kernel(float* dst, const float* partial, int64_t chunks, int64_t out) {
    for (int64_t o = thread_index(); o < out; o += thread_count()) {
        float acc = dst[o];
        for (int64_t c = 0; c < chunks; ++c) acc = lm::add_rn(acc, partial[c * out + o]);
        dst[o] = acc;
    }
}

template <class Term>
void column_sums(cudaStream_t stream, float* dst_O, Term term, int64_t n, int64_t out, frugal::Allocator& alloc) {
    const int64_t chunks = ceil_div(n, kColumnChunkRows);
    Tensor partial = Tensor::empty({chunks * out}, DType::kF32, alloc);
    column_partials_kernel<<<grid_for(chunks * ceil_div(out, kThreads), 1), kThreads, 0, stream>>>(
        partial.data<float>(), term, n, out);
    check_launch();
    column_finish_kernel<<<grid_for(out, kThreads), kThreads, 0, stream>>>(dst_O, partial.data<float>(), chunks, out);
    check_launch();
}

// ---- Rows: one warp per row ----

__global__ void rmsnorm_forward_kernel(float* out, float* rstd_n, const float* x, const float* w, int64_t n, int64_t d,
                                       double eps) {
    const int lane = lane_index();
    for (int64_t r = warp_index(); r < n; r += warp_count()) {
        const float* xr = x + r * d;
        float ss = 0.0f;
        for (int64_t j = lane; j < d; j += lm::kWarpSize) ss = lm::sum_sq_step(ss, xr[j]);
        const float rstd = lm::rmsnorm_rstd(warp_sum(ss), d, eps);
        if (lane == 0) rstd_n[r] = rstd;
        for (int64_t j = lane; j < d; j += lm::kWarpSize) out[r * d + j] = lm::rmsnorm_out(xr[j], rstd, w[j]);
    }
}

__global__ void rmsnorm_backward_dx_kernel(float* dx, const float* dout, const float* x, const float* w,
                                           const float* rstd_n, int64_t n, int64_t d) {
    const int lane = lane_index();
    for (int64_t r = warp_index(); r < n; r += warp_count()) {
        const float *xr = x + r * d, *gr = dout + r * d;
        const float rstd = rstd_n[r];
        float dot = 0.0f;
        for (int64_t j = lane; j < d; j += lm::kWarpSize) dot = lm::rmsnorm_dot_step(dot, w[j], gr[j], xr[j]);
        const float coef = lm::rmsnorm_coef(warp_sum(dot), rstd, d);
        for (int64_t j = lane; j < d; j += lm::kWarpSize)
            dx[r * d + j] = lm::rmsnorm_dx(dx[r * d + j], rstd, w[j], gr[j], xr[j], coef);
    }
}

__device__ float row_max(const float* row, int64_t v, int lane) {
    float mx = -INFINITY;
    for (int64_t j = lane; j < v; j += lm::kWarpSize) mx = lm::max_step(mx, row[j]);
    return warp_max(mx);
}

__global__ void cross_entropy_forward_kernel(float* loss, const float* logits, const int32_t* targets, int64_t n,
                                             int64_t v, int32_t ignore_index) {
    const int lane = lane_index();
    for (int64_t r = warp_index(); r < n; r += warp_count()) {
        const int32_t target = targets[r];
        if (target == ignore_index) {
            if (lane == 0) loss[r] = 0.0f;
            continue;
        }
        const float* row = logits + r * v;
        const float mx = row_max(row, v, lane);
        double sum = 0.0;
        for (int64_t j = lane; j < v; j += lm::kWarpSize) sum = lm::ce_exp_step(sum, row[j], mx);
        sum = warp_sum(sum);
        if (lane == 0) loss[r] = lm::ce_row_loss(sum, mx, row[target]);
    }
}

// total_1[0] = sum of loss_N: thread t sums rows t, t + kThreads, ... in order, then a fixed tree. One block.
__global__ void loss_total_kernel(double* total, const float* loss, int64_t n) {
    __shared__ double partial[kThreads];
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) acc = __dadd_rn(acc, double(loss[i]));
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int stride = kThreads / 2; stride > 0; stride /= 2) {
        if (int(threadIdx.x) < stride)
            partial[threadIdx.x] = __dadd_rn(partial[threadIdx.x], partial[threadIdx.x + stride]);
        __syncthreads();
    }
    if (threadIdx.x == 0) total[0] = partial[0];
}

__global__ void cross_entropy_backward_kernel(float* dlogits, const float* logits, const int32_t* targets, float scale,
                                              int64_t n, int64_t v, int32_t ignore_index) {
    const int lane = lane_index();
    for (int64_t r = warp_index(); r < n; r += warp_count()) {
        const int32_t target = targets[r];
        if (target == ignore_index) continue;
        const float* row = logits + r * v;
        float* d = dlogits + r * v;
        const float mx = row_max(row, v, lane);
        float sum = 0.0f;
        for (int64_t j = lane; j < v; j += lm::kWarpSize) sum = lm::ce_sum_step(sum, row[j], mx);
        const float inv = lm::ce_inv(scale, warp_sum(sum));
        for (int64_t j = lane; j < v; j += lm::kWarpSize) d[j] = lm::ce_grad(d[j], row[j], mx, inv, j == target, scale);
    }
}

__global__ void sigmoid_gate_forward_kernel(float* out, float* gate, const float* shared, int64_t t, int64_t d) {
    const int lane = lane_index();
    for (int64_t r = warp_index(); r < t; r += warp_count()) {
        const float g = lm::sigmoid(gate[r]);
        __syncwarp();  // every lane has read the logit before lane 0 overwrites it
        if (lane == 0) gate[r] = g;
        for (int64_t j = lane; j < d; j += lm::kWarpSize) out[r * d + j] = lm::gate_out(g, shared[r * d + j]);
    }
}

__global__ void sigmoid_gate_backward_kernel(float* d_shared, float* d_logit, const float* dout, const float* shared,
                                             const float* gate, int64_t t, int64_t d) {
    const int lane = lane_index();
    for (int64_t r = warp_index(); r < t; r += warp_count()) {
        const float g = gate[r];
        float dot = 0.0f;
        for (int64_t j = lane; j < d; j += lm::kWarpSize) {
            dot = lm::gate_dot_step(dot, dout[r * d + j], shared[r * d + j]);
            d_shared[r * d + j] = lm::gate_d_shared(g, dout[r * d + j]);
        }
        dot = warp_sum(dot);
        if (lane == 0) d_logit[r] = lm::gate_d_logit(g, dot);
    }
}

// ---- Embedding backward ----

__global__ void iota_kernel(int32_t* x, int64_t n) {
    for (int64_t i = thread_index(); i < n; i += thread_count()) x[i] = int32_t(i);
}

// sorted_tokens / row_of_sorted: the rows ordered by token id, stable. The first position p of each id's run sums
// the run's rows in order into the id's weight row.
__global__ void embedding_backward_kernel(float* dwte, const float* dout, const int32_t* sorted_tokens,
                                          const int32_t* row_of_sorted, int64_t n, int64_t d) {
    const int64_t col_blocks = (d + blockDim.x - 1) / blockDim.x;
    for (int64_t item = blockIdx.x; item < n * col_blocks; item += gridDim.x) {
        const int64_t p = item / col_blocks, j = (item - p * col_blocks) * blockDim.x + threadIdx.x;
        const int32_t token = sorted_tokens[p];
        if (j >= d || (p > 0 && sorted_tokens[p - 1] == token)) continue;
        float* dst = dwte + int64_t(token) * d + j;
        float acc = *dst;
        for (int64_t q = p; q < n && sorted_tokens[q] == token; ++q)
            acc = lm::add_rn(acc, dout[int64_t(row_of_sorted[q]) * d + j]);
        *dst = acc;
    }
}

}  // namespace

void fill(cudaStream_t stream, float* x, int64_t n, float value) {
    if (n <= 0) return;
    fill_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, n, value);
    check_launch();
}

void add(cudaStream_t stream, float* out, const float* a, const float* b, int64_t n) {
    if (n <= 0) return;
    add_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, a, b, n);
    check_launch();
}

void add_inplace(cudaStream_t stream, float* y, const float* x, int64_t n) {
    if (n <= 0) return;
    add_inplace_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(y, x, n);
    check_launch();
}

void bias_add(cudaStream_t stream, float* y_NO, const float* b_O, int64_t n, int64_t out) {
    check_dims("bias_add", n, out);
    if (n == 0 || out == 0) return;
    bias_add_kernel<<<grid_for(n * out, kThreads), kThreads, 0, stream>>>(y_NO, b_O, n, out);
    check_launch();
}

void bias_backward(cudaStream_t stream, float* db_O, const float* dy_NO, int64_t n, int64_t out,
                   frugal::Allocator& alloc) {
    check_dims("bias_backward", n, out);
    if (n == 0 || out == 0) return;
    column_sums(stream, db_O, BiasTerm{dy_NO, out}, n, out, alloc);
}

void embedding_forward(cudaStream_t stream, float* out_ND, const int32_t* tokens_N, const float* wte_VD, int64_t n,
                       int64_t d) {
    check_dims("embedding_forward", n, d);
    if (n == 0 || d == 0) return;
    embedding_forward_kernel<<<grid_for(n * d, kThreads), kThreads, 0, stream>>>(out_ND, tokens_N, wte_VD, n, d);
    check_launch();
}

void embedding_backward(cudaStream_t stream, float* dwte_VD, const float* dout_ND, const int32_t* tokens_N, int64_t n,
                        int64_t d, frugal::Allocator& alloc) {
    check_dims("embedding_backward", n, d);
    FRUGAL_CHECK(n <= std::numeric_limits<int32_t>::max(), "embedding_backward: ", n,
                 " rows exceed the sort's 2^31 - 1: lower training.micro_batch_size or model.seq_len");
    if (n == 0 || d == 0) return;
    Tensor sorted_tokens = Tensor::empty({n}, DType::kI32, alloc);
    Tensor rows = Tensor::empty({n}, DType::kI32, alloc);
    Tensor row_of_sorted = Tensor::empty({n}, DType::kI32, alloc);
    iota_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(rows.data<int32_t>(), n);
    check_launch();
    size_t temp_bytes = 0;
    FRUGAL_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, tokens_N, sorted_tokens.data<int32_t>(),
                                                      rows.data<int32_t>(), row_of_sorted.data<int32_t>(), int(n), 0,
                                                      32, stream));
    Tensor temp = Tensor::empty({int64_t(temp_bytes)}, DType::kU8, alloc);
    FRUGAL_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data<uint8_t>(), temp_bytes, tokens_N,
                                                      sorted_tokens.data<int32_t>(), rows.data<int32_t>(),
                                                      row_of_sorted.data<int32_t>(), int(n), 0, 32, stream));
    embedding_backward_kernel<<<grid_for(n * ceil_div(d, kThreads), 1), kThreads, 0, stream>>>(
        dwte_VD, dout_ND, sorted_tokens.data<int32_t>(), row_of_sorted.data<int32_t>(), n, d);
    check_launch();
}

void rmsnorm_forward(cudaStream_t stream, float* out_ND, float* rstd_N, const float* x_ND, const float* w_D, int64_t n,
                     int64_t d, double eps) {
    check_dims("rmsnorm_forward", n, d);
    if (n == 0) return;
    rmsnorm_forward_kernel<<<grid_for(n, kWarpsPerBlock), kThreads, 0, stream>>>(out_ND, rstd_N, x_ND, w_D, n, d, eps);
    check_launch();
}

void rmsnorm_backward(cudaStream_t stream, float* dx_ND, float* dw_D, const float* dout_ND, const float* x_ND,
                      const float* w_D, const float* rstd_N, int64_t n, int64_t d, frugal::Allocator& alloc) {
    check_dims("rmsnorm_backward", n, d);
    if (n == 0 || d == 0) return;
    rmsnorm_backward_dx_kernel<<<grid_for(n, kWarpsPerBlock), kThreads, 0, stream>>>(dx_ND, dout_ND, x_ND, w_D, rstd_N,
                                                                                     n, d);
    check_launch();
    if (dw_D) column_sums(stream, dw_D, RmsnormDwTerm{dout_ND, x_ND, rstd_N, d}, n, d, alloc);
}

void rope_apply(cudaStream_t stream, float* x, int64_t row_stride, int64_t head_stride, const int32_t* pos_N,
                const float* cos_PH, const float* sin_PH, int64_t n, int64_t heads, int64_t rot_dim, bool inverse) {
    check_dims("rope_apply", n, heads);
    FRUGAL_CHECK(rot_dim >= 0 && rot_dim % 2 == 0, "rope_apply: the rotated width (", rot_dim,
                 ") must be even: set an even head dimension (or qk_rope_head_dim)");
    const int64_t half = rot_dim / 2;
    if (n == 0 || heads == 0 || half == 0) return;
    rope_kernel<<<grid_for(n * heads * half, kThreads), kThreads, 0, stream>>>(x, row_stride, head_stride, pos_N,
                                                                               cos_PH, sin_PH, n, heads, half, inverse);
    check_launch();
}

void strided_copy(cudaStream_t stream, float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows,
                  int64_t cols, int64_t src_repeat) {
    check_dims("strided_copy", rows, cols);
    FRUGAL_CHECK(src_repeat >= 1, "strided_copy: src_repeat (", src_repeat, ") must be >= 1");
    if (rows == 0 || cols == 0) return;
    strided_copy_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(dst, ld_dst, src, ld_src, rows, cols,
                                                                                  src_repeat);
    check_launch();
}

void strided_add(cudaStream_t stream, float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows,
                 int64_t cols, int64_t dst_repeat) {
    check_dims("strided_add", rows, cols);
    FRUGAL_CHECK(dst_repeat >= 1, "strided_add: dst_repeat (", dst_repeat, ") must be >= 1");
    if (rows == 0 || cols == 0) return;
    const int64_t dst_rows = (rows + dst_repeat - 1) / dst_repeat;
    strided_add_kernel<<<grid_for(dst_rows * cols, kThreads), kThreads, 0, stream>>>(dst, ld_dst, src, ld_src, rows,
                                                                                     cols, dst_repeat);
    check_launch();
}

void swiglu_forward(cudaStream_t stream, float* out_NF, const float* gu_N2F, int64_t n, int64_t f) {
    check_dims("swiglu_forward", n, f);
    if (n == 0 || f == 0) return;
    swiglu_forward_kernel<<<grid_for(n * f, kThreads), kThreads, 0, stream>>>(out_NF, gu_N2F, n, f);
    check_launch();
}

void swiglu_backward(cudaStream_t stream, float* dgu_N2F, const float* dout_NF, const float* gu_N2F, int64_t n,
                     int64_t f) {
    check_dims("swiglu_backward", n, f);
    if (n == 0 || f == 0) return;
    swiglu_backward_kernel<<<grid_for(n * f, kThreads), kThreads, 0, stream>>>(dgu_N2F, dout_NF, gu_N2F, n, f);
    check_launch();
}

double cross_entropy_forward(cudaStream_t stream, float* loss_N, const float* logits_NV, const int32_t* targets_N,
                             int64_t n, int64_t v, int32_t ignore_index, frugal::Allocator& alloc) {
    check_dims("cross_entropy_forward", n, v);
    FRUGAL_CHECK(n == 0 || v > 0, "cross_entropy_forward: the vocabulary is empty: set model.vocab_size above 0");
    if (n == 0) return 0.0;
    Tensor total = Tensor::empty({1}, DType::kF64, alloc);
    cross_entropy_forward_kernel<<<grid_for(n, kWarpsPerBlock), kThreads, 0, stream>>>(loss_N, logits_NV, targets_N, n,
                                                                                       v, ignore_index);
    check_launch();
    loss_total_kernel<<<1, kThreads, 0, stream>>>(total.data<double>(), loss_N, n);
    check_launch();
    double total_host = 0.0;
    FRUGAL_CUDA_CHECK(
        cudaMemcpyAsync(&total_host, total.data<double>(), sizeof(double), cudaMemcpyDeviceToHost, stream));
    FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream));
    return total_host;
}

void cross_entropy_backward(cudaStream_t stream, float* dlogits_NV, const float* logits_NV, const int32_t* targets_N,
                            float scale, int64_t n, int64_t v, int32_t ignore_index) {
    check_dims("cross_entropy_backward", n, v);
    if (n == 0 || v == 0) return;
    cross_entropy_backward_kernel<<<grid_for(n, kWarpsPerBlock), kThreads, 0, stream>>>(
        dlogits_NV, logits_NV, targets_N, scale, n, v, ignore_index);
    check_launch();
}

void sigmoid_gate_forward(cudaStream_t stream, float* out_TD, float* gate_T, const float* shared_TD, int64_t t,
                          int64_t d) {
    check_dims("sigmoid_gate_forward", t, d);
    if (t == 0) return;
    sigmoid_gate_forward_kernel<<<grid_for(t, kWarpsPerBlock), kThreads, 0, stream>>>(out_TD, gate_T, shared_TD, t, d);
    check_launch();
}

void sigmoid_gate_backward(cudaStream_t stream, float* d_shared_TD, float* d_logit_T, const float* dout_TD,
                           const float* shared_TD, const float* gate_T, int64_t t, int64_t d) {
    check_dims("sigmoid_gate_backward", t, d);
    if (t == 0) return;
    sigmoid_gate_backward_kernel<<<grid_for(t, kWarpsPerBlock), kThreads, 0, stream>>>(d_shared_TD, d_logit_T, dout_TD,
                                                                                       shared_TD, gate_T, t, d);
    check_launch();
}

void f32_to_bf16(cudaStream_t stream, uint16_t* out, const float* in, int64_t n) {
    if (n <= 0) return;
    f32_to_bf16_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, in, n);
    check_launch();
}

void bf16_to_f32(cudaStream_t stream, float* out, const uint16_t* in, int64_t n) {
    if (n <= 0) return;
    bf16_to_f32_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, in, n);
    check_launch();
}

}  // namespace frugal::cuda
