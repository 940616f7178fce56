// Loading a whole model (every expert, one process) for the commands that work on a trained model: from a Frugal
// checkpoint (its stored config and parameters) or from a Hugging Face directory.
#pragma once

#include <memory>
#include <string>

#include "model/transformer.h"

namespace frugal::apps {

struct LoadedModel {
    model::ModelConfig cfg;
    std::unique_ptr<model::Transformer<float>> net;
};

LoadedModel load_checkpoint_model(const std::string& ckpt_path);
LoadedModel load_hf_model(const std::string& hf_dir);

}  // namespace frugal::apps
