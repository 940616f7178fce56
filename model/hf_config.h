// Model configuration from a Hugging Face config.json of the MoE families deepseek_v3 (also kimi_k2, or any
// config whose architectures name DeepseekV3ForCausalLM), deepseek_v2, qwen3_moe, qwen2_moe, mixtral, olmoe,
// glm4_moe, dots1, minimax_m2 and ernie4_5_moe. A field Frugal's configuration cannot express is refused by name;
// absent fields take the defaults of the family's transformers configuration class. (What the configuration
// expresses, not every family imports weights: see checkpoint::check_importable().)
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

// The Hugging Face tensor names a model of this config and model_type may hold: every tensor the import reads,
// lm_head.weight also when the embeddings are tied, the routers' e_score_correction_bias (deepseek_v3, glm4_moe,
// dots1, minimax_m2), and for each of m.mtp_modules multi-token-prediction modules the block at layer n_layers + i
// with its enorm, hnorm, eh_proj, shared_head.{norm,head} and embed_tokens.
std::set<std::string> hf_tensor_names(const ModelConfig& m, const std::string& model_type);

// What a checkpoint's config.json says about its tensors beyond the ModelConfig.
struct HfLayout {
    std::string model_type;  // canonical: kimi_k2 reads as deepseek_v3
    int64_t n_layers = 0;
    int64_t mtp_layers = 0;        // num_nextn_predict_layers: blocks n_layers .. n_layers + mtp_layers - 1
    bool rope_interleave = false;  // MLA rotary rows in interleaved pairs (DeepSeek-V2 always; V3 rope_interleave)
};
HfLayout hf_layout(const std::string& json_path);

}  // namespace frugal::model
