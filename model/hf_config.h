// Model configuration from a Hugging Face config.json of the MoE families deepseek_v3, deepseek_v2, qwen3_moe,
// qwen2_moe, mixtral, olmoe, glm4_moe and ernie4_5_moe. A field Frugal's configuration cannot express is refused by
// name. (What the configuration expresses, the model may still not train: see hf_importable().)
//
// Every field goes through the same key registry and ModelConfig::validate() as the YAML key it maps to, so a
// config.json passes exactly the range and consistency checks of a Frugal YAML; a message names config.json's path,
// line and column, the JSON field and the value. Numbers must be JSON numbers (a quoted "32" is refused), integers
// integers, and a field may appear only once.
#pragma once

#include <set>
#include <string>

#include "model/config.h"

namespace frugal::model {

ModelConfig model_from_hf_config(const std::string& json_path, std::string* model_type = nullptr);
// The same from config.json's text; path is only quoted in messages.
ModelConfig model_from_hf_config_text(const std::string& json_text, const std::string& path,
                                      std::string* model_type = nullptr);

// The Hugging Face tensor names a model of this config and model_type (qwen3_moe, qwen2_moe, mixtral, olmoe) may
// hold: every tensor the import reads, and lm_head.weight also when the embeddings are tied.
std::set<std::string> hf_tensor_names(const ModelConfig& m, const std::string& model_type);

}  // namespace frugal::model
