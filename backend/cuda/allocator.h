// Device memory of the CUDA backend: stream-ordered allocation (cudaMallocFromPoolAsync / cudaFreeAsync) from a
// memory pool of this allocator's own, on the backend's one stream.
//
// Invariants:
//   - the pool's release threshold is UINT64_MAX: freed blocks stay cached in the pool and are handed out again, so
//     once the first step has run, a training step never reaches the driver's cudaMalloc (nor its implicit
//     synchronization);
//   - allocate, deallocate, fill_zero and copy_within are all ordered on stream(): a block freed by one tensor and
//     taken by the next is reused only after the work queued before the free, without any host synchronization;
//   - bytes_in_use() counts the bytes of live allocations (each rounded up to kGranularity), peak_bytes() its
//     largest value since construction or reset_peak(); both are exact, not sampled;
//   - a failed allocation throws frugal::Error naming the size asked for, the device's free and total memory
//     (cudaMemGetInfo) and this allocator's bytes in use and peak, never returns null.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/allocator.h"

namespace frugal::cuda {

class CudaAllocator final : public Allocator {
  public:
    // Every allocation is a multiple of this (and cudaMallocAsync aligns to at least as much).
    static constexpr size_t kGranularity = 256;

    // device: the GPU whose memory this hands out; stream: the backend's stream (not owned; it outlives this).
    CudaAllocator(int device, cudaStream_t stream);
    ~CudaAllocator() override;
    CudaAllocator(const CudaAllocator&) = delete;
    CudaAllocator& operator=(const CudaAllocator&) = delete;

    Device device() const override { return Device::kCuda; }
    void* allocate(size_t nbytes) override;
    void deallocate(void* p, size_t nbytes) noexcept override;
    void fill_zero(void* p, size_t nbytes) override;
    void copy_within(void* dst, const void* src, size_t nbytes) override;
    // Synchronous with the host: they wait for the stream.
    void copy_to_host(void* dst_host, const void* src, size_t nbytes) override;
    void copy_from_host(void* dst, const void* src_host, size_t nbytes) override;

    int device_index() const { return device_; }
    cudaStream_t stream() const { return stream_; }
    cudaMemPool_t pool() const { return pool_; }
    size_t bytes_in_use() const { return in_use_.load(std::memory_order_relaxed); }
    size_t peak_bytes() const { return peak_.load(std::memory_order_relaxed); }
    void reset_peak() { peak_.store(bytes_in_use(), std::memory_order_relaxed); }

  private:
    static size_t rounded(size_t nbytes);
    [[noreturn]] void throw_out_of_memory(size_t nbytes, cudaError_t status) const;

    int device_;
    cudaStream_t stream_;
    cudaMemPool_t pool_ = nullptr;
    std::atomic<size_t> in_use_{0};
    std::atomic<size_t> peak_{0};
};

}  // namespace frugal::cuda
