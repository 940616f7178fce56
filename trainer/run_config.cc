#include "trainer/run_config.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <map>
#include <sstream>

#include "accounting/hardware.h"
#include "checkpoint/hf.h"
#include "core/checked.h"
#include "core/error.h"
#include "core/input_file.h"
#include "model/hf_config.h"
#include "parallel/parallel_dims.h"
#include "trainer/run_config_yaml.h"

namespace frugal::trainer {

namespace {
// Steps and batch sizes far past any run, low enough that steps x global_batch x seq_len (the sample and token
// positions of a run) cannot wrap int64.
constexpr int64_t kMaxSteps = int64_t(1) << 40;
constexpr int64_t kMaxBatch = int64_t(1) << 30;
// Elements of the largest activation of one micro-batch (logits, attention scores): 2^48 is 1 PB of FP32.
constexpr int64_t kMaxActivation = int64_t(1) << 48;
}  // namespace

ConfigFields TrainConfig::fields() {
    ConfigFields f;
    f.add("run.out_dir", &run.out_dir,
          "directory for config.yaml, metrics.jsonl, tb/ (TensorBoard), cost.json and checkpoints");
    f.add("run.seed", &run.seed, "seed of initialization and data order");
    f.add("run.log_every", &run.log_every, "steps between progress lines and metrics records", 1, kMaxSteps);
    f.add("run.device", &run.device,
          "where the model computes: cpu, cuda (a single-rank job on the GPU its local rank chooses; docs/gpu.md), or "
          "auto (cuda when the build has it, a GPU is present and the job has one rank; cpu otherwise)",
          {"auto", "cpu", "cuda"});
    model.register_fields(f, "model.");
    f.add("train.steps", &train.steps, "optimizer steps", 1, kMaxSteps);
    f.add("train.global_batch", &train.global_batch, "sequences per optimizer step, summed over all ranks", 1,
          kMaxBatch);
    f.add("train.micro_batch", &train.micro_batch,
          "sequences per forward/backward on one rank; gradient accumulation makes up the global batch", 1, kMaxBatch);
    f.add("train.seq_len", &train.seq_len, "tokens per sequence", 1, int64_t(1) << 24);
    f.add("train.eval_every", &train.eval_every, "steps between validation losses; 0 = only after the last step", 0,
          kMaxSteps);
    f.add("train.eval_batches", &train.eval_batches,
          "micro-batches of validation data per evaluation, in total over the ranks: the same samples for any number "
          "of ranks",
          1, kMaxBatch);
    f.add("train.nonfinite", &train.nonfinite,
          "when the loss or gradient norm is NaN/Inf: skip the update (and log it) or stop with an error",
          {"skip", "stop"});
    f.add("train.max_skipped_steps", &train.max_skipped_steps,
          "with nonfinite: skip, stop after this many skipped steps in a row", 1);
    f.add("train.freeze", &train.freeze,
          "parameter kinds kept fixed, e.g. [router] or [embedding] when fine-tuning; their gradients are dropped "
          "before the norm and clipping",
          {"norm", "bias", "embedding", "router", "weight"});
    f.add("train.threads", &train.threads, "OpenMP threads per rank; 0 = all available cores", 0, 4096);
    optim.register_fields(f, "optim.");
    f.add("data.dir", &data.dir, "directory of train.bin and val.bin written by `frugal prepare-data`");
    f.add("data.document_mask", &data.document_mask,
          "documents packed into one window do not attend to each other and each restarts its rotary positions at "
          "0 (Megatron's reset_attention_mask + reset_position_ids); false: causal attention over the whole window, "
          "as in standard pretraining");
    f.add("parallel.ep", &parallel.ep,
          "expert-parallel ranks that together hold one copy of the experts (n_experts / ep each); must divide the "
          "number of ranks and moe.n_experts",
          1);
    f.add("parallel.zero", &parallel.zero,
          "ZeRO stage: 0 = every rank holds the whole optimizer state; 1 = AdamW's moments sharded over the "
          "data-parallel group (replicated parameters) and the expert-data-parallel group (experts), gradients "
          "reduce-scattered and the updated parameters all-gathered (docs/parallelism.md)",
          0, 1);
    f.add("parallel.overlap_shared_experts", &parallel.overlap_shared_experts,
          "the shared experts compute while the MoE dispatch's all-to-all is in flight (it is started, they run, "
          "then it is waited for); false: after it. The results are bitwise the same; only the step time differs");
    f.add("parallel.dispatch", &parallel.dispatch,
          "how the MoE all-to-all crosses nodes when an expert-parallel group spans several: flat sends each token "
          "to every rank holding one of its experts; hierarchical sends it once to each node that holds any, to the "
          "rank in the same place there, which passes it on inside the node (fewer bytes between nodes; the sums "
          "are reassociated, docs/parallelism.md). Needs the same number of consecutive ranks on every node",
          {"flat", "hierarchical"});
    f.add("parallel.timeout_s", &parallel.timeout_s,
          "a collective (all-to-all, all-reduce) not finished after this many seconds stops the whole job with a "
          "message naming the step, the layer and the collective; 0 = wait forever",
          0.0);
    precision.register_fields(f, "precision.");
    checkpoint.register_fields(f, "checkpoint.");
    accounting.register_fields(f, "accounting.");
    f.add("fault.kill_rank", &fault.kill_rank,
          "fault injection: this rank fails at the start of step fault.at_step, once per run directory; -1 = off", -1);
    f.add("fault.at_step", &fault.at_step, "fault injection: the step (1-based) at which fault.kill_rank fails", 1);
    f.add("fault.kind", &fault.kind,
          "fault injection: kill (SIGKILL, as a crashed node), throw (an error, as a bug), hang (stop responding, as "
          "a stuck rank) or kill_in_checkpoint (rank 0 dies between writing the step's checkpoint and committing it)",
          {"kill", "throw", "hang", "kill_in_checkpoint"});
    return f;
}

void TrainConfig::validate(int64_t world_size) const {
    model.validate();
    optim.validate();
    FRUGAL_CONFIG_CHECK(train.seq_len <= model.max_seq_len, "train.seq_len (", train.seq_len,
                        ") exceeds model.max_seq_len (", model.max_seq_len, "): raise model.max_seq_len to at least ",
                        train.seq_len);
    parallel::ParallelDims::make(int(world_size), 0, parallel.ep, model.moe.n_experts);  // the layout's checks
    FRUGAL_CONFIG_CHECK(parallel.dispatch != "hierarchical" || !precision.fp8_dispatch,
                        "parallel.dispatch: hierarchical sends FP32 rows and precision.fp8_dispatch is true: set "
                        "parallel.dispatch: flat to send FP8 rows, or precision.fp8_dispatch: false");
    const int64_t per_step = train.micro_batch * world_size;
    FRUGAL_CONFIG_CHECK(train.global_batch % per_step == 0, "train.global_batch (", train.global_batch,
                        ") must be a multiple of train.micro_batch (", train.micro_batch, ") x ranks (", world_size,
                        ") = ", per_step, ": set train.global_batch to ",
                        std::max<int64_t>(1, train.global_batch / per_step) * per_step);
    // The largest buffers of one micro-batch, computed without wrapping: refused before anything is allocated.
    const model::ModelConfig& m = model;
    const int64_t tokens = mul_or_throw({train.micro_batch, train.seq_len}, kMaxActivation,
                                        "tokens per micro-batch (train.micro_batch x train.seq_len)",
                                        "lower train.micro_batch or train.seq_len");
    const std::string fix = "lower train.micro_batch or train.seq_len";
    mul_or_throw({tokens, m.vocab_size}, kMaxActivation, "logits per micro-batch (tokens x model.vocab_size)", fix);
    mul_or_throw({tokens, m.n_heads, train.seq_len}, kMaxActivation,
                 "attention scores per micro-batch (tokens x model.n_heads x train.seq_len)", fix);
    mul_or_throw({tokens,
                  std::max({m.d_ff, m.moe.d_expert * std::max<int64_t>(1, m.moe.n_shared_experts), m.n_heads * m.hd(),
                            m.d_model}),
                  4},
                 kMaxActivation, "feed-forward activations per micro-batch", fix);
    mul_or_throw({tokens, m.moe.top_k, 2 * m.moe.d_expert}, kMaxActivation,
                 "routed expert activations per micro-batch (tokens x moe.top_k x 2 x moe.d_expert)", fix);
    mul_or_throw({train.steps, train.global_batch, train.seq_len}, int64_t(1) << 62,
                 "tokens of the run (train.steps x train.global_batch x train.seq_len)",
                 "lower train.steps or train.global_batch");
    precision.validate();
    if (!checkpoint.export_hf.empty())  // found now rather than after the last step
        frugal::checkpoint::check_exportable(model, frugal::checkpoint::hf_model_type(model));
    // The device must be in the catalogue before anything is allocated.
    accounting::find_device(accounting::load_catalogue(accounting.hardware), accounting.device, "accounting.device");

    FRUGAL_CONFIG_CHECK(fault.kill_rank < world_size, "fault.kill_rank (", fault.kill_rank,
                        ") is not a rank of this job (", world_size, " ranks): use -1 or a rank below ", world_size);
}

// model.init_from: hf:DIR: the architecture keys come from DIR/config.json; the training knobs (balancing losses,
// capacity, bias rate, sequence length, init) stay as configured.
void adopt_hf_architecture(model::ModelConfig& m) {
    FRUGAL_CONFIG_CHECK(m.init_from.rfind("hf:", 0) == 0, "model.init_from '", m.init_from,
                        "' is not of the form hf:DIR (a Hugging Face model directory)");
    const std::string dir = m.init_from.substr(3);
    FRUGAL_CONFIG_CHECK(std::filesystem::exists(std::filesystem::path(dir) / "config.json"), "model.init_from: ", dir,
                        " has no config.json");
    checkpoint::check_importable(dir);
    model::ModelConfig hf = model::model_from_hf_config((std::filesystem::path(dir) / "config.json").string());
    m.vocab_size = hf.vocab_size;
    m.d_model = hf.d_model;
    m.n_layers = hf.n_layers;
    m.n_heads = hf.n_heads;
    m.n_kv_heads = hf.n_kv_heads;
    m.head_dim = hf.head_dim;
    m.d_ff = hf.d_ff;
    m.dense_layers = hf.dense_layers;
    m.rope_theta = hf.rope_theta;
    m.norm_eps = hf.norm_eps;
    m.qk_norm = hf.qk_norm;
    m.qk_norm_scope = hf.qk_norm_scope;
    m.attn_bias = hf.attn_bias;
    m.tie_embeddings = hf.tie_embeddings;
    m.moe.n_experts = hf.moe.n_experts;
    m.moe.top_k = hf.moe.top_k;
    m.moe.d_expert = hf.moe.d_expert;
    m.moe.n_shared_experts = hf.moe.n_shared_experts;
    m.moe.shared_expert_gate = hf.moe.shared_expert_gate;
    m.moe.score_func = hf.moe.score_func;
    m.moe.norm_topk_prob = hf.moe.norm_topk_prob;
    m.moe.routed_scaling_factor = hf.moe.routed_scaling_factor;
    m.moe.n_group = hf.moe.n_group;
    m.moe.topk_group = hf.moe.topk_group;
    m.moe.group_score = hf.moe.group_score;
    m.attention = hf.attention;
    m.q_lora_rank = hf.q_lora_rank;
    m.kv_lora_rank = hf.kv_lora_rank;
    m.qk_nope_head_dim = hf.qk_nope_head_dim;
    m.qk_rope_head_dim = hf.qk_rope_head_dim;
    m.v_head_dim = hf.v_head_dim;
    m.partial_rotary_factor = hf.partial_rotary_factor;
    m.rope_scaling = hf.rope_scaling;
    m.rope_factor = hf.rope_factor;
    // The original context YaRN's ramp is measured against is the checkpoint's, not this run's max_seq_len.
    m.rope_original_max_seq_len = hf.rope_original_max_seq_len > 0 ? hf.rope_original_max_seq_len : hf.max_seq_len;
    m.yarn_beta_fast = hf.yarn_beta_fast;
    m.yarn_beta_slow = hf.yarn_beta_slow;
    m.yarn_mscale = hf.yarn_mscale;
    m.yarn_mscale_all_dim = hf.yarn_mscale_all_dim;
    // mtp_modules stays the run's choice (0 trains the main model only; the checkpoint's MTP layers are then
    // skipped), but cannot ask for modules the checkpoint does not have.
    FRUGAL_CONFIG_CHECK(m.mtp_modules <= hf.mtp_modules, "model.mtp_modules (", m.mtp_modules, ") exceeds the ",
                        hf.mtp_modules, " multi-token-prediction layers of ", dir,
                        " (num_nextn_predict_layers): set model.mtp_modules to at most ", hf.mtp_modules);
}

TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides, int64_t world_size) {
    TrainConfig cfg;
    ConfigFields fields = cfg.fields();
    if (!path.empty())
        apply_yaml_config(input::read_file(path, "config file", "give a YAML run config such as configs/demo.yaml"),
                          path, fields);
    for (const std::string& o : overrides) apply_override(o, fields);
    if (!cfg.model.init_from.empty()) adopt_hf_architecture(cfg.model);
    cfg.validate(world_size);
    return cfg;
}

