#include "parallel/mpi_comm.h"

#include <chrono>
#include <climits>
#include <cstdlib>
#include <thread>

#include "core/error.h"
#include "core/log.h"

namespace frugal::parallel {

namespace {

#define FRUGAL_MPI_CHECK(call)                                                               \
    do {                                                                                     \
        int mpi_rc = (call);                                                                 \
        if (mpi_rc != MPI_SUCCESS) {                                                         \
            char msg_[MPI_MAX_ERROR_STRING];                                                 \
            int len_ = 0;                                                                    \
            MPI_Error_string(mpi_rc, msg_, &len_);                                           \
            FRUGAL_THROW("MPI call failed: ", #call, ": ", std::string(msg_, size_t(len_))); \
        }                                                                                    \
    } while (0)

MPI_Datatype mpi_type(DType dtype) {
    switch (dtype) {
        case DType::kF32:
            return MPI_FLOAT;
        case DType::kF64:
            return MPI_DOUBLE;
        case DType::kI32:
            return MPI_INT32_T;
        case DType::kI64:
            return MPI_INT64_T;
        case DType::kU16:
            return MPI_UINT16_T;
        case DType::kBF16:
            return MPI_UINT16_T;
        case DType::kU8:
        case DType::kE4M3:
        case DType::kE5M2:
            return MPI_UINT8_T;
    }
    return MPI_BYTE;
}

MPI_Op mpi_op(ReduceOp op) {
    switch (op) {
        case ReduceOp::kSum:
            return MPI_SUM;
        case ReduceOp::kMax:
            return MPI_MAX;
        case ReduceOp::kMin:
            return MPI_MIN;
    }
    return MPI_SUM;
}

int to_int(int64_t v, const char* what) {
    FRUGAL_CHECK(v >= 0 && v <= INT_MAX, what, " = ", v, " does not fit MPI's int counts: use smaller micro-batches");
    return int(v);
}

}  // namespace

bool launched_by_mpi() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
        if (std::getenv(v)) return true;
    const char* ntasks = std::getenv("SLURM_NTASKS");
    return std::getenv("SLURM_PROCID") && ntasks && std::atoi(ntasks) > 1;
}

void mpi_init() {
    if (mpi_initialized()) return;
    int provided = 0;
    FRUGAL_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}

bool mpi_initialized() {
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    return init && !fin;
}

void mpi_finalize() {
    if (mpi_initialized()) MPI_Finalize();
}

void mpi_abort(int code) {
    if (mpi_initialized()) MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
}

MpiComm::MpiComm(MPI_Comm comm, bool owned, double timeout_s, std::string name)
    : comm_(comm), owned_(owned), timeout_s_(timeout_s), name_(std::move(name)) {
    FRUGAL_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    FRUGAL_MPI_CHECK(MPI_Comm_size(comm_, &size_));
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
}

std::unique_ptr<MpiComm> MpiComm::world(double timeout_s) {
    FRUGAL_CHECK(mpi_initialized(), "MpiComm::world before mpi_init()");
    return std::unique_ptr<MpiComm>(new MpiComm(MPI_COMM_WORLD, false, timeout_s, "world"));
}

MpiComm::~MpiComm() {
    if (owned_ && mpi_initialized()) MPI_Comm_free(&comm_);
}

void MpiComm::wait(MPI_Request* requests, int n, const char* collective) {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    int done = 0;
    for (int64_t spin = 0;; ++spin) {
        FRUGAL_MPI_CHECK(MPI_Testall(n, requests, &done, MPI_STATUSES_IGNORE));
        if (done) {
            context_->wait_seconds += std::chrono::duration<double>(Clock::now() - start).count();
            return;
        }
        // MPI progresses a non-blocking collective only inside MPI calls, so keep testing; yield the core between
        // tests so that, with more ranks than cores, a waiting rank does not starve the one it waits for.
        std::this_thread::yield();
        if (timeout_s_ > 0 && (spin & 63) == 0 &&
            std::chrono::duration<double>(Clock::now() - start).count() > timeout_s_) {
            const CommContext& ctx = context();
            log::error("collective ", collective, " on the '", name_, "' communicator (", size_,
                       " ranks) did not finish within ", timeout_s_, " s",
                       ctx.step >= 0 ? " at step " + std::to_string(ctx.step) : std::string(),
                       ctx.layer.empty() ? std::string() : " in " + ctx.layer,
                       ": another rank has failed or stalled. Stopping the job (raise parallel.timeout_s if the "
                       "step is legitimately this slow).");
            mpi_abort(3);
        }
    }
}

void MpiComm::all_reduce(void* buf, int64_t count, DType dtype, ReduceOp op) {
    MPI_Request req;
    FRUGAL_MPI_CHECK(
        MPI_Iallreduce(MPI_IN_PLACE, buf, to_int(count, "all_reduce count"), mpi_type(dtype), mpi_op(op), comm_, &req));
    wait(req, "all_reduce");
}

void MpiComm::all_to_all(const void* send, void* recv, int64_t count_per_rank, DType dtype) {
    MPI_Request req;
    const int n = to_int(count_per_rank, "all_to_all count");
    FRUGAL_MPI_CHECK(MPI_Ialltoall(send, n, mpi_type(dtype), recv, n, mpi_type(dtype), comm_, &req));
    wait(req, "all_to_all");
}

void MpiComm::all_to_all_v(const void* send, const int64_t* send_counts, const int64_t* send_displs, void* recv,
                           const int64_t* recv_counts, const int64_t* recv_displs, DType dtype) {
    FRUGAL_CHECK(pending_.empty(), "all_to_all_v while ", pending_.size(), " started exchanges are unfinished");
    start_all_to_all_v(send, send_counts, send_displs, recv, recv_counts, recv_displs, dtype);
    finish_all();
}

void MpiComm::start_all_to_all_v(const void* send, const int64_t* send_counts, const int64_t* send_displs, void* recv,
                                 const int64_t* recv_counts, const int64_t* recv_displs, DType dtype) {
    const size_t n = size_t(size_), slot = pending_.size();
    if (pending_counts_.size() <= slot) pending_counts_.resize(slot + 1);
    std::vector<int>& c = pending_counts_[slot];  // [send counts | send displs | recv counts | recv displs]
    c.resize(4 * n);
    for (size_t i = 0; i < n; ++i) {
        c[i] = to_int(send_counts[i], "all_to_all_v send count");
        c[n + i] = to_int(send_displs[i], "all_to_all_v send displacement");
        c[2 * n + i] = to_int(recv_counts[i], "all_to_all_v receive count");
        c[3 * n + i] = to_int(recv_displs[i], "all_to_all_v receive displacement");
    }
    MPI_Request req;
    FRUGAL_MPI_CHECK(MPI_Ialltoallv(send, c.data(), c.data() + n, mpi_type(dtype), recv, c.data() + 2 * n,
                                    c.data() + 3 * n, mpi_type(dtype), comm_, &req));
    pending_.push_back(req);
}

void MpiComm::progress() {
    if (pending_.empty()) return;
    int done = 0;
    FRUGAL_MPI_CHECK(MPI_Testall(int(pending_.size()), pending_.data(), &done, MPI_STATUSES_IGNORE));
}

void MpiComm::finish_all() {
    if (pending_.empty()) return;
    wait(pending_.data(), int(pending_.size()), "all_to_all_v");
    pending_.clear();
}

void MpiComm::all_gather(const void* send, void* recv, int64_t count, DType dtype) {
    MPI_Request req;
    const int n = to_int(count, "all_gather count");
    FRUGAL_MPI_CHECK(MPI_Iallgather(send, n, mpi_type(dtype), recv, n, mpi_type(dtype), comm_, &req));
    wait(req, "all_gather");
}

void MpiComm::reduce_scatter(const void* send, void* recv, const int64_t* recv_counts, DType dtype, ReduceOp op) {
    rc_.resize(size_t(size_));
    for (int i = 0; i < size_; ++i) rc_[size_t(i)] = to_int(recv_counts[i], "reduce_scatter count");
    MPI_Request req;
    FRUGAL_MPI_CHECK(MPI_Ireduce_scatter(send, recv, rc_.data(), mpi_type(dtype), mpi_op(op), comm_, &req));
    wait(req, "reduce_scatter");
}

void MpiComm::all_gather_v(void* buf, const int64_t* counts, const int64_t* displs, DType dtype) {
    rc_.resize(size_t(size_));
    rd_.resize(size_t(size_));
    for (int i = 0; i < size_; ++i) {
        rc_[size_t(i)] = to_int(counts[i], "all_gather_v count");
        rd_[size_t(i)] = to_int(displs[i], "all_gather_v displacement");
    }
    MPI_Request req;
    FRUGAL_MPI_CHECK(
        MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, rc_.data(), rd_.data(), mpi_type(dtype), comm_, &req));
    wait(req, "all_gather_v");
}

void MpiComm::broadcast(void* buf, int64_t count, DType dtype, int root) {
    MPI_Request req;
    FRUGAL_MPI_CHECK(MPI_Ibcast(buf, to_int(count, "broadcast count"), mpi_type(dtype), root, comm_, &req));
    wait(req, "broadcast");
}

void MpiComm::barrier() {
    MPI_Request req;
    FRUGAL_MPI_CHECK(MPI_Ibarrier(comm_, &req));
    wait(req, "barrier");
}

std::unique_ptr<Communicator> MpiComm::split(int color, int key, const std::string& name) {
    MPI_Comm sub;
    FRUGAL_MPI_CHECK(MPI_Comm_split(comm_, color, key, &sub));
    auto c = std::unique_ptr<MpiComm>(new MpiComm(sub, true, timeout_s_, name));
    c->context_ = context_;
    return c;
}

}  // namespace frugal::parallel
