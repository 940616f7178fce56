#include "model/hf_config.h"

#include <yaml-cpp/yaml.h>

#include "core/error.h"

namespace frugal::model {

ModelConfig model_from_hf_config(const std::string& path, std::string* model_type) {
    YAML::Node c;
    try {
        c = YAML::LoadFile(path);  // JSON is YAML
    } catch (const YAML::Exception& e) {
        FRUGAL_CONFIG_ERROR(path, ": not valid JSON: ", e.what());
    }
    FRUGAL_CONFIG_CHECK(c["model_type"], path, ": no \"model_type\" field: not a Hugging Face config.json");
    const std::string type = c["model_type"].as<std::string>();
    if (model_type) *model_type = type;
    auto req = [&](const char* k) -> YAML::Node {
        FRUGAL_CONFIG_CHECK(c[k] && !c[k].IsNull(), path, ": model_type ", type, " needs the field \"", k, "\"");
        return c[k];
    };
    auto opt_i = [&](const char* k, int64_t dflt) -> int64_t {
        return c[k] && !c[k].IsNull() ? c[k].as<int64_t>() : dflt;
    };
    ModelConfig m;
    m.vocab_size = req("vocab_size").as<int64_t>();
    m.d_model = req("hidden_size").as<int64_t>();
    m.n_layers = req("num_hidden_layers").as<int64_t>();
    m.n_heads = req("num_attention_heads").as<int64_t>();
    m.n_kv_heads = opt_i("num_key_value_heads", m.n_heads);
    m.head_dim = opt_i("head_dim", 0);
    m.tie_embeddings = c["tie_word_embeddings"] && c["tie_word_embeddings"].as<bool>();
    m.max_seq_len = opt_i("max_position_embeddings", 4096);
    if (c["rope_theta"]) m.rope_theta = c["rope_theta"].as<double>();
    // transformers 5 writes the RoPE base inside rope_parameters.
    if (c["rope_parameters"] && c["rope_parameters"]["rope_theta"])
        m.rope_theta = c["rope_parameters"]["rope_theta"].as<double>();
    if (c["rms_norm_eps"]) m.norm_eps = c["rms_norm_eps"].as<double>();
    m.d_ff = opt_i("intermediate_size", 4 * m.d_model);
    if (type == "mixtral") {
        m.moe.n_experts = req("num_local_experts").as<int64_t>();
        m.moe.top_k = req("num_experts_per_tok").as<int64_t>();
        m.moe.d_expert = req("intermediate_size").as<int64_t>();
    } else if (type == "qwen3_moe" || type == "qwen2_moe" || type == "olmoe") {
        // transformers 5 names the expert count num_local_experts for these families too.
        m.moe.n_experts = c["num_experts"] ? req("num_experts").as<int64_t>() : req("num_local_experts").as<int64_t>();
        m.moe.top_k = req("num_experts_per_tok").as<int64_t>();
        m.moe.d_expert =
            type == "olmoe" ? req("intermediate_size").as<int64_t>() : req("moe_intermediate_size").as<int64_t>();
        m.qk_norm = type != "qwen2_moe";
        if (type == "olmoe") m.qk_norm_scope = "projection";  // q_norm over hidden_size, k_norm over kv width
        if (c["mlp_only_layers"] && c["mlp_only_layers"].IsSequence() && c["mlp_only_layers"].size() > 0)
            FRUGAL_CONFIG_ERROR(path,
                                ": \"mlp_only_layers\" (dense layers between MoE layers) cannot be expressed: "
                                "Frugal's dense layers are the first dense_layers blocks");
        FRUGAL_CONFIG_CHECK(opt_i("decoder_sparse_step", 1) == 1, path,
                            ": \"decoder_sparse_step\" != 1 (MoE every other layer) cannot be expressed");
        if (type == "qwen2_moe") {
            const int64_t shared = opt_i("shared_expert_intermediate_size", 0);
            FRUGAL_CONFIG_CHECK(shared % m.moe.d_expert == 0, path, ": \"shared_expert_intermediate_size\" (", shared,
                                ") is not a multiple of moe_intermediate_size (", m.moe.d_expert,
                                "): Frugal's shared experts are n_shared_experts x d_expert wide");
            m.moe.n_shared_experts = shared / m.moe.d_expert;
            m.moe.shared_expert_gate = shared > 0;  // Qwen2MoeSparseMoeBlock.shared_expert_gate
            // transformers 5 names it qkv_bias; earlier versions always put biases on q, k and v.
            m.attn_bias = !c["qkv_bias"] || c["qkv_bias"].as<bool>();
        }
    } else if (type == "deepseek_v3" || type == "deepseek_v2" || type == "glm4_moe") {
        m.moe.n_experts = req("n_routed_experts").as<int64_t>();
        m.moe.top_k = req("num_experts_per_tok").as<int64_t>();
        m.moe.d_expert = req("moe_intermediate_size").as<int64_t>();
        m.moe.n_shared_experts = opt_i("n_shared_experts", 0);
        m.dense_layers = opt_i("first_k_dense_replace", 0);
        FRUGAL_CONFIG_CHECK(opt_i("moe_layer_freq", 1) == 1, path, ": \"moe_layer_freq\" != 1 cannot be expressed");
        m.mtp_modules = opt_i("num_nextn_predict_layers", 0);
        if (type != "glm4_moe") {
            m.attention = "mla";
            m.q_lora_rank = opt_i("q_lora_rank", 0);  // null in DeepSeek-V2-Lite
            m.kv_lora_rank = req("kv_lora_rank").as<int64_t>();
            m.qk_nope_head_dim = req("qk_nope_head_dim").as<int64_t>();
            m.qk_rope_head_dim = req("qk_rope_head_dim").as<int64_t>();
            m.v_head_dim = req("v_head_dim").as<int64_t>();
        } else {
            m.qk_norm = c["use_qk_norm"] && c["use_qk_norm"].as<bool>();
            m.attn_bias = c["attention_bias"] && c["attention_bias"].as<bool>();
        }
        if (c["scoring_func"]) m.moe.score_func = c["scoring_func"].as<std::string>();
        if (c["routed_scaling_factor"]) m.moe.routed_scaling_factor = c["routed_scaling_factor"].as<double>();
    } else if (type == "ernie4_5_moe") {
        m.moe.n_experts = req("moe_num_experts").as<int64_t>();
        m.moe.top_k = req("moe_k").as<int64_t>();
        m.moe.d_expert = req("moe_intermediate_size").as<int64_t>();
        m.moe.n_shared_experts = opt_i("moe_num_shared_experts", 0);
        m.dense_layers = opt_i("moe_layer_start_index", 0);
        FRUGAL_CONFIG_CHECK(opt_i("moe_layer_interval", 1) == 1, path,
                            ": \"moe_layer_interval\" != 1 cannot be expressed");
    } else {
        FRUGAL_CONFIG_ERROR(path, ": model_type '", type,
                            "' is not supported; supported: deepseek_v3, deepseek_v2, qwen3_moe, qwen2_moe, mixtral, "
                            "olmoe, glm4_moe, ernie4_5_moe");
    }
    // Absent norm_topk_prob takes the family's transformers default (Mixtral always renormalizes).
    if (c["norm_topk_prob"] && !c["norm_topk_prob"].IsNull())
        m.moe.norm_topk_prob = c["norm_topk_prob"].as<bool>();
    else
        m.moe.norm_topk_prob = type == "mixtral" || type == "deepseek_v3" || type == "glm4_moe";
    if (m.moe.score_func != "softmax" && m.moe.score_func != "sigmoid")
        FRUGAL_CONFIG_ERROR(path, ": scoring_func '", m.moe.score_func, "' is not softmax or sigmoid");
    m.validate();
    return m;
}

}  // namespace frugal::model
