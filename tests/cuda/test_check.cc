// The CUDA library checks (backend/cuda/check.h): each macro, given a failing status, throws frugal::Error naming
// the call as written, the status's name and the library's text for it, with file:line in where(). The statuses
// come from functions that return them, so no GPU is needed.
#include <gtest/gtest.h>

#include <string>

#include "backend/cuda/check.h"
#include "core/error.h"

namespace frugal::cuda {
namespace {

cudaError_t runtime_call_returning(cudaError_t status) { return status; }
cublasStatus_t cublas_call_returning(cublasStatus_t status) { return status; }
cudnnStatus_t cudnn_call_returning(cudnnStatus_t status) { return status; }
ncclResult_t nccl_call_returning(ncclResult_t status) { return status; }

// Runs f, which must throw frugal::Error, and returns its message; where() must name this file.
template <typename F>
std::string message_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.where()).find("test_check.cc:"), std::string::npos) << e.where();
        return e.what();
    }
    ADD_FAILURE() << "no frugal::Error was thrown";
    return "";
}

void expect_contains(const std::string& text, const std::string& part) {
    EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' is not in: " << text;
}

TEST(CudaCheck, AFailedRuntimeCallNamesTheCallTheErrorAndItsDescription) {
    const std::string m = message_of([] { FRUGAL_CUDA_CHECK(runtime_call_returning(cudaErrorInvalidValue)); });
    expect_contains(m, "CUDA call failed");
    expect_contains(m, "runtime_call_returning(cudaErrorInvalidValue)");
    expect_contains(m, "cudaErrorInvalidValue");
    expect_contains(m, cudaGetErrorString(cudaErrorInvalidValue));
}

TEST(CudaCheck, AFailedCublasCallNamesTheCallTheStatusAndItsDescription) {
    const std::string m = message_of([] { FRUGAL_CUBLAS_CHECK(cublas_call_returning(CUBLAS_STATUS_NOT_SUPPORTED)); });
    expect_contains(m, "cuBLAS call failed");
    expect_contains(m, "cublas_call_returning(CUBLAS_STATUS_NOT_SUPPORTED)");
    expect_contains(m, "CUBLAS_STATUS_NOT_SUPPORTED");
    expect_contains(m, cublasLtGetStatusString(CUBLAS_STATUS_NOT_SUPPORTED));
}

TEST(CudaCheck, AFailedCudnnCallNamesTheCallAndTheStatus) {
    const std::string m = message_of([] { FRUGAL_CUDNN_CHECK(cudnn_call_returning(CUDNN_STATUS_BAD_PARAM)); });
    expect_contains(m, "cuDNN call failed");
    expect_contains(m, "cudnn_call_returning(CUDNN_STATUS_BAD_PARAM)");
    expect_contains(m, cudnnGetErrorString(CUDNN_STATUS_BAD_PARAM));
    expect_contains(m, "code 2000");
}

TEST(CudaCheck, AFailedNcclCallNamesTheCallTheResultAndItsDescription) {
    const std::string m = message_of([] { FRUGAL_NCCL_CHECK(nccl_call_returning(ncclInvalidArgument)); });
    expect_contains(m, "NCCL call failed");
    expect_contains(m, "nccl_call_returning(ncclInvalidArgument)");
    expect_contains(m, "ncclInvalidArgument");
    expect_contains(m, ncclGetErrorString(ncclInvalidArgument));
}

TEST(CudaCheck, AnUnknownStatusStillReportsItsNumber) {
    const std::string m = message_of([] { FRUGAL_NCCL_CHECK(nccl_call_returning(static_cast<ncclResult_t>(97))); });
    expect_contains(m, "code 97");
}

TEST(CudaCheck, SuccessThrowsNothingAndEvaluatesTheCallOnce) {
    int calls = 0;
    auto counted = [&calls] {
        ++calls;
        return cudaSuccess;
    };
    EXPECT_NO_THROW(FRUGAL_CUDA_CHECK(counted()));
    EXPECT_EQ(calls, 1);
    EXPECT_NO_THROW(FRUGAL_CUBLAS_CHECK(cublas_call_returning(CUBLAS_STATUS_SUCCESS)));
    EXPECT_NO_THROW(FRUGAL_CUDNN_CHECK(cudnn_call_returning(CUDNN_STATUS_SUCCESS)));
    EXPECT_NO_THROW(FRUGAL_NCCL_CHECK(nccl_call_returning(ncclSuccess)));
}

}  // namespace
}  // namespace frugal::cuda
