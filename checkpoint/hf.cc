#include "checkpoint/hf.h"

#include <yaml-cpp/yaml.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "checkpoint/safetensors.h"
#include "core/bf16.h"
#include "core/error.h"
#include "model/hf_config.h"

namespace frugal::checkpoint {

namespace fs = std::filesystem;

namespace {

std::string model_type_of(const std::string& dir) {
    std::string type;
    model::model_from_hf_config((fs::path(dir) / "config.json").string(), &type);
    return type;
}

// Frugal name of a per-layer tensor -> HF name, for the non-expert tensors.
std::string hf_name(const std::string& name, const std::string& type) {
    const bool mixtral = type == "mixtral";
    if (name == "embed.weight") return "model.embed_tokens.weight";
    if (name == "final_norm.weight") return "model.norm.weight";
    if (name == "head.weight") return "lm_head.weight";
    const size_t dot = name.find('.', 7);
    const std::string layer = name.substr(7, dot - 7), rest = name.substr(dot + 1);
    const std::string p = "model.layers." + layer + ".";
    if (rest == "attn_norm.weight") return p + "input_layernorm.weight";
    if (rest == "ffn_norm.weight") return p + "post_attention_layernorm.weight";
    if (rest == "attn.wq.weight") return p + "self_attn.q_proj.weight";
    if (rest == "attn.wk.weight") return p + "self_attn.k_proj.weight";
    if (rest == "attn.wv.weight") return p + "self_attn.v_proj.weight";
    if (rest == "attn.wo.weight") return p + "self_attn.o_proj.weight";
    if (rest == "attn.q_norm.weight") return p + "self_attn.q_norm.weight";
    if (rest == "attn.k_norm.weight") return p + "self_attn.k_norm.weight";
    if (rest == "moe.router.weight") return p + (mixtral ? "block_sparse_moe.gate.weight" : "mlp.gate.weight");
    FRUGAL_THROW("no Hugging Face name for parameter ", name);
}

// gate, up, down names of expert e of layer L.
std::array<std::string, 3> hf_expert(const std::string& layer, int64_t e, const std::string& type) {
    const std::string p = "model.layers." + layer + ".";
    if (type == "mixtral") {
        const std::string q = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
        return {q + "w1.weight", q + "w3.weight", q + "w2.weight"};
    }
    const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
    return {q + "gate_proj.weight", q + "up_proj.weight", q + "down_proj.weight"};
}

// Opens the safetensors files of a directory lazily, by tensor name.
class HfReader {
  public:
    explicit HfReader(const std::string& dir) : dir_(dir) {
        const fs::path index = fs::path(dir) / "model.safetensors.index.json";
        if (fs::exists(index)) {
            YAML::Node n = YAML::LoadFile(index.string());
            FRUGAL_CONFIG_CHECK(n["weight_map"], index.string(), ": no \"weight_map\"");
            for (auto it = n["weight_map"].begin(); it != n["weight_map"].end(); ++it)
                where_[it->first.as<std::string>()] = it->second.as<std::string>();
        } else {
            FRUGAL_CONFIG_CHECK(fs::exists(fs::path(dir) / "model.safetensors"), dir,
                                " has neither model.safetensors nor model.safetensors.index.json");
            single_ = true;
        }
    }
    void read(const std::string& name, float* out, int64_t n) {
        std::string file = "model.safetensors";
        if (!single_) {
            auto it = where_.find(name);
            FRUGAL_CONFIG_CHECK(it != where_.end(), dir_, ": tensor '", name,
                                "' is not in model.safetensors.index.json (missing from the checkpoint)");
            file = it->second;
        }
        auto& f = files_[file];
        if (!f) {
            const fs::path path = fs::path(dir_) / file;
            FRUGAL_CONFIG_CHECK(fs::exists(path), "shard ", path.string(), " named by the index is missing");
            f = std::make_unique<SafetensorsFile>(path.string());
        }
        FRUGAL_CONFIG_CHECK(f->has(name), dir_, "/", file, ": tensor '", name, "' is missing");
        f->read_f32(name, out, n);
    }

