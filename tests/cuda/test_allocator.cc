// CudaAllocator (backend/cuda/allocator.h): reuse of cached blocks, the in-use and peak counters, tensors made
// through it, and the out-of-memory message. Every test needs a GPU and skips without one.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/cuda/allocator.h"
#include "backend/cuda/check.h"
#include "backend/cuda/device.h"
#include "core/error.h"
#include "core/tensor.h"

namespace frugal::cuda {
namespace {

class CudaAllocatorTest : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string why;
        if (cuda_device_count(&why) == 0) GTEST_SKIP() << "needs a GPU: " << why;
        const int device = select_device(0);
        FRUGAL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
        allocator_ = std::make_unique<CudaAllocator>(device, stream_);
    }
    void TearDown() override {
        allocator_.reset();
        if (stream_) cudaStreamDestroy(stream_);
    }
    uint64_t reserved() const {
        uint64_t bytes = 0;
        FRUGAL_CUDA_CHECK(cudaMemPoolGetAttribute(allocator_->pool(), cudaMemPoolAttrReservedMemCurrent, &bytes));
        return bytes;
    }

    cudaStream_t stream_ = nullptr;
    std::unique_ptr<CudaAllocator> allocator_;
};

TEST_F(CudaAllocatorTest, AFreedBlockIsReusedWithoutTheDriverReservingMore) {
    const size_t size = size_t(8) << 20;
    void* a = allocator_->allocate(size);
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % CudaAllocator::kGranularity, 0u);
    allocator_->deallocate(a, size);
    FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream_));
    const uint64_t after_first = reserved();
    EXPECT_GE(after_first, size) << "the release threshold should keep the freed block in the pool";
    for (int i = 0; i < 10; ++i) {
        void* b = allocator_->allocate(size);
        allocator_->deallocate(b, size);
    }
    FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream_));
    EXPECT_EQ(reserved(), after_first);
    EXPECT_EQ(allocator_->bytes_in_use(), 0u);
}

TEST_F(CudaAllocatorTest, InUseAndPeakCountRoundedLiveBytes) {
    void* a = allocator_->allocate(1000);  // 1024
    void* b = allocator_->allocate(3000);  // 3072
    EXPECT_EQ(allocator_->bytes_in_use(), 4096u);
    allocator_->deallocate(a, 1000);
    EXPECT_EQ(allocator_->bytes_in_use(), 3072u);
    EXPECT_EQ(allocator_->peak_bytes(), 4096u);
    allocator_->reset_peak();
    EXPECT_EQ(allocator_->peak_bytes(), 3072u);
    void* c = allocator_->allocate(0);  // one granule
    EXPECT_EQ(allocator_->bytes_in_use(), 3072u + CudaAllocator::kGranularity);
    allocator_->deallocate(c, 0);
    allocator_->deallocate(b, 3000);
    EXPECT_EQ(allocator_->bytes_in_use(), 0u);
    EXPECT_EQ(allocator_->peak_bytes(), 3072u + CudaAllocator::kGranularity);
}

TEST_F(CudaAllocatorTest, TensorsMadeThroughItLiveOnTheGpuAndZeroCopyAndFreeThere) {
    {
        Tensor t = Tensor::zeros({16, 32}, DType::kF32, *allocator_);
        EXPECT_EQ(t.device(), Device::kCuda);
        EXPECT_EQ(allocator_->bytes_in_use(), 16u * 32u * 4u);
        std::vector<float> host(16 * 32, 1.0f);
        FRUGAL_CUDA_CHECK(cudaMemcpyAsync(host.data(), t.raw_data(), t.nbytes(), cudaMemcpyDeviceToHost, stream_));
        FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream_));
        for (float v : host) ASSERT_EQ(v, 0.0f);

        for (size_t i = 0; i < host.size(); ++i) host[i] = float(i);
        FRUGAL_CUDA_CHECK(cudaMemcpyAsync(t.raw_data(), host.data(), t.nbytes(), cudaMemcpyHostToDevice, stream_));
        Tensor u = t.clone();
        EXPECT_EQ(u.device(), Device::kCuda);
        EXPECT_NE(u.raw_data(), t.raw_data());
        std::vector<float> back(host.size(), -1.0f);
        FRUGAL_CUDA_CHECK(cudaMemcpyAsync(back.data(), u.raw_data(), u.nbytes(), cudaMemcpyDeviceToHost, stream_));
        FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream_));
        EXPECT_EQ(back, host);
        EXPECT_EQ(allocator_->bytes_in_use(), 2u * 16u * 32u * 4u);
    }
    EXPECT_EQ(allocator_->bytes_in_use(), 0u);
}

TEST_F(CudaAllocatorTest, AnImpossibleAllocationNamesItsSizeAndTheDevicesFreeAndTotalMemory) {
    const size_t huge = size_t(1) << 52;  // 4 PiB
    try {
        allocator_->allocate(huge);
        ADD_FAILURE() << "a 4 PiB allocation succeeded";
    } catch (const Error& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find(std::to_string(huge) + " bytes"), std::string::npos) << m;
        EXPECT_NE(m.find("MiB free of"), std::string::npos) << m;
        EXPECT_NE(m.find("this allocator holds"), std::string::npos) << m;
    }
    EXPECT_EQ(allocator_->bytes_in_use(), 0u);
    // The failure left nothing behind: the next allocation works.
    void* p = allocator_->allocate(4096);
    allocator_->deallocate(p, 4096);
}

}  // namespace
}  // namespace frugal::cuda
