// Gradient synchronization over the process layout, in flat buckets, and ZeRO-1's sharding of the update.
//
// The loss scales (model/transformer.h) already divide by the global token count and micro-batch count, so the
// gradient of the global loss is the SUM of the ranks' gradients:
//   replicated parameters  flat range [0, dense_numel)       summed over the data-parallel group (all ranks)
//   expert parameters      flat range [dense_numel, numel)   summed over the expert-data-parallel group (the
//                          replicas of the same experts; the expert-parallel group already delivered every
//                          token routed to them through the all-to-all)
// Each range goes out in buckets of at most bucket_elems elements.
//
// Without ZeRO (parallel.zero: 0) each bucket is all-reduced and every rank updates every parameter. With ZeRO-1
// (parallel.zero: 1; Rajbhandari et al., arXiv 1910.02054, as DeepSeek-V3 trains) each range is split into
// contiguous shards, one per rank of its group (rank r of n holds [len * r / n, len * (r + 1) / n)): sync()
// reduce-scatters each bucket, so a rank ends with the summed gradient of its shard only; the optimizer updates
// that shard (and keeps AdamW's moments for it only: 1/dp of the replicated state, 1/edp of the experts'); and
// gather_params() all-gathers the updated values, bucket by bucket, so every rank again holds the whole model. The
// collectives are fixed algorithms for a given layout, so a run repeats bit for bit; against zero: 0 the sums are
// associated differently (float rounding, about 1e-7 relative).
#pragma once

#include <vector>

#include "backend/backend.h"
#include "model/params.h"
#include "parallel/communicator.h"

namespace frugal::parallel {

// [begin, end) of a flat buffer.
struct FlatRange {
    int64_t begin = 0, end = 0;
    int64_t size() const { return end - begin; }
};

// Rank r's shard of [begin, end) split over n ranks.
FlatRange shard_of(FlatRange whole, int r, int n);

class GradSync {
  public:
    // be: the backend that holds the gradients (its sum_squares computes the norm). zero: ZeRO-1.
    GradSync(model::ParamStore& store, Communicator& dp, Communicator& edp, Communicator& ep,
             backend::Backend& be = backend::cpu_backend(), bool zero = false, int64_t bucket_elems = int64_t(1) << 22);
    void sync();
    // Squared global gradient norm after sync(): the replicated part plus the expert part, each element counted
    // once. Fixed-order sums, so the same layout gives bitwise the same norm.
    double grad_sq_norm();
    // ZeRO-1: after the optimizer updated this rank's shards, every rank gets every value. Nothing without ZeRO.
    void gather_params();

    bool zero() const { return zero_; }
    // What this rank's optimizer updates: the whole replicated and expert ranges without ZeRO, its shards with it.
    FlatRange dense_shard() const { return dense_shard_; }
    FlatRange expert_shard() const { return expert_shard_; }

  private:
    // One bucket's reduce-scatter (or all-gather) over comm: how many of bucket [b, e) each rank's shard holds.
    void bucket_counts(FlatRange whole, Communicator& comm, int64_t b, int64_t e);

    model::ParamStore& store_;
    backend::Backend& be_;
    Communicator &dp_, &edp_, &ep_;
    bool zero_;
    int64_t bucket_elems_;
    FlatRange dense_shard_, expert_shard_;
    std::vector<int64_t> counts_, displs_;  // per rank of one bucket; sized once
    std::vector<float> recv_;               // one bucket's share of this rank
};

}  // namespace frugal::parallel
