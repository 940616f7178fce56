// frugal import-hf / export-hf: Hugging Face checkpoints to Frugal checkpoints and back.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include "accounting/estimate.h"
#include "apps/cli_output.h"
#include "apps/commands.h"
#include "apps/model_loading.h"
#include "apps/mpi_job.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/flags.h"
#include "core/input_file.h"
#include "core/json.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/version.h"
#include "model/hf_config.h"
#include "model/transformer.h"
#include "parallel/communicator.h"
#include "parallel/mpi_comm.h"
#include "parallel/parallel_dims.h"
#include "trainer/run_config.h"

namespace frugal::apps {

namespace fs = std::filesystem;

namespace {
// Slots for every parameter, zero optimizer moments and the routers' expert biases as imported (zero for families
// without e_score_correction_bias): a step-0 Frugal checkpoint. Every zero
// slot reads the same buffer (as large as the largest parameter): the import holds the model once, not three times.
// Under expert parallelism each rank holds its experts; rank 0 writes the replicated rows, the first replica's
// ranks their experts' rows.
struct FullSlots {
    std::vector<checkpoint::TensorSlot> slots;
    std::vector<float> zeros;
    FullSlots(model::Transformer<float>& net, const model::ModelConfig& m, const parallel::ParallelDims& dims) {
        const bool rep = dims.rank == 0, exp = dims.edp_rank == 0;
        slots = checkpoint::param_slots(net.params(), rep, exp);
        const size_t n_params = slots.size();
        int64_t largest = m.moe.n_experts;
        for (model::Param* p : net.params().params()) largest = std::max(largest, p->value.numel());
        zeros.assign(size_t(largest), 0.0f);
        for (size_t i = 0; i < n_params; ++i)
            for (const char* kind : {"optim/exp_avg/", "optim/exp_avg_sq/"}) {
                checkpoint::TensorSlot z = slots[i];
                z.name = kind + z.name.substr(7);  // params/NAME -> optim/KIND/NAME
                z.data = zeros.data();
                slots.push_back(z);
            }
        for (int64_t l : m.moe_block_indices()) {
            const std::string layer = m.block_name(l);
            const model::Buffer* bias = net.params().find_buffer(layer + ".moe.router.bias");
            slots.push_back({"moe/" + layer + ".expert_bias",
                             {m.moe.n_experts},
                             0,
                             {m.moe.n_experts},
                             rep,
                             bias ? bias->value.data<float>() : zeros.data()});
        }
    }
};

const std::vector<Flag> kImportFlags = {
    {"--out", "CKPT.h5", "the checkpoint file to write (required)"},
    {"--force", "", "replace an existing CKPT.h5"},
    {"--json", "",
     "print one JSON object when done: source, out, model_type, ranks, parameters, datasets, bytes (of the "
     "checkpoint file)"}};

const std::vector<Flag> kExportFlags = {
    {"--out", "DIR", "the Hugging Face model directory to write (required)"},
    {"--dtype", "bf16|f16|f32|fp8-block",
     "dtype of the written weights (default bf16); fp8-block: DeepSeek's released format, linear weights as E4M3 in "
     "128 x 128 blocks with weight_scale_inv, the rest BF16"},
    {"--model-type", "TYPE",
     "qwen3_moe, qwen2_moe, mixtral, olmoe, deepseek_v3, deepseek_v2, glm4_moe or dots1 (default: the family "
     "that holds the model's architecture)"},
    {"--config", "HF_DIR/config.json", "the config.json to copy, with the tokenizer files beside it"},
    {"--force", "", "replace a DIR that holds anything but a previous export"},
    {"--json", "",
     "print one JSON object when done: checkpoint, out, model_type, dtype, ranks, files [{name, bytes}], bytes"}};

std::string import_help() {
    return "usage: frugal import-hf HF_DIR --out CKPT.h5 [--force] [--json]\n"
           "       frugal launch -n N import-hf HF_DIR --out CKPT.h5\n\n"
           "Reads a Hugging Face model directory (config.json, model.safetensors or sharded with "
           "model.safetensors.index.json; F32, BF16 or F16) of a supported family (qwen3_moe, qwen2_moe, mixtral, "
           "olmoe, deepseek_v3 or kimi_k2, deepseek_v2, glm4_moe, dots1) and writes a step-0 Frugal checkpoint. On one "
           "process the model is held once in FP32; under frugal "
           "launch the experts are spread over the N ranks (each reads only its own) and the checkpoint is written "
           "collectively. To fine-tune without converting, set model.init_from: hf:HF_DIR in the training config.\n\n" +
           flags_help(kImportFlags);
}

std::string export_help() {
    return "usage: frugal export-hf CKPT.h5 --out DIR [--dtype bf16|f16|f32|fp8-block] [--model-type "
           "qwen3_moe|qwen2_moe|mixtral|olmoe|deepseek_v3|deepseek_v2|glm4_moe|dots1] [--config HF_DIR/config.json] "
           "[--force] [--json]\n"
           "       frugal launch -n N export-hf CKPT.h5 --out DIR [...]\n\n"
           "Writes config.json (copied from --config with the tokenizer files beside it; by default from the Hugging "
           "Face model the checkpoint was imported or fine-tuned from, when it is still there; else generated), "
           "sharded safetensors and model.safetensors.index.json, loadable by transformers. Importing and exporting "
           "reproduces the original tensors bit for bit in the same dtype. Under frugal launch each rank reads and "
           "writes only its experts. DIR is replaced whole when the export is complete.\n\n" +
           flags_help(kExportFlags);
}

// The one positional argument of import-hf / export-hf.
std::string single_input(const ParsedFlags& f, const std::string& command, const std::string& what) {
    FRUGAL_CONFIG_CHECK(f.positional.size() == 1, command, ": give exactly one ", what, " (got ", f.positional.size(),
                        "; see --help)");
    return f.positional[0];
}

struct ImportJob {
    std::string dir, out;
    bool force = false, json = false;
    trainer::TrainConfig cfg;
    parallel::ParallelDims dims;
};

// Every check before anything is allocated or any rank communicates.
ImportJob plan_import(const Args& args, int world_size, int rank) {
    ImportJob j;
    const ParsedFlags f = parse_flags("frugal import-hf", kImportFlags, args);
    j.dir = single_input(f, "frugal import-hf", "HF_DIR");
    j.out = f.get("--out");
    j.force = f.has("--force");
    j.json = f.has("--json");
    FRUGAL_CONFIG_CHECK(!j.out.empty(), "frugal import-hf HF_DIR --out CKPT.h5: --out is required (see --help)");
    FRUGAL_CONFIG_CHECK(!fs::is_directory(j.out), "--out ", j.out,
                        " is a directory: give the checkpoint file to write");
    FRUGAL_CONFIG_CHECK(j.force || !fs::exists(j.out), "--out ", j.out,
                        " exists: choose a new file, or add --force to replace it");
    check_writable_dir(fs::absolute(j.out).parent_path().string(), "--out");
    checkpoint::check_importable(j.dir);
    j.cfg.model.init_from = "hf:" + j.dir;
    trainer::adopt_hf_architecture(j.cfg.model);
    j.cfg.model.init_from.clear();
    // The stored config keeps the model's context length (a training config sets its own).
    j.cfg.model.max_seq_len = model::model_from_hf_config((fs::path(j.dir) / "config.json").string()).max_seq_len;
    j.cfg.train.seq_len = std::min(j.cfg.train.seq_len, j.cfg.model.max_seq_len);
    j.dims = parallel::ParallelDims::make(world_size, rank, world_size, j.cfg.model.moe.n_experts);
    // Each process holds the replicated parameters and its share of the experts in FP32: say so before allocating
    // rather than fail midway.
    accounting::RankMemoryInput need;
    need.model = j.cfg.model;
    need.ep = j.dims.ep;
    need.with_grads = need.with_optimizer = false;
    const int64_t avail = available_memory_bytes();
    accounting::check_rank_memory(accounting::rank_memory(need),
                                  avail < 0 ? -1.0 : double(avail) / double(ranks_on_this_machine(world_size)),
                                  "import-hf of " + j.dir,
                                  "spread it over more ranks (frugal launch -n N import-hf ...), or fine-tune from it "
                                  "directly with model.init_from: hf:" +
                                      j.dir + " instead of converting it");
    return j;
}

// What an import wrote, read back from the file.
std::string import_summary(const ImportJob& j, const std::string& path, int ranks) {
    int64_t params = 0;
    const auto manifest = checkpoint::read_manifest(path);
    for (const auto& e : manifest)
        if (e.name.rfind("params/", 0) == 0) params += shape_numel(e.shape);
    return JsonWriter()
        .begin_object()
        .field("source", j.dir)
        .field("out", path)
        .field("model_type", checkpoint::hf_model_type(j.cfg.model))
        .field("ranks", ranks)
        .field("parameters", params)
        .field("datasets", int64_t(manifest.size()))
        .field("bytes", int64_t(fs::file_size(path)))
        .end_object()
        .str();
}

void run_import(ImportJob& j, parallel::Communicator& world, JsonStdout& out) {
    model::Transformer<float> net(j.cfg.model, j.dims.expert_shard(j.cfg.model.moe.n_experts), false);
    checkpoint::load_hf_weights(j.dir, net.params());  // this rank's experts only
    FullSlots s(net, j.cfg.model, j.dims);
    checkpoint::TrainingState st;
    j.cfg.model.init_from = "hf:" + fs::absolute(j.dir).string();  // provenance: export-hf finds the tokenizer there
    st.config_yaml = trainer::to_yaml(j.cfg);
    st.frugal_version = kVersion;
    st.world_size = j.dims.world;
    st.ep = j.dims.ep;
    const fs::path target = fs::absolute(j.out);
    const std::string staging = (target.parent_path() / ("." + target.filename().string() + ".import")).string();
    const std::string written = checkpoint::save(staging, s.slots, st, world, 1, 0);
    if (world.rank() == 0) {
        fs::rename(written, target);
        fs::remove_all(staging);
        log::info("import-hf: ", j.dir, " -> ", target.string(), " (", world.size(), " rank(s))");
        if (j.json) out.print(import_summary(j, target.string(), world.size()));
    }
    world.barrier();
}

struct ExportJob {
    std::string ckpt, out, dtype = "bf16", type, source;
    bool force = false, json = false;
    model::ModelConfig cfg;
    parallel::ParallelDims dims;
};

// The config.json an export copies must describe the exported weights: same family, same shapes.
void check_source_config(const std::string& path, const model::ModelConfig& m, const std::string& type) {
    input::require_file(path, "--config", "give the source model's config.json");
    std::string source_type;
    const model::ModelConfig src = model::model_from_hf_config(path, &source_type);
    FRUGAL_CONFIG_CHECK(source_type == type, "--config ", path, ": model_type '", source_type,
                        "' but the export writes '", type, "': give the config.json of a ", type,
                        " model, or leave --config out to generate one");
    const std::pair<const char*, std::pair<int64_t, int64_t>> dims[] = {
        {"vocab_size (model.vocab_size)", {src.vocab_size, m.vocab_size}},
        {"hidden_size (model.d_model)", {src.d_model, m.d_model}},
        {"num_hidden_layers (model.n_layers)", {src.n_layers, m.n_layers}},
        {"num_attention_heads (model.n_heads)", {src.n_heads, m.n_heads}},
        {"num_key_value_heads (model.n_kv_heads)", {src.n_kv_heads, m.n_kv_heads}},
        {"head_dim (model.head_dim)", {src.hd(), m.hd()}},
        {"the expert count (moe.n_experts)", {src.moe.n_experts, m.moe.n_experts}},
        {"num_experts_per_tok (moe.top_k)", {src.moe.top_k, m.moe.top_k}},
        {"the expert width (moe.d_expert)", {src.moe.d_expert, m.moe.d_expert}}};
    for (const auto& [field, v] : dims)
        FRUGAL_CONFIG_CHECK(v.first == v.second, "--config ", path, ": ", field, " is ", v.first,
                            " but the checkpoint's model has ", v.second,
                            ": this config.json is not the model's; give the right one or leave --config out");
    // Fewer MTP modules than the source is fine: the export copies the others from the source's files.
    FRUGAL_CONFIG_CHECK(src.mtp_modules >= m.mtp_modules, "--config ", path, ": num_nextn_predict_layers is ",
                        src.mtp_modules, " but the checkpoint's model has ", m.mtp_modules,
                        " MTP modules (model.mtp_modules): give the right config.json or leave --config out");
}

ExportJob plan_export(const Args& args, int world_size, int rank) {
    ExportJob j;
    const ParsedFlags f = parse_flags("frugal export-hf", kExportFlags, args);
    j.ckpt = single_input(f, "frugal export-hf", "CKPT.h5");
    j.out = f.get("--out");
    j.dtype = f.get("--dtype", j.dtype);
    j.type = f.get("--model-type");
    j.source = f.get("--config");
    j.force = f.has("--force");
    j.json = f.has("--json");
    FRUGAL_CONFIG_CHECK(!j.out.empty(), "frugal export-hf CKPT.h5 --out DIR: --out is required (see --help)");
    checkpoint::check_export_target(j.out, "--out", j.force);
    check_writable_dir(fs::absolute(j.out).parent_path().string(), "--out");
    std::string init_from;
    j.cfg = checkpoint_model_config(j.ckpt, &init_from);
    if (j.source.empty()) {
        // A checkpoint imported or fine-tuned from a Hugging Face model remembers it: its config.json and
        // tokenizer files travel with the export.
        const fs::path known = init_from.rfind("hf:", 0) == 0 ? fs::path(init_from.substr(3)) / "config.json" : "";
        if (!known.empty() && fs::exists(known)) j.source = known.string();
    }
    if (j.type.empty()) j.type = checkpoint::hf_model_type(j.cfg);
    if (!j.source.empty()) check_source_config(j.source, j.cfg, j.type);
    FRUGAL_CONFIG_CHECK(j.dtype == "bf16" || j.dtype == "f16" || j.dtype == "f32" || j.dtype == "fp8-block",
                        "--dtype '", j.dtype, "': use bf16, f16, f32 or fp8-block");
    checkpoint::check_exportable(j.cfg, j.type);
    j.dims = parallel::ParallelDims::make(world_size, rank, world_size, j.cfg.moe.n_experts);
    return j;
}

// What an export wrote: every file of the directory with its size.
std::string export_summary(const ExportJob& j, int ranks) {
    std::vector<std::pair<std::string, int64_t>> files;
    for (const auto& e : fs::directory_iterator(j.out))
        if (e.is_regular_file()) files.push_back({e.path().filename().string(), int64_t(e.file_size())});
    std::sort(files.begin(), files.end());
    JsonWriter w;
    w.begin_object()
        .field("checkpoint", j.ckpt)
        .field("out", j.out)
        .field("model_type", j.type)
        .field("dtype", j.dtype)
        .field("ranks", ranks)
        .key("files")
        .begin_array();
    int64_t bytes = 0;
    for (const auto& [name, size] : files) {
        w.begin_object().field("name", name).field("bytes", size).end_object();
        bytes += size;
    }
    return w.end_array().field("bytes", bytes).end_object().str();
}

void run_export(ExportJob& j, parallel::Communicator& world, JsonStdout& out) {
    LoadedModel loaded = load_checkpoint_model(j.ckpt, j.dims.expert_shard(j.cfg.moe.n_experts));
    checkpoint::export_hf(j.out, loaded.net->params(), loaded.cfg, j.type, j.dtype, j.source, world,
                          checkpoint::ExportLayout{j.dims.ep, j.dims.ep_rank, j.dims.edp_rank == 0});
    if (world.rank() == 0) {
        log::info("export-hf: ", j.ckpt, " -> ", j.out, " (", j.type, ", ", j.dtype, ", ", world.size(), " rank(s))");
        if (j.json) out.print(export_summary(j, world.size()));
    }
}

// One process, or every rank under mpirun (frugal launch). Under --json every rank sends its stray stdout to
// stderr and rank 0 alone prints the summary.
template <typename Job>
int run_command(const Args& args, Job (*plan)(const Args&, int, int),
                void (*run)(Job&, parallel::Communicator&, JsonStdout&)) {
    if (!parallel::launched_by_mpi()) {
        JsonStdout out(wants_json(args));
        Job j = plan(args, 1, 0);
        parallel::SingleProcessComm world;
        run(j, world, out);
        return 0;
    }
    Job j;
    std::optional<JsonStdout> out;
    return run_mpi_job(
        [&] {
            int rank = 0, size = 1;
            MPI_Comm_rank(MPI_COMM_WORLD, &rank);
            MPI_Comm_size(MPI_COMM_WORLD, &size);
            out.emplace(wants_json(args));
            j = plan(args, size, rank);
            return 600.0;
        },
        [&](parallel::Communicator& world) { run(j, world, *out); });
}
}  // namespace

int cmd_import_hf(const Args& args) {
    if (args.empty() || wants_help(args)) {
        std::fputs(import_help().c_str(), args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    return run_command<ImportJob>(args, plan_import, run_import);
}

int cmd_export_hf(const Args& args) {
    if (args.empty() || wants_help(args)) {
        std::fputs(export_help().c_str(), args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    return run_command<ExportJob>(args, plan_export, run_export);
}

}  // namespace frugal::apps
