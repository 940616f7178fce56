// Resumable data loader over a memory-mapped token shard.
//
// Samples are fixed windows: sample i covers tokens [i*S, i*S + S + 1) (inputs are the first S, targets the last
// S), i < num_samples = (num_tokens - 1) / S. The training order is a permutation of the samples for each epoch,
// drawn from the counter-based RNG keyed by (seed, epoch): global sample g is sample perm_{g / n}(g mod n). The
// order is therefore a function of (seed, global sample index) only, never of the number of ranks.
//
// A step consumes global_batch consecutive global samples. Micro-batch m of data-parallel rank r (micro_batch
// samples each, dp_size ranks) takes global samples  step * global_batch + m * dp_size * micro_batch
// + r * micro_batch + [0, micro_batch): world 1 with 4 micro-batches and world 4 with 1 read the same samples.
// The loader's position is the index of the next step's first global sample; saving and restoring it resumes the
// data stream exactly.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/shard.h"

namespace frugal::data {

class Loader {
  public:
    Loader(const std::string& shard_path, int64_t seq_len, uint64_t seed, bool shuffle);
    int64_t num_samples() const { return num_samples_; }
    int64_t vocab_size() const { return shard_->vocab_size(); }
    int32_t end_of_document() const { return shard_->end_of_document(); }
    // Fills tokens_BS / targets_BS with global samples [first, first + count).
    void read_samples(int32_t* tokens_BS, int32_t* targets_BS, int64_t first, int64_t count);
    // Micro-batch micro_idx of one data-parallel rank in the step whose first global sample is step_first (that is
    // step * global_batch from the start of a run), as described above.
    void micro_batch(int32_t* tokens_BS, int32_t* targets_BS, int64_t step_first, int64_t micro_idx,
                     int64_t micro_batch, int64_t dp_rank, int64_t dp_size);
    int64_t sample_index(int64_t global_sample);

  private:
    std::unique_ptr<ShardReader> shard_;
    int64_t seq_len_, num_samples_;
    uint64_t seed_;
    bool shuffle_;
    int64_t perm_epoch_ = -1;
    std::vector<int64_t> perm_;
};

}  // namespace frugal::data
