// Return-code checks of the CUDA libraries: FRUGAL_CUDA_CHECK (CUDA runtime), FRUGAL_CUBLAS_CHECK (cuBLAS/cuBLASLt),
// FRUGAL_CUDNN_CHECK (cuDNN) and FRUGAL_NCCL_CHECK (NCCL). Each evaluates its expression once and, when the status
// is not the library's success value, throws frugal::Error (core/error.h) whose where() is file:line of the check and
// whose message names the call as written, the status's name and the library's description of it:
//
//   CUDA call failed: cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream) returned
//   cudaErrorInvalidValue (invalid argument)
//
// Invariants: always on (never compiled out, like FRUGAL_CHECK); the status variable has the library's own type, so a
// cuBLAS status given to FRUGAL_CUDA_CHECK does not compile; a failed CUDA runtime call's error is also taken off the
// runtime's last-error slot (cudaGetLastError), so a later unrelated check does not report it again.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <cudnn_graph.h>
#include <nccl.h>

#include <string>

namespace frugal::cuda::detail {

// "<name> (<description>)" of a status, from the library's own tables.
std::string status_text(cudaError_t status);
std::string status_text(cublasStatus_t status);
std::string status_text(cudnnStatus_t status);
std::string status_text(ncclResult_t status);

[[noreturn]] void throw_call_failed(const char* library, const char* call, const std::string& status, const char* file,
                                    int line);

}  // namespace frugal::cuda::detail

#define FRUGAL_CUDA_CHECK(expr)                                                                          \
    do {                                                                                                 \
        const cudaError_t frugal_status_ = (expr);                                                       \
        if (frugal_status_ != cudaSuccess) [[unlikely]] {                                                \
            (void)cudaGetLastError();                                                                    \
            ::frugal::cuda::detail::throw_call_failed(                                                   \
                "CUDA", #expr, ::frugal::cuda::detail::status_text(frugal_status_), __FILE__, __LINE__); \
        }                                                                                                \
    } while (0)

#define FRUGAL_CUBLAS_CHECK(expr)                                                                          \
    do {                                                                                                   \
        const cublasStatus_t frugal_status_ = (expr);                                                      \
        if (frugal_status_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                                          \
            ::frugal::cuda::detail::throw_call_failed(                                                     \
                "cuBLAS", #expr, ::frugal::cuda::detail::status_text(frugal_status_), __FILE__, __LINE__); \
    } while (0)

#define FRUGAL_CUDNN_CHECK(expr)                                                                          \
    do {                                                                                                  \
        const cudnnStatus_t frugal_status_ = (expr);                                                      \
        if (frugal_status_ != CUDNN_STATUS_SUCCESS) [[unlikely]]                                          \
            ::frugal::cuda::detail::throw_call_failed(                                                    \
                "cuDNN", #expr, ::frugal::cuda::detail::status_text(frugal_status_), __FILE__, __LINE__); \
    } while (0)

#define FRUGAL_NCCL_CHECK(expr)                                                                          \
    do {                                                                                                 \
        const ncclResult_t frugal_status_ = (expr);                                                      \
        if (frugal_status_ != ncclSuccess) [[unlikely]]                                                  \
            ::frugal::cuda::detail::throw_call_failed(                                                   \
                "NCCL", #expr, ::frugal::cuda::detail::status_text(frugal_status_), __FILE__, __LINE__); \
    } while (0)
