// backend/cuda/transpose.h: 32 x 32 tiles staged through shared memory (one padding column against bank conflicts),
// so both the reads of in_RC and the writes of out_CR are contiguous along a warp.
#include "backend/cuda/check.h"
#include "backend/cuda/transpose.h"

namespace frugal::cuda {
namespace {

constexpr int kTileEdge = 32;
constexpr int kRowsPerPass = 8;

__global__ void transpose_u8_kernel(uint8_t* out_CR, const uint8_t* in_RC, int64_t rows, int64_t cols) {
    __shared__ uint8_t tile[kTileEdge][kTileEdge + 1];
    const int64_t col0 = int64_t(blockIdx.x) * kTileEdge, row0 = int64_t(blockIdx.y) * kTileEdge;
    for (int i = threadIdx.y; i < kTileEdge; i += kRowsPerPass) {
        const int64_t r = row0 + i, c = col0 + threadIdx.x;
        if (r < rows && c < cols) tile[i][threadIdx.x] = in_RC[r * cols + c];
    }
    __syncthreads();
    for (int i = threadIdx.y; i < kTileEdge; i += kRowsPerPass) {
        const int64_t c = col0 + i, r = row0 + threadIdx.x;
        if (r < rows && c < cols) out_CR[c * rows + r] = tile[threadIdx.x][i];
    }
}

}  // namespace

void transpose_u8(uint8_t* out_CR, const uint8_t* in_RC, int64_t rows, int64_t cols, cudaStream_t stream) {
    if (rows == 0 || cols == 0) return;
    const dim3 grid(unsigned((cols + kTileEdge - 1) / kTileEdge), unsigned((rows + kTileEdge - 1) / kTileEdge));
    transpose_u8_kernel<<<grid, dim3(kTileEdge, kRowsPerPass), 0, stream>>>(out_CR, in_RC, rows, cols);
    FRUGAL_CUDA_CHECK(cudaGetLastError());
}

}  // namespace frugal::cuda
