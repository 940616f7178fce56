#include "checkpoint/hf.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <memory>
#include <sstream>

#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "core/file_io.h"
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

// The Hugging Face tensors behind parameter p (this rank's shard of it), in p's element order.
std::vector<HfPart> hf_parts(const model::Param& p, const std::string& type) {
    if (p.name == "embed.weight") return {{"model.embed_tokens.weight", p.shape, 0}};
    if (p.name == "final_norm.weight") return {{"model.norm.weight", p.shape, 0}};
    if (p.name == "head.weight") return {{"lm_head.weight", p.shape, 0}};
    FRUGAL_CHECK(p.name.rfind("layers.", 0) == 0, "no Hugging Face name for parameter ", p.name);
    const size_t dot = p.name.find('.', 7);
    const std::string layer = p.name.substr(7, dot - 7), rest = p.name.substr(dot + 1);
    const std::string L = "model.layers." + layer + ".";
    const std::string moe = L + (type == "mixtral" ? "block_sparse_moe." : "mlp.");
    static const std::map<std::string, std::string> same = {
        {"attn_norm.weight", "input_layernorm.weight"},   {"ffn_norm.weight", "post_attention_layernorm.weight"},
        {"attn.wq.weight", "self_attn.q_proj.weight"},    {"attn.wk.weight", "self_attn.k_proj.weight"},
        {"attn.wv.weight", "self_attn.v_proj.weight"},    {"attn.wo.weight", "self_attn.o_proj.weight"},
        {"attn.wq.bias", "self_attn.q_proj.bias"},        {"attn.wk.bias", "self_attn.k_proj.bias"},
        {"attn.wv.bias", "self_attn.v_proj.bias"},        {"attn.q_norm.weight", "self_attn.q_norm.weight"},
        {"attn.k_norm.weight", "self_attn.k_norm.weight"}};
    if (auto it = same.find(rest); it != same.end()) return {{L + it->second, p.shape, 0}};
    if (rest == "moe.router.weight") return {{moe + "gate.weight", p.shape, 0}};
    if (rest == "moe.shared_gate.weight") return {{moe + "shared_expert_gate.weight", p.shape, 0}};
    if (rest == "moe.shared.w13.weight") {  // rows [0, F) gate, [F, 2F) up
        const int64_t f = p.shape[0] / 2, d = p.shape[1];
        return {{moe + "shared_expert.gate_proj.weight", {f, d}, 0},
                {moe + "shared_expert.up_proj.weight", {f, d}, f * d}};
    }
    if (rest == "moe.shared.w2.weight") return {{moe + "shared_expert.down_proj.weight", p.shape, 0}};
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

// Opens the safetensors files of a directory lazily, by tensor name.
class HfReader {
  public:
    explicit HfReader(const std::string& dir) : dir_(dir) {
        const fs::path index = fs::path(dir) / "model.safetensors.index.json";
        if (fs::exists(index)) {
            try {
                YAML::Node n = YAML::LoadFile(index.string());
                FRUGAL_CONFIG_CHECK(n["weight_map"] && n["weight_map"].IsMap(), index.string(),
                                    ": no \"weight_map\" object");
                for (auto it = n["weight_map"].begin(); it != n["weight_map"].end(); ++it)
                    where_[it->first.as<std::string>()] = it->second.as<std::string>();
            } catch (const YAML::Exception& e) {
                FRUGAL_CONFIG_ERROR(index.string(), ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg,
                                    " (weight_map must map tensor names to file names)");
            }
        } else {
            FRUGAL_CONFIG_CHECK(fs::exists(fs::path(dir) / "model.safetensors"), dir,
                                " has neither model.safetensors nor model.safetensors.index.json");
            single_ = true;
        }
    }
    void read(const std::string& name, float* out, const Shape& shape) {
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
        f->read_f32(name, out, shape);
    }

  private:
    std::string dir_;
    bool single_ = false;
    std::map<std::string, std::string> where_;
    std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;
};

}  // namespace

namespace {
void check_expressible(const std::string& cfg, const std::string& type, const YAML::Node& c);
}  // namespace

