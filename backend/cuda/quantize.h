// FP8 and BF16 quantization kernels of the CUDA backend, bit for bit the CPU's (precision/quantize.h; the
// per-element arithmetic is backend/cuda/fp8_math.h): fake quantization (float in, float out), real quantization
// (float in, uint8 FP8 codes and float scales out), dequantization and BF16 rounding, over
//   row tiles   1 x tile   each row's consecutive groups of `tile` columns (DeepSeek-V3's activations, 1x128)
//   col tiles   tile x 1   each column's groups of `tile` rows (the wgrad GEMM's operands)
//   blocks      tile x tile                                     (DeepSeek-V3's weights, 128x128)
//   tensor      one scale; its amax by a two-pass reduction (per-block maxima, then one block), no atomics.
// The last tile or block of a row or column is ragged when tile does not divide the dimension. A group's scale is
// scale_for(amax): fp8_max / amax (1 when amax is 0, infinite or NaN), optionally rounded down to a power of two.
//
// Buffers: every pointer is device memory, row-major, of the shape its suffix names: R rows, C cols, N elements;
// Gr = ceil(R / tile), Gc = ceil(C / tile), Gc4 = Gc rounded up to a multiple of 4.
//
// Scale layouts (ScaleLayout). kFrugal is what precision/quantize.cc computes: the value is the quantization
// multiplier s (code = encode(x * s); x ~ decode(code) / s) in the row-major grid of groups. kCublasLt is what
// cuBLASLt's block-scaled FP8 matmul reads (CUBLASLT_MATMUL_DESC_{A,B}_SCALE_POINTER): the value is the
// dequantization factor 1 / s (computed as the CPU's dequantize computes it, 1.0f / s), in the layout of the scale
// mode, for an operand stored row-major [R, C] whose contraction (K) dimension is C, i.e. column-major C x R in
// cuBLASLt's terms (layouts as cuBLAS's "scaling factors layouts" specifies them; PyTorch's _scaled_mm states the
// same in pytorch/pytorch#166752: A_scale [M, K/128] strides [1, M] for 1x128, [ceil(K/128) padded to 4, M/128]
// strides [1, that] for 128x128; TransformerEngine's blockwise quantizer reference, CuBLASScaleMunger, likewise
// transposes 1x128 scales to [ceil(K/128), M] and pads 128x128 ones to [M/128, ceil(K/128) padded to 4] with 0):
//
//   granularity  kFrugal (s)                       kCublasLt (1 / s)
//   row tiles    scales[r * Gc + g]   [R, Gc]      scales[g * R + r]       VEC128_32F: K-block-major, rows inner
//   col tiles    scales[g * C + c]    [Gr, C]      scales[g * C + c]       VEC128_32F of the transposed operand
//                                                                          [C, R] (K = R): the same index
//   blocks       scales[i * Gc + j]   [Gr, Gc]     scales[i * Gc4 + j]     BLK128x128_32F: K blocks inner, padded
//                                                                          to 4; the pad entries are written 0
//   tensor       scale[0]                          scale[0]                SCALAR_32F
//
// kCublasLt requires tile == 128. precision/quantize.cc writes scales only for row tiles (quantize_row_tiles, in
// kFrugal's layout); the other kFrugal layouts are the ones its fake quantizers compute their scales in.
//
// Invariants: results depend only on the inputs, never on the launch configuration or timing; every launch is
// checked (FRUGAL_CUDA_CHECK on cudaGetLastError); with n, R or C of 0 nothing is launched, except that amax_tensor
// and quantize_tensor still write their amax (0) and scale (1); all functions are asynchronous on `stream`.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "precision/fp8.h"

