// FP8/BF16 quantization kernels (backend/cuda/quantize.h), one translation unit. The arithmetic of each element is
// fp8_math.h's, so every kernel equals the CPU function it names bit for bit; the kernels only decide who reads what:
//   elementwise        grid-stride loop, one element per thread per step
//   row tiles          one warp per 1 x tile group: lanes read consecutive columns (coalesced), the amax is a warp
//                      shuffle reduction, then the warp encodes the group it still has in cache
//   col tiles          one thread per column of a tile x 1 group, a block over consecutive columns (coalesced rows)
//   blocks             one thread block per tile x tile block, amax by warp shuffles and shared memory
//   tensor amax        pass 1: at most kAmaxBlocks blocks write their maxima to the workspace; pass 2: one block
//                      reduces them. The maximum is exact and order-free, so the result is the CPU's whatever the
//                      split; the split depends on n only.
// Every loop over groups is grid-stride, so any shape fits a bounded grid; all index arithmetic is 64-bit.
#include <algorithm>

#include "backend/cuda/check.h"
#include "backend/cuda/fp8_math.h"
#include "backend/cuda/quantize.h"
#include "core/error.h"

namespace frugal::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int64_t kMaxBlocks = int64_t(1) << 16;
constexpr int64_t kAmaxBlocks = 1024;
constexpr int64_t kAmaxPerThread = 8;

__host__ __device__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int grid_for(int64_t work_items, int64_t items_per_block) {
    return int(std::clamp<int64_t>(ceil_div(work_items, items_per_block), 1, kMaxBlocks));
}

int64_t amax_blocks(int64_t n) { return std::clamp<int64_t>(ceil_div(n, kThreads * kAmaxPerThread), 1, kAmaxBlocks); }

void check_launch() { FRUGAL_CUDA_CHECK(cudaGetLastError()); }

void check_shape(const char* what, int64_t rows, int64_t cols, int64_t tile, ScaleLayout layout) {
    FRUGAL_CHECK(rows >= 0 && cols >= 0, what, ": rows (", rows, ") and cols (", cols, ") must not be negative");
    FRUGAL_CHECK(tile >= 1 && tile <= 1024, what, ": tile (", tile,
                 ") must be in [1, 1024]: set precision.block_size to 128 (DeepSeek-V3's tiles)");
    FRUGAL_CHECK(layout != ScaleLayout::kCublasLt || tile == 128, what,
                 ": cuBLASLt's block scaling takes tiles of 128, ", "tile is ", tile,
                 ": set precision.block_size to 128 or ask for ScaleLayout::kFrugal");
}

// Calls fn with the format's tag type.
template <class Fn>
void with_format(Fp8Format fmt, Fn&& fn) {
    if (fmt == Fp8Format::kE4M3)
        fn(fp8::E4M3{});
    else
        fn(fp8::E5M2{});
}

__device__ float warp_max(float m) {
    for (int offset = 16; offset > 0; offset /= 2) m = fp8::amax_step(m, __shfl_xor_sync(0xFFFFFFFFu, m, offset));
    return m;
}

// The maximum of every thread's m, valid in thread 0; shared_32 holds one float per warp. Every thread must call it.
__device__ float block_max(float m, float* shared_32) {
    const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
    m = warp_max(m);
    if (lane == 0) shared_32[warp] = m;
    __syncthreads();
    m = int(threadIdx.x) < int(blockDim.x >> 5) ? shared_32[threadIdx.x] : 0.0f;
    if (warp == 0) m = warp_max(m);
    __syncthreads();
    return m;
}

// The stored value of a group's scale s under a layout.
__device__ float stored_scale(float s, ScaleLayout layout) {
    return layout == ScaleLayout::kFrugal ? s : fp8::div_rn(1.0f, s);
}

// ---- Elementwise ----

template <class F>
__global__ void fake_quant_kernel(float* out, const float* in, int64_t n, float scale, const float* scale_1) {
    const float s = scale_1 ? scale_1[0] : scale, inv = fp8::div_rn(1.0f, s);
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        out[i] = fp8::fake_quant<F>(in[i], s, inv);
}

template <class F>
__global__ void encode_kernel(uint8_t* codes, const float* in, int64_t n, const float* scale_1) {
    const float s = scale_1[0];
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        codes[i] = fp8::encode<F>(fp8::mul_rn(in[i], s));
}

