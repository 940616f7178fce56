// Byte-matrix transposition on the device: the FP8 codes of a per-tensor quantized operand laid out K-major for the
// backward GEMMs (backend/cuda/gemm_lt.h: the FP8 "TN" form takes dy_ON, x_IN and w_IO), since a tensor's single
// scale is the same for the matrix and its transpose, so the transposed codes are exactly the codes of the
// transposed matrix.
//
// Invariants: out_CR[c * rows + r] = in_RC[r * cols + c] for every element; out and in do not overlap; nothing is
// launched when rows or cols is 0; the launch is checked and asynchronous on `stream`.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace frugal::cuda {

void transpose_u8(uint8_t* out_CR, const uint8_t* in_RC, int64_t rows, int64_t cols, cudaStream_t stream);

}  // namespace frugal::cuda
