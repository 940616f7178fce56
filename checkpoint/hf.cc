#include "checkpoint/hf.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <memory>
#include <set>
#include <sstream>

#include "checkpoint/hf_reader.h"
#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/input_file.h"
#include "core/progress.h"
#include "model/hf_config.h"
#include "parallel/communicator.h"

namespace frugal::checkpoint {

namespace fs = std::filesystem;

namespace {

std::string model_type_of(const std::string& dir) {
    std::string type;
    model::model_from_hf_config((fs::path(dir) / "config.json").string(), &type);
    return type;
}

// One Hugging Face tensor that fills part of a Frugal parameter: elements [offset, offset + numel(shape)).
struct HfPart {
    std::string name;
    Shape shape;
    int64_t offset;
};

// "layers.L.REST" or "mtp.I.REST" -> the Hugging Face block prefix "model.layers.N." (an MTP module i is block
// n_layers + i) and REST; false for a name outside the blocks.
bool split_block_name(const std::string& name, int64_t n_layers, std::string* L, std::string* rest, bool* is_mtp) {
    const bool mtp = name.rfind("mtp.", 0) == 0;
    if (!mtp && name.rfind("layers.", 0) != 0) return false;
    const size_t start = mtp ? 4 : 7, dot = name.find('.', start);
    FRUGAL_CHECK(dot != std::string::npos, "parameter name ", name, " has no block index");
    const int64_t idx = std::stoll(name.substr(start, dot - start));
    *L = "model.layers." + std::to_string(mtp ? n_layers + idx : idx) + ".";
    *rest = name.substr(dot + 1);
    *is_mtp = mtp;
    return true;
}

bool has_router_bias(const std::string& type) { return type == "deepseek_v3" || type == "glm4_moe" || type == "dots1"; }

// The Hugging Face tensors behind parameter p (this rank's shard of it), in p's element order. n_layers places the
// multi-token-prediction modules (mtp.I. is block n_layers + I).
std::vector<HfPart> hf_parts(const model::Param& p, const std::string& type, int64_t n_layers) {
    if (p.name == "embed.weight") return {{"model.embed_tokens.weight", p.shape, 0}};
    if (p.name == "final_norm.weight") return {{"model.norm.weight", p.shape, 0}};
    if (p.name == "head.weight") return {{"lm_head.weight", p.shape, 0}};
    std::string L, rest;
    bool mtp = false;
    FRUGAL_CHECK(split_block_name(p.name, n_layers, &L, &rest, &mtp), "no Hugging Face name for parameter ", p.name);
    const std::string moe = L + (type == "mixtral" ? "block_sparse_moe." : "mlp.");
    static const std::map<std::string, std::string> same = {
        {"attn_norm.weight", "input_layernorm.weight"},
        {"ffn_norm.weight", "post_attention_layernorm.weight"},
        {"attn.wq.weight", "self_attn.q_proj.weight"},
        {"attn.wk.weight", "self_attn.k_proj.weight"},
        {"attn.wv.weight", "self_attn.v_proj.weight"},
        {"attn.wo.weight", "self_attn.o_proj.weight"},
        {"attn.wq.bias", "self_attn.q_proj.bias"},
        {"attn.wk.bias", "self_attn.k_proj.bias"},
        {"attn.wv.bias", "self_attn.v_proj.bias"},
        {"attn.q_norm.weight", "self_attn.q_norm.weight"},
        {"attn.k_norm.weight", "self_attn.k_norm.weight"},
        {"attn.wq_a.weight", "self_attn.q_a_proj.weight"},
        {"attn.q_a_norm.weight", "self_attn.q_a_layernorm.weight"},
        {"attn.wq_b.weight", "self_attn.q_b_proj.weight"},
        {"attn.wkv_a.weight", "self_attn.kv_a_proj_with_mqa.weight"},
        {"attn.kv_a_norm.weight", "self_attn.kv_a_layernorm.weight"},
        {"attn.wkv_b.weight", "self_attn.kv_b_proj.weight"},
        {"mlp.w2.weight", "mlp.down_proj.weight"}};
    if (auto it = same.find(rest); it != same.end()) return {{L + it->second, p.shape, 0}};
    if (mtp && (rest == "enorm.weight" || rest == "hnorm.weight" || rest == "eh_proj.weight"))
        return {{L + rest, p.shape, 0}};
    if (mtp && rest == "final_norm.weight") return {{L + "shared_head.norm.weight", p.shape, 0}};
    auto gate_up = [&](const std::string& prefix) -> std::vector<HfPart> {  // rows [0, F) gate, [F, 2F) up
        const int64_t f = p.shape[0] / 2, d = p.shape[1];
        return {{prefix + "gate_proj.weight", {f, d}, 0}, {prefix + "up_proj.weight", {f, d}, f * d}};
    };
    if (rest == "mlp.w13.weight") return gate_up(L + "mlp.");
    // Qwen2-MoE spells the shared block shared_expert; DeepSeek, GLM-4.5 and dots1 shared_experts.
    const std::string shared = moe + (type == "qwen2_moe" ? "shared_expert." : "shared_experts.");
    if (rest == "moe.router.weight") return {{moe + "gate.weight", p.shape, 0}};
    if (rest == "moe.shared_gate.weight") return {{moe + "shared_expert_gate.weight", p.shape, 0}};
    if (rest == "moe.shared.w13.weight") return gate_up(shared);
    if (rest == "moe.shared.w2.weight") return {{shared + "down_proj.weight", p.shape, 0}};
    const bool w13 = rest == "moe.experts.w13";
    FRUGAL_CHECK(w13 || rest == "moe.experts.w2", "no Hugging Face name for parameter ", p.name);
    // [local experts, 2F, D] or [local experts, D, F]; global_offset says which experts this shard holds.
    const int64_t rows = p.shape[1], cols = p.shape[2], per = rows * cols, first = p.global_offset / per;
    std::vector<HfPart> parts;
    for (int64_t e = 0; e < p.shape[0]; ++e) {
        const std::string x = moe + "experts." + std::to_string(first + e) + ".";
        if (type == "mixtral" && w13) {
            parts.push_back({x + "w1.weight", {rows / 2, cols}, e * per});
            parts.push_back({x + "w3.weight", {rows / 2, cols}, e * per + per / 2});
        } else if (type == "mixtral") {
            parts.push_back({x + "w2.weight", {rows, cols}, e * per});
        } else if (w13) {
            parts.push_back({x + "gate_proj.weight", {rows / 2, cols}, e * per});
            parts.push_back({x + "up_proj.weight", {rows / 2, cols}, e * per + per / 2});
        } else {
            parts.push_back({x + "down_proj.weight", {rows, cols}, e * per});
        }
    }
    return parts;
}

// The Hugging Face name of buffer b (the routers' FP32 expert bias: e_score_correction_bias), or "" when the
// family has no place for it.
std::string hf_buffer_name(const model::Buffer& b, const std::string& type, int64_t n_layers) {
    std::string L, rest;
    bool mtp = false;
    FRUGAL_CHECK(split_block_name(b.name, n_layers, &L, &rest, &mtp) && rest == "moe.router.bias",
                 "no Hugging Face name for buffer ", b.name);
    return has_router_bias(type) ? L + "mlp.gate.e_score_correction_bias" : "";
}

// Rotary rows stored in DeepSeek's interleaved pairs (rope_interleave): in each row block [base, base + rope) of
// the query projection (one per head, after its nope rows) and of kv_a_proj_with_mqa (after the kv_lora_rank
// latent rows), Frugal holds the even rows, then the odd ones, so that its rotate-half RoPE gives the same q.k.
struct RopeRows {
    std::vector<int64_t> bases;  // first row of each rotary block
    int64_t rope = 0, cols = 0;
};
RopeRows rope_rows(const model::Param& p, const model::ModelConfig& cfg, bool interleaved) {
    RopeRows r;
    if (!interleaved || !cfg.is_mla()) return r;
    const size_t dot = p.name.rfind(".attn.");
    if (dot == std::string::npos) return r;
    const std::string rest = p.name.substr(dot + 6);
    if (p.shape.size() != 2) return r;  // the norms and biases of the attention have no rotary rows
    r.rope = cfg.qk_rope_head_dim;
    r.cols = p.shape[1];
    if (rest == "wq.weight" || rest == "wq_b.weight") {
        const int64_t dqk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim;
        for (int64_t h = 0; h < cfg.n_heads; ++h) r.bases.push_back(h * dqk + cfg.qk_nope_head_dim);
    } else if (rest == "wkv_a.weight") {
        r.bases.push_back(cfg.kv_lora_rank);
    }
    return r;
}
// to_frugal: rows (evens, odds) <- interleaved; else the inverse. dst and src are [rows, cols], distinct.
void permute_rope_rows(float* dst, const float* src, int64_t numel, const RopeRows& r, bool to_frugal) {
    std::copy(src, src + numel, dst);
    const int64_t half = r.rope / 2;
    for (int64_t base : r.bases)
        for (int64_t i = 0; i < r.rope; ++i) {
            const int64_t hf = base + (i < half ? 2 * i : 2 * (i - half) + 1), fr = base + i;
            const float* from = src + (to_frugal ? hf : fr) * r.cols;
            std::copy(from, from + r.cols, dst + (to_frugal ? fr : hf) * r.cols);
        }
}

}  // namespace

namespace {
void check_expressible(const std::string& cfg, const std::string& type, const YAML::Node& c);
}  // namespace

namespace {
bool importable(const std::string& type) {
    static const std::set<std::string> families = {"qwen3_moe",   "qwen2_moe",   "mixtral",  "olmoe",
                                                   "deepseek_v3", "deepseek_v2", "glm4_moe", "dots1"};
    return families.count(type) > 0;
}
}  // namespace

void check_importable(const std::string& dir) {
    const std::string type = model_type_of(dir);
    const std::string cfg = dir + "/config.json";
    FRUGAL_CONFIG_CHECK(importable(type), cfg, ": model_type '", type,
                        "' cannot be imported (its architecture is not in Frugal's model); importable: qwen3_moe, "
                        "qwen2_moe, mixtral, olmoe, deepseek_v3 (and kimi_k2), deepseek_v2, glm4_moe, dots1");
    FRUGAL_CONFIG_CHECK(
        fs::exists(fs::path(dir) / "model.safetensors") || fs::exists(fs::path(dir) / "model.safetensors.index.json"),
        dir, " has neither model.safetensors nor model.safetensors.index.json: no weights to import");
    try {
        check_expressible(cfg, type, YAML::LoadFile(cfg));
    } catch (const YAML::Exception& e) {
        FRUGAL_CONFIG_ERROR(cfg, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg,
                            " (a field of the wrong type: fix config.json)");
    }
}

namespace {
// Settings of config.json that Frugal's model cannot express, refused by name. (The RoPE settings, DeepSeek's and
// dots1's attention_bias and dots1's sliding layers are checked, and refused by name, where config.json is read:
// model/hf_config.cc.)
void check_expressible(const std::string& cfg, const std::string& type, const YAML::Node& c) {
    // glm4_moe's attention_bias is on q, k and v only (Frugal's attn_bias); dots1's and DeepSeek's are refused
    // where config.json is read.
    if (type != "glm4_moe" && type != "dots1" && type.rfind("deepseek", 0) != 0)
        for (const char* bias : {"attention_bias", "use_bias"})
            FRUGAL_CONFIG_CHECK(!c[bias] || !c[bias].as<bool>(), cfg, ": \"", bias, "\": true cannot be imported (",
                                type, " would put a bias on the output projection too; Frugal's has none)");
    FRUGAL_CONFIG_CHECK(type == "dots1" || !c["sliding_window"] || c["sliding_window"].IsNull() ||
                            (c["use_sliding_window"] && !c["use_sliding_window"].as<bool>()),
                        cfg, ": \"sliding_window\" attention cannot be imported (Frugal's attention is full causal)");
    FRUGAL_CONFIG_CHECK(!c["clip_qkv"] || c["clip_qkv"].IsNull(), cfg,
                        ": \"clip_qkv\": ", c["clip_qkv"] ? c["clip_qkv"].as<std::string>() : "",
                        " cannot be imported (Frugal does not clamp "
                        "queries, keys and values)");
    FRUGAL_CONFIG_CHECK(!c["hidden_act"] || c["hidden_act"].as<std::string>() == "silu", cfg, ": \"hidden_act\": \"",
                        c["hidden_act"] ? c["hidden_act"].as<std::string>() : "",
                        "\" cannot be imported (Frugal's "
                        "feed-forward blocks are SwiGLU: silu)");
}
}  // namespace

std::string hf_model_type(const model::ModelConfig& m) {
    if (m.is_mla()) return m.moe.score_func == "softmax" ? "deepseek_v2" : "deepseek_v3";
    // Sigmoid routing, groups, dense first layers, ungated shared experts, scaled weights, partial rotation or
    // MTP: what only GLM-4.5 and dots1 hold among the grouped-query families. dots1 has per-head QK-norm, full
    // rotation and no biases; glm4_moe the rest.
    const bool deepseek_style = m.moe.score_func == "sigmoid" || m.moe.n_group > 1 || m.dense_layers > 0 ||
                                (m.moe.n_shared_experts > 0 && !m.moe.shared_expert_gate) ||
                                m.moe.routed_scaling_factor != 1.0 || m.partial_rotary_factor != 1.0 ||
                                m.mtp_modules > 0;
    if (deepseek_style) {
        const bool dots = m.qk_norm && m.qk_norm_scope == "head" && !m.attn_bias && m.partial_rotary_factor == 1.0 &&
                          m.mtp_modules == 0;
        return dots ? "dots1" : "glm4_moe";
    }
    if (m.qk_norm && m.qk_norm_scope == "projection") return "olmoe";
    if (m.attn_bias || m.moe.shared_expert_gate) return "qwen2_moe";
    if (m.qk_norm) return "qwen3_moe";
    return "mixtral";
}

namespace {
// The multi-token-prediction modules a store holds (mtp.I. parameters).
int64_t store_mtp_modules(const model::ParamStore& store) {
    int64_t n = 0;
    for (const model::Param* p : store.params())
        if (p->name.rfind("mtp.", 0) == 0)
            n = std::max<int64_t>(n, std::stoll(p->name.substr(4, p->name.find('.', 4) - 4)) + 1);
    return n;
}
}  // namespace

void load_hf_weights(const std::string& dir, model::ParamStore& store) {
    check_importable(dir);
    const std::string json = (fs::path(dir) / "config.json").string();
    const model::HfLayout layout = model::hf_layout(json);
    const std::string& type = layout.model_type;
    const model::ModelConfig file_cfg = model::model_from_hf_config(json);
    // Every tensor of the files must be one the config accounts for: anything else would be silently dropped.
    // MTP blocks beyond the store's modules are known and left unread (a model built with fewer MTP modules).
    check_hf_tensors_expected(dir, model::hf_tensor_names(file_cfg, type));
    const int64_t mtp = store_mtp_modules(store);
    FRUGAL_CONFIG_CHECK(mtp <= layout.mtp_layers, "model.mtp_modules (", mtp, ") exceeds the ", layout.mtp_layers,
                        " multi-token-prediction layers of ", json,
                        " (num_nextn_predict_layers): set model.mtp_modules to at most ", layout.mtp_layers);
    // Plain F32/BF16/F16 tensors, DeepSeek's FP8 blocks and transformers 5's fused experts (checkpoint/hf_reader.h).
    HfTensorReader reader(dir);
    // Counted in the FP32 bytes the model holds once read.
    Progress progress("importing", double(store.numel()) * 4, "B");
    std::vector<float> scratch;
    // Expert parameters hold this rank's experts only: the other experts' tensors are never opened.
    for (model::Param* p : store.params()) {
        for (const HfPart& part : hf_parts(*p, type, layout.n_layers)) {
            reader.read(part.name, p->value.data<float>() + part.offset, part.shape);
            progress.advance(double(shape_numel(part.shape)) * 4);
        }
        const RopeRows rope = rope_rows(*p, file_cfg, layout.rope_interleave);
        if (rope.bases.empty()) continue;
        float* w = p->value.data<float>();
        scratch.assign(w, w + p->value.numel());
        permute_rope_rows(w, scratch.data(), p->value.numel(), rope, true);
    }
    // The routers' expert biases (FP32 in the files). A family without them leaves them zero: selection unbiased.
    for (model::Buffer* b : store.buffers()) {
        const std::string name = hf_buffer_name(*b, type, layout.n_layers);
        if (!name.empty()) reader.read(name, b->value.data<float>(), b->value.shape());
    }
    progress.finish();
}

namespace {
StTensorOut make_out(const std::string& name, const Shape& shape, const float* data, const std::string& dtype) {
    StTensorOut t;
    t.name = name;
    t.shape = shape;
    t.dtype = dtype == "bf16" ? "BF16" : dtype == "f16" ? "F16" : "F32";
    t.f32 = data;  // converted while written
    return t;
}

std::string torch_dtype(const std::string& dtype) {
    return dtype == "bf16" || dtype == "fp8-block" ? "bfloat16" : dtype == "f16" ? "float16" : "float32";
}

// config.json's text with its top-level "quantization_config" replaced by quant (a JSON object), or removed when
// quant is empty: an export declares the format its weights are in, whatever the source config said.
std::string with_quantization_config(std::string text, const std::string& quant) {
    const std::string key = "\"quantization_config\"";
    const size_t at = text.find(key);
    if (at != std::string::npos) {
        // The key, its object (braces matched, strings skipped) and one comma beside it.
        size_t i = text.find('{', at + key.size()), depth = 0;
        bool in_string = false;
        for (; i < text.size(); ++i) {
            const char c = text[i];
            if (in_string) {
                if (c == '\\')
                    ++i;
                else if (c == '"')
                    in_string = false;
            } else if (c == '"') {
                in_string = true;
            } else if (c == '{') {
                ++depth;
            } else if (c == '}' && --depth == 0) {
                break;
            }
        }
        FRUGAL_CONFIG_CHECK(i < text.size(), "config.json: \"quantization_config\" is not a complete object");
        size_t begin = at, end = i + 1;
        const size_t comma_after = text.find_first_not_of(" \t\r\n", end);
        if (comma_after != std::string::npos && text[comma_after] == ',') {
            end = comma_after + 1;
        } else {
            const size_t comma_before = text.find_last_not_of(" \t\r\n", begin - 1);
            if (comma_before != std::string::npos && text[comma_before] == ',') begin = comma_before;
        }
        text.erase(begin, end - begin);
    }
    if (quant.empty()) return text;
    const size_t close = text.find_last_of('}');
    FRUGAL_CONFIG_CHECK(close != std::string::npos, "config.json is not a JSON object");
    const size_t last = text.find_last_not_of(" \t\r\n", close - 1);
    const bool empty = last != std::string::npos && text[last] == '{';
    text.insert(last + 1, std::string(empty ? "" : ",") + "\n  " + key + ": " + quant);
    return text;
}

// A JSON number that reads back as a float (transformers 5 refuses 2 for a float field; 2.0 passes).
std::string json_float(double v) {
    std::ostringstream os;
    os << std::setprecision(17) << v;
    std::string t = os.str();
    if (t.find_first_of(".eE") == std::string::npos) t += ".0";
    return t;
}

// rope_parameters as transformers 5 writes it, with rope_theta also at the top level for earlier readers.
void write_rope(std::ostream& os, const model::ModelConfig& m, bool partial) {
    os << ",\n  \"rope_theta\": " << json_float(m.rope_theta) << ",\n  \"rope_parameters\": {\"rope_type\": \""
       << (m.rope_scaling == "yarn" ? "yarn" : "default") << "\", \"rope_theta\": " << json_float(m.rope_theta);
    if (partial) os << ", \"partial_rotary_factor\": " << json_float(m.partial_rotary_factor);
    if (m.rope_scaling == "yarn")
        os << ", \"factor\": " << json_float(m.rope_factor) << ", \"original_max_position_embeddings\": "
           << (m.rope_original_max_seq_len > 0 ? m.rope_original_max_seq_len : m.max_seq_len)
           << ", \"beta_fast\": " << json_float(m.yarn_beta_fast) << ", \"beta_slow\": " << json_float(m.yarn_beta_slow)
           << ", \"mscale\": " << json_float(m.yarn_mscale)
           << ", \"mscale_all_dim\": " << json_float(m.yarn_mscale_all_dim);
    os << "}";
}

// config.json of deepseek_v3, deepseek_v2, glm4_moe and dots1.
std::string generated_deepseek_style_config(const model::ModelConfig& m, const std::string& type,
                                            const std::string& dtype) {
    static const std::map<std::string, std::string> arch = {{"deepseek_v3", "DeepseekV3ForCausalLM"},
                                                            {"deepseek_v2", "DeepseekV2ForCausalLM"},
                                                            {"glm4_moe", "Glm4MoeForCausalLM"},
                                                            {"dots1", "Dots1ForCausalLM"}};
    const bool grouped = m.moe.n_group > 1;
    std::ostringstream os;
    os << std::setprecision(17) << "{\n  \"architectures\": [\"" << arch.at(type) << "\"],\n  \"model_type\": \""
       << type << "\",\n  \"vocab_size\": " << m.vocab_size << ",\n  \"hidden_size\": " << m.d_model
       << ",\n  \"num_hidden_layers\": " << m.n_layers << ",\n  \"num_attention_heads\": " << m.n_heads
       << ",\n  \"num_key_value_heads\": " << (m.is_mla() ? m.n_heads : m.kv_heads())
       << ",\n  \"intermediate_size\": " << m.d_ff << ",\n  \"moe_intermediate_size\": " << m.moe.d_expert
       << ",\n  \"n_routed_experts\": " << m.moe.n_experts << ",\n  \"num_experts_per_tok\": " << m.moe.top_k
       << ",\n  \"n_shared_experts\": " << m.moe.n_shared_experts
       << ",\n  \"first_k_dense_replace\": " << m.dense_layers << ",\n  \"moe_layer_freq\": 1"
       << ",\n  \"routed_scaling_factor\": " << json_float(m.moe.routed_scaling_factor)
       << ",\n  \"norm_topk_prob\": " << (m.moe.norm_topk_prob ? "true" : "false") << ",\n  \"scoring_func\": \""
       << m.moe.score_func << "\"";
    if (type == "deepseek_v2") {
        os << ",\n  \"topk_method\": \"" << (grouped ? "group_limited_greedy" : "greedy") << "\"";
        if (grouped)
            os << ",\n  \"n_group\": " << m.moe.n_group << ",\n  \"topk_group\": " << m.moe.topk_group;
        else
            os << ",\n  \"n_group\": null,\n  \"topk_group\": null";
    } else {
        os << ",\n  \"topk_method\": \"noaux_tc\",\n  \"n_group\": " << m.moe.n_group
           << ",\n  \"topk_group\": " << m.moe.topk_group;
    }
    if (m.is_mla()) {
        os << ",\n  \"q_lora_rank\": ";
        if (m.q_lora_rank > 0)
            os << m.q_lora_rank;
        else
            os << "null";
        os << ",\n  \"kv_lora_rank\": " << m.kv_lora_rank << ",\n  \"qk_nope_head_dim\": " << m.qk_nope_head_dim
           << ",\n  \"qk_rope_head_dim\": " << m.qk_rope_head_dim << ",\n  \"v_head_dim\": " << m.v_head_dim;
        if (type == "deepseek_v3") os << ",\n  \"rope_interleave\": true";
    } else {
        os << ",\n  \"head_dim\": " << m.hd();
    }
    if (type == "glm4_moe")
        os << ",\n  \"use_qk_norm\": " << (m.qk_norm ? "true" : "false") << ",\n  \"partial_rotary_factor\": "
           << json_float(m.partial_rotary_factor);  // else transformers assumes 0.5
    if (type == "dots1") os << ",\n  \"sliding_window\": null";
    if (type == "deepseek_v3" || type == "glm4_moe") os << ",\n  \"num_nextn_predict_layers\": " << m.mtp_modules;
    os << ",\n  \"attention_bias\": " << (m.attn_bias ? "true" : "false")
       << ",\n  \"rms_norm_eps\": " << json_float(m.norm_eps) << ",\n  \"max_position_embeddings\": " << m.max_seq_len;
    write_rope(os, m, type == "glm4_moe");
    os << ",\n  \"tie_word_embeddings\": " << (m.tie_embeddings ? "true" : "false")
       << ",\n  \"hidden_act\": \"silu\",\n  \"torch_dtype\": \"" << torch_dtype(dtype) << "\"\n}\n";
    return os.str();
}

std::string generated_config(const model::ModelConfig& m, const std::string& type, const std::string& dtype) {
    if (type == "deepseek_v3" || type == "deepseek_v2" || type == "glm4_moe" || type == "dots1")
        return generated_deepseek_style_config(m, type, dtype);
    static const std::map<std::string, std::string> arch = {{"mixtral", "MixtralForCausalLM"},
                                                            {"qwen3_moe", "Qwen3MoeForCausalLM"},
                                                            {"qwen2_moe", "Qwen2MoeForCausalLM"},
                                                            {"olmoe", "OlmoeForCausalLM"}};
    std::ostringstream os;
    os << std::setprecision(17) << "{\n  \"architectures\": [\"" << arch.at(type) << "\"],\n  \"model_type\": \""
       << type << "\",\n  \"vocab_size\": " << m.vocab_size << ",\n  \"hidden_size\": " << m.d_model
       << ",\n  \"num_hidden_layers\": " << m.n_layers << ",\n  \"num_attention_heads\": " << m.n_heads
       << ",\n  \"num_key_value_heads\": " << m.kv_heads() << ",\n  \"head_dim\": " << m.hd()
       << ",\n  \"rms_norm_eps\": " << m.norm_eps << ",\n  \"rope_theta\": " << m.rope_theta
       << ",\n  \"max_position_embeddings\": " << m.max_seq_len
       << ",\n  \"tie_word_embeddings\": " << (m.tie_embeddings ? "true" : "false")
       << ",\n  \"hidden_act\": \"silu\",\n  \"torch_dtype\": \""
       << (dtype == "bf16"  ? "bfloat16"
           : dtype == "f16" ? "float16"
                            : "float32")
       << "\",\n  \"num_experts_per_tok\": " << m.moe.top_k
       << ",\n  \"norm_topk_prob\": " << (m.moe.norm_topk_prob ? "true" : "false");
    if (type == "mixtral" || type == "olmoe")
        os << ",\n  \"intermediate_size\": " << m.moe.d_expert;
    else
        os << ",\n  \"intermediate_size\": " << m.d_ff << ",\n  \"moe_intermediate_size\": " << m.moe.d_expert
           << ",\n  \"decoder_sparse_step\": 1,\n  \"mlp_only_layers\": []";
    if (type == "mixtral")
        os << ",\n  \"num_local_experts\": " << m.moe.n_experts << ",\n  \"sliding_window\": null";
    else
        os << ",\n  \"num_experts\": " << m.moe.n_experts << ",\n  \"use_sliding_window\": false";
    if (type == "qwen3_moe" || type == "olmoe") os << ",\n  \"attention_bias\": false";
    if (type == "olmoe") os << ",\n  \"clip_qkv\": null";
    if (type == "qwen2_moe")
        os << ",\n  \"shared_expert_intermediate_size\": " << m.moe.n_shared_experts * m.moe.d_expert
           << ",\n  \"qkv_bias\": " << (m.attn_bias ? "true" : "false");
    os << "\n}\n";
    return os.str();
}

}  // namespace

namespace {
// What deepseek_v3, deepseek_v2, glm4_moe and dots1 can hold, first refusal named.
void check_deepseek_style_exportable(const model::ModelConfig& m, const std::string& type) {
    const bool mla = type == "deepseek_v3" || type == "deepseek_v2";
    FRUGAL_CONFIG_CHECK(m.is_mla() == mla, "model.attention: ", m.attention, " has no ", type, " equivalent (", type,
                        " needs ", mla ? "mla" : "gqa", ")");
    const std::string score = type == "deepseek_v2" ? "softmax" : "sigmoid";
    FRUGAL_CONFIG_CHECK(m.moe.score_func == score, "moe.score_func ", m.moe.score_func, " has no ", type,
                        " equivalent (", type, " routes by ", score, ")");
    const std::string group = type == "deepseek_v2" ? "max" : "top2_sum";
    FRUGAL_CONFIG_CHECK(m.moe.n_group == 1 || m.moe.group_score == group, "moe.group_score ", m.moe.group_score,
                        " has no ", type, " equivalent (", type, " scores groups by ", group, ")");
    FRUGAL_CONFIG_CHECK(type != "deepseek_v2" || !m.moe.norm_topk_prob,
                        "moe.norm_topk_prob true has no deepseek_v2 equivalent (transformers' DeepseekV2 never "
                        "renormalizes): export as deepseek_v3 needs sigmoid routing; set it to false");
    FRUGAL_CONFIG_CHECK(!m.moe.shared_expert_gate, "moe.shared_expert_gate has no ", type,
                        " equivalent (its shared experts are ungated)");
    FRUGAL_CONFIG_CHECK(!m.attn_bias || type == "glm4_moe", "model.attn_bias has no ", type,
                        " equivalent (glm4_moe has it)");
    const std::string norm = !m.qk_norm ? "none" : m.qk_norm_scope;
    FRUGAL_CONFIG_CHECK(type == "dots1"      ? norm == "head"
                        : type == "glm4_moe" ? norm != "projection"
                                             : norm == "none",
                        "model.qk_norm / qk_norm_scope (", norm, ") has no ", type, " equivalent (",
                        type == "dots1"      ? "dots1 needs head"
                        : type == "glm4_moe" ? "glm4_moe: head or none"
                                             : "none",
                        ")");
    FRUGAL_CONFIG_CHECK(m.partial_rotary_factor == 1.0 || type == "glm4_moe", "model.partial_rotary_factor (",
                        m.partial_rotary_factor, ") has no ", type, " equivalent (glm4_moe has it)");
    FRUGAL_CONFIG_CHECK(m.mtp_modules == 0 || type == "deepseek_v3" || type == "glm4_moe", "model.mtp_modules (",
                        m.mtp_modules, ") has no ", type, " equivalent (deepseek_v3 and glm4_moe hold MTP layers)");
    FRUGAL_CONFIG_CHECK(has_router_bias(type) || m.moe.bias_update_rate == 0.0, "moe.bias_update_rate (",
                        m.moe.bias_update_rate, ") learns per-expert routing biases that ", type,
                        " has no place for: the export would route differently; set it to 0 to export");
}
}  // namespace

void check_exportable(const model::ModelConfig& m, const std::string& type) {
    if (type == "deepseek_v3" || type == "deepseek_v2" || type == "glm4_moe" || type == "dots1") {
        check_deepseek_style_exportable(m, type);
        return;
    }
    FRUGAL_CONFIG_CHECK(m.mtp_modules == 0, "model.mtp_modules (", m.mtp_modules, ") has no ", type,
                        " equivalent (deepseek_v3 and glm4_moe hold MTP layers)");
    FRUGAL_CONFIG_CHECK(m.moe.n_group == 1, "moe.n_group (", m.moe.n_group, ") has no ", type,
                        " equivalent (deepseek_v3, deepseek_v2, glm4_moe and dots1 route by groups)");
    FRUGAL_CONFIG_CHECK(m.partial_rotary_factor == 1.0, "model.partial_rotary_factor (", m.partial_rotary_factor,
                        ") has no ", type, " equivalent (glm4_moe has it)");
    FRUGAL_CONFIG_CHECK(m.rope_scaling == "none", "model.rope_scaling ", m.rope_scaling,
                        " is not written into a generated ", type,
                        " config.json: export as deepseek_v3, deepseek_v2, glm4_moe or dots1, or set it to none");
    FRUGAL_CONFIG_CHECK(m.dense_layers == 0, "model.dense_layers (", m.dense_layers, ") has no ", type,
                        " equivalent: export needs every layer MoE");
    FRUGAL_CONFIG_CHECK(m.attention == "gqa", "model.attention: ", m.attention, " has no ", type, " equivalent");
    FRUGAL_CONFIG_CHECK(m.moe.routed_scaling_factor == 1.0 && m.moe.score_func == "softmax",
                        "moe.score_func sigmoid / moe.routed_scaling_factor have no ", type, " equivalent");
    const bool qwen2 = type == "qwen2_moe";
    FRUGAL_CONFIG_CHECK(qwen2 ? m.moe.n_shared_experts > 0 && m.moe.shared_expert_gate : m.moe.n_shared_experts == 0,
                        "moe.n_shared_experts ", m.moe.n_shared_experts, " with shared_expert_gate ",
                        m.moe.shared_expert_gate ? "true" : "false", " has no ", type,
                        " equivalent (qwen2_moe: gated shared experts; the others: none)");
    FRUGAL_CONFIG_CHECK(qwen2 || !m.attn_bias, "model.attn_bias has no ", type, " equivalent (qwen2_moe has it)");
    const std::string norm = !m.qk_norm ? "none" : m.qk_norm_scope;
    const std::string want = type == "qwen3_moe" ? "head" : type == "olmoe" ? "projection" : "none";
    FRUGAL_CONFIG_CHECK(norm == want, "model.qk_norm / qk_norm_scope (", norm, ") has no ", type, " equivalent (", type,
                        " needs ", want, ")");
    FRUGAL_CONFIG_CHECK(m.moe.bias_update_rate == 0.0, "moe.bias_update_rate (", m.moe.bias_update_rate,
                        ") learns per-expert routing biases that ", type,
                        " has no place for: the export would route differently; set it to 0 to export");
}

void export_hf(const std::string& out_dir, const model::ParamStore& store, const model::ModelConfig& cfg,
               const std::string& type, const std::string& dtype, const std::string& source_config,
               int64_t max_shard_bytes) {
    parallel::SingleProcessComm world;
    export_hf(out_dir, store, cfg, type, dtype, source_config, world, ExportLayout{}, max_shard_bytes);
}

namespace {
// The files of one writer's group of tensors: consecutive parts, a new file when the next part would push the
// current one past max_shard_bytes. A part comes from FP32 values (src, written in the export's dtype or its own),
// rotary rows to restore to DeepSeek's interleaved order (rope), or a tensor of the source checkpoint copied as its
// bytes are (raw_file: its safetensors file).
struct Planned {
    HfPart part;
    const float* src;
    std::string dtype;  // "" = the export's dtype
    int64_t bytes = 0;
    RopeRows rope;
    std::string raw_file;
};
std::vector<std::vector<Planned>> split_files(std::vector<Planned> parts, int64_t max_shard_bytes, int64_t* total) {
    std::vector<std::vector<Planned>> files;
    int64_t bytes = 0;
    for (Planned& p : parts) {
        const int64_t b = p.bytes;
        if (files.empty() || (bytes > 0 && bytes + b > max_shard_bytes)) {
            files.emplace_back();
            bytes = 0;
        }
        bytes += b;
        *total += b;
        files.back().push_back(std::move(p));
    }
    return files;
}
// A part written in the export's dtype as FP8 blocks (--dtype fp8-block and a tensor DeepSeek quantizes).
bool is_fp8_block_part(const std::string& own_dtype, const std::string& export_dtype, const HfPart& part) {
    return own_dtype.empty() && export_dtype == "fp8-block" && part.shape.size() == 2 &&
           is_fp8_block_quantized(part.name);
}
// Bytes of a 2-D part as FP8 codes plus its [ceil(O/128), ceil(I/128)] F32 scales.
int64_t fp8_block_bytes(const Shape& shape) {
    return shape_numel(shape) + 4 * ((shape[0] + 127) / 128) * ((shape[1] + 127) / 128);
}
Planned planned_values(const HfPart& part, const float* src, const std::string& own_dtype, int64_t elem, RopeRows rope,
                       const std::string& export_dtype = "") {
    const int64_t bytes = is_fp8_block_part(own_dtype, export_dtype, part)
                              ? fp8_block_bytes(part.shape)
                              : shape_numel(part.shape) * (own_dtype == "f32" ? 4 : elem);
    Planned p{part, src, own_dtype, bytes, std::move(rope), ""};
    return p;
}

// Which safetensors file of dir holds each tensor (model.safetensors.index.json's weight_map, or model.safetensors).
std::map<std::string, std::string> tensor_files(const std::string& dir) {
    std::map<std::string, std::string> where;
    const fs::path index = fs::path(dir) / "model.safetensors.index.json";
    if (!fs::exists(index)) {
        for (const std::string& name : hf_dir_tensor_names(dir))
            where[name] = (fs::path(dir) / "model.safetensors").string();
        return where;
    }
    const YAML::Node n = YAML::LoadFile(index.string());
    hf_dir_tensor_names(dir);  // checks that the index names plain files inside dir
    for (auto it = n["weight_map"].begin(); it != n["weight_map"].end(); ++it)
        where[it->first.as<std::string>()] = (fs::path(dir) / it->second.as<std::string>()).string();
    return where;
}

// Multi-token-prediction blocks the source checkpoint holds beyond the exported model's modules (a model imported
// with fewer model.mtp_modules than its num_nextn_predict_layers): copied from the source files bit for bit, in
// their own dtype, so that the export still holds them.
void plan_mtp_passthrough(std::vector<Planned>& out, const model::ModelConfig& cfg, const std::string& source_config) {
    const model::HfLayout src = model::hf_layout(source_config);
    if (src.mtp_layers <= cfg.mtp_modules) return;
    FRUGAL_CONFIG_CHECK(src.n_layers == cfg.n_layers, source_config, ": num_hidden_layers ", src.n_layers,
                        " but the model has ", cfg.n_layers, ": give the source model's config.json");
    const std::string dir = fs::path(source_config).parent_path().string();
    FRUGAL_CONFIG_CHECK(
        fs::exists(fs::path(dir) / "model.safetensors") || fs::exists(fs::path(dir) / "model.safetensors.index.json"),
        source_config, " says num_nextn_predict_layers ", src.mtp_layers, " but the model has ", cfg.mtp_modules,
        " MTP modules (model.mtp_modules), and ", dir,
        " holds no safetensors to copy the others from: give the source model's directory with its weights, or "
        "export without --config (the generated config.json says ",
        cfg.mtp_modules, ")");
    std::map<std::string, std::unique_ptr<SafetensorsFile>> open;
    for (const auto& [name, file] : tensor_files(dir)) {
        if (name.rfind("model.layers.", 0) != 0) continue;
        const int64_t l = std::stoll(name.substr(13, name.find('.', 13) - 13));
        if (l < cfg.n_layers + cfg.mtp_modules || l >= cfg.n_layers + src.mtp_layers) continue;
        auto& f = open[file];
        if (!f) f = std::make_unique<SafetensorsFile>(file);
        const StTensorInfo& info = f->info(name);
        Planned p{{name, info.shape, 0}, nullptr, info.dtype, int64_t(info.end - info.begin), {}, file};
        out.push_back(std::move(p));
    }
}

// Besides the parameters, the replicated group holds the routers' FP32 biases (families with a place for them;
// the others must have none), each MTP block's copies of the shared embeddings and head, and MTP blocks passed
// through from the source checkpoint.
void plan_extra_replicated(std::vector<Planned>& out, const model::ParamStore& store, const model::ModelConfig& cfg,
                           const std::string& type, int64_t elem, const std::string& source_config) {
    for (const model::Buffer* b : store.buffers()) {
        const std::string name = hf_buffer_name(*b, type, cfg.n_layers);
        const float* v = b->value.data<float>();
        if (name.empty()) {
            FRUGAL_CONFIG_CHECK(std::all_of(v, v + b->value.numel(), [](float x) { return x == 0.0f; }), b->name,
                                " holds nonzero expert biases that ", type,
                                " has no place for: the export would route differently; export as deepseek_v3, "
                                "glm4_moe or dots1");
            continue;
        }
        out.push_back(planned_values({name, b->value.shape(), 0}, v, "f32", elem, {}));  // the bias stays FP32
    }
    const model::Param* embed = store.find("embed.weight");
    const model::Param* head = cfg.tie_embeddings ? embed : store.find("head.weight");
    for (int64_t i = 0; i < cfg.mtp_modules; ++i) {
        FRUGAL_CHECK(embed && head, "MTP export needs embed.weight and head.weight");
        const std::string L = "model.layers." + std::to_string(cfg.n_layers + i) + ".";
        out.push_back(
            planned_values({L + "embed_tokens.weight", embed->shape, 0}, embed->value.data<float>(), "", elem, {}));
        out.push_back(
            planned_values({L + "shared_head.head.weight", head->shape, 0}, head->value.data<float>(), "", elem, {}));
    }
    if (!source_config.empty()) plan_mtp_passthrough(out, cfg, source_config);
}

// The tensors to write for one planned part (two for an FP8 block part: its codes and weight_scale_inv); scratch
// holds values it had to reorder.
void append_planned_out(std::vector<StTensorOut>& out, const Planned& t, const std::string& dtype,
                        std::deque<std::vector<float>>& scratch) {
    if (!t.raw_file.empty()) {
        const SafetensorsFile f(t.raw_file);
        StTensorOut raw;
        raw.name = t.part.name;
        raw.dtype = t.dtype;
        raw.shape = t.part.shape;
        const uint8_t* b = f.bytes(t.part.name);
        raw.bytes.assign(b, b + t.bytes);
        out.push_back(std::move(raw));
        return;
    }
    const float* src = t.src;
    if (!t.rope.bases.empty()) {
        const int64_t numel = shape_numel(t.part.shape);
        scratch.emplace_back(size_t(numel));
        permute_rope_rows(scratch.back().data(), src, numel, t.rope, false);
        src = scratch.back().data();
    }
    if (is_fp8_block_part(t.dtype, dtype, t.part)) {
        Fp8BlockTensors q = quantize_fp8_block(t.part.name, src, t.part.shape[0], t.part.shape[1]);
        out.push_back(std::move(q.codes));
        out.push_back(std::move(q.scale_inv));
        return;
    }
    // fp8-block keeps what DeepSeek keeps unquantized (norms, embeddings, router, head) in BF16.
    out.push_back(
        make_out(t.part.name, t.part.shape, src, t.dtype.empty() ? (dtype == "fp8-block" ? "bf16" : dtype) : t.dtype));
}

std::string shard_name(int64_t i, int64_t n) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05lld-of-%05lld.safetensors", (long long)i + 1, (long long)n);
    return name;
}
}  // namespace

