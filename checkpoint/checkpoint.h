// HDF5 checkpoints (format: docs/checkpoint-format.md).
//
// One file per checkpoint step, written collectively with parallel HDF5: every tensor is stored in its GLOBAL shape
// (experts as [n_experts, ...]) and each rank writes its own hyperslab (replicated tensors: world rank 0; expert
// tensors: the ranks of the first expert-parallel group). Datasets are chunked with the Fletcher32 checksum filter;
// a manifest lists every dataset's name, dtype and shape. Loading reads each rank's slice of the global tensors, so
// a checkpoint written with one layout loads into any other.
//
// Commit protocol (a crash at any point leaves the previous checkpoint loadable):
//   1. every rank writes into DIR/step_NNNNNNNN.h5.tmp; the file is closed collectively
//   2. rank 0 fsyncs it, renames it to DIR/step_NNNNNNNN.h5 and fsyncs DIR
//   3. rank 0 writes DIR/latest.tmp (the file name), fsyncs, renames it to DIR/latest
//   4. retention removes older checkpoints beyond checkpoint.keep_last (except every keep_every-th step)
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/config_fields.h"
#include "core/tensor.h"
#include "model/params.h"
#include "parallel/communicator.h"

namespace frugal::checkpoint {

// Version 2: HDF5 1.10 file format (checksummed metadata), a CRC-32 over every attribute and string, and the run
// id. Version 1 files still load.
inline constexpr int64_t kFormatVersion = 2;

struct CheckpointConfig {
    int64_t every = 0;            // steps between checkpoints; 0 = none
    std::string resume = "none";  // none | auto
    std::string dir;              // empty: run.out_dir/checkpoints
    int64_t keep_last = 3;
    int64_t keep_every = 0;  // also keep every keep_every-th step's checkpoint; 0 = off
    std::string export_hf;   // after the last step, export the model in Hugging Face format to this directory
    std::string export_hf_dtype = "bf16";

    void register_fields(ConfigFields& f, const std::string& prefix);
};

// Scalars and text stored with the tensors.
struct TrainingState {
    int64_t step = 0;  // optimizer steps completed
    int64_t tokens_seen = 0;
    int64_t data_position = 0;       // global index of the next training sample
    int64_t optimizer_steps = 0;     // AdamW's bias-correction counter
    int64_t seed = 0;                // the run's seed: every random draw is a function of it (counter-based RNG)
    int64_t world_size = 1, ep = 1;  // layout of the writer (informational: any layout can load)
    std::string config_yaml;         // resolved configuration of the writer
    std::string frugal_version;
    double accounting_seconds = 0;  // device-seconds charged so far, all ranks and phases
    std::string accounting_json;    // per-phase device-seconds so far, {"compute": s, ...}
    std::string run_id;             // the run that wrote it: retention deletes only its own run's checkpoints
};

// One global tensor and this rank's part of it: rows [row_begin, row_begin + local_shape[0]) along dimension 0, or,
// when flat_begin >= 0, the elements [flat_begin, flat_begin + flat_count) of the tensor in row-major order (a
// ZeRO-1 shard of optimizer state, which need not start or end on a row; local_shape is then unused). Either way the
// file holds the global tensor, so a checkpoint loads into any layout.
struct TensorSlot {
    std::string name;  // dataset path, e.g. "params/layers.1.attn.wq.weight"
    Shape global_shape;
    int64_t row_begin = 0;
    Shape local_shape;
    bool writer = false;    // this rank writes its part (exactly one writer per element across the job)
    float* data = nullptr;  // [local_shape] (or [flat_count]) FP32
    int64_t flat_begin = -1;
    int64_t flat_count = 0;
};

// One slot per parameter ("params/NAME") of a store, for tools; an expert shard's slot covers its rows of the
// global tensor. The writer flags say whether this process writes the replicated and the expert parameters (in a
// collective save, exactly one process writes each row).
std::vector<TensorSlot> param_slots(model::ParamStore& store, bool write_replicated = true, bool write_experts = true);

// Writes the checkpoint of `step` into dir (collective over world). before_commit, if set, runs on rank 0 after
// the file is complete and before it is renamed (fault drills use it). Returns the final path. Retention then
// removes the oldest checkpoints of state.run_id beyond keep_last; other runs' files are never touched.
// Refuses (IoError, nothing written) when the disk cannot hold the file; a write that fails midway removes the
// temporary, leaves `latest` as it was and throws IoError naming the path and the reason.
std::string save(const std::string& dir, const std::vector<TensorSlot>& slots, const TrainingState& state,
                 parallel::Communicator& world, int64_t keep_last, int64_t keep_every,
                 const std::function<void()>& before_commit = {});

// Reads every slot's rows and the state. Throws ConfigError naming the first missing or mismatching dataset.
void load(const std::string& path, std::vector<TensorSlot>& slots, TrainingState& state);

struct VerifyReport {
    bool ok = false;
    std::string error;  // first problem found
    int64_t datasets = 0, bytes = 0;
};
// Full integrity check: the file opens, the manifest lists every dataset with its dtype and shape, every dataset
// exists as listed and reads back through its checksum, the state attributes are present.
VerifyReport verify(const std::string& path);

// The newest checkpoint in dir that verifies ("" when none): the one `latest` names first, then the others by
// descending step. Problems with newer ones are logged.
std::string find_resumable(const std::string& dir);

// The file name of the checkpoint of `step` in its directory: step_NNNNNNNN.h5.
std::string step_file_name(int64_t step);

// Reads the state only (for `frugal ckpt inspect`); checks the metadata checksum.
TrainingState read_state(const std::string& path);

// The bytes a checkpoint of these slots takes on disk (an upper bound).
int64_t file_bytes(const std::vector<TensorSlot>& slots, const TrainingState& state);

// Checkpoint files (step_NNNNNNNN.h5) in dir, newest first.
std::vector<std::string> list_checkpoints(const std::string& dir);
// Manifest entries: name, dtype, shape.
struct ManifestEntry {
    std::string name, dtype;
    Shape shape;
};
std::vector<ManifestEntry> read_manifest(const std::string& path);

}  // namespace frugal::checkpoint