template <class F>
__global__ void dequantize_row_tiles_kernel(float* out, const uint8_t* codes, const float* scales, int64_t rows,
                                            int64_t cols, int64_t tile) {
    const int64_t groups = ceil_div(cols, tile), n = rows * cols;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = i / cols, c = i - r * cols;
        out[i] = fp8::dequantize<F>(codes[i], fp8::div_rn(1.0f, scales[r * groups + c / tile]));
    }
}

__global__ void round_bf16_kernel(float* out, const float* in, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        out[i] = fp8::round_bf16(in[i]);
}

__global__ void encode_bf16_kernel(uint16_t* bits, const float* in, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        bits[i] = fp8::encode_bf16(in[i]);
}

// ---- Row tiles: one warp per group ----

// kFake: out = fake quantization; else codes and scales.
template <class F, bool kFake>
__global__ void row_tiles_kernel(float* out, uint8_t* codes, float* scales, const float* in, int64_t rows, int64_t cols,
                                 int64_t tile, bool power_of_2, ScaleLayout layout) {
    const int64_t groups = ceil_div(cols, tile), num_groups = rows * groups;
    const int lane = int(threadIdx.x) & 31;
    const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
    for (int64_t w = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); w < num_groups; w += warps) {
        const int64_t r = w / groups, g = w - r * groups, c0 = g * tile, n = min(tile, cols - c0);
        const float* src = in + r * cols + c0;
        float m = 0.0f;
        for (int64_t i = lane; i < n; i += 32) m = fp8::amax_step(m, src[i]);
        const float s = fp8::scale_for<F>(warp_max(m), power_of_2);
        if constexpr (kFake) {
            const float inv = fp8::div_rn(1.0f, s);
            for (int64_t i = lane; i < n; i += 32) out[r * cols + c0 + i] = fp8::fake_quant<F>(src[i], s, inv);
        } else {
            for (int64_t i = lane; i < n; i += 32) codes[r * cols + c0 + i] = fp8::encode<F>(fp8::mul_rn(src[i], s));
            if (lane == 0)
                scales[layout == ScaleLayout::kFrugal ? r * groups + g : g * rows + r] = stored_scale(s, layout);
        }
    }
}

// ---- Col tiles: one thread per column of a group ----

enum class ColOut { kFake, kCodes, kCodesTransposed };

template <class F, ColOut kOut>
__global__ void col_tiles_kernel(float* out, uint8_t* codes, float* scales, const float* in, int64_t rows, int64_t cols,
                                 int64_t tile, bool power_of_2, ScaleLayout layout) {
    const int64_t chunks = ceil_div(cols, blockDim.x), items = ceil_div(rows, tile) * chunks;
    for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
        const int64_t g = item / chunks, c = (item - g * chunks) * blockDim.x + threadIdx.x;
        if (c >= cols) continue;
        const int64_t r0 = g * tile, r1 = min(rows, r0 + tile);
        float m = 0.0f;
        for (int64_t r = r0; r < r1; ++r) m = fp8::amax_step(m, in[r * cols + c]);
        const float s = fp8::scale_for<F>(m, power_of_2);
        if constexpr (kOut == ColOut::kFake) {
            const float inv = fp8::div_rn(1.0f, s);
            for (int64_t r = r0; r < r1; ++r) out[r * cols + c] = fp8::fake_quant<F>(in[r * cols + c], s, inv);
        } else {
            for (int64_t r = r0; r < r1; ++r) {
                const uint8_t code = fp8::encode<F>(fp8::mul_rn(in[r * cols + c], s));
                codes[kOut == ColOut::kCodes ? r * cols + c : c * rows + r] = code;
            }
            scales[g * cols + c] = stored_scale(s, layout);
        }
    }
}

// ---- Blocks: one thread block per tile x tile block ----

// Scales of a grid of num_rows x num_cols blocks, row-major with the row stride of the layout (cuBLASLt pads it
// to a multiple of 4 and the pad is written 0 by the last block of each row).
struct BlockScales {
    float* scales;
    int64_t stride;
    __device__ void write(int64_t i, int64_t j, int64_t num_cols, float s, ScaleLayout layout) const {
        scales[i * stride + j] = stored_scale(s, layout);
        if (j == num_cols - 1)
            for (int64_t pad = num_cols; pad < stride; ++pad) scales[i * stride + pad] = 0.0f;
    }
};

