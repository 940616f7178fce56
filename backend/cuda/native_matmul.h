// The CUDA backend's native low-precision linear products (backend::NativeMatmul): the recipes of precision/recipe.h
// run as real cuBLASLt BF16 and FP8 GEMMs (backend/cuda/gemm_lt.h) on operands quantized by backend/cuda/quantize.h,
// instead of the CPU's fake quantization followed by an FP32 GEMM. What each recipe quantizes is precision/recipe.cc's:
//
//   recipe          forward y = x w^T           backward data dx += dy w     backward weight dw += dy^T x
//   bf16            x, w BF16                   dy, w BF16                   dy, x BF16
//   fp8-tensorwise  x E4M3, w E4M3              dy E5M2, w^T E4M3            dy^T E5M2, x^T E4M3
//   fp8-blockwise   x 1x128 tiles along I,      dy 1x128 tiles along O,      dy^T, x^T 1x128 tiles along N (the
//                   w 128x128 blocks            w^T 128x128 blocks           128x1 tiles of dy and x), E4M3
//
// One scale per tensor (tensorwise) is fp8_max / amax of this use, never a power of two (as the CPU recipe); the
// blockwise scales follow precision.power_of_2_scales. Accumulation is FP32 and the outputs FP32; the backward
// products ADD into dx and dw (beta 1). fp8-tensorwise's backward uses the E4M3 activation of the forward (kept per
// object, as recipe.cc keeps its fake-quantized copy), transposed.
//
// Invariants:
//   - the weight is quantized once per optimizer step: its BF16 or FP8 form (and its transpose's) is cached on first
//     use until weights_updated(); each later use compares a fingerprint of the weight with the one taken when it
//     was quantized, and a difference is an Error naming model::Transformer::weights_updated();
//   - scratch (operand codes, scales, padded copies) comes from the allocator and grows once; the activation and
//     gradient operands of one call live in scratch shared by every native product of that allocator (one host
//     thread, the stream's order), nothing in it outlives the call;
//   - FP8 GEMMs need every dimension a multiple of 16 (gemm_lt.h): in and out must be (an Error from LtGemm names
//     the GEMM otherwise), the token count need not: x and dy are padded with zero rows to the next multiple of 16,
//     which changes no amax, tile scale or product, and only the first n rows of y and dx are kept;
//   - the operands the GEMMs read are this code's own scratch (256-byte aligned); an output that is not aligned to
//     256 bytes (a slice at any float offset) is computed in scratch and copied, since LtGemm's plans assume
//     cuBLASLt's default alignment;
//   - n = 0 (an expert that received no tokens) launches nothing;
//   - fp8-blockwise needs block_size 128 (cuBLASLt's only block size) and a Hopper GPU (LtGemm names it otherwise);
//     fp8-delayed has no native form (its amax histories are host state of the emulating recipe): for those the
//     factory returns null and precision::make_matmul_recipe emulates.
// These kernels and layouts have not yet run on a GPU here; where a cuBLASLt layout is assumed the code says so.
#pragma once

#include <memory>

#include "backend/backend.h"
#include "backend/cuda/allocator.h"
#include "backend/cuda/gemm_lt.h"

namespace frugal::cuda {

// Whether spec's recipe has a native form on this backend (no GPU needed).
bool has_native_matmul(const backend::NativeMatmulSpec& spec);

// The native product of spec's recipe, or null when it has none (has_native_matmul is false). The allocator and the
// LtGemm outlive the result.
std::unique_ptr<backend::NativeMatmul> make_cuda_native_matmul(const backend::NativeMatmulSpec& spec,
                                                               CudaAllocator& allocator, LtGemm& gemm);

}  // namespace frugal::cuda
