// CudaAllocator: stream-ordered device memory from a pool that never gives cached blocks back (see allocator.h).
#include "backend/cuda/allocator.h"

#include <cstdint>

#include "backend/cuda/check.h"
#include "core/error.h"

namespace frugal::cuda {

namespace {
double mib(size_t bytes) { return double(bytes) / double(1 << 20); }
}  // namespace

CudaAllocator::CudaAllocator(int device, cudaStream_t stream) : device_(device), stream_(stream) {
    cudaMemPoolProps props = {};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    FRUGAL_CUDA_CHECK(cudaMemPoolCreate(&pool_, &props));
    uint64_t threshold = UINT64_MAX;
    FRUGAL_CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &threshold));
}

CudaAllocator::~CudaAllocator() {
    // Blocks still queued for freeing on the stream must be returned before the pool goes.
    (void)cudaStreamSynchronize(stream_);
    (void)cudaMemPoolDestroy(pool_);
    (void)cudaGetLastError();
}

size_t CudaAllocator::rounded(size_t nbytes) {
    const size_t n = nbytes == 0 ? kGranularity : nbytes;
    return (n + kGranularity - 1) / kGranularity * kGranularity;
}

void* CudaAllocator::allocate(size_t nbytes) {
    const size_t size = rounded(nbytes);
    void* p = nullptr;
    const cudaError_t status = cudaMallocFromPoolAsync(&p, size, pool_, stream_);
    if (status != cudaSuccess || p == nullptr) throw_out_of_memory(nbytes, status);
    const size_t now = in_use_.fetch_add(size, std::memory_order_relaxed) + size;
    size_t peak = peak_.load(std::memory_order_relaxed);
    while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
    return p;
}

void CudaAllocator::deallocate(void* p, size_t nbytes) noexcept {
    if (p == nullptr) return;
    // noexcept: a failing free (a context already torn down at exit) cannot be reported from a destructor.
    if (cudaFreeAsync(p, stream_) != cudaSuccess) (void)cudaGetLastError();
    in_use_.fetch_sub(rounded(nbytes), std::memory_order_relaxed);
}

void CudaAllocator::fill_zero(void* p, size_t nbytes) {
    if (nbytes == 0) return;
    FRUGAL_CUDA_CHECK(cudaMemsetAsync(p, 0, nbytes, stream_));
}

void CudaAllocator::copy_within(void* dst, const void* src, size_t nbytes) {
    if (nbytes == 0) return;
    FRUGAL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, stream_));
}

void CudaAllocator::copy_to_host(void* dst_host, const void* src, size_t nbytes) {
    if (nbytes == 0) return;
    FRUGAL_CUDA_CHECK(cudaMemcpyAsync(dst_host, src, nbytes, cudaMemcpyDeviceToHost, stream_));
    FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaAllocator::copy_from_host(void* dst, const void* src_host, size_t nbytes) {
    if (nbytes == 0) return;
    FRUGAL_CUDA_CHECK(cudaMemcpyAsync(dst, src_host, nbytes, cudaMemcpyHostToDevice, stream_));
    // The host buffer may be freed or reused as soon as this returns.
    FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaAllocator::throw_out_of_memory(size_t nbytes, cudaError_t status) const {
    (void)cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    const bool have_info = cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess;
    (void)cudaGetLastError();
    FRUGAL_THROW("out of CUDA memory on device ", device_, " allocating ", nbytes, " bytes (", mib(nbytes),
                 " MiB): ", detail::status_text(status), "; the device has ",
                 have_info
                     ? std::to_string(mib(free_bytes)) + " MiB free of " + std::to_string(mib(total_bytes)) + " MiB"
                     : std::string("an unknown amount free"),
                 ", this allocator holds ", mib(bytes_in_use()), " MiB (peak ", mib(peak_bytes()),
                 " MiB): lower the micro-batch or the sequence length, or use more GPUs");
}

}  // namespace frugal::cuda
