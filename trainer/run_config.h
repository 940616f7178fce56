// The resolved configuration of a training run: every module's Config struct under its YAML section, the YAML
// loader (unknown keys rejected with the nearest known one, file:line in every message) and `--set key=value`
// overrides. Nothing is allocated before validate() has passed.
#pragma once

#include <string>
#include <vector>

#include "accounting/config.h"
#include "checkpoint/checkpoint.h"
#include "core/config_fields.h"
#include "model/config.h"
#include "optim/adamw.h"
#include "precision/recipe.h"

namespace frugal::trainer {

struct RunSection {
    std::string out_dir = "runs/demo";
    int64_t seed = 1234;
    int64_t log_every = 10;
    std::string device = "auto";  // auto | cpu | cuda
};

struct TrainSection {
    int64_t steps = 200;
    int64_t global_batch = 16;  // sequences per optimizer step, over all ranks
    int64_t micro_batch = 8;    // sequences per forward/backward on one rank
    int64_t seq_len = 128;
    int64_t eval_every = 50;         // 0 = only at the end
    int64_t eval_batches = 4;        // micro-batches of validation data per evaluation, over all ranks
    std::string nonfinite = "skip";  // skip | stop
    int64_t max_skipped_steps = 10;
    std::vector<std::string> freeze;  // parameter kinds that are not trained (fine-tuning)
    int64_t threads = 0;              // OpenMP threads; 0 = all cores
};

struct DataSection {
    std::string dir = "corpus/fortunes";
    bool document_mask = false;  // attention stays inside each packed document; positions restart per document
};

struct ParallelSection {
    int64_t ep = 1;
    int64_t zero = 0;                    // 1: ZeRO-1, optimizer state sharded over the data-parallel groups
    bool overlap_shared_experts = true;  // the shared experts run while the MoE dispatch is in flight
    std::string dispatch = "flat";       // flat | hierarchical (a token crosses to each node once)
    double timeout_s = 300;              // a collective unfinished after this long stops the job
};

// Fault injection for tests and drills: rank kill_rank fails at the start of step at_step, once per run
// directory (a marker file in run.out_dir keeps a relaunched job from failing again).
struct FaultSection {
    int64_t kill_rank = -1;  // -1 = off
    int64_t at_step = 1;
    // kill: SIGKILL itself; throw: raise an error as a bug would; hang: stop responding; kill_in_checkpoint: rank 0
    // dies after writing the checkpoint of step at_step and before committing it (the rename).
    std::string kind = "kill";
};

struct TrainConfig {
    RunSection run;
    model::ModelConfig model;
    optim::OptimConfig optim;
    TrainSection train;
    DataSection data;
    ParallelSection parallel;
    precision::PrecisionConfig precision;
    checkpoint::CheckpointConfig checkpoint;
    FaultSection fault;
    accounting::AccountingConfig accounting;

    // The key registry over this object's members (pointers into *this: rebuild after a copy).
    ConfigFields fields();
    // Cross-key checks for a job of world_size ranks; throws ConfigError.
    void validate(int64_t world_size) const;
    int64_t accum_steps(int64_t dp_size) const { return train.global_batch / (train.micro_batch * dp_size); }
};

// Loads path (empty: the defaults), then applies overrides of the form key=value, then validates.
TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides, int64_t world_size);
// The resolved configuration as YAML, every key present.
std::string to_yaml(TrainConfig& cfg);
// model.init_from: hf:DIR: copies DIR/config.json's architecture into m (training knobs stay).
void adopt_hf_architecture(model::ModelConfig& m);
// docs/config.md, generated from the registry.
std::string config_docs();

}  // namespace frugal::trainer