namespace frugal::cuda {

using precision::Fp8Format;

enum class ScaleLayout : uint8_t {
    kFrugal,    // the quantization multiplier s, row-major group grid (precision/quantize.cc)
    kCublasLt,  // the dequantization factor 1 / s, in cuBLASLt's VEC128_32F / BLK128x128_32F / SCALAR_32F layout
};

// The number of floats of scales a granularity writes for an R x C matrix (blocks under kCublasLt include the pad).
int64_t num_row_tile_scales(int64_t rows, int64_t cols, int64_t tile);
int64_t num_col_tile_scales(int64_t rows, int64_t cols, int64_t tile);
int64_t num_block_scales(int64_t rows, int64_t cols, int64_t tile, ScaleLayout layout);

// ---- Fake quantization: out = deq(q(in * s)) / s (out may equal in) ----

// One scale for all n elements, given on the host (precision::fake_quant).
void fake_quant(float* out_N, const float* in_N, int64_t n, Fp8Format fmt, float scale, cudaStream_t stream);
// One scale for all n elements, read from device memory (the result of amax_tensor / quantize_tensor's scale_1
// under kFrugal).
void fake_quant_device_scale(float* out_N, const float* in_N, int64_t n, Fp8Format fmt, const float* scale_1,
                             cudaStream_t stream);
void fake_quant_row_tiles(float* out_RC, const float* in_RC, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                          bool power_of_2, cudaStream_t stream);
void fake_quant_col_tiles(float* out_RC, const float* in_RC, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                          bool power_of_2, cudaStream_t stream);
void fake_quant_blocks(float* out_RC, const float* in_RC, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                       bool power_of_2, cudaStream_t stream);

// ---- Real quantization: codes = encode(in * s), scales as the layout says ----

void quantize_row_tiles(uint8_t* codes_RC, float* scales, const float* in_RC, int64_t rows, int64_t cols, int64_t tile,
                        Fp8Format fmt, bool power_of_2, ScaleLayout layout, cudaStream_t stream);
// transpose_codes: codes_CR[c * R + r] (the K-major operand a cuBLASLt FP8 matmul needs when K is R) instead of
// codes_RC[r * C + c].
void quantize_col_tiles(uint8_t* codes, float* scales, const float* in_RC, int64_t rows, int64_t cols, int64_t tile,
                        Fp8Format fmt, bool power_of_2, ScaleLayout layout, bool transpose_codes, cudaStream_t stream);
// With codes_t_CR and scales_t (both or neither null) also the transpose's quantization from the same pass (a
// block's amax is its transpose's): codes_t_CR[c * R + r] and scales_t in the layout of a C x R matrix
// (num_block_scales(C, R, ...) floats), the weight operand w^T of the backward-data GEMM (backend/cuda/gemm_lt.h).
void quantize_blocks(uint8_t* codes_RC, float* scales, uint8_t* codes_t_CR, float* scales_t, const float* in_RC,
                     int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt, bool power_of_2, ScaleLayout layout,
                     cudaStream_t stream);
// precision::dequantize_row_tiles: out = decode(code) * (1.0f / s), scales in kFrugal's layout.
void dequantize_row_tiles(float* out_RC, const uint8_t* codes_RC, const float* scales, int64_t rows, int64_t cols,
                          int64_t tile, Fp8Format fmt, cudaStream_t stream);

// ---- Per tensor ----

// Floats of workspace amax_tensor and quantize_tensor need for n elements.
int64_t amax_workspace_floats(int64_t n);
// amax_1[0] = precision::amax(in, n) (NaNs ignored), by a deterministic two-pass reduction through workspace.
void amax_tensor(float* amax_1, const float* in_N, int64_t n, float* workspace, cudaStream_t stream);
// codes_N = encode(in * s) with s = scale_for(amax(in)); scale_1[0] = s (kFrugal) or 1.0f / s (kCublasLt).
void quantize_tensor(uint8_t* codes_N, float* scale_1, const float* in_N, int64_t n, Fp8Format fmt, bool power_of_2,
                     ScaleLayout layout, float* workspace, cudaStream_t stream);

// ---- BF16 ----

// out = decode_bf16(encode_bf16(in)) (precision::round_bf16; out may equal in).
void round_bf16(float* out_N, const float* in_N, int64_t n, cudaStream_t stream);
// bits_N = encode_bf16(in): round to nearest even, NaN to 0x7FFF.
void encode_bf16(uint16_t* bits_N, const float* in_N, int64_t n, cudaStream_t stream);

}  // namespace frugal::cuda
