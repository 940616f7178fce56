// The optimizer's kernels and the precision glue of the CUDA backend (backend/cuda/optim.h), one translation unit.
// The arithmetic is optim_math.h's (and fp8_math.h's), so each result is the CPU's; the kernels only decide who reads
// what:
//   adamw, scale        grid-stride loops, one element per thread per step
//   sum_squares         pass 1: exactly kSumParts blocks of kSumThreads threads, block p reduces part p of
//                       optim_math.h's split (per-thread strided sums, then a pairwise tree in shared memory) into
//                       part_sums_P[p]; pass 2 on the host: optim_math::combine_parts over the copied partials. The
//                       grid depends on nothing but constants, so the order of additions depends on n only.
//   fingerprint         the sampled elements' bits gathered on the device (4 bytes per 997 elements), hashed on the
//                       host in order (FNV-1a is sequential)
//   amax, quantizers    quantize.h's kernels (amax_tensor: per-block maxima then one block, exact and order-free)
// Every launch is checked; all index arithmetic is 64-bit; the scratch comes from the caller's pooled allocator.
#include <algorithm>
#include <vector>

#include "backend/cuda/check.h"
#include "backend/cuda/fp8_math.h"
#include "backend/cuda/optim.h"
#include "backend/cuda/optim_math.h"
#include "backend/cuda/quantize.h"
#include "core/error.h"
#include "core/tensor.h"

namespace frugal::cuda {
namespace {

namespace om = optim_math;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 16;

int grid_for(int64_t n) { return int(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, kMaxBlocks)); }

void check_launch() { FRUGAL_CUDA_CHECK(cudaGetLastError()); }

void check_count(const char* what, int64_t n) {
    FRUGAL_CHECK(n >= 0, what, ": the element count (", n, ") must not be negative");
}

template <bool kFused, typename M>
__global__ void adamw_kernel(float* value, const float* grad, M* m, M* v, int64_t n, om::AdamwHyper h) {
    for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += int64_t(gridDim.x) * blockDim.x)
        om::adamw_apply<kFused>(value, grad, m, v, j, h);
}

template <typename M>
void launch_adamw(cudaStream_t stream, float* value, const float* grad, M* m, M* v, int64_t n,
                  const om::AdamwHyper& h) {
    // The CPU kernel's contraction, as its build does it (optim_math.h): both forms are compiled, the host picks.
    if (om::kCpuAdamwFused)
        adamw_kernel<true, M><<<grid_for(n), kThreads, 0, stream>>>(value, grad, m, v, n, h);
    else
        adamw_kernel<false, M><<<grid_for(n), kThreads, 0, stream>>>(value, grad, m, v, n, h);
    check_launch();
}

__global__ void __launch_bounds__(om::kSumThreads) sum_squares_kernel(double* part_sums_P, const float* x, int64_t n) {
    __shared__ double values_T[om::kSumThreads];
    const int t = int(threadIdx.x);
    const int64_t p = blockIdx.x;
    values_T[t] = om::thread_sum(x, om::part_begin(n, p), om::part_begin(n, p + 1), t);
    __syncthreads();
    for (int half = om::kSumThreads / 2; half > 0; half /= 2) {
        if (t < half) values_T[t] = om::tree_add(values_T[t], values_T[t + half]);
        __syncthreads();
    }
    if (t == 0) part_sums_P[p] = values_T[0];
}

__global__ void scale_kernel(float* x, int64_t n, float factor) {
    for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += int64_t(gridDim.x) * blockDim.x)
        x[j] = fp8::mul_like_host(x[j], factor);
}

__global__ void fingerprint_gather_kernel(uint32_t* bits_K, const float* x, int64_t n, int64_t num_samples) {
    for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < num_samples;
         k += int64_t(gridDim.x) * blockDim.x)
        bits_K[k] = fp8::float_bits(x[om::fingerprint_index(n, k)]);
}

// Copies count elements of T from device src to the host and waits for the stream.
template <typename T>
std::vector<T> download(cudaStream_t stream, const T* src, int64_t count) {
    std::vector<T> host(static_cast<size_t>(count));
    FRUGAL_CUDA_CHECK(cudaMemcpyAsync(host.data(), src, host.size() * sizeof(T), cudaMemcpyDeviceToHost, stream));
    FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream));
    return host;
}

}  // namespace

// ---- Optimizer ----

