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

LoadedModel load_checkpoint_model(const std::string& ckpt) {
    checkpoint::TrainingState st = checkpoint::read_state(ckpt);
    // The stored configuration's model: and moe: sections define the architecture.
    const std::string tmp =
        (fs::temp_directory_path() / ("frugal-model-" + std::to_string(::getpid()) + ".yaml")).string();
    std::ofstream(tmp) << st.config_yaml;
    LoadedModel m;
    try {
        m.cfg = accounting::load_model(tmp, "", nullptr);
    } catch (...) {
        fs::remove(tmp);
        throw;
    }
    fs::remove(tmp);
    m.cfg.init_from.clear();
    m.net = std::make_unique<model::Transformer<float>>(m.cfg);
    std::vector<checkpoint::TensorSlot> slots = checkpoint::full_param_slots(m.net->params());
    checkpoint::TrainingState ignored;
    checkpoint::load(ckpt, slots, ignored);
    return m;
}

LoadedModel load_hf_model(const std::string& dir) {
    checkpoint::check_importable(dir);
    LoadedModel m;
    m.cfg = model::model_from_hf_config((fs::path(dir) / "config.json").string());
    m.net = std::make_unique<model::Transformer<float>>(m.cfg);
    checkpoint::load_hf_weights(dir, m.net->params());
    return m;
}

}  // namespace frugal::apps
