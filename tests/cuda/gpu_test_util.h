// What the GPU tests of tests/cuda share: the skip when no GPU is usable (with the runtime's reason), a device buffer
// of T filled from and read back to host vectors (synchronously, after the device has finished), and the bits of a
// value for exact comparisons.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/check.h"
#include "backend/cuda/device.h"

#define FRUGAL_REQUIRE_GPU()                                                     \
    do {                                                                         \
        std::string why_;                                                        \
        if (::frugal::cuda::cuda_device_count(&why_) == 0) GTEST_SKIP() << why_; \
    } while (0)

namespace frugal::cuda_test {

template <typename T>
class DeviceBuffer {
  public:
    explicit DeviceBuffer(int64_t n) : n_(n) {
        FRUGAL_CUDA_CHECK(cudaMalloc(&ptr_, size_t(std::max<int64_t>(n, 1)) * sizeof(T)));
    }
    explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(int64_t(host.size())) { upload(host); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer() { (void)cudaFree(ptr_); }
    T* get() { return ptr_; }
    void upload(const std::vector<T>& host) {
        FRUGAL_CUDA_CHECK(cudaDeviceSynchronize());
        FRUGAL_CUDA_CHECK(cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
    }
    std::vector<T> download() const {
        FRUGAL_CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<T> host(static_cast<size_t>(n_));
        FRUGAL_CUDA_CHECK(cudaMemcpy(host.data(), ptr_, host.size() * sizeof(T), cudaMemcpyDeviceToHost));
        return host;
    }

  private:
    T* ptr_ = nullptr;
    int64_t n_;
};

inline uint32_t bits(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return u;
}
inline uint32_t bits(uint8_t x) { return x; }
inline uint32_t bits(uint16_t x) { return x; }

}  // namespace frugal::cuda_test
