// The CUDA launchers of the optimizer's operations and of the precision glue of backend/backend.h's Backend, for the
// CudaBackend to forward to: each is named as the Backend method, takes the stream first and then exactly that
// method's parameters with the same meaning, and those that need scratch memory take the backend's (pooled)
// allocator last, whose stream must be `stream` (its memory is ordered on that stream).
//
//   optimizer   adamw_update, sum_squares, scale (FP32 master weights; kernels in backend/cuda/optim.cu, per-element
//               math in backend/cuda/optim_math.h)
//   precision   amax, fingerprint, and fake_quant, fake_quant_row_tiles, fake_quant_col_tiles, fake_quant_blocks,
//               round_bf16, quantize_row_tiles, dequantize_row_tiles: thin adapters over backend/cuda/quantize.h
//               (stream last there, scales in ScaleLayout::kFrugal here, as precision/quantize.cc writes them)
//
// Invariants: every pointer is device memory; results equal the CPU backend's bit for bit, except sum_squares, whose
// order of additions differs from core/reduce.h's (bound and reason in optim_math.h) but is fixed, so its bits repeat
// run after run; no floating-point atomics anywhere. The operations that return a value (amax, fingerprint,
// sum_squares) wait for the stream; the others are asynchronous on it. n, rows or cols of 0 launch nothing.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/allocator.h"
#include "precision/fp8.h"

namespace frugal::cuda {

using precision::Fp8Format;

// ---- Optimizer ----

// One AdamW update of n elements; m and v are float [n] (moments_bf16 false) or uint16_t BF16 bits [n] (true).
void adamw_update(cudaStream_t stream, float* value, const float* grad, void* m, void* v, bool moments_bf16, int64_t n,
                  float b1, float b2, float step_size, float inv_sqrt_bc2, float eps, float decay);
// Sum of x[i]^2 in double, in optim_math.h's fixed order.
double sum_squares(cudaStream_t stream, const float* x, int64_t n, Allocator& alloc);
// x *= factor
void scale(cudaStream_t stream, float* x, int64_t n, float factor);

// ---- Precision ----

// max |x| ignoring NaNs, 0 for n = 0 (precision::amax).
float amax(cudaStream_t stream, const float* x, int64_t n, Allocator& alloc);
// FNV-1a over the bits of every 997th element and the last one (cpu::fingerprint).
uint64_t fingerprint(cudaStream_t stream, const float* x, int64_t n, Allocator& alloc);
void fake_quant(cudaStream_t stream, float* out, const float* in, int64_t n, Fp8Format fmt, float scale);
void fake_quant_row_tiles(cudaStream_t stream, float* out, const float* in, int64_t rows, int64_t cols, int64_t tile,
                          Fp8Format fmt, bool power_of_2);
void fake_quant_col_tiles(cudaStream_t stream, float* out, const float* in, int64_t rows, int64_t cols, int64_t tile,
                          Fp8Format fmt, bool power_of_2);
void fake_quant_blocks(cudaStream_t stream, float* out, const float* in, int64_t rows, int64_t cols, int64_t tile,
                       Fp8Format fmt, bool power_of_2);
void round_bf16(cudaStream_t stream, float* out, const float* in, int64_t n);
// codes [rows, cols] and scales [rows, ceil(cols / tile)], the quantization multipliers (ScaleLayout::kFrugal).
void quantize_row_tiles(cudaStream_t stream, uint8_t* codes, float* scales, const float* in, int64_t rows, int64_t cols,
                        int64_t tile, Fp8Format fmt, bool power_of_2);
void dequantize_row_tiles(cudaStream_t stream, float* out, const uint8_t* codes, const float* scales, int64_t rows,
                          int64_t cols, int64_t tile, Fp8Format fmt);

}  // namespace frugal::cuda
