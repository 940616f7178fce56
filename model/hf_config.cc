#include "model/hf_config.h"

#include <yaml-cpp/yaml.h>

#include <map>
#include <set>

#include "core/config_fields.h"
#include "core/error.h"
#include "core/input_file.h"

namespace frugal::model {

namespace {

// Reads the fields of one config.json into a ModelConfig through its key registry.
class HfFields {
  public:
    HfFields(const YAML::Node& root, const std::string& path, ModelConfig& m) : c_(root), path_(path) {
        m.register_fields(fields_, "model.");
    }

    bool has(const char* k) const { return c_[k] && !c_[k].IsNull(); }
    YAML::Node node(const char* k) const { return c_[k]; }
    std::string field(const char* k) const { return std::string("\"") + k + "\""; }

    YAML::Node req(const char* k, const std::string& type) const {
        FRUGAL_CONFIG_CHECK(has(k), path_, ": model_type ", type, " needs the field \"", k,
                            "\": add it to config.json (see the model's reference config)");
        return c_[k];
    }
    int64_t integer(const YAML::Node& n, const char* k, int64_t min = 0,
                    int64_t max = std::numeric_limits<int64_t>::max()) const {
        return input::as_int(n, path_, field(k), min, max);
    }
    int64_t opt_int(const char* k, int64_t dflt) const { return has(k) ? integer(c_[k], k) : dflt; }
    bool opt_bool(const char* k, bool dflt) const { return has(k) ? input::as_bool(c_[k], path_, field(k)) : dflt; }
    std::string opt_string(const char* k, const std::string& dflt) const {
        return has(k) ? input::as_string(c_[k], path_, field(k)) : dflt;
    }

    // Sets model key `key` from JSON field k (node n): the registry's type and range checks, with the field named.
    void set(const std::string& key, const YAML::Node& n, const char* k) {
        const ConfigField* f = fields_.find(key);
        FRUGAL_CHECK(f != nullptr, "no model key ", key);
        std::string text;
        if (f->type == "int")
            text = std::to_string(integer(n, k, std::numeric_limits<int64_t>::min()));
        else if (f->type == "float")
            text = input::number_text(n, path_, field(k), "a number");
        else if (f->type == "bool")
            text = input::as_bool(n, path_, field(k)) ? "true" : "false";
        else
            text = input::as_string(n, path_, field(k));
        fields_.set(key, text, input::at(path_, n.Mark()) + ": " + field(k) + " (Frugal's " + key + ")");
        json_of_[key] = k;
    }
    void set_req(const std::string& key, const char* k, const std::string& type) { set(key, req(k, type), k); }
    void set_opt(const std::string& key, const char* k) {
        if (has(k)) set(key, c_[k], k);
    }
    void set_value(const std::string& key, int64_t v, const std::string& how) {
        fields_.set(key, std::to_string(v), path_ + ": " + how);
        json_of_[key] = how;
    }
    // Which JSON fields the model keys in a message came from.
    std::string sources(const std::string& message) const {
        std::string out;
        for (const auto& [key, json] : json_of_)
            if (message.find(key) != std::string::npos) out += (out.empty() ? "" : ", ") + key + " is \"" + json + "\"";
        return out.empty() ? out : " (in config.json: " + out + ")";
    }

