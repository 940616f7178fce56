// frugal import-hf / export-hf: Hugging Face checkpoints to Frugal checkpoints and back.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "accounting/flops.h"
#include "apps/commands.h"
#include "apps/model_loading.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf.h"
#include "core/error.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/version.h"
#include "model/hf_config.h"
#include "model/transformer.h"
#include "parallel/communicator.h"
#include "trainer/run_config.h"

namespace frugal::apps {

namespace fs = std::filesystem;

namespace {
std::string take(const Args& args, size_t& i, const std::string& flag) {
    FRUGAL_CONFIG_CHECK(i + 1 < args.size(), flag, " needs a value");
    return args[++i];
}

// Slots for every parameter, zero optimizer moments and zero expert biases: a step-0 Frugal checkpoint. Every zero
// slot reads the same buffer (as large as the largest parameter): the import holds the model once, not three times.
struct FullSlots {
    std::vector<checkpoint::TensorSlot> slots;
    std::vector<float> zeros;
    FullSlots(model::Transformer<float>& net, const model::ModelConfig& m) {
        slots = checkpoint::param_slots(net.params());
        int64_t largest = m.moe.n_experts;
        for (model::Param* p : net.params().params()) largest = std::max(largest, p->value.numel());
        zeros.assign(size_t(largest), 0.0f);
        for (model::Param* p : net.params().params())
            for (const char* kind : {"optim/exp_avg/", "optim/exp_avg_sq/"})
                slots.push_back({kind + p->name, p->global_shape, 0, p->shape, true, zeros.data()});
        for (int64_t l = 0; l < m.n_layers; ++l) {
            if (!m.is_moe_layer(l)) continue;
            slots.push_back({"moe/layers." + std::to_string(l) + ".expert_bias",
                             {m.moe.n_experts},
                             0,
                             {m.moe.n_experts},
                             true,
                             zeros.data()});
        }
    }
};
}  // namespace

int cmd_import_hf(const Args& args) {
    if (args.empty() || wants_help(args)) {
        std::fputs(
            "usage: frugal import-hf HF_DIR --out CKPT.h5\n\nReads a Hugging Face model directory "
            "(config.json, model.safetensors or sharded with model.safetensors.index.json; F32, BF16 or F16) of "
            "a supported family (qwen3_moe, qwen2_moe, mixtral, olmoe) and writes a step-0 Frugal checkpoint. To "
            "fine-tune "
            "without converting, set model.init_from: hf:HF_DIR in the training config.\n",
            args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    std::string dir, out;
    for (size_t i = 0; i < args.size(); ++i) {
        if (args[i] == "--out")
            out = take(args, i, "--out");
        else if (args[i].rfind("-", 0) == 0)
            FRUGAL_CONFIG_ERROR("frugal import-hf: unknown option '", args[i], "'");
        else
            dir = args[i];
    }
    FRUGAL_CONFIG_CHECK(!dir.empty() && !out.empty(), "frugal import-hf HF_DIR --out CKPT.h5 (see --help)");
    checkpoint::check_importable(dir);
    trainer::TrainConfig cfg;
    cfg.model.init_from = "hf:" + dir;
    trainer::adopt_hf_architecture(cfg.model);
    cfg.model.init_from.clear();
    // The stored config keeps the model's context length (a training config sets its own).
    cfg.model.max_seq_len = model::model_from_hf_config((fs::path(dir) / "config.json").string()).max_seq_len;
    cfg.train.seq_len = std::min(cfg.train.seq_len, cfg.model.max_seq_len);
    // The import holds the model in FP32 on this one process: say so before allocating rather than fail midway.
    const double need = accounting::count_params(cfg.model).total * 4.0, avail = double(available_memory_bytes());
    FRUGAL_CONFIG_CHECK(avail < 0 || need < 0.9 * avail, "import-hf needs about ", std::llround(need / 1e9),
                        " GB to hold ", dir, " in FP32 and this machine has ", std::llround(avail / 1e9),
                        " GB available: fine-tune from it directly with model.init_from: hf:", dir,
                        " (each rank reads only its own experts) instead of converting it");
    model::Transformer<float> net(cfg.model, {}, false);
    checkpoint::load_hf_weights(dir, net.params());
    FullSlots s(net, cfg.model);
    checkpoint::TrainingState st;
    cfg.model.init_from = "hf:" + fs::absolute(dir).string();  // provenance: export-hf finds the tokenizer there
    st.config_yaml = trainer::to_yaml(cfg);
    st.frugal_version = kVersion;
    parallel::SingleProcessComm world;
    const fs::path target = fs::absolute(out);
    const std::string staging = (target.parent_path() / (".import-" + std::to_string(::getpid()))).string();
    const std::string written = checkpoint::save(staging, s.slots, st, world, 1, 0);
    fs::rename(written, target);
    fs::remove_all(staging);
    log::info("import-hf: ", dir, " -> ", target.string(), " (", net.params().numel(), " parameters)");
    return 0;
}

int cmd_export_hf(const Args& args) {
    if (args.empty() || wants_help(args)) {
        std::fputs(
            "usage: frugal export-hf CKPT.h5 --out DIR [--dtype bf16|f16|f32] [--model-type "
            "qwen3_moe|qwen2_moe|mixtral|olmoe] "
            "[--config HF_DIR/config.json]\n\nThe family defaults to the one that holds the model's architecture. "
            "Writes config.json (copied from --config with the tokenizer "
            "files beside it; by default from the Hugging Face model the checkpoint was imported or fine-tuned from, "
            "when it is still there; else generated), sharded safetensors and model.safetensors.index.json, loadable "
            "by "
            "transformers. Importing and exporting reproduces the original tensors bit for bit in the same "
            "dtype.\n",
            args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    std::string ckpt, out, dtype = "bf16", type, source;
    for (size_t i = 0; i < args.size(); ++i) {
        if (args[i] == "--out")
            out = take(args, i, "--out");
        else if (args[i] == "--dtype")
            dtype = take(args, i, "--dtype");
        else if (args[i] == "--model-type")
            type = take(args, i, "--model-type");
        else if (args[i] == "--config")
            source = take(args, i, "--config");
        else if (args[i].rfind("-", 0) == 0)
            FRUGAL_CONFIG_ERROR("frugal export-hf: unknown option '", args[i], "'");
        else
            ckpt = args[i];
    }
    FRUGAL_CONFIG_CHECK(!ckpt.empty() && !out.empty(), "frugal export-hf CKPT.h5 --out DIR (see --help)");
    LoadedModel loaded = load_checkpoint_model(ckpt);
    if (source.empty()) {
        // A checkpoint imported or fine-tuned from a Hugging Face model remembers it: its config.json and
        // tokenizer files travel with the export.
        std::string init_from;
        checkpoint_model_config(ckpt, &init_from);
        const fs::path known = init_from.rfind("hf:", 0) == 0 ? fs::path(init_from.substr(3)) / "config.json" : "";
        if (!known.empty() && fs::exists(known)) source = known.string();
    }
    const model::ModelConfig& m = loaded.cfg;
    if (type.empty()) type = checkpoint::hf_model_type(m);
    checkpoint::export_hf(out, loaded.net->params(), m, type, dtype, source);
    log::info("export-hf: ", ckpt, " -> ", out, " (", type, ", ", dtype, ")");
    return 0;
}

}  // namespace frugal::apps