void adamw_update(cudaStream_t stream, float* value, const float* grad, void* m, void* v, bool moments_bf16, int64_t n,
                  float b1, float b2, float step_size, float inv_sqrt_bc2, float eps, float decay) {
    check_count("adamw_update", n);
    if (n == 0) return;
    const om::AdamwHyper h{b1, b2, step_size, inv_sqrt_bc2, eps, decay};
    if (moments_bf16)
        launch_adamw(stream, value, grad, static_cast<uint16_t*>(m), static_cast<uint16_t*>(v), n, h);
    else
        launch_adamw(stream, value, grad, static_cast<float*>(m), static_cast<float*>(v), n, h);
}

double sum_squares(cudaStream_t stream, const float* x, int64_t n, Allocator& alloc) {
    check_count("sum_squares", n);
    if (n == 0) return 0.0;
    Tensor part_sums_P = Tensor::empty({om::kSumParts}, DType::kF64, alloc);
    sum_squares_kernel<<<int(om::kSumParts), om::kSumThreads, 0, stream>>>(part_sums_P.data<double>(), x, n);
    check_launch();
    const std::vector<double> host_P = download(stream, part_sums_P.data<double>(), om::kSumParts);
    return om::combine_parts(host_P.data());
}

void scale(cudaStream_t stream, float* x, int64_t n, float factor) {
    check_count("scale", n);
    if (n == 0) return;
    scale_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, n, factor);
    check_launch();
}

// ---- Precision ----

float amax(cudaStream_t stream, const float* x, int64_t n, Allocator& alloc) {
    check_count("amax", n);
    if (n == 0) return 0.0f;
    // workspace: [amax_tensor's partial maxima | its scratch | the result]
    const int64_t workspace_floats = amax_workspace_floats(n);
    Tensor workspace = Tensor::empty({workspace_floats + 1}, DType::kF32, alloc);
    float* result_1 = workspace.data<float>() + workspace_floats;
    amax_tensor(result_1, x, n, workspace.data<float>(), stream);
    return download(stream, result_1, 1)[0];
}

uint64_t fingerprint(cudaStream_t stream, const float* x, int64_t n, Allocator& alloc) {
    check_count("fingerprint", n);
    const int64_t num_samples = om::fingerprint_samples(n);
    if (num_samples == 0) return om::kFnvOffset;
    Tensor bits_K = Tensor::empty({num_samples}, DType::kI32, alloc);
    uint32_t* bits = reinterpret_cast<uint32_t*>(bits_K.data<int32_t>());
    fingerprint_gather_kernel<<<grid_for(num_samples), kThreads, 0, stream>>>(bits, x, n, num_samples);
    check_launch();
    const std::vector<uint32_t> host_K = download(stream, bits, num_samples);
    return om::fingerprint_of_samples(host_K.data(), num_samples);
}

void fake_quant(cudaStream_t stream, float* out, const float* in, int64_t n, Fp8Format fmt, float scale) {
    check_count("fake_quant", n);
    fake_quant(out, in, n, fmt, scale, stream);
}

void fake_quant_row_tiles(cudaStream_t stream, float* out, const float* in, int64_t rows, int64_t cols, int64_t tile,
                          Fp8Format fmt, bool power_of_2) {
    fake_quant_row_tiles(out, in, rows, cols, tile, fmt, power_of_2, stream);
}

void fake_quant_col_tiles(cudaStream_t stream, float* out, const float* in, int64_t rows, int64_t cols, int64_t tile,
                          Fp8Format fmt, bool power_of_2) {
    fake_quant_col_tiles(out, in, rows, cols, tile, fmt, power_of_2, stream);
}

void fake_quant_blocks(cudaStream_t stream, float* out, const float* in, int64_t rows, int64_t cols, int64_t tile,
                       Fp8Format fmt, bool power_of_2) {
    fake_quant_blocks(out, in, rows, cols, tile, fmt, power_of_2, stream);
}

void round_bf16(cudaStream_t stream, float* out, const float* in, int64_t n) {
    check_count("round_bf16", n);
    round_bf16(out, in, n, stream);
}

void quantize_row_tiles(cudaStream_t stream, uint8_t* codes, float* scales, const float* in, int64_t rows, int64_t cols,
                        int64_t tile, Fp8Format fmt, bool power_of_2) {
    quantize_row_tiles(codes, scales, in, rows, cols, tile, fmt, power_of_2, ScaleLayout::kFrugal, stream);
}

void dequantize_row_tiles(cudaStream_t stream, float* out, const uint8_t* codes, const float* scales, int64_t rows,
                          int64_t cols, int64_t tile, Fp8Format fmt) {
    dequantize_row_tiles(out, codes, scales, rows, cols, tile, fmt, stream);
}

}  // namespace frugal::cuda
