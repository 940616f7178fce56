#include "accounting/model_source.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>

#include "core/error.h"
#include "core/input_file.h"
#include "model/hf_config.h"

namespace frugal::accounting {

namespace fs = std::filesystem;

namespace {

// Sets the model: and moe: keys of a Frugal YAML file (other sections are ignored here).
model::ModelConfig from_frugal_yaml(const std::string& path) {
    model::ModelConfig m;
    ConfigFields f;
    m.register_fields(f, "model.");
    const std::string text = input::read_file(path, "model file", "give a Frugal YAML, a config.json or a preset");
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
        FRUGAL_CONFIG_ERROR(input::at(path, e.mark), ": not valid YAML: ", e.msg);
    }
    FRUGAL_CONFIG_CHECK(root.IsMap(), path, ": expected a mapping with model: and moe: sections");
    for (const char* section : {"model", "moe"}) {
        if (!root[section]) continue;
        FRUGAL_CONFIG_CHECK(root[section].IsMap(), input::at(path, root[section].Mark()), ": ", section,
                            ": expected a mapping of its keys");
        for (auto it = root[section].begin(); it != root[section].end(); ++it) {
            const std::string key = std::string(section) + "." + input::as_string(it->first, path, "a key");
            const std::string where = input::at(path, it->first.Mark());
            f.set(key, input::scalar_text(it->second, path, key, "a plain value"), where);
        }
    }
    m.validate();
    return m;
}

}  // namespace

namespace {
// A Hugging Face config.json, labelled with its family and routing ("glm4_moe, sigmoid routing"): kimi_k2 reads
// as deepseek_v3; glm4_moe, dots1, minimax_m2 and deepseek_v3 route by sigmoid scores.
model::ModelConfig from_hf(const std::string& json, const std::string& source, std::string* label) {
    std::string type;
    model::ModelConfig m = model_from_hf_config(json, &type);
    if (label) *label = source + " (" + type + ", " + m.moe.score_func + " routing)";
    return m;
}
}  // namespace

model::ModelConfig load_model(const std::string& source, const std::string& presets_dir, std::string* label) {
    if (label) *label = source;
    if (fs::path(source).extension() == ".json") return from_hf(source, source, label);
    if (fs::exists(source) && fs::is_directory(source) && fs::exists(fs::path(source) / "config.json"))
        return from_hf((fs::path(source) / "config.json").string(), source, label);
    if (fs::exists(source)) return from_frugal_yaml(source);
    const fs::path preset = fs::path(presets_dir) / (source + ".yaml");
    if (fs::exists(preset)) {
        if (label) *label = source + " (" + preset.string() + ")";
        return from_frugal_yaml(preset.string());
    }
    std::string known;
    if (fs::is_directory(presets_dir))
        for (const auto& e : fs::directory_iterator(presets_dir))
            known += (known.empty() ? "" : ", ") + e.path().stem().string();
    FRUGAL_CONFIG_ERROR("model '", source, "' is neither a file nor a preset; presets: ", known,
                        "; or give a Frugal YAML or a Hugging Face config.json");
}

}  // namespace frugal::accounting
