#include "apps/model_loading.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "accounting/estimate.h"
#include "accounting/model_source.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf.h"
#include "core/memory.h"
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

namespace {
// The weights (FP32, no gradients) of this process's shard against its share of the machine, before allocating.
void check_weights_fit(const model::ModelConfig& cfg, model::ExpertShard shard, const std::string& source) {
    accounting::RankMemoryInput need;
    need.model = cfg;
    need.ep = shard.count > 0 ? std::max<int64_t>(1, cfg.moe.n_experts / shard.count) : 1;
    need.with_grads = need.with_optimizer = false;
    const int64_t avail = available_memory_bytes();
    // Without the launcher's local size, at least the ranks that share the experts share the machine.
    accounting::check_rank_memory(accounting::rank_memory(need),
                                  avail < 0 ? -1.0 : double(avail) / double(ranks_on_this_machine(need.ep)),
                                  "loading " + source, "spread its experts over more ranks (frugal launch -n N ...)");
}
}  // namespace

LoadedModel load_checkpoint_model(const std::string& ckpt, model::ExpertShard shard) {
    LoadedModel m;
    m.cfg = checkpoint_model_config(ckpt);
    check_weights_fit(m.cfg, shard, ckpt);
    m.net = std::make_unique<model::Transformer<float>>(m.cfg, shard, false);
    std::vector<checkpoint::TensorSlot> slots = checkpoint::param_slots(m.net->params());
    // The aux-loss-free routing biases steer the top-k choice: without them the model would route differently.
    auto layers = m.net->moe_layers();
    size_t i = 0;
    for (int64_t l : m.cfg.moe_block_indices()) {
        float* bias = layers[i++]->router().expert_bias();
        slots.push_back({"moe/" + m.cfg.block_name(l) + ".expert_bias",
                         {m.cfg.moe.n_experts},
                         0,
                         {m.cfg.moe.n_experts},
                         true,
                         bias});
    }
    checkpoint::TrainingState ignored;
    checkpoint::load(ckpt, slots, ignored);
    return m;
}

LoadedModel load_hf_model(const std::string& dir, model::ExpertShard shard) {
    LoadedModel m;
    m.cfg = hf_model_config(dir);
    check_weights_fit(m.cfg, shard, dir);
    m.net = std::make_unique<model::Transformer<float>>(m.cfg, shard, false);
    checkpoint::load_hf_weights(dir, m.net->params());
    return m;
}

}  // namespace frugal::apps
