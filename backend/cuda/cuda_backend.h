// The CUDA backend: backend/backend.h's operations for float on one GPU, the one this process's local rank chooses
// (backend/cuda/device.h). It owns one stream on which every operation is queued in order, the pooled allocator
// over that stream (registered as the allocator of Device::kCuda), a cuBLASLt handle for the matrix products and a
// cuDNN handle with its graph cache for attention.
//
// How each operation runs:
//   gemm              cuBLASLt, FP32 inputs and FP32 compute (CUBLAS_COMPUTE_32F, no TF32), one plan per shape
//   attention         cuDNN fused SDPA (backend/cuda/attention_cudnn.h) in BF16: q, k, v (and for the backward
//                     dout and out) are rounded to BF16, the result converted back; what it saves for the
//                     backward is the logsumexp per query row, [B, Hq, S] floats
//   the other layers  backend/cuda/layers.h; router and dispatch: moe.h; optimizer and quantizers: optim.h
// Operations that return host values (loss sums, routing counts, amax) wait for the stream; the others only queue.
// Double is not supported: the double-precision model is the CPU's gradient check.
//
// Every result is deterministic (no floating-point atomics; cuBLASLt and cuDNN in their deterministic modes), and
// none of this has run on a GPU in this build's tests unless tests/cuda's GPU tests ran (they skip without one).
#pragma once

#include <string>

#include "backend/backend.h"

namespace frugal::cuda {

// Whether this process can use a GPU: false with the reason (no driver, no device) otherwise.
bool available(std::string* why_not);

// The process-wide CUDA backend, created on first use on the GPU of the local rank (OMPI_COMM_WORLD_LOCAL_RANK,
// SLURM_LOCALID, ... modulo the GPUs present). An Error naming the reason when there is no GPU.
backend::Backend& backend();

}  // namespace frugal::cuda
