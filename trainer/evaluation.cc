#include "trainer/evaluation.h"

#include <algorithm>

namespace frugal::trainer {

double evaluate(Session& s) {
    const int64_t micro = s.cfg.train.micro_batch, seq = s.cfg.train.seq_len, dp_size = s.dims.world;
    double sums[2] = {0, 0};  // cross-entropy sum, valid targets
    const int64_t rounds = (s.cfg.train.eval_batches + dp_size - 1) / dp_size;
    int32_t* tokens_BS = s.batch.tokens_BS(0);
    int32_t* targets_BS = s.batch.targets_BS(0);
    for (int64_t round = 0; round < rounds; ++round) {
        const int64_t i = round * dp_size + s.dims.rank;
        const bool mine = i < s.cfg.train.eval_batches;
        s.val_data.read_samples(tokens_BS, targets_BS, (mine ? i : 0) * micro, micro);
        if (!mine) std::fill_n(targets_BS, micro * seq, model::kIgnoreIndex);
        const model::ForwardResult r =
            s.net.forward(tokens_BS, targets_BS, micro, seq, s.batch.document_starts_BS(0, s.val_data));
        sums[0] += r.ce_sum;
        sums[1] += double(r.num_valid);
    }
    s.world.set_layer("validation loss");
    s.world.all_reduce(sums, 2, DType::kF64, parallel::ReduceOp::kSum);
    return sums[1] > 0 ? sums[0] / sums[1] : 0.0;
}

bool evaluation_due(const TrainConfig& cfg, int64_t steps_done, bool finished) {
    return finished || (cfg.train.eval_every > 0 && steps_done % cfg.train.eval_every == 0);
}

}  // namespace frugal::trainer
