#include "model/hf_config.h"

#include <yaml-cpp/yaml.h>

#include <iomanip>
#include <map>
#include <set>
#include <sstream>

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
    void set_value(const std::string& key, int64_t v, const std::string& how) { set_text(key, std::to_string(v), how); }
    void set_text(const std::string& key, const std::string& text, const std::string& how) {
        fields_.set(key, text, path_ + ": " + how);
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

// A string field that must take one of the values the family's transformers code implements.
std::string one_of(HfFields& f, const char* k, const std::string& dflt, const std::set<std::string>& allowed,
                   const std::string& type, const std::string& path, const std::string& why) {
    const std::string v = f.opt_string(k, dflt);
    FRUGAL_CONFIG_CHECK(allowed.count(v) > 0, f.has(k) ? input::at(path, f.node(k).Mark()) : path, ": \"", k, "\": \"",
                        v, "\" cannot be imported for ", type, " (", why, ")");
    return v;
}

// Group-limited routing (n_group, topk_group) with the group score of the family's topk_method.
void read_groups(HfFields& f, ModelConfig& m, const std::string& type, const std::string& path, int64_t dflt_groups,
                 int64_t dflt_topk_groups) {
    const bool v2 = type == "deepseek_v2";
    const std::string method =
        v2 ? one_of(f, "topk_method", "greedy", {"greedy", "group_limited_greedy"}, type, path,
                    "transformers' DeepseekV2TopkRouter implements greedy and group_limited_greedy")
           : one_of(f, "topk_method", "noaux_tc", {"noaux_tc"}, type, path,
                    "its router is noaux_tc: sigmoid scores, e_score_correction_bias, groups by their top-2 sum");
    if (method == "greedy") return;  // every expert eligible: n_group and topk_group unused
    m.moe.group_score = v2 ? "max" : "top2_sum";
    if (f.has("n_group"))
        f.set("moe.n_group", f.node("n_group"), "n_group");
    else if (v2)
        f.req("n_group", type + " with topk_method group_limited_greedy");
    else
        f.set_value("moe.n_group", dflt_groups, "n_group (absent: " + type + "'s default)");
    if (f.has("topk_group"))
        f.set("moe.topk_group", f.node("topk_group"), "topk_group");
    else if (v2)
        f.req("topk_group", type + " with topk_method group_limited_greedy");
    else
        f.set_value("moe.topk_group", dflt_topk_groups, "topk_group (absent: " + type + "'s default)");
}

// rope_parameters (transformers 5) or rope_scaling (earlier configs): the RoPE base, YaRN and partial rotation.
void read_rope(HfFields& f, ModelConfig& m, const std::string& type, const std::string& path) {
    const char* k = f.has("rope_parameters") ? "rope_parameters" : f.has("rope_scaling") ? "rope_scaling" : nullptr;
    YAML::Node rp;
    if (k) {
        rp = f.node(k);
        FRUGAL_CONFIG_CHECK(rp.IsMap(), input::at(path, rp.Mark()), ": \"", k, "\": expected an object");
    }
    auto has = [&](const char* n) { return rp && rp[n] && !rp[n].IsNull(); };
    const std::string sub = k ? std::string(k) + "." : "";
    const std::string theta = sub + "rope_theta";
    if (has("rope_theta")) f.set("model.rope_theta", rp["rope_theta"], theta.c_str());
    const char* type_key = has("rope_type") ? "rope_type" : "type";
    const std::string rope_type = has(type_key) ? input::as_string(rp[type_key], path, sub + type_key) : "default";
    FRUGAL_CONFIG_CHECK(rope_type == "default" || rope_type == "yarn", input::at(path, rp[type_key].Mark()), ": ", sub,
                        type_key, " \"", rope_type,
                        "\" cannot be imported (Frugal's RoPE is unscaled (default) or YaRN (yarn))");
    const std::string prf = sub + "partial_rotary_factor";
    if (has("partial_rotary_factor"))
        f.set("model.partial_rotary_factor", rp["partial_rotary_factor"], prf.c_str());
    else if (f.has("partial_rotary_factor"))
        f.set("model.partial_rotary_factor", f.node("partial_rotary_factor"), "partial_rotary_factor");
    else if (type == "glm4_moe")
        f.set_text("model.partial_rotary_factor", "0.5", "partial_rotary_factor (absent: glm4_moe's default 0.5)");
    if (rope_type != "yarn") return;
    m.rope_scaling = "yarn";
    FRUGAL_CONFIG_CHECK(!has("attention_factor"), input::at(path, rp["attention_factor"].Mark()), ": ", sub,
                        "attention_factor cannot be imported (Frugal derives YaRN's factor from mscale and "
                        "mscale_all_dim): remove it if it equals that");
    FRUGAL_CONFIG_CHECK(!has("truncate") || input::as_bool(rp["truncate"], path, sub + "truncate"),
                        input::at(path, rp["truncate"].Mark()), ": ", sub,
                        "truncate false cannot be imported (Frugal's YaRN ramp rounds its bounds, as truncate true)");
    static const std::pair<const char*, const char*> keys[] = {
        {"original_max_position_embeddings", "model.rope_original_max_seq_len"},
        {"beta_fast", "model.yarn_beta_fast"},
        {"beta_slow", "model.yarn_beta_slow"},
        {"mscale", "model.yarn_mscale"},
        {"mscale_all_dim", "model.yarn_mscale_all_dim"}};
    for (const auto& [json, key] : keys) {
        const std::string name = sub + json;
        if (has(json)) f.set(key, rp[json], name.c_str());
    }
    if (has("factor")) {
        const std::string name = sub + "factor";
        f.set("model.rope_factor", rp["factor"], name.c_str());
    } else {
        FRUGAL_CONFIG_CHECK(has("original_max_position_embeddings"), path, ": ", sub,
                            "factor is absent and so is original_max_position_embeddings: YaRN's factor is unknown "
                            "(give rope_parameters.factor)");
        std::ostringstream os;
        os << std::setprecision(17) << double(m.max_seq_len) / double(m.rope_original_max_seq_len);
        f.set_text("model.rope_factor", os.str(), "max_position_embeddings / original_max_position_embeddings");
    }
}

// DeepSeek-V3 (also kimi_k2) and DeepSeek-V2: multi-head latent attention, shared experts, dense first layers;
// V3 routes by sigmoid scores with e_score_correction_bias (noaux_tc), V2 by softmax (greedy or
// group_limited_greedy). Absent fields take transformers' configuration defaults.
void read_deepseek(HfFields& f, ModelConfig& m, const std::string& type, const std::string& path) {
    const bool v3 = type == "deepseek_v3";
    f.set_req("moe.n_experts", "n_routed_experts", type);
    f.set_req("moe.top_k", "num_experts_per_tok", type);
    f.set_req("moe.d_expert", "moe_intermediate_size", type);
    m.moe.n_shared_experts = v3 ? 1 : 2;
    f.set_opt("moe.n_shared_experts", "n_shared_experts");
    m.dense_layers = v3 ? 3 : 0;
    f.set_opt("model.dense_layers", "first_k_dense_replace");
    FRUGAL_CONFIG_CHECK(f.opt_int("moe_layer_freq", 1) == 1, path, ": \"moe_layer_freq\" != 1 cannot be expressed");
    // Absent: 0. transformers' default of 1 names modules for generation its checkpoints need not hold.
    f.set_opt("model.mtp_modules", "num_nextn_predict_layers");
    m.attention = "mla";
    m.head_dim = 0;    // config.json's head_dim is qk_rope_head_dim
    m.n_kv_heads = 0;  // MLA expands keys and values for every head
    if (f.has("q_lora_rank"))
        f.set("model.q_lora_rank", f.node("q_lora_rank"), "q_lora_rank");
    else
        m.q_lora_rank = f.node("q_lora_rank") ? 0 : 1536;  // null: queries projected directly (DeepSeek-V2-Lite)
    f.set_opt("model.kv_lora_rank", "kv_lora_rank");
    f.set_opt("model.qk_nope_head_dim", "qk_nope_head_dim");
    f.set_opt("model.qk_rope_head_dim", "qk_rope_head_dim");
    f.set_opt("model.v_head_dim", "v_head_dim");
    FRUGAL_CONFIG_CHECK(!f.opt_bool("attention_bias", false), input::at(path, f.node("attention_bias").Mark()),
                        ": \"attention_bias\": true cannot be imported (", type,
                        " would put biases on q_a_proj, kv_a_proj_with_mqa and o_proj; Frugal's MLA has none)");
    FRUGAL_CONFIG_CHECK(!f.opt_bool("mlp_bias", false), input::at(path, f.node("mlp_bias").Mark()),
                        ": \"mlp_bias\": true cannot be imported (Frugal's feed-forward blocks have no biases)");
    m.moe.routed_scaling_factor = v3 ? 2.5 : 1.0;
    f.set_opt("moe.routed_scaling_factor", "routed_scaling_factor");
    m.moe.score_func = one_of(f, "scoring_func", v3 ? "sigmoid" : "softmax", {v3 ? "sigmoid" : "softmax"}, type, path,
                              v3 ? "transformers' DeepseekV3TopkRouter scores by sigmoid"
                                 : "transformers' DeepseekV2TopkRouter scores by softmax");
    if (!v3)
        FRUGAL_CONFIG_CHECK(!f.opt_bool("norm_topk_prob", false), input::at(path, f.node("norm_topk_prob").Mark()),
                            ": \"norm_topk_prob\": true cannot be imported for deepseek_v2 (transformers' "
                            "DeepseekV2TopkRouter never renormalizes, so the model's reference behaviour is unclear)");
    read_groups(f, m, type, path, 8, 4);
}

// GLM-4.5 (glm4_moe) and dots.llm1 (dots1): grouped-query attention with sigmoid routing, e_score_correction_bias
// and top-2-sum groups (noaux_tc), shared experts, dense first layers.
void read_sigmoid_gqa(HfFields& f, ModelConfig& m, const std::string& type, const std::string& path) {
    const bool glm = type == "glm4_moe";
    f.set_req("moe.n_experts", "n_routed_experts", type);
    f.set_req("moe.top_k", "num_experts_per_tok", type);
    f.set_req("moe.d_expert", "moe_intermediate_size", type);
    m.moe.n_shared_experts = glm ? 1 : 0;
    f.set_opt("moe.n_shared_experts", "n_shared_experts");
    m.dense_layers = glm ? 1 : 0;
    f.set_opt("model.dense_layers", "first_k_dense_replace");
    m.moe.score_func = one_of(f, "scoring_func", "sigmoid", {"sigmoid"}, type, path, "its router scores by sigmoid");
    f.set_opt("moe.routed_scaling_factor", "routed_scaling_factor");
    read_groups(f, m, type, path, 1, 1);
    if (glm) {
        f.set_opt("model.mtp_modules", "num_nextn_predict_layers");
        m.qk_norm = f.opt_bool("use_qk_norm", false);
        m.attn_bias = f.opt_bool("attention_bias", false);  // q, k and v only; o_proj has none
        return;
    }
    m.qk_norm = true;  // Dots1Attention: RMSNorm over each head of q and k
    FRUGAL_CONFIG_CHECK(!f.opt_bool("attention_bias", false), input::at(path, f.node("attention_bias").Mark()),
                        ": \"attention_bias\": true cannot be imported (dots1 would put a bias on o_proj too; "
                        "Frugal's has none)");
    if (f.has("layer_types")) {
        const YAML::Node lt = f.node("layer_types");
        FRUGAL_CONFIG_CHECK(lt.IsSequence(), input::at(path, lt.Mark()), ": \"layer_types\": expected a list");
        for (const auto& t : lt)
            FRUGAL_CONFIG_CHECK(input::as_string(t, path, "layer_types[]") == "full_attention",
                                input::at(path, t.Mark()), ": \"layer_types\": \"", t.as<std::string>(),
                                "\" cannot be imported (Frugal's attention is full causal)");
    } else if (f.has("sliding_window")) {
        FRUGAL_CONFIG_CHECK(f.opt_int("max_window_layers", 62) >= m.n_layers, path,
                            ": \"sliding_window\" with max_window_layers below num_hidden_layers cannot be imported "
                            "(Frugal's attention is full causal)");
    }
}

// Kimi K2 (model_type kimi_k2) is DeepSeek-V3's architecture and tensor names; so is any config whose
// architectures name DeepseekV3ForCausalLM.
std::string canonical_type(const YAML::Node& c, const std::string& type, const std::string& path) {
    if (type == "kimi_k2") return "deepseek_v3";
    const YAML::Node arch = c["architectures"];
    if (arch && arch.IsSequence())
        for (const auto& a : arch)
            if (input::as_string(a, path, "\"architectures\"") == "DeepseekV3ForCausalLM") return "deepseek_v3";
    return type;
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
    } else if (type == "deepseek_v3" || type == "deepseek_v2") {
        read_deepseek(f, m, type, path);
    } else if (type == "glm4_moe" || type == "dots1") {
        read_sigmoid_gqa(f, m, type, path);
    } else if (type == "minimax_m2") {
        // Every layer MoE; sigmoid scores with a correction bias, always renormalized; QK-norm over the whole
        // projection; partial rotary as rotary_dim (MiniMaxM2Config.convert_rope_params_to_dict).
        f.set_req("moe.n_experts", f.has("num_local_experts") ? "num_local_experts" : "num_experts", type);
        f.set_req("moe.top_k", "num_experts_per_tok", type);
        f.set_req("moe.d_expert", "intermediate_size", type);
        m.moe.score_func = "sigmoid";
        f.set_opt("moe.score_func", "scoring_func");
        m.qk_norm = f.opt_bool("use_qk_norm", true);
        m.qk_norm_scope = "projection";
        if (f.has("rotary_dim") && m.partial_rotary_factor == 1.0) {
            const int64_t rot = f.integer(f.node("rotary_dim"), "rotary_dim", 2);
            FRUGAL_CONFIG_CHECK(rot <= m.hd(), path, ": \"rotary_dim\" (", rot, ") exceeds the head width (", m.hd(),
                                ")");
            m.partial_rotary_factor = double(rot) / double(m.hd());
        }
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
                            "' is not supported; supported: deepseek_v3 (and kimi_k2), deepseek_v2, qwen3_moe, "
                            "qwen2_moe, mixtral, olmoe, glm4_moe, dots1, minimax_m2, ernie4_5_moe");
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
    const std::string type = canonical_type(c, input::as_string(c["model_type"], path, "\"model_type\""), path);
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
        read_rope(f, m, type, path);  // transformers 5 writes the RoPE base inside rope_parameters
        f.set_opt("model.norm_eps", "rms_norm_eps");
        if (f.has("intermediate_size"))
            f.set("model.d_ff", f.node("intermediate_size"), "intermediate_size");
        else
            f.set_value("model.d_ff", 4 * m.d_model, "4 x hidden_size (no \"intermediate_size\")");
        read_family(f, m, type, path);
        // Absent norm_topk_prob takes the family's transformers default (Mixtral always renormalizes).
        m.moe.norm_topk_prob = type == "mixtral" || type == "deepseek_v3" || type == "glm4_moe" || type == "minimax_m2";
        f.set_opt("moe.norm_topk_prob", "norm_topk_prob");
        m.validate();
    } catch (const ConfigError& e) {
        const std::string what = e.what();
        if (what.rfind(path, 0) == 0) throw;
        throw ConfigError(e.where(), path + ": " + what + f.sources(what));
    }
    return m;
}

