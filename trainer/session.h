// The session of a training run: everything a step needs, built once and in an order that makes a mistake cheap
// (every check before the first large allocation): the layout and its communicators, the data loaders, the model
// with its precision recipe and expert parallelism, the optimizer, the gradient synchronization, and the token
// buffers of one step.
//
// Legend: A micro-batches per rank per step (train.accum_steps), B sequences per micro-batch (train.micro_batch),
// S positions (train.seq_len).
#pragma once

#include <memory>
#include <vector>

#include "data/loader.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "parallel/communicator.h"
#include "parallel/expert_parallel.h"
#include "parallel/grad_sync.h"
#include "parallel/parallel_dims.h"
#include "trainer/run_config.h"

namespace frugal::trainer {

// One step's tokens on this rank.
class StepBuffers {
  public:
    StepBuffers(int64_t accum, int64_t micro, int64_t seq_len, bool document_mask);
    int32_t* tokens_BS(int64_t m) { return tokens_ABS_.data() + m * micro_ * seq_len_; }
    int32_t* targets_BS(int64_t m) { return targets_ABS_.data() + m * micro_ * seq_len_; }
    // With data.document_mask: where each token's document starts in its window, from micro-batch m's tokens as
    // loaded now; null without document masking.
    const int32_t* document_starts_BS(int64_t m, const data::Loader& loader);

  private:
    int64_t micro_, seq_len_;
    bool document_mask_;
    std::vector<int32_t> tokens_ABS_, targets_ABS_, starts_ABS_;
};

struct Session {
    // Collective (splits the communicators). dims is world's layout under cfg.parallel.
    Session(TrainConfig& cfg, parallel::Communicator& world, const parallel::ParallelDims& dims);

    TrainConfig& cfg;
    parallel::Communicator& world;  // also the data-parallel group of the replicated parameters
    const parallel::ParallelDims dims;
    const int threads;                                 // OpenMP threads per rank
    const int64_t accum;                               // micro-batches per rank per step
    std::unique_ptr<parallel::Communicator> ep_comm;   // same edp_rank, ordered by ep_rank
    std::unique_ptr<parallel::Communicator> edp_comm;  // same ep_rank, ordered by edp_rank
    parallel::NodeLayout node_layout;                  // the ep groups' nodes (hierarchical dispatch, byte counts)
    data::Loader train_data, val_data;
    model::Transformer<float> net;
    std::vector<model::MoELayer<float>*> moe_layers;
    parallel::GradSync grad_sync;
    // What this rank's optimizer updates: every parameter, or with parallel.zero 1 the part of each inside this
    // rank's shards (oparams[i] is elements [begin, begin + numel) of parameter param).
    struct OptimPart {
        model::Param* param;
        int64_t begin, numel;
    };
    std::vector<OptimPart> oparts;
    std::vector<optim::OptimParam> oparams;
    optim::AdamW opt;
    StepBuffers batch;

    bool is_root() const { return dims.rank == 0; }
    int64_t tokens_per_step() const { return cfg.train.global_batch * cfg.train.seq_len; }
};

// Logs what the session holds: parameters, MoE layers, layout, micro-batches, threads.
void log_session(Session& s);

}  // namespace frugal::trainer
