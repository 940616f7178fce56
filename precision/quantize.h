// Quantization to FP8 with scaling, emulated exactly on the CPU: "fake quantization" returns, for every element,
// the FP32 value that the FP8 code and its scale stand for, deq(q(x * s)) / s. A matmul of fake-quantized operands
// in FP32 with FP32 accumulation is what an FP8 tensor core computes, up to the accumulation order: Hopper
// accumulates FP8 products in about 14-bit precision and DeepSeek-V3 (section 3.3.2) promotes the partial sums to
// FP32 every 128 elements; accumulating in FP32 throughout, as here, is the promoted limit.
//
// Scale granularities (rows x cols of a row-major matrix):
//   tensor      one scale
//   row tiles   1 x tile: each row's consecutive groups of `tile` columns (DeepSeek-V3's activations, "1x128")
//   col tiles   tile x 1: each column's groups of `tile` rows (the transposed activation tiles of the wgrad GEMM)
//   blocks      tile x tile (DeepSeek-V3's weights, "128x128")
// A group's scale is fp8_max / amax(group) (amax 0: scale 1), optionally rounded down to a power of two, so that
// the group's largest magnitude lands at or just below the format's largest finite value.
#pragma once

#include <cstdint>

#include "precision/fp8.h"

namespace frugal::precision {

float amax(const float* x, int64_t n);
// Scale for a group with the given amax.
float scale_for(float amax, Fp8Format fmt, bool power_of_2);

// out = deq(q(in * scale)) / scale for n elements (out may equal in).
void fake_quant(float* out, const float* in, int64_t n, Fp8Format fmt, float scale);
void fake_quant_row_tiles(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                          bool power_of_2);
void fake_quant_col_tiles(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                          bool power_of_2);
void fake_quant_blocks(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                       bool power_of_2);
// out = decode_bf16(encode_bf16(in))
void round_bf16(float* out, const float* in, int64_t n);

// Real quantization of rows in 1 x tile groups (FP8 dispatch): codes [rows, cols] and one scale per group
// [rows, ceil(cols / tile)]; dequantize_row_tiles inverts it.
void quantize_row_tiles(uint8_t* codes, float* scales, const float* in, int64_t rows, int64_t cols, int64_t tile,
                        Fp8Format fmt, bool power_of_2);
void dequantize_row_tiles(float* out, const uint8_t* codes, const float* scales, int64_t rows, int64_t cols,
                          int64_t tile, Fp8Format fmt);

}  // namespace frugal::precision
