#include "apps/model_loading.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "accounting/model_source.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf.h"
#include "model/hf_config.h"

namespace frugal::apps {

namespace fs = std::filesystem;

model::ModelConfig checkpoint_model_config(const std::string& ckpt, std::string* init_from) {
    checkpoint::TrainingState st = checkpoint::read_state(ckpt);
    // The stored configuration's model: and moe: sections define the architecture.
    const std::string tmp =
        (fs::temp_directory_path() / ("frugal-model-" + std::to_string(::getpid()) + ".yaml")).string();
    std::ofstream(tmp) << st.config_yaml;
    model::ModelConfig cfg;
    try {
        cfg = accounting::load_model(tmp, "", nullptr);
    } catch (...) {
        fs::remove(tmp);
        throw;
    }
    fs::remove(tmp);
    if (init_from) *init_from = cfg.init_from;
    cfg.init_from.clear();
    return cfg;
}

model::ModelConfig hf_model_config(const std::string& dir) {
    checkpoint::check_importable(dir);
    return model::model_from_hf_config((fs::path(dir) / "config.json").string());
}

LoadedModel load_checkpoint_model(const std::string& ckpt, model::ExpertShard shard) {
    LoadedModel m;
    m.cfg = checkpoint_model_config(ckpt);
    m.net = std::make_unique<model::Transformer<float>>(m.cfg, shard, false);
    std::vector<checkpoint::TensorSlot> slots = checkpoint::param_slots(m.net->params());
    // The aux-loss-free routing biases steer the top-k choice: without them the model would route differently.
    auto layers = m.net->moe_layers();
    size_t i = 0;
    for (int64_t l = 0; l < m.cfg.n_layers; ++l) {
        if (!m.cfg.is_moe_layer(l)) continue;
        std::vector<float>& bias = layers[i++]->router().expert_bias();
        slots.push_back({"moe/layers." + std::to_string(l) + ".expert_bias",
                         {m.cfg.moe.n_experts},
                         0,
                         {m.cfg.moe.n_experts},
                         true,
                         bias.data()});
    }
    checkpoint::TrainingState ignored;
    checkpoint::load(ckpt, slots, ignored);
    return m;
}

LoadedModel load_hf_model(const std::string& dir, model::ExpertShard shard) {
    LoadedModel m;
    m.cfg = hf_model_config(dir);
    m.net = std::make_unique<model::Transformer<float>>(m.cfg, shard, false);
    checkpoint::load_hf_weights(dir, m.net->params());
    return m;
}

}  // namespace frugal::apps
