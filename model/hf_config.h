// Model configuration from a Hugging Face config.json of the MoE families deepseek_v3, deepseek_v2, qwen3_moe,
// qwen2_moe, mixtral, olmoe, glm4_moe and ernie4_5_moe. A field Frugal's configuration cannot express is refused by
// name. (What the configuration expresses, the model may still not train: see hf_importable().)
#pragma once

#include <string>

#include "model/config.h"

namespace frugal::model {

ModelConfig model_from_hf_config(const std::string& json_path, std::string* model_type = nullptr);

}  // namespace frugal::model
