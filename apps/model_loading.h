// Loading a trained model for the commands that use one (score, export-hf): from a Frugal checkpoint (its stored
// config, parameters and learned expert biases) or from a Hugging Face directory. With a shard, only that shard's
// experts are built and read (expert-parallel scoring); the default builds every expert.
#pragma once

#include <memory>
#include <string>

#include "model/transformer.h"

namespace frugal::apps {

struct LoadedModel {
    model::ModelConfig cfg;
    std::unique_ptr<model::Transformer<float>> net;
};

// The architecture stored in a checkpoint (or of a Hugging Face directory), without loading any weight.
// init_from, if given, receives the run's model.init_from (hf:DIR of a fine-tuned import, else empty).
model::ModelConfig checkpoint_model_config(const std::string& ckpt_path, std::string* init_from = nullptr);
model::ModelConfig hf_model_config(const std::string& hf_dir);

LoadedModel load_checkpoint_model(const std::string& ckpt_path, model::ExpertShard shard = {});
LoadedModel load_hf_model(const std::string& hf_dir, model::ExpertShard shard = {});

}  // namespace frugal::apps
