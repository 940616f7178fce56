// Where a tensor's bytes come from. Every Storage holds the allocator that made it and gives its bytes back to it, so
// a tensor allocated by a device backend (backend/) is freed on that device. The host allocator lives here; a device
// backend registers its own (register_allocator) when it is first created, and Tensor::empty(shape, dtype, device)
// finds it by device.
//
// Invariants: allocate() returns 64-byte aligned memory (one AVX-512 line; cudaMallocAsync gives 256) or throws
// frugal::Error with the size asked for; a device allocator's fill_zero / copy_within run in that device's stream
// order, so a later kernel sees their result.
#pragma once

#include <cstddef>

#include "core/dtype.h"

namespace frugal {

class Allocator {
  public:
    virtual ~Allocator() = default;
    virtual Device device() const = 0;
    virtual void* allocate(size_t nbytes) = 0;
    virtual void deallocate(void* p, size_t nbytes) noexcept = 0;
    // Byte operations on memory of this allocator's device.
    virtual void fill_zero(void* p, size_t nbytes) = 0;
    virtual void copy_within(void* dst, const void* src, size_t nbytes) = 0;
    // Between this device's memory and host memory; both return once the bytes have arrived.
    virtual void copy_to_host(void* dst_host, const void* src, size_t nbytes) = 0;
    virtual void copy_from_host(void* dst, const void* src_host, size_t nbytes) = 0;
};

// Aligned host memory (std::aligned_alloc).
Allocator& host_allocator();

// The allocator of a device: host_allocator() for Device::kCpu, the registered one otherwise; an error naming the
// device when none is registered (a build without that backend, or a backend not yet created).
Allocator& allocator_for(Device device);
void register_allocator(Device device, Allocator* allocator);

}  // namespace frugal
