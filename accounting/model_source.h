// Models for the accounting: a preset name (configs/models/NAME.yaml), a Frugal YAML file (its model: and moe:
// sections), or a Hugging Face config.json of the MoE families deepseek_v3 (and kimi_k2), deepseek_v2, qwen3_moe,
// qwen2_moe, mixtral, olmoe, glm4_moe, dots1, minimax_m2 and ernie4_5_moe, labelled with its family and routing
// ("DIR (glm4_moe, sigmoid routing)"). A field Frugal's model cannot express is refused by name.
#pragma once

#include <string>

#include "model/config.h"
#include "model/hf_config.h"

namespace frugal::accounting {

// presets_dir: where NAME.yaml presets live (configs/models).
model::ModelConfig load_model(const std::string& source, const std::string& presets_dir, std::string* label);
using model::model_from_hf_config;

}  // namespace frugal::accounting