  private:
    std::string dir_;
    bool single_ = false;
    std::map<std::string, std::string> where_;
    std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;
};

}  // namespace

void check_importable(const std::string& dir) {
    const std::string type = model_type_of(dir);
    FRUGAL_CONFIG_CHECK(type == "qwen3_moe" || type == "mixtral", dir, "/config.json: model_type '", type,
                        "' cannot be imported yet (its ",
                        type == "qwen2_moe"              ? "gated shared expert and attention biases are"
                        : type == "olmoe"                ? "QK-norm over the full projection is"
                        : type.rfind("deepseek", 0) == 0 ? "multi-head latent attention is"
                                                         : "architecture is",
                        " not in Frugal's model); importable: qwen3_moe, mixtral");
    YAML::Node c = YAML::LoadFile((fs::path(dir) / "config.json").string());
    for (const char* bias : {"attention_bias", "use_bias"})
        FRUGAL_CONFIG_CHECK(!c[bias] || !c[bias].as<bool>(), dir, "/config.json: \"", bias,
                            "\": true cannot be imported (Frugal's projections have no bias)");
    FRUGAL_CONFIG_CHECK(
        !c["sliding_window"] || c["sliding_window"].IsNull() ||
            (c["use_sliding_window"] && !c["use_sliding_window"].as<bool>()),
        dir, "/config.json: \"sliding_window\" attention cannot be imported (Frugal's attention is full causal)");
}

void load_hf_weights(const std::string& dir, model::ParamStore& store, const model::ModelConfig& cfg) {
    check_importable(dir);
    const std::string type = model_type_of(dir);
    HfReader reader(dir);
    const int64_t d = cfg.d_model, f = cfg.moe.d_expert;
    for (model::Param* p : store.params()) {
        float* v = p->value.data<float>();
        if (!p->is_expert) {
            reader.read(hf_name(p->name, type), v, p->value.numel());
            continue;
        }
        // layers.L.moe.experts.w13 / w2: this shard's experts only.
        const std::string layer = p->name.substr(7, p->name.find('.', 7) - 7);
        const bool w13 = p->name.size() >= 3 && p->name.substr(p->name.size() - 3) == "w13";
        const int64_t per = w13 ? 2 * f * d : d * f;
        const int64_t first = p->global_offset / per;
        for (int64_t e = 0; e < p->shape[0]; ++e) {
            auto names = hf_expert(layer, first + e, type);
            float* dst = v + e * per;
            if (w13) {
                reader.read(names[0], dst, f * d);
                reader.read(names[1], dst + f * d, f * d);
            } else {
                reader.read(names[2], dst, d * f);
            }
        }
    }
}

namespace {
StTensorOut make_out(const std::string& name, const Shape& shape, const float* data, const std::string& dtype) {
    StTensorOut t;
    t.name = name;
    t.shape = shape;
    const int64_t n = shape_numel(shape);
    if (dtype == "bf16") {
        t.dtype = "BF16";
        t.bytes.resize(size_t(n) * 2);
        for (int64_t i = 0; i < n; ++i) {
            const uint16_t b = float_to_bf16_bits(data[i]);
            std::memcpy(t.bytes.data() + 2 * i, &b, 2);
        }
    } else {
        t.dtype = "F32";
        t.bytes.resize(size_t(n) * 4);
        std::memcpy(t.bytes.data(), data, size_t(n) * 4);
    }
    return t;
}

std::string generated_config(const model::ModelConfig& m, const std::string& type, const std::string& dtype) {
    std::ostringstream os;
    os << "{\n  \"architectures\": [\"" << (type == "mixtral" ? "MixtralForCausalLM" : "Qwen3MoeForCausalLM")
       << "\"],\n  \"model_type\": \"" << type << "\",\n  \"vocab_size\": " << m.vocab_size
       << ",\n  \"hidden_size\": " << m.d_model << ",\n  \"num_hidden_layers\": " << m.n_layers
       << ",\n  \"num_attention_heads\": " << m.n_heads << ",\n  \"num_key_value_heads\": " << m.kv_heads()
       << ",\n  \"head_dim\": " << m.hd() << ",\n  \"rms_norm_eps\": " << m.norm_eps
       << ",\n  \"rope_theta\": " << m.rope_theta << ",\n  \"max_position_embeddings\": " << m.max_seq_len
       << ",\n  \"tie_word_embeddings\": " << (m.tie_embeddings ? "true" : "false")
       << ",\n  \"hidden_act\": \"silu\",\n  \"torch_dtype\": \"" << (dtype == "bf16" ? "bfloat16" : "float32") << "\"";
    if (type == "mixtral")
        os << ",\n  \"intermediate_size\": " << m.moe.d_expert << ",\n  \"num_local_experts\": " << m.moe.n_experts
           << ",\n  \"num_experts_per_tok\": " << m.moe.top_k << ",\n  \"sliding_window\": null";
    else
        os << ",\n  \"intermediate_size\": " << m.d_ff << ",\n  \"moe_intermediate_size\": " << m.moe.d_expert
           << ",\n  \"num_experts\": " << m.moe.n_experts << ",\n  \"num_experts_per_tok\": " << m.moe.top_k
           << ",\n  \"norm_topk_prob\": " << (m.moe.norm_topk_prob ? "true" : "false")
           << ",\n  \"decoder_sparse_step\": 1,\n  \"mlp_only_layers\": [],\n  \"attention_bias\": false";
    os << "\n}\n";
    return os.str();
}
}  // namespace

void export_hf(const std::string& out_dir, const model::ParamStore& store, const model::ModelConfig& cfg,
               const std::string& type, const std::string& dtype, const std::string& source_config,
               int64_t max_shard_bytes) {
    FRUGAL_CONFIG_CHECK(type == "qwen3_moe" || type == "mixtral", "export model_type '", type,
                        "' is not supported: qwen3_moe or mixtral");
    FRUGAL_CONFIG_CHECK(dtype == "bf16" || dtype == "f32", "--dtype '", dtype, "': use bf16 or f32");
    FRUGAL_CONFIG_CHECK(cfg.dense_layers == 0, "model.dense_layers (", cfg.dense_layers, ") has no ", type,
                        " equivalent: export needs every layer MoE");
    FRUGAL_CONFIG_CHECK(cfg.moe.n_shared_experts == 0, "moe.n_shared_experts has no ", type, " equivalent");
    FRUGAL_CONFIG_CHECK(type != "mixtral" || !cfg.qk_norm, "model.qk_norm has no mixtral equivalent");
    fs::create_directories(out_dir);
    // Tensors in HF order, split into shards.
    std::vector<StTensorOut> all;
    const int64_t d = cfg.d_model, f = cfg.moe.d_expert;
    for (const model::Param* p : store.params()) {
        const float* v = p->value.data<float>();
        if (!p->is_expert) {
            all.push_back(make_out(hf_name(p->name, type), p->shape, v, dtype));
            continue;
        }
        FRUGAL_CHECK(p->shape == p->global_shape, "export needs every expert on one process (got a shard of ", p->name,
                     ")");
        const std::string layer = p->name.substr(7, p->name.find('.', 7) - 7);
        const bool w13 = p->name.substr(p->name.size() - 3) == "w13";
        for (int64_t e = 0; e < p->shape[0]; ++e) {
            auto names = hf_expert(layer, e, type);
            if (w13) {
                all.push_back(make_out(names[0], {f, d}, v + e * 2 * f * d, dtype));
                all.push_back(make_out(names[1], {f, d}, v + e * 2 * f * d + f * d, dtype));
            } else {
                all.push_back(make_out(names[2], {d, f}, v + e * d * f, dtype));
            }
        }
    }
    std::vector<std::vector<StTensorOut>> shards(1);
    int64_t bytes = 0, total = 0;
    for (auto& t : all) {
        if (bytes > 0 && bytes + int64_t(t.bytes.size()) > max_shard_bytes) {
            shards.emplace_back();
            bytes = 0;
        }
        bytes += int64_t(t.bytes.size());
        total += int64_t(t.bytes.size());
        shards.back().push_back(std::move(t));
    }
    std::ostringstream index;
    index << "{\n  \"metadata\": {\"total_size\": " << total << "},\n  \"weight_map\": {";
    bool first = true;
    for (size_t s = 0; s < shards.size(); ++s) {
        char name[64];
        std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
        for (const auto& t : shards[s]) {
            index << (first ? "\n" : ",\n") << "    \"" << t.name << "\": \"" << name << "\"";
            first = false;
        }
        write_safetensors((fs::path(out_dir) / name).string(), shards[s], {{"format", "pt"}});
    }
    index << "\n  }\n}\n";
    std::ofstream(fs::path(out_dir) / "model.safetensors.index.json") << index.str();
    if (!source_config.empty() && fs::exists(source_config))
        fs::copy_file(source_config, fs::path(out_dir) / "config.json", fs::copy_options::overwrite_existing);
    else
        std::ofstream(fs::path(out_dir) / "config.json") << generated_config(cfg, type, dtype);
    // The tokenizer files travel with the model when the source directory had them.
    if (!source_config.empty())
        for (const char* tok : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                                "merges.txt", "tokenizer.model", "generation_config.json"}) {
            const fs::path src = fs::path(source_config).parent_path() / tok;
            if (fs::exists(src)) fs::copy_file(src, fs::path(out_dir) / tok, fs::copy_options::overwrite_existing);
        }
}

}  // namespace frugal::checkpoint
