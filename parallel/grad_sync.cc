#include "parallel/grad_sync.h"

#include <algorithm>

namespace frugal::parallel {

GradSync::GradSync(model::ParamStore& store, Communicator& dp, Communicator& edp, Communicator& ep,
                   backend::Backend& be, int64_t bucket_elems)
    : store_(store), be_(be), dp_(dp), edp_(edp), ep_(ep), bucket_elems_(bucket_elems) {}

void GradSync::sync() {
    float* g = store_.flat_grads().data<float>();
    const int64_t dense = store_.dense_numel(), total = store_.numel();
    auto reduce = [&](Communicator& comm, int64_t begin, int64_t end) {
        if (comm.size() == 1) return;
        comm.set_layer("gradient sync");
        for (int64_t b = begin; b < end; b += bucket_elems_)
            comm.all_reduce(g + b, std::min(bucket_elems_, end - b), DType::kF32, ReduceOp::kSum);
    };
    reduce(dp_, 0, dense);
    reduce(edp_, dense, total);
}

double GradSync::grad_sq_norm() {
    const float* g = store_.flat_grads().data<float>();
    const int64_t dense = store_.dense_numel(), total = store_.numel();
    double expert_sq = be_.sum_squares(g + dense, total - dense);
    if (ep_.size() > 1) {
        ep_.set_layer("gradient norm");
        ep_.all_reduce(&expert_sq, 1, DType::kF64, ReduceOp::kSum);
    }
    return be_.sum_squares(g, dense) + expert_sq;
}

}  // namespace frugal::parallel