namespace {
// The files an export copies from the source model's directory when they are there (besides config.json).
constexpr const char* kCopiedFiles[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
    "merges.txt",     "tokenizer.model",       "generation_config.json"};
// A file an export writes besides the safetensors shards.
bool is_export_side_file(const std::string& name) {
    return name == "config.json" || name == "model.safetensors.index.json" ||
           std::find_if(std::begin(kCopiedFiles), std::end(kCopiedFiles), [&](const char* f) { return name == f; }) !=
               std::end(kCopiedFiles);
}
}  // namespace

void check_export_target(const std::string& out_dir, const std::string& key, bool force) {
    std::error_code ec;
    if (force || !fs::exists(out_dir, ec)) return;
    if (!fs::is_directory(out_dir, ec))
        FRUGAL_CONFIG_ERROR(key, " ", out_dir, " is a file; an export writes a directory there and would replace it: ",
                            "choose a new path", key == "--out" ? " (or add --force to replace it)" : "");
    bool has_config = false, has_weights = false;
    std::string foreign;
    for (const auto& e : fs::directory_iterator(out_dir, ec)) {
        const std::string n = e.path().filename().string();
        const bool side = is_export_side_file(n);
        const bool shard = n.size() > 12 && n.rfind("model", 0) == 0 && n.substr(n.size() - 12) == ".safetensors";
        if (!e.is_regular_file(ec) || (!side && !shard)) {
            foreign = n;
            break;
        }
        has_config |= n == "config.json";
        has_weights |= shard;
    }
    const bool empty = fs::is_empty(out_dir, ec);
    if (empty || (foreign.empty() && has_config && has_weights)) return;
    FRUGAL_CONFIG_ERROR(
        key, " ", out_dir, " is a directory that is not a previous export (",
        foreign.empty() ? std::string("no config.json with safetensors weights") : "it holds '" + foreign + "'",
        "); an export replaces the directory whole, so its contents would be lost: choose a new or "
        "empty directory",
        key == "--out" ? " (or add --force to replace it)" : "");
}