std::string to_yaml(TrainConfig& cfg) {
    ConfigFields fields = cfg.fields();
    // Sections in registration order, keys in registration order within each.
    std::vector<std::string> sections;
    std::map<std::string, std::vector<const ConfigField*>> by_section;
    for (const auto& f : fields.fields()) {
        std::string section = f.key.substr(0, f.key.find('.'));
        if (!by_section.count(section)) sections.push_back(section);
        by_section[section].push_back(&f);
    }
    YAML::Emitter out;
    out << YAML::BeginMap;
    for (const auto& s : sections) {
        out << YAML::Key << s << YAML::Value << YAML::BeginMap;
        for (const ConfigField* f : by_section[s]) {
            out << YAML::Key << f->key.substr(s.size() + 1) << YAML::Value;
            if (f->is_list) {
                std::string v = f->get();
                v = v.substr(1, v.size() - 2);
                std::vector<std::string> items;
                std::stringstream ss(v);
                std::string item;
                while (std::getline(ss, item, ',')) {
                    size_t b = item.find_first_not_of(' ');
                    if (b != std::string::npos) items.push_back(item.substr(b));
                }
                out << YAML::Flow << items;
            } else {
                out << f->get();
            }
        }
        out << YAML::EndMap;
    }
    out << YAML::EndMap;
    return std::string(out.c_str()) + "\n";
}

std::string config_docs() {
    TrainConfig cfg;
    ConfigFields fields = cfg.fields();
    std::ostringstream os;
    os << "# Configuration keys\n\n"
       << "A training run is configured by one YAML file with the sections below; any key can also be given on the\n"
       << "command line as `--set section.key=value`. Unknown keys, wrong types and out-of-range values are rejected\n"
       << "before anything is allocated, with the file and line, the nearest known key and exit code 2.\n"
       << "The resolved configuration of every run is written to `run.out_dir/config.yaml`.\n\n"
       << "This page is generated by `frugal config --docs` from the code that parses the keys; a test checks that\n"
       << "it is current.\n";
    std::string section;
    for (const auto& f : fields.fields()) {
        std::string s = f.key.substr(0, f.key.find('.'));
        if (s != section) {
            section = s;
            os << "\n## `" << s << "`\n\n| key | type | default | accepted | meaning |\n|---|---|---|---|---|\n";
        }
        os << "| `" << f.key << "` | " << f.type << " | `" << f.default_value << "` | " << f.accepted << " | " << f.doc
           << " |\n";
    }
    return os.str();
}

}  // namespace frugal::trainer
