#include "data/loader.h"

#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace frugal::data {

Loader::Loader(const std::string& shard_path, int64_t seq_len, uint64_t seed, bool shuffle)
    : shard_(std::make_unique<ShardReader>(shard_path)), seq_len_(seq_len), seed_(seed), shuffle_(shuffle) {
    num_samples_ = shard_->num_tokens() > 0 ? (shard_->num_tokens() - 1) / seq_len : 0;
    FRUGAL_CONFIG_CHECK(num_samples_ > 0, shard_path, " holds ", shard_->num_tokens(),
                        " tokens, fewer than one window of train.seq_len + 1 = ", seq_len + 1,
                        ": use more data or a shorter train.seq_len");
}

int64_t Loader::sample_index(int64_t g) {
    const int64_t epoch = g / num_samples_, within = g % num_samples_;
    if (!shuffle_) return within;
    if (epoch != perm_epoch_) {
        // Fisher-Yates with draws keyed by (seed, epoch, position): the permutation of an epoch is fixed.
        perm_.resize(size_t(num_samples_));
        std::iota(perm_.begin(), perm_.end(), int64_t(0));
        rng::Stream stream(seed_, "data.order");
        for (int64_t i = num_samples_ - 1; i > 0; --i) {
            int64_t j = int64_t(stream.below(uint64_t(i + 1), uint64_t(i), uint64_t(epoch)));
            std::swap(perm_[size_t(i)], perm_[size_t(j)]);
        }
        perm_epoch_ = epoch;
    }
    return perm_[size_t(within)];
}

void Loader::read_samples(int32_t* tokens_BS, int32_t* targets_BS, int64_t first, int64_t count) {
    for (int64_t j = 0; j < count; ++j) {
        const int64_t start = sample_index(first + j) * seq_len_;
        shard_->read(tokens_BS + j * seq_len_, start, seq_len_);
        shard_->read_targets(targets_BS + j * seq_len_, start + 1, seq_len_);
    }
}

void Loader::micro_batch(int32_t* tokens_BS, int32_t* targets_BS, int64_t step_first, int64_t micro_idx,
                         int64_t micro_batch, int64_t dp_rank, int64_t dp_size) {
    read_samples(tokens_BS, targets_BS, step_first + (micro_idx * dp_size + dp_rank) * micro_batch, micro_batch);
}

}  // namespace frugal::data