namespace {

bool has_router_bias(const std::string& type) {
    return type == "deepseek_v3" || type == "glm4_moe" || type == "dots1" || type == "minimax_m2";
}

// The tensors of one decoder block under prefix L ("model.layers.N."); moe: a routed block.
void insert_block_names(std::set<std::string>& names, const ModelConfig& m, const std::string& type,
                        const std::string& L, bool moe_block) {
    for (const char* n : {"input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.o_proj.weight"})
        names.insert(L + n);
    if (m.is_mla()) {
        if (m.q_lora_rank == 0) {
            names.insert(L + "self_attn.q_proj.weight");
        } else {
            for (const char* n :
                 {"self_attn.q_a_proj.weight", "self_attn.q_a_layernorm.weight", "self_attn.q_b_proj.weight"})
                names.insert(L + n);
        }
        for (const char* n :
             {"self_attn.kv_a_proj_with_mqa.weight", "self_attn.kv_a_layernorm.weight", "self_attn.kv_b_proj.weight"})
            names.insert(L + n);
    } else {
        for (const char* n : {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"})
            names.insert(L + n);
    }
    if (m.attn_bias)
        for (const char* n : {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"})
            names.insert(L + n);
    if (m.qk_norm) {
        names.insert(L + "self_attn.q_norm.weight");
        names.insert(L + "self_attn.k_norm.weight");
    }
    const std::string moe = L + (type == "mixtral" ? "block_sparse_moe." : "mlp.");
    if (!moe_block) {
        for (const char* n : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}) names.insert(L + "mlp." + n);
        return;
    }
    names.insert(moe + "gate.weight");
    if (has_router_bias(type)) names.insert(moe + "gate.e_score_correction_bias");
    // DeepSeek, GLM-4.5 and dots1 spell the shared block shared_experts; Qwen2-MoE shared_expert.
    const std::string shared = moe + (type == "qwen2_moe" ? "shared_expert." : "shared_experts.");
    if (m.moe.n_shared_experts > 0)
        for (const char* n : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}) names.insert(shared + n);
    if (m.moe.shared_expert_gate) names.insert(moe + "shared_expert_gate.weight");
    for (int64_t e = 0; e < m.moe.n_experts; ++e) {
        const std::string x = moe + "experts." + std::to_string(e) + ".";
        if (type == "mixtral")
            for (const char* n : {"w1.weight", "w2.weight", "w3.weight"}) names.insert(x + n);
        else
            for (const char* n : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}) names.insert(x + n);
    }
}

}  // namespace

std::set<std::string> hf_tensor_names(const ModelConfig& m, const std::string& type) {
    std::set<std::string> names = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"};
    for (int64_t l = 0; l < m.n_layers; ++l)
        insert_block_names(names, m, type, "model.layers." + std::to_string(l) + ".", m.is_moe_layer(l));
    // Multi-token-prediction module i sits at layer n_layers + i (DeepSeek-V3's and GLM-4.5's layout).
    for (int64_t i = 0; i < m.mtp_modules; ++i) {
        const int64_t l = m.n_layers + i;
        const std::string L = "model.layers." + std::to_string(l) + ".";
        insert_block_names(names, m, type, L, m.is_moe_layer(l));
        for (const char* n : {"enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight",
                              "shared_head.head.weight", "embed_tokens.weight"})
            names.insert(L + n);
    }
    return names;
}

HfLayout hf_layout(const std::string& json_path) {
    HfLayout out;
    const ModelConfig m = model_from_hf_config(json_path, &out.model_type);
    out.n_layers = m.n_layers;
    out.mtp_layers = m.mtp_modules;
    if (m.is_mla()) {
        // DeepSeek-V2 rotates interleaved pairs always; V3 when rope_interleave (transformers' default true).
        out.rope_interleave = true;
        const YAML::Node c = YAML::Load(input::read_file(json_path, "config.json", "give the model's config.json"));
        if (out.model_type == "deepseek_v3" && c["rope_interleave"] && !c["rope_interleave"].IsNull())
            out.rope_interleave = input::as_bool(c["rope_interleave"], json_path, "\"rope_interleave\"");
    }
    return out;
}

}  // namespace frugal::model
