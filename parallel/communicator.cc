#include "parallel/communicator.h"

#include <cstring>

#include "core/error.h"

namespace frugal::parallel {

void SingleProcessComm::all_to_all(const void* send, void* recv, int64_t count_per_rank, DType dtype) {
    if (send != recv) std::memmove(recv, send, size_t(count_per_rank) * dtype_size(dtype));
}

void SingleProcessComm::all_to_all_v(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                                     void* recv, const int64_t* recv_counts, const int64_t* recv_displs, DType dtype) {
    FRUGAL_CHECK(send_counts[0] == recv_counts[0], "all_to_all_v on one rank: sending ", send_counts[0],
                 " elements but receiving ", recv_counts[0]);
    const size_t e = dtype_size(dtype);
    std::memmove(static_cast<char*>(recv) + recv_displs[0] * int64_t(e),
                 static_cast<const char*>(send) + send_displs[0] * int64_t(e), size_t(send_counts[0]) * e);
}

void SingleProcessComm::all_gather(const void* send, void* recv, int64_t count, DType dtype) {
    if (send != recv) std::memmove(recv, send, size_t(count) * dtype_size(dtype));
}

void SingleProcessComm::reduce_scatter(const void* send, void* recv, const int64_t* recv_counts, DType dtype,
                                       ReduceOp) {
    if (send != recv) std::memmove(recv, send, size_t(recv_counts[0]) * dtype_size(dtype));
}

std::unique_ptr<Communicator> SingleProcessComm::split(int, int, const std::string& name) {
    auto c = std::make_unique<SingleProcessComm>();
    c->name_ = name;
    c->context_ = context_;
    return c;
}

}  // namespace frugal::parallel