  private:
    const YAML::Node& c_;
    std::string path_;
    ConfigFields fields_;
    std::map<std::string, std::string> json_of_;
};

YAML::Node parse_json_object(const std::string& text, const std::string& path) {
    YAML::Node c;
    try {
        c = YAML::Load(text);  // JSON is YAML
    } catch (const YAML::Exception& e) {
        FRUGAL_CONFIG_ERROR(input::at(path, e.mark), ": not valid JSON: ", e.msg);
    }
    FRUGAL_CONFIG_CHECK(c.IsMap() && text.find_first_not_of(" \t\r\n") != std::string::npos &&
                            text[text.find_first_not_of(" \t\r\n")] == '{',
                        path, ": not a JSON object ({...}): not a Hugging Face config.json");
    std::set<std::string> seen;
    for (auto it = c.begin(); it != c.end(); ++it) {
        const std::string k = input::as_string(it->first, path, "a key");
        FRUGAL_CONFIG_CHECK(seen.insert(k).second, input::at(path, it->first.Mark()), ": field \"", k,
                            "\" appears twice: keep one");
    }
    return c;
}

void read_family(HfFields& f, ModelConfig& m, const std::string& type, const std::string& path) {
    if (type == "mixtral") {
        f.set_req("moe.n_experts", "num_local_experts", type);
        f.set_req("moe.top_k", "num_experts_per_tok", type);
        f.set_req("moe.d_expert", "intermediate_size", type);
    } else if (type == "qwen3_moe" || type == "qwen2_moe" || type == "olmoe") {
        // transformers 5 names the expert count num_local_experts for these families too.
        f.set_req("moe.n_experts", f.has("num_experts") ? "num_experts" : "num_local_experts", type);
        f.set_req("moe.top_k", "num_experts_per_tok", type);
        f.set_req("moe.d_expert", type == "olmoe" ? "intermediate_size" : "moe_intermediate_size", type);
        m.qk_norm = type != "qwen2_moe";
        if (type == "olmoe") m.qk_norm_scope = "projection";  // q_norm over hidden_size, k_norm over kv width
        if (f.has("mlp_only_layers")) {
            const YAML::Node n = f.node("mlp_only_layers");
            FRUGAL_CONFIG_CHECK(n.IsSequence(), input::at(path, n.Mark()),
                                ": \"mlp_only_layers\": expected a list of layer indices");
            FRUGAL_CONFIG_CHECK(n.size() == 0, input::at(path, n.Mark()),
                                ": \"mlp_only_layers\" (dense layers between MoE layers) cannot be expressed: "
                                "Frugal's dense layers are the first dense_layers blocks");
        }
        FRUGAL_CONFIG_CHECK(f.opt_int("decoder_sparse_step", 1) == 1, path,
                            ": \"decoder_sparse_step\" != 1 (MoE every other layer) cannot be expressed");
        if (type == "qwen2_moe") {
            const int64_t shared = f.opt_int("shared_expert_intermediate_size", 0);
            FRUGAL_CONFIG_CHECK(shared % m.moe.d_expert == 0, path, ": \"shared_expert_intermediate_size\" (", shared,
                                ") is not a multiple of moe_intermediate_size (", m.moe.d_expert,
                                "): Frugal's shared experts are n_shared_experts x d_expert wide");
            f.set_value("moe.n_shared_experts", shared / m.moe.d_expert,
                        "shared_expert_intermediate_size / moe_intermediate_size");
            m.moe.shared_expert_gate = shared > 0;  // Qwen2MoeSparseMoeBlock.shared_expert_gate
            // transformers 5 names it qkv_bias; earlier versions always put biases on q, k and v.
            m.attn_bias = f.opt_bool("qkv_bias", true);
        }
    } else if (type == "deepseek_v3" || type == "deepseek_v2" || type == "glm4_moe") {
        f.set_req("moe.n_experts", "n_routed_experts", type);
        f.set_req("moe.top_k", "num_experts_per_tok", type);
        f.set_req("moe.d_expert", "moe_intermediate_size", type);
        f.set_opt("moe.n_shared_experts", "n_shared_experts");
        f.set_opt("model.dense_layers", "first_k_dense_replace");
        FRUGAL_CONFIG_CHECK(f.opt_int("moe_layer_freq", 1) == 1, path, ": \"moe_layer_freq\" != 1 cannot be expressed");
        f.set_opt("model.mtp_modules", "num_nextn_predict_layers");
        if (type != "glm4_moe") {
            m.attention = "mla";
            f.set_opt("model.q_lora_rank", "q_lora_rank");  // null in DeepSeek-V2-Lite
            f.set_req("model.kv_lora_rank", "kv_lora_rank", type);
            f.set_req("model.qk_nope_head_dim", "qk_nope_head_dim", type);
            f.set_req("model.qk_rope_head_dim", "qk_rope_head_dim", type);
            f.set_req("model.v_head_dim", "v_head_dim", type);
        } else {
            m.qk_norm = f.opt_bool("use_qk_norm", false);
            m.attn_bias = f.opt_bool("attention_bias", false);
        }
        f.set_opt("moe.score_func", "scoring_func");
        f.set_opt("moe.routed_scaling_factor", "routed_scaling_factor");
    } else if (type == "ernie4_5_moe") {
        f.set_req("moe.n_experts", "moe_num_experts", type);
        f.set_req("moe.top_k", "moe_k", type);
        f.set_req("moe.d_expert", "moe_intermediate_size", type);
        f.set_opt("moe.n_shared_experts", "moe_num_shared_experts");
        f.set_opt("model.dense_layers", "moe_layer_start_index");
        FRUGAL_CONFIG_CHECK(f.opt_int("moe_layer_interval", 1) == 1, path,
                            ": \"moe_layer_interval\" != 1 cannot be expressed");
    } else {
        FRUGAL_CONFIG_ERROR(path, ": model_type '", type,
                            "' is not supported; supported: deepseek_v3, deepseek_v2, qwen3_moe, qwen2_moe, mixtral, "
                            "olmoe, glm4_moe, ernie4_5_moe");
    }
}

}  // namespace

ModelConfig model_from_hf_config(const std::string& path, std::string* model_type) {
    const std::string text =
        input::read_file(path, "config.json", "give a Hugging Face model directory (or its config.json)");
    return model_from_hf_config_text(text, path, model_type);
}

ModelConfig model_from_hf_config_text(const std::string& text, const std::string& path, std::string* model_type) {
    const YAML::Node c = parse_json_object(text, path);
    FRUGAL_CONFIG_CHECK(c["model_type"], path, ": no \"model_type\" field: not a Hugging Face config.json");
    const std::string type = input::as_string(c["model_type"], path, "\"model_type\"");
    if (model_type) *model_type = type;
    ModelConfig m;
    HfFields f(c, path, m);
    try {
        f.set_req("model.vocab_size", "vocab_size", type);
        f.set_req("model.d_model", "hidden_size", type);
        f.set_req("model.n_layers", "num_hidden_layers", type);
        f.set_req("model.n_heads", "num_attention_heads", type);
        f.set_opt("model.n_kv_heads", "num_key_value_heads");
        if (!f.has("num_key_value_heads")) m.n_kv_heads = m.n_heads;
        f.set_opt("model.head_dim", "head_dim");
        f.set_opt("model.tie_embeddings", "tie_word_embeddings");
        m.max_seq_len = 4096;
        f.set_opt("model.max_seq_len", "max_position_embeddings");
        f.set_opt("model.rope_theta", "rope_theta");
        // transformers 5 writes the RoPE base inside rope_parameters.
        if (f.has("rope_parameters")) {
            const YAML::Node rp = f.node("rope_parameters");
            FRUGAL_CONFIG_CHECK(rp.IsMap(), input::at(path, rp.Mark()), ": \"rope_parameters\": expected an object");
            if (rp["rope_theta"] && !rp["rope_theta"].IsNull())
                f.set("model.rope_theta", rp["rope_theta"], "rope_parameters.rope_theta");
        }
        f.set_opt("model.norm_eps", "rms_norm_eps");
        if (f.has("intermediate_size"))
            f.set("model.d_ff", f.node("intermediate_size"), "intermediate_size");
        else
            f.set_value("model.d_ff", 4 * m.d_model, "4 x hidden_size (no \"intermediate_size\")");
        read_family(f, m, type, path);
        // Absent norm_topk_prob takes the family's transformers default (Mixtral always renormalizes).
        m.moe.norm_topk_prob = type == "mixtral" || type == "deepseek_v3" || type == "glm4_moe";
        f.set_opt("moe.norm_topk_prob", "norm_topk_prob");
        m.validate();
    } catch (const ConfigError& e) {
        const std::string what = e.what();
        if (what.rfind(path, 0) == 0) throw;
        throw ConfigError(e.where(), path + ": " + what + f.sources(what));
    }
    return m;
}

std::set<std::string> hf_tensor_names(const ModelConfig& m, const std::string& type) {
    std::set<std::string> names = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"};
    for (int64_t l = 0; l < m.n_layers; ++l) {
        const std::string L = "model.layers." + std::to_string(l) + ".";
        for (const char* n : {"input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
                              "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight"})
            names.insert(L + n);
        if (m.attn_bias)
            for (const char* n : {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"})
                names.insert(L + n);
        if (m.qk_norm) {
            names.insert(L + "self_attn.q_norm.weight");
            names.insert(L + "self_attn.k_norm.weight");
        }
        const std::string moe = L + (type == "mixtral" ? "block_sparse_moe." : "mlp.");
        if (!m.is_moe_layer(l)) {
            for (const char* n : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"})
                names.insert(L + "mlp." + n);
            continue;
        }
        names.insert(moe + "gate.weight");
        if (m.moe.n_shared_experts > 0)
            for (const char* n : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"})
                names.insert(moe + "shared_expert." + n);
        if (m.moe.shared_expert_gate) names.insert(moe + "shared_expert_gate.weight");
        for (int64_t e = 0; e < m.moe.n_experts; ++e) {
            const std::string x = moe + "experts." + std::to_string(e) + ".";
            if (type == "mixtral")
                for (const char* n : {"w1.weight", "w2.weight", "w3.weight"}) names.insert(x + n);
            else
                for (const char* n : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}) names.insert(x + n);
        }
    }
    return names;
}

}  // namespace frugal::model
