// The status tables behind backend/cuda/check.h's macros. Every name and description comes from the library that
// returned the status; an unknown code still gets its number, so a newer library's status is never lost.
#include "backend/cuda/check.h"

#include "core/error.h"

namespace frugal::cuda::detail {

namespace {
std::string text(const char* name, const char* description, int code) {
    std::string s = name ? name : "unknown status";
    s += " (";
    s += description ? description : "no description";
    s += ", code " + std::to_string(code) + ")";
    return s;
}
}  // namespace

std::string status_text(cudaError_t status) {
    return text(cudaGetErrorName(status), cudaGetErrorString(status), int(status));
}

std::string status_text(cublasStatus_t status) {
    return text(cublasLtGetStatusName(status), cublasLtGetStatusString(status), int(status));
}

std::string status_text(cudnnStatus_t status) {
    // cudnnGetErrorString gives the enumerator's name; the reason is in cuDNN's last-error message, when it kept one.
    char reason[512] = {0};
    cudnnGetLastErrorString(reason, sizeof(reason));
    return text(cudnnGetErrorString(status), reason[0] ? reason : "cuDNN kept no message", int(status));
}

std::string status_text(ncclResult_t status) {
    const char* name = nullptr;
    switch (status) {
        case ncclSuccess:
            name = "ncclSuccess";
            break;
        case ncclUnhandledCudaError:
            name = "ncclUnhandledCudaError";
            break;
        case ncclSystemError:
            name = "ncclSystemError";
            break;
        case ncclInternalError:
            name = "ncclInternalError";
            break;
        case ncclInvalidArgument:
            name = "ncclInvalidArgument";
            break;
        case ncclInvalidUsage:
            name = "ncclInvalidUsage";
            break;
        case ncclRemoteError:
            name = "ncclRemoteError";
            break;
        case ncclInProgress:
            name = "ncclInProgress";
            break;
        default:
            break;
    }
    return text(name, ncclGetErrorString(status), int(status));
}

void throw_call_failed(const char* library, const char* call, const std::string& status, const char* file, int line) {
    throw Error(::frugal::detail::where(file, line),
                ::frugal::detail::concat(library, " call failed: ", call, " returned ", status));
}

}  // namespace frugal::cuda::detail
