// Checkpointing of a training run: what a checkpoint holds (slots), where a run starts (a fresh start or the newest
// checkpoint that verifies, checkpoint.resume), the periodic save (checkpoint.every, also at the last step and on a
// stop request), and the final Hugging Face export (checkpoint.export_hf).
//
// A checkpoint holds a TensorSlot per parameter, AdamW moment and expert bias in their global shapes, and the
// matmul recipes' state (delayed scaling's amax histories). BF16 moments are staged through FP32 buffers (BF16
// values are exact in FP32), so the file format does not depend on precision.optimizer_state; so is everything that
// lives on a device (a run on a GPU backend), copied to the host before a save and back after a load. Each
// data-parallel rank's amax histories saw its own batches: they are one row per rank of "precision/recipe_state"
// [world, n], restored only into the same layout.
#pragma once

#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "accounting/meter.h"
#include "checkpoint/checkpoint.h"
#include "trainer/session.h"

namespace frugal::trainer {

// checkpoint.dir, or run.out_dir/checkpoints when it is empty.
std::string checkpoint_dir(const TrainConfig& cfg);

// Where this attempt of the run starts.
struct StartPoint {
    int64_t step = 0;                       // steps already taken
    int64_t data_position = 0;              // global index of the next sample of the data stream
    accounting::PhaseSeconds accounting{};  // device-seconds the checkpoint carried
};

class Checkpointer {
  public:
    explicit Checkpointer(Session& s);

    // Collective. checkpoint.resume: none refuses a checkpoint directory that holds checkpoints (a fresh run would
    // overwrite them); auto loads the newest checkpoint that verifies (and is compatible with this config) into
    // the session, or starts fresh when there is none.
    StartPoint start();
    bool due(int64_t steps_done, bool last) const;
    // Collective: the checkpoint after steps_done steps; next_sample is the data stream's position after them and
    // so_far the run's device-seconds (carried into the file for the accounting of a resumed run).
    void save(int64_t steps_done, int64_t next_sample, const accounting::PhaseSeconds& so_far,
              accounting::Meter& meter);
    const std::string& run_id() const { return run_id_; }

  private:
    static constexpr const char* kRecipeState = "precision/recipe_state";
    void add_slot(const std::string& name, const model::Param& p, float* data);
    // The host float buffer a slot reads and writes for tensor t: t's own memory when it is FP32 on the host, else
    // a staged FP32 copy.
    float* host_data(Tensor& t);
    // The slots to restore from a checkpoint written by world_size ranks with expert parallelism ep: the recipe
    // state only when it was written by this very layout (and has this size).
    std::vector<checkpoint::TensorSlot> load_slots(const std::string& path, int64_t world_size, int64_t ep,
                                                   bool* with_recipe_state) const;
    StartPoint load(const std::string& path);
    void before_save();
    void after_load(bool with_recipe_state);

    Session& s_;
    std::string dir_, run_id_;
    std::vector<checkpoint::TensorSlot> slots_;
    // FP32 host copies of BF16 moments and of device tensors, and how each is filled before a save (pull) and
    // written back after a load (push).
    struct Staged {
        std::vector<float> host;
        std::function<void(std::vector<float>&)> pull;
        std::function<void(const std::vector<float>&)> push;
    };
    std::deque<Staged> staged_;
    std::vector<precision::MatmulRecipe<float>*> recipes_;
    std::vector<float> recipe_state_;
};

// Every rank of the first expert-data-parallel replica writes its own experts to checkpoint.export_hf (ep rank 0
// also the replicated tensors): no process gathers the model. Collective.
void export_final_model(Session& s);

}  // namespace frugal::trainer
