// Gradient synchronization over the process layout, in flat buckets.
//
// The loss scales (model/transformer.h) already divide by the global token count and micro-batch count, so the
// gradient of the global loss is the SUM of the ranks' gradients:
//   replicated parameters  flat range [0, dense_numel)       summed over the data-parallel group (all ranks)
//   expert parameters      flat range [dense_numel, numel)   summed over the expert-data-parallel group (the
//                          replicas of the same experts; the expert-parallel group already delivered every
//                          token routed to them through the all-to-all)
// Each range goes out in buckets of at most bucket_elems elements, one all-reduce per bucket.
#pragma once

#include "backend/backend.h"
#include "model/params.h"
#include "parallel/communicator.h"

namespace frugal::parallel {

class GradSync {
  public:
    // be: the backend that holds the gradients (its sum_squares computes the norm).
    GradSync(model::ParamStore& store, Communicator& dp, Communicator& edp, Communicator& ep,
             backend::Backend& be = backend::cpu_backend(), int64_t bucket_elems = int64_t(1) << 22);
    void sync();
    // Squared global gradient norm after sync(): the replicated part (equal on every rank) plus the expert part
    // summed over the expert-parallel group (each group holds every expert once). Fixed-order sums, so the same
    // layout gives bitwise the same norm.
    double grad_sq_norm();

  private:
    model::ParamStore& store_;
    backend::Backend& be_;
    Communicator &dp_, &edp_, &ep_;
    int64_t bucket_elems_;
};

}  // namespace frugal::parallel
