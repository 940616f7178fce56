// Communicator: the collectives Frugal needs, behind one interface with an MPI implementation (parallel/mpi_comm)
// and a single-process one (a world of one rank, every collective a copy).
//
// Every collective of the MPI implementation is non-blocking underneath and polled against a deadline
// (parallel.timeout_s): one that has not finished in time stops the whole job with a message naming the step, the
// layer and the collective, instead of hanging silently. The context (step, layer) is set by the trainer and the
// MoE dispatcher through set_context().
//
// Counts and displacements are in elements of the given dtype.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/dtype.h"

namespace frugal::parallel {

enum class ReduceOp { kSum, kMax, kMin };

// Where a collective was called from, for timeout and error messages.
struct CommContext {
    int64_t step = -1;
    std::string layer;
    double wait_seconds = 0;  // time spent inside collectives, all communicators split from one world together
};

class Communicator {
  public:
    virtual ~Communicator() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    virtual std::string name() const = 0;  // "world", "ep", "edp": used in messages

    virtual void all_reduce(void* buf, int64_t count, DType dtype, ReduceOp op) = 0;
    // Each rank sends count_per_rank elements to every rank: send [size, count_per_rank] -> recv [size, ...].
    virtual void all_to_all(const void* send, void* recv, int64_t count_per_rank, DType dtype) = 0;
    // Block j of send (send_counts[j] elements at send_displs[j]) goes to rank j; block i of recv comes from rank i.
    virtual void all_to_all_v(const void* send, const int64_t* send_counts, const int64_t* send_displs, void* recv,
                              const int64_t* recv_counts, const int64_t* recv_displs, DType dtype) = 0;
    // all_to_all_v without waiting: it starts the exchange and returns, and finish_all() completes every exchange
    // started since the last finish_all() (in any order, under the same deadline as the blocking collectives). The
    // counts are copied at the start; the buffers must be left alone until finish_all(). Every rank starts the same
    // exchanges in the same order, and calls no other collective of this communicator in between.
    virtual void start_all_to_all_v(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                                    void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                                    DType dtype) = 0;
    // Lets the started exchanges move data (MPI moves a large message only inside an MPI call) without waiting.
    virtual void progress() {}
    virtual void finish_all() {}
    // recv [size, count] gathers every rank's count elements.
    virtual void all_gather(const void* send, void* recv, int64_t count, DType dtype) = 0;
    // send holds size consecutive blocks, block i of recv_counts[i] elements; rank i receives into recv the
    // reduction over all ranks of block i. A fixed algorithm for a given size: the same inputs give the same bits.
    virtual void reduce_scatter(const void* send, void* recv, const int64_t* recv_counts, DType dtype, ReduceOp op) = 0;
    // In place: block i of buf (counts[i] elements at displs[i]) is filled from rank i's block, which that rank
    // already holds at the same place.
    virtual void all_gather_v(void* buf, const int64_t* counts, const int64_t* displs, DType dtype) = 0;
    virtual void broadcast(void* buf, int64_t count, DType dtype, int root) = 0;
    virtual void barrier() = 0;
    // The underlying MPI_Comm* for libraries that take one (parallel HDF5); nullptr for a single process.
    virtual void* native_handle() { return nullptr; }
    // Ranks with the same color form a new communicator, ordered by key.
    virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) = 0;

    void set_context(const CommContext& ctx) { *context_ = ctx; }
    void set_step(int64_t step) { context_->step = step; }
    void set_layer(const std::string& layer) { context_->layer = layer; }
    const CommContext& context() const { return *context_; }

  protected:
    // Shared by a communicator and those split from it, so the trainer sets the step once.
    std::shared_ptr<CommContext> context_ = std::make_shared<CommContext>();
};

class SingleProcessComm final : public Communicator {
  public:
    int rank() const override { return 0; }
    int size() const override { return 1; }
    std::string name() const override { return name_; }
    void all_reduce(void*, int64_t, DType, ReduceOp) override {}
    void all_to_all(const void* send, void* recv, int64_t count_per_rank, DType dtype) override;
    void all_to_all_v(const void* send, const int64_t* send_counts, const int64_t* send_displs, void* recv,
                      const int64_t* recv_counts, const int64_t* recv_displs, DType dtype) override;
    // A copy, done at once.
    void start_all_to_all_v(const void* send, const int64_t* send_counts, const int64_t* send_displs, void* recv,
                            const int64_t* recv_counts, const int64_t* recv_displs, DType dtype) override {
        all_to_all_v(send, send_counts, send_displs, recv, recv_counts, recv_displs, dtype);
    }
    void all_gather(const void* send, void* recv, int64_t count, DType dtype) override;
    void reduce_scatter(const void* send, void* recv, const int64_t* recv_counts, DType dtype, ReduceOp) override;
    void all_gather_v(void*, const int64_t*, const int64_t*, DType) override {}
    void broadcast(void*, int64_t, DType, int) override {}
    void barrier() override {}
    std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;

    std::string name_ = "world";
};

}  // namespace frugal::parallel
