// The text layer of the run configuration: a YAML run config, and `--set key=value` overrides, applied to a key
// registry (ConfigFields). Header-only so that the libFuzzer target can drive it without the rest of the trainer.
//
// Every message starts with "FILE:LINE:COL:" (or "--set key=value:"), names the key and the value and says what to
// do: a key may appear once; a section holds keys, a key holds a plain value or a list of plain values; yaml-cpp's
// own errors are reported at their position.
#pragma once

#include <yaml-cpp/yaml.h>

#include <map>
#include <string>

#include "core/config_fields.h"
#include "core/error.h"
#include "core/input_file.h"

namespace frugal::trainer {

namespace detail {

inline bool is_section(const ConfigFields& fields, const std::string& key) {
    for (const auto& f : fields.fields())
        if (f.key.rfind(key + ".", 0) == 0) return true;
    return false;
}

inline void walk_yaml(const YAML::Node& node, const std::string& prefix, const std::string& path,
                      const ConfigFields& fields) {
    std::map<std::string, int> line_of;
    for (auto it = node.begin(); it != node.end(); ++it) {
        const std::string where = input::at(path, it->first.Mark());
        const std::string name = input::as_string(it->first, path, prefix.empty() ? "a section name" : "a key");
        const std::string key = prefix + name;
        const auto [seen, fresh] = line_of.emplace(name, it->first.Mark().line + 1);
        FRUGAL_CONFIG_CHECK(fresh, where, ": ", key, " appears twice (first on line ", seen->second, "): keep one");
        const YAML::Node value = it->second;
        const ConfigField* f = fields.find(key);
        if (value.IsMap()) {
            FRUGAL_CONFIG_CHECK(f == nullptr, where, ": ", key, " takes a value (", f ? f->accepted : "",
                                "), not a mapping");
            walk_yaml(value, key + ".", path, fields);
        } else if (!f && is_section(fields, key)) {
            FRUGAL_CONFIG_ERROR(where, ": ", key, " is a section: expected a mapping of its keys (", key,
                                ".KEY: value), got ", value.IsNull() ? "nothing" : "'" + YAML::Dump(value) + "'");
        } else if (value.IsSequence()) {
            std::string joined;
            for (const auto& item : value) {
                FRUGAL_CONFIG_CHECK(item.IsScalar(), input::at(path, item.Mark()), ": ", key,
                                    " must be a list of plain values");
                joined += (joined.empty() ? "" : ",") + item.Scalar();
            }
            FRUGAL_CONFIG_CHECK(f == nullptr || f->is_list, where, ": ", key, " takes one value (", f->accepted,
                                "), not a list");
            fields.set(key, "[" + joined + "]", where);
        } else if (value.IsScalar()) {
            fields.set(key, value.Scalar(), where);
        } else {
            if (!f) fields.set(key, "", where);  // reports the unknown key
            FRUGAL_CONFIG_ERROR(where, ": ", key, " has no value: expected ", f->accepted);
        }
    }
}

}  // namespace detail

// Parses text as a YAML run config (path is quoted in messages) and sets its keys through fields.
inline void apply_yaml_config(const std::string& text, const std::string& path, const ConfigFields& fields) {
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
        FRUGAL_CONFIG_ERROR(input::at(path, e.mark), ": not valid YAML: ", e.msg);
    }
    if (root.IsNull()) return;
    FRUGAL_CONFIG_CHECK(root.IsMap(), input::at(path, root.Mark()),
                        ": the top level must be a mapping of sections (run:, model:, ...)");
    try {
        detail::walk_yaml(root, "", path, fields);
    } catch (const YAML::Exception& e) {
        FRUGAL_CONFIG_ERROR(input::at(path, e.mark), ": ", e.msg);
    }
}

// One `--set key=value` override.
inline void apply_override(const std::string& o, const ConfigFields& fields) {
    const size_t eq = o.find('=');
    FRUGAL_CONFIG_CHECK(eq != std::string::npos && eq > 0, "--set ", o,
                        ": expected key=value, e.g. --set train.steps=100");
    std::string key = o.substr(0, eq);
    key.erase(key.find_last_not_of(" \t") + 1);
    key.erase(0, key.find_first_not_of(" \t"));
    FRUGAL_CONFIG_CHECK(!key.empty(), "--set ", o,
                        ": the key is empty: expected key=value, e.g. --set train.steps=100");
    fields.set(key, o.substr(eq + 1), "--set " + o);
}

}  // namespace frugal::trainer