void check_importable(const std::string& dir) {
    const std::string type = model_type_of(dir);
    const std::string cfg = dir + "/config.json";
    FRUGAL_CONFIG_CHECK(type == "qwen3_moe" || type == "qwen2_moe" || type == "mixtral" || type == "olmoe", cfg,
                        ": model_type '", type, "' cannot be imported (its ",
                        type.rfind("deepseek", 0) == 0 ? "multi-head latent attention is" : "architecture is",
                        " not in Frugal's model); importable: qwen3_moe, qwen2_moe, mixtral, olmoe");
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
// Settings of config.json that Frugal's model cannot express, refused by name.
void check_expressible(const std::string& cfg, const std::string& type, const YAML::Node& c) {
    for (const char* bias : {"attention_bias", "use_bias"})
        FRUGAL_CONFIG_CHECK(!c[bias] || !c[bias].as<bool>(), cfg, ": \"", bias, "\": true cannot be imported (", type,
                            " would put a bias on the output projection too; Frugal's has none)");
    FRUGAL_CONFIG_CHECK(!c["sliding_window"] || c["sliding_window"].IsNull() ||
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
    // Scaled rotary embeddings (YaRN, linear, dynamic) would change every attention score.
    FRUGAL_CONFIG_CHECK(!c["rope_scaling"] || c["rope_scaling"].IsNull(), cfg,
                        ": \"rope_scaling\" cannot be imported (Frugal's RoPE is unscaled)");
    const YAML::Node rp = c["rope_parameters"];
    FRUGAL_CONFIG_CHECK(!rp || !rp["rope_type"] || rp["rope_type"].as<std::string>() == "default", cfg,
                        ": rope_parameters.rope_type \"",
                        rp && rp["rope_type"] ? rp["rope_type"].as<std::string>() : "",
                        "\" cannot be imported (Frugal's RoPE is unscaled: default)");
}
}  // namespace

std::string hf_model_type(const model::ModelConfig& m) {
    if (m.qk_norm && m.qk_norm_scope == "projection") return "olmoe";
    if (m.attn_bias || m.moe.shared_expert_gate) return "qwen2_moe";
    if (m.qk_norm) return "qwen3_moe";
    return "mixtral";
}

void load_hf_weights(const std::string& dir, model::ParamStore& store) {
    check_importable(dir);
    const std::string type = model_type_of(dir);
    // Every tensor of the files must be one the config accounts for: anything else would be silently dropped.
    check_hf_tensors_expected(
        dir, model::hf_tensor_names(model::model_from_hf_config((fs::path(dir) / "config.json").string()), type));
    HfReader reader(dir);
    // Counted in the FP32 bytes the model holds once read.
    Progress progress("importing", double(store.numel()) * 4, "B");
    // Expert parameters hold this rank's experts only: the other experts' tensors are never opened.
    for (model::Param* p : store.params())
        for (const HfPart& part : hf_parts(*p, type)) {
            reader.read(part.name, p->value.data<float>() + part.offset, part.shape);
            progress.advance(double(shape_numel(part.shape)) * 4);
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

std::string generated_config(const model::ModelConfig& m, const std::string& type, const std::string& dtype) {
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

void check_exportable(const model::ModelConfig& m, const std::string& type) {
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
// current one past max_shard_bytes.
struct Planned {
    HfPart part;
    const float* src;
};
std::vector<std::vector<Planned>> split_files(std::vector<Planned> parts, int64_t elem, int64_t max_shard_bytes,
                                              int64_t* total) {
    std::vector<std::vector<Planned>> files;
    int64_t bytes = 0;
    for (Planned& p : parts) {
        const int64_t b = shape_numel(p.part.shape) * elem;
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
    FRUGAL_CONFIG_CHECK(type == "qwen3_moe" || type == "qwen2_moe" || type == "mixtral" || type == "olmoe",
                        "export model_type '", type, "' is not supported: qwen3_moe, qwen2_moe, mixtral or olmoe");
    FRUGAL_CONFIG_CHECK(dtype == "bf16" || dtype == "f16" || dtype == "f32", "--dtype '", dtype,
                        "': use bf16, f16 or f32");
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
    std::vector<Planned> replicated, experts;
    for (const model::Param* p : store.params()) {
        FRUGAL_CHECK(p->is_expert || p->shape == p->global_shape, "parameter ", p->name, " is a shard");
        FRUGAL_CHECK(!p->is_expert || p->shape[0] * layout.ep == p->global_shape[0], "expert parameter ", p->name,
                     " holds ", p->shape[0], " of ", p->global_shape[0], " experts, not 1/", layout.ep);
        for (HfPart& part : hf_parts(*p, type))
            (p->is_expert ? experts : replicated).push_back({part, p->value.data<float>() + part.offset});
    }
    int64_t total = 0, ignored = 0;
    const auto rep_files = split_files(replicated, elem, max_shard_bytes, &total);
    const auto own_files = split_files(experts, elem, max_shard_bytes, &ignored);
    const int64_t n0 = int64_t(rep_files.size()), n1 = int64_t(own_files.size()), n = n0 + layout.ep * n1;
    if (layout.writer) {
        // This rank's bytes, one advance per file written.
        auto file_bytes = [&](const std::vector<Planned>& file) {
            double b = 0;
            for (const Planned& t : file) b += double(shape_numel(t.part.shape) * elem);
            return b;
        };
        double mine = 0;
        if (layout.ep_rank == 0)
            for (const auto& file : rep_files) mine += file_bytes(file);
        for (const auto& file : own_files) mine += file_bytes(file);
        Progress progress("exporting", mine, "B");
        auto write = [&](const std::vector<Planned>& file, int64_t i) {
            std::vector<StTensorOut> tensors;
            for (const Planned& t : file) tensors.push_back(make_out(t.part.name, t.part.shape, t.src, dtype));
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
                for (HfPart& part : hf_parts(moved, type)) parts.push_back({part, nullptr});
            }
            list(split_files(parts, elem, max_shard_bytes, &total), n0 + j * n1);
        }
        index << "{\n  \"metadata\": {\"total_size\": " << total << "},\n  \"weight_map\": {" << map.str()
              << "\n  }\n}\n";
        write_file_atomic((staging / "model.safetensors.index.json").string(), index.str());
        if (!source_config.empty() && fs::exists(source_config))
            fs::copy_file(source_config, staging / "config.json", fs::copy_options::overwrite_existing);
        else
            write_file_atomic((staging / "config.json").string(), generated_config(cfg, type, dtype));
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
