#include "parallel/grad_sync.h"

#include <algorithm>

#include "core/error.h"

namespace frugal::parallel {

FlatRange shard_of(FlatRange whole, int r, int n) {
    const int64_t len = whole.size();
    return {whole.begin + len * r / n, whole.begin + len * (r + 1) / n};
}

GradSync::GradSync(model::ParamStore& store, Communicator& dp, Communicator& edp, Communicator& ep,
                   backend::Backend& be, bool zero, int64_t bucket_elems)
    : store_(store), be_(be), dp_(dp), edp_(edp), ep_(ep), zero_(zero), bucket_elems_(bucket_elems) {
    const FlatRange dense{0, store.dense_numel()}, experts{store.dense_numel(), store.numel()};
    dense_shard_ = zero ? shard_of(dense, dp.rank(), dp.size()) : dense;
    expert_shard_ = zero ? shard_of(experts, edp.rank(), edp.size()) : experts;
    if (zero) {
        FRUGAL_CHECK(be.device() == Device::kCpu || (dp.size() == 1 && edp.size() == 1),
                     "parallel.zero: 1 exchanges host memory; a GPU run has one rank");
        counts_.resize(size_t(std::max(dp.size(), edp.size())));
        displs_.resize(counts_.size());
        recv_.resize(size_t(std::min(bucket_elems, std::max(dense_shard_.size(), expert_shard_.size()))));
    }
}

void GradSync::bucket_counts(FlatRange whole, Communicator& comm, int64_t b, int64_t e) {
    for (int r = 0; r < comm.size(); ++r) {
        const FlatRange s = shard_of(whole, r, comm.size());
        const int64_t lo = std::max(b, s.begin), hi = std::min(e, s.end);
        counts_[size_t(r)] = std::max<int64_t>(0, hi - lo);
        displs_[size_t(r)] = std::clamp(s.begin, b, e) - b;
    }
}

void GradSync::sync() {
    float* g = store_.flat_grads().data<float>();
    auto reduce = [&](Communicator& comm, FlatRange whole, FlatRange mine) {
        if (comm.size() == 1) return;
        comm.set_layer("gradient sync");
        for (int64_t b = whole.begin; b < whole.end; b += bucket_elems_) {
            const int64_t e = std::min(whole.end, b + bucket_elems_);
            if (!zero_) {
                comm.all_reduce(g + b, e - b, DType::kF32, ReduceOp::kSum);
                continue;
            }
            bucket_counts(whole, comm, b, e);
            comm.reduce_scatter(g + b, recv_.data(), counts_.data(), DType::kF32, ReduceOp::kSum);
            const int64_t n = counts_[size_t(comm.rank())];
            if (n > 0) std::copy_n(recv_.data(), n, g + std::max(b, mine.begin));
        }
    };
    reduce(dp_, {0, store_.dense_numel()}, dense_shard_);
    reduce(edp_, {store_.dense_numel(), store_.numel()}, expert_shard_);
}

void GradSync::gather_params() {
    if (!zero_) return;
    float* v = store_.flat_values().data<float>();
    auto gather = [&](Communicator& comm, FlatRange whole) {
        if (comm.size() == 1) return;
        comm.set_layer("parameter all-gather");
        for (int64_t b = whole.begin; b < whole.end; b += bucket_elems_) {
            const int64_t e = std::min(whole.end, b + bucket_elems_);
            bucket_counts(whole, comm, b, e);
            comm.all_gather_v(v + b, counts_.data(), displs_.data(), DType::kF32);
        }
    };
    gather(dp_, {0, store_.dense_numel()});
    gather(edp_, {store_.dense_numel(), store_.numel()});
}

double GradSync::grad_sq_norm() {
    const float* g = store_.flat_grads().data<float>();
    if (zero_) {
        // Each rank's shards hold every summed gradient element once across the job.
        double sq[2] = {be_.sum_squares(g + dense_shard_.begin, dense_shard_.size()),
                        be_.sum_squares(g + expert_shard_.begin, expert_shard_.size())};
        if (dp_.size() > 1) {
            dp_.set_layer("gradient norm");
            dp_.all_reduce(sq, 2, DType::kF64, ReduceOp::kSum);
        }
        return sq[0] + sq[1];
    }
    const int64_t dense = store_.dense_numel(), total = store_.numel();
    double expert_sq = be_.sum_squares(g + dense, total - dense);
    if (ep_.size() > 1) {
        ep_.set_layer("gradient norm");
        ep_.all_reduce(&expert_sq, 1, DType::kF64, ReduceOp::kSum);
    }
    return be_.sum_squares(g, dense) + expert_sq;
}

}  // namespace frugal::parallel