void export_hf(const std::string& out_dir, const model::ParamStore& store, const model::ModelConfig& cfg,
               const std::string& type, const std::string& dtype, const std::string& source_config,
               parallel::Communicator& world, ExportLayout layout, int64_t max_shard_bytes) {
    FRUGAL_CONFIG_CHECK(importable(type), "export model_type '", type,
                        "' is not supported: qwen3_moe, qwen2_moe, mixtral, olmoe, deepseek_v3, deepseek_v2, glm4_moe "
                        "or dots1");
    FRUGAL_CONFIG_CHECK(dtype == "bf16" || dtype == "f16" || dtype == "f32" || dtype == "fp8-block", "--dtype '", dtype,
                        "': use bf16, f16, f32 or fp8-block");
    check_exportable(cfg, type);
    FRUGAL_CONFIG_CHECK(source_config.empty() || !fs::exists(source_config) || fs::is_regular_file(source_config),
                        "--config ", source_config, " is not a file: give the source model's config.json");
    const bool root = world.rank() == 0;
    FRUGAL_CHECK(!root || (layout.writer && layout.ep_rank == 0), "rank 0 must write the replicated tensors");
    // Everything is written into a staging directory beside out_dir and renamed at the end: a failed export never
    // leaves a half-written model under out_dir, and a previous export there stays until the new one is complete.
    const fs::path target = fs::absolute(out_dir);
    const fs::path staging = target.parent_path() / ("." + target.filename().string() + ".partial");
    if (root) {
        fs::remove_all(staging);
        fs::create_directories(staging);
    }
    struct RemoveUnlessDone {  // a failure on rank 0 removes the staging directory
        fs::path path;
        bool active;
        ~RemoveUnlessDone() {
            std::error_code ec;
            if (active) fs::remove_all(path, ec);
        }
    } guard{staging, root};
    world.set_layer("export");
    world.barrier();
    // Tensors in two kinds of groups: the replicated ones (written by ep rank 0) and, for each ep rank j, the
    // experts it holds (written by it). Every expert group has the same shapes, so every rank can number every
    // file: the replicated group's files first, then each expert group's in ep-rank order. Each writer converts
    // its tensors while writing them (no copy of the model), one file at a time.
    const int64_t elem = dtype == "f32" ? 4 : 2;
    const bool has_source = !source_config.empty() && fs::exists(source_config);
    // The rotary rows go back to interleaved pairs where the written config.json says so.
    const bool interleave = has_source ? model::hf_layout(source_config).rope_interleave : cfg.is_mla();
    std::vector<Planned> replicated, experts;
    for (const model::Param* p : store.params()) {
        FRUGAL_CHECK(p->is_expert || p->shape == p->global_shape, "parameter ", p->name, " is a shard");
        FRUGAL_CHECK(!p->is_expert || p->shape[0] * layout.ep == p->global_shape[0], "expert parameter ", p->name,
                     " holds ", p->shape[0], " of ", p->global_shape[0], " experts, not 1/", layout.ep);
        for (HfPart& part : hf_parts(*p, type, cfg.n_layers))
            (p->is_expert ? experts : replicated)
                .push_back(planned_values(part, p->value.data<float>() + part.offset, "", elem,
                                          rope_rows(*p, cfg, interleave), dtype));
    }
    plan_extra_replicated(replicated, store, cfg, type, elem, has_source ? source_config : "");
    int64_t total = 0, ignored = 0;
    const auto rep_files = split_files(replicated, max_shard_bytes, &total);
    const auto own_files = split_files(experts, max_shard_bytes, &ignored);
    const int64_t n0 = int64_t(rep_files.size()), n1 = int64_t(own_files.size()), n = n0 + layout.ep * n1;
    if (layout.writer) {
        // This rank's bytes, one advance per file written.
        auto file_bytes = [&](const std::vector<Planned>& file) {
            double b = 0;
            for (const Planned& t : file) b += double(t.bytes);
            return b;
        };
        double mine = 0;
        if (layout.ep_rank == 0)
            for (const auto& file : rep_files) mine += file_bytes(file);
        for (const auto& file : own_files) mine += file_bytes(file);
        Progress progress("exporting", mine, "B");
        auto write = [&](const std::vector<Planned>& file, int64_t i) {
            std::deque<std::vector<float>> scratch;  // rotary rows restored, alive until the file is written
            std::vector<StTensorOut> tensors;
            for (const Planned& t : file) append_planned_out(tensors, t, dtype, scratch);
            write_safetensors((staging / shard_name(i, n)).string(), tensors, {{"format", "pt"}});
            progress.advance(file_bytes(file));
        };
        if (layout.ep_rank == 0)
            for (int64_t i = 0; i < n0; ++i) write(rep_files[size_t(i)], i);
        for (int64_t i = 0; i < n1; ++i) write(own_files[size_t(i)], n0 + layout.ep_rank * n1 + i);
        progress.finish();
    }
    world.barrier();
    if (root) {
        // The index names every tensor of every group: the other ranks' expert names come from this rank's expert
        // parameters moved to their experts (same shapes, another global offset).
        std::ostringstream index;
        std::ostringstream map;
        bool first = true;
        auto list = [&](const std::vector<std::vector<Planned>>& files, int64_t first_file) {
            for (size_t f = 0; f < files.size(); ++f)
                for (const Planned& t : files[f]) {
                    map << (first ? "\n" : ",\n") << "    \"" << t.part.name << "\": \""
                        << shard_name(first_file + int64_t(f), n) << "\"";
                    if (is_fp8_block_part(t.dtype, dtype, t.part))
                        map << ",\n    \"" << scale_name(t.part.name) << "\": \""
                            << shard_name(first_file + int64_t(f), n) << "\"";
                    first = false;
                }
        };
        list(rep_files, 0);
        for (int64_t j = 0; j < layout.ep; ++j) {
            std::vector<Planned> parts;
            for (const model::Param* p : store.params()) {
                if (!p->is_expert) continue;
                model::Param moved = *p;
                moved.global_offset = p->global_offset + (j - layout.ep_rank) * p->value.numel();
                for (HfPart& part : hf_parts(moved, type, cfg.n_layers))
                    parts.push_back(planned_values(part, nullptr, "", elem, {}, dtype));
            }
            list(split_files(parts, max_shard_bytes, &total), n0 + j * n1);
        }
        index << "{\n  \"metadata\": {\"total_size\": " << total << "},\n  \"weight_map\": {" << map.str()
              << "\n  }\n}\n";
        write_file_atomic((staging / "model.safetensors.index.json").string(), index.str());
        // The config says how the weights are stored: quantization_config for fp8-block, none otherwise.
        const std::string quant = dtype == "fp8-block" ? fp8_block_quantization_config_json() : "";
        if (has_source)
            write_file_atomic((staging / "config.json").string(),
                              with_quantization_config(
                                  input::read_file(source_config, "--config", "give the source config.json"), quant));
        else
            write_file_atomic((staging / "config.json").string(),
                              with_quantization_config(generated_config(cfg, type, dtype), quant));
        // The tokenizer files travel with the model when the source directory had them.
        if (!source_config.empty())
            for (const char* tok : kCopiedFiles) {
                const fs::path src = fs::path(source_config).parent_path() / tok;
                if (fs::exists(src)) fs::copy_file(src, staging / tok, fs::copy_options::overwrite_existing);
            }
        const fs::path old = target.parent_path() / ("." + target.filename().string() + ".old");
        fs::remove_all(old);
        if (fs::exists(target)) fs::rename(target, old);
        fs::rename(staging, target);
        guard.active = false;
        fs::remove_all(old);
    }
    world.barrier();
}

}  // namespace frugal::checkpoint