__host__ __device__ int64_t scale_row_stride(int64_t num_cols, ScaleLayout layout) {
    return layout == ScaleLayout::kFrugal ? num_cols : ceil_div(num_cols, 4) * 4;
}

// kFake: out = fake quantization; else codes and scales, and when codes_t is not null also the transpose's codes
// codes_t[c * rows + r] and block scales scales_t (block (j, i) of the transpose has block (i, j)'s scale).
template <class F, bool kFake>
__global__ void blocks_kernel(float* out, uint8_t* codes, float* scales, uint8_t* codes_t, float* scales_t,
                              const float* in, int64_t rows, int64_t cols, int64_t tile, bool power_of_2,
                              ScaleLayout layout) {
    __shared__ float shared_32[32];
    __shared__ float block_scale;
    const int64_t block_rows = ceil_div(rows, tile), block_cols = ceil_div(cols, tile);
    const BlockScales grid{scales, scale_row_stride(block_cols, layout)};
    const BlockScales grid_t{scales_t, scale_row_stride(block_rows, layout)};
    for (int64_t b = blockIdx.x; b < block_rows * block_cols; b += gridDim.x) {
        const int64_t i = b / block_cols, j = b - i * block_cols, r0 = i * tile, c0 = j * tile;
        const uint32_t h = uint32_t(min(tile, rows - r0)), w = uint32_t(min(tile, cols - c0)), count = h * w;
        float m = 0.0f;
        for (uint32_t e = threadIdx.x; e < count; e += blockDim.x)
            m = fp8::amax_step(m, in[(r0 + e / w) * cols + c0 + e % w]);
        m = block_max(m, shared_32);
        if (threadIdx.x == 0) {
            const float s = fp8::scale_for<F>(m, power_of_2);
            block_scale = s;
            if constexpr (!kFake) {
                grid.write(i, j, block_cols, s, layout);
                if (codes_t) grid_t.write(j, i, block_rows, s, layout);
            }
        }
        __syncthreads();
        const float s = block_scale, inv = fp8::div_rn(1.0f, s);
        for (uint32_t e = threadIdx.x; e < count; e += blockDim.x) {
            const int64_t r = r0 + e / w, c = c0 + e % w;
            if constexpr (kFake) {
                out[r * cols + c] = fp8::fake_quant<F>(in[r * cols + c], s, inv);
            } else {
                const uint8_t code = fp8::encode<F>(fp8::mul_rn(in[r * cols + c], s));
                codes[r * cols + c] = code;
                if (codes_t) codes_t[c * rows + r] = code;
            }
        }
        __syncthreads();  // block_scale is rewritten by the next block's thread 0
    }
}

// ---- Tensor amax: two passes ----

__global__ void amax_partial_kernel(float* partials, const float* in, int64_t n) {
    __shared__ float shared_32[32];
    float m = 0.0f;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        m = fp8::amax_step(m, in[i]);
    m = block_max(m, shared_32);
    if (threadIdx.x == 0) partials[blockIdx.x] = m;
}

// amax_1[0] = max of the partials; with scale_out: scale_out[0] = s (the kernels' multiplier) and stored[0] = the
// layout's value of s.
template <class F>
__global__ void amax_final_kernel(float* amax_1, float* scale_out, float* stored, const float* partials,
                                  int64_t num_partials, bool power_of_2, ScaleLayout layout) {
    __shared__ float shared_32[32];
    float m = 0.0f;
    for (int64_t i = threadIdx.x; i < num_partials; i += blockDim.x) m = fp8::amax_step(m, partials[i]);
    m = block_max(m, shared_32);
    if (threadIdx.x == 0) {
        amax_1[0] = m;
        if (scale_out) {
            const float s = fp8::scale_for<F>(m, power_of_2);
            scale_out[0] = s;
            stored[0] = stored_scale(s, layout);
        }
    }
}

}  // namespace

int64_t num_row_tile_scales(int64_t rows, int64_t cols, int64_t tile) { return rows * ceil_div(cols, tile); }
int64_t num_col_tile_scales(int64_t rows, int64_t cols, int64_t tile) { return ceil_div(rows, tile) * cols; }
int64_t num_block_scales(int64_t rows, int64_t cols, int64_t tile, ScaleLayout layout) {
    return ceil_div(rows, tile) * scale_row_stride(ceil_div(cols, tile), layout);
}

void fake_quant(float* out_N, const float* in_N, int64_t n, Fp8Format fmt, float scale, cudaStream_t stream) {
    if (n <= 0) return;
    with_format(fmt, [&](auto f) {
        fake_quant_kernel<decltype(f)><<<grid_for(n, kThreads), kThreads, 0, stream>>>(out_N, in_N, n, scale, nullptr);
    });
    check_launch();
}

void fake_quant_device_scale(float* out_N, const float* in_N, int64_t n, Fp8Format fmt, const float* scale_1,
                             cudaStream_t stream) {
    if (n <= 0) return;
    with_format(fmt, [&](auto f) {
        fake_quant_kernel<decltype(f)><<<grid_for(n, kThreads), kThreads, 0, stream>>>(out_N, in_N, n, 1.0f, scale_1);
    });
    check_launch();
}

void fake_quant_row_tiles(float* out_RC, const float* in_RC, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                          bool power_of_2, cudaStream_t stream) {
    check_shape("fake_quant_row_tiles", rows, cols, tile, ScaleLayout::kFrugal);
    if (rows == 0 || cols == 0) return;
    const int grid = grid_for(rows * ceil_div(cols, tile), kWarpsPerBlock);
    with_format(fmt, [&](auto f) {
        row_tiles_kernel<decltype(f), true><<<grid, kThreads, 0, stream>>>(out_RC, nullptr, nullptr, in_RC, rows, cols,
                                                                           tile, power_of_2, ScaleLayout::kFrugal);
    });
    check_launch();
}

void quantize_row_tiles(uint8_t* codes_RC, float* scales, const float* in_RC, int64_t rows, int64_t cols, int64_t tile,
                        Fp8Format fmt, bool power_of_2, ScaleLayout layout, cudaStream_t stream) {
    check_shape("quantize_row_tiles", rows, cols, tile, layout);
    if (rows == 0 || cols == 0) return;
    const int grid = grid_for(rows * ceil_div(cols, tile), kWarpsPerBlock);
    with_format(fmt, [&](auto f) {
        row_tiles_kernel<decltype(f), false>
            <<<grid, kThreads, 0, stream>>>(nullptr, codes_RC, scales, in_RC, rows, cols, tile, power_of_2, layout);
    });
    check_launch();
}

void dequantize_row_tiles(float* out_RC, const uint8_t* codes_RC, const float* scales, int64_t rows, int64_t cols,
                          int64_t tile, Fp8Format fmt, cudaStream_t stream) {
    check_shape("dequantize_row_tiles", rows, cols, tile, ScaleLayout::kFrugal);
    if (rows == 0 || cols == 0) return;
    with_format(fmt, [&](auto f) {
        dequantize_row_tiles_kernel<decltype(f)>
            <<<grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(out_RC, codes_RC, scales, rows, cols, tile);
    });
    check_launch();
}

void fake_quant_col_tiles(float* out_RC, const float* in_RC, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                          bool power_of_2, cudaStream_t stream) {
    check_shape("fake_quant_col_tiles", rows, cols, tile, ScaleLayout::kFrugal);
    if (rows == 0 || cols == 0) return;
    const int grid = grid_for(ceil_div(rows, tile) * ceil_div(cols, kThreads), 1);
    with_format(fmt, [&](auto f) {
        col_tiles_kernel<decltype(f), ColOut::kFake><<<grid, kThreads, 0, stream>>>(
            out_RC, nullptr, nullptr, in_RC, rows, cols, tile, power_of_2, ScaleLayout::kFrugal);
    });
    check_launch();
}

void quantize_col_tiles(uint8_t* codes, float* scales, const float* in_RC, int64_t rows, int64_t cols, int64_t tile,
                        Fp8Format fmt, bool power_of_2, ScaleLayout layout, bool transpose_codes, cudaStream_t stream) {
    check_shape("quantize_col_tiles", rows, cols, tile, layout);
    if (rows == 0 || cols == 0) return;
    const int grid = grid_for(ceil_div(rows, tile) * ceil_div(cols, kThreads), 1);
    with_format(fmt, [&](auto f) {
        using F = decltype(f);
        if (transpose_codes)
            col_tiles_kernel<F, ColOut::kCodesTransposed>
                <<<grid, kThreads, 0, stream>>>(nullptr, codes, scales, in_RC, rows, cols, tile, power_of_2, layout);
        else
            col_tiles_kernel<F, ColOut::kCodes>
                <<<grid, kThreads, 0, stream>>>(nullptr, codes, scales, in_RC, rows, cols, tile, power_of_2, layout);
    });
    check_launch();
}

void fake_quant_blocks(float* out_RC, const float* in_RC, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                       bool power_of_2, cudaStream_t stream) {
    check_shape("fake_quant_blocks", rows, cols, tile, ScaleLayout::kFrugal);
    if (rows == 0 || cols == 0) return;
    const int grid = grid_for(ceil_div(rows, tile) * ceil_div(cols, tile), 1);
    with_format(fmt, [&](auto f) {
        blocks_kernel<decltype(f), true><<<grid, kThreads, 0, stream>>>(
            out_RC, nullptr, nullptr, nullptr, nullptr, in_RC, rows, cols, tile, power_of_2, ScaleLayout::kFrugal);
    });
    check_launch();
}

void quantize_blocks(uint8_t* codes_RC, float* scales, uint8_t* codes_t_CR, float* scales_t, const float* in_RC,
                     int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt, bool power_of_2, ScaleLayout layout,
                     cudaStream_t stream) {
    check_shape("quantize_blocks", rows, cols, tile, layout);
    FRUGAL_CHECK((codes_t_CR == nullptr) == (scales_t == nullptr),
                 "quantize_blocks: the transpose's codes and scales are asked for together (both or neither)");
    if (rows == 0 || cols == 0) return;
    const int grid = grid_for(ceil_div(rows, tile) * ceil_div(cols, tile), 1);
    with_format(fmt, [&](auto f) {
        blocks_kernel<decltype(f), false><<<grid, kThreads, 0, stream>>>(
            nullptr, codes_RC, scales, codes_t_CR, scales_t, in_RC, rows, cols, tile, power_of_2, layout);
    });
    check_launch();
}

int64_t amax_workspace_floats(int64_t n) { return amax_blocks(n) + 2; }

void amax_tensor(float* amax_1, const float* in_N, int64_t n, float* workspace, cudaStream_t stream) {
    FRUGAL_CHECK(n >= 0, "amax_tensor: n (", n, ") must not be negative");
    const int64_t blocks = amax_blocks(n);
    amax_partial_kernel<<<int(blocks), kThreads, 0, stream>>>(workspace, in_N, n);
    check_launch();
    amax_final_kernel<fp8::E4M3>
        <<<1, kThreads, 0, stream>>>(amax_1, nullptr, nullptr, workspace, blocks, false, ScaleLayout::kFrugal);
    check_launch();
}

void quantize_tensor(uint8_t* codes_N, float* scale_1, const float* in_N, int64_t n, Fp8Format fmt, bool power_of_2,
                     ScaleLayout layout, float* workspace, cudaStream_t stream) {
    FRUGAL_CHECK(n >= 0, "quantize_tensor: n (", n, ") must not be negative");
    // workspace: [blocks partial maxima | amax | s]
    const int64_t blocks = amax_blocks(n);
    float *amax_1 = workspace + blocks, *s_1 = workspace + blocks + 1;
    amax_partial_kernel<<<int(blocks), kThreads, 0, stream>>>(workspace, in_N, n);
    check_launch();
    with_format(fmt, [&](auto f) {
        using F = decltype(f);
        amax_final_kernel<F><<<1, kThreads, 0, stream>>>(amax_1, s_1, scale_1, workspace, blocks, power_of_2, layout);
        check_launch();
        if (n > 0) encode_kernel<F><<<grid_for(n, kThreads), kThreads, 0, stream>>>(codes_N, in_N, n, s_1);
    });
    check_launch();
}

void round_bf16(float* out_N, const float* in_N, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    round_bf16_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out_N, in_N, n);
    check_launch();
}

void encode_bf16(uint16_t* bits_N, const float* in_N, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    encode_bf16_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(bits_N, in_N, n);
    check_launch();
}

}  // namespace frugal::cuda
