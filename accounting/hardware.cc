#include "accounting/hardware.h"

#include <yaml-cpp/yaml.h>

#include "accounting/hardware_builtin.h"
#include "core/config_fields.h"
#include "core/error.h"

namespace frugal::accounting {

std::map<std::string, Device> load_catalogue(const std::string& path) {
    YAML::Node root;
    try {
        root = path.empty() ? YAML::Load(kBuiltinHardwareYaml) : YAML::LoadFile(path);
    } catch (const YAML::Exception& e) {
        FRUGAL_CONFIG_ERROR("hardware catalogue ", path.empty() ? "(built-in)" : path, ": ", e.what());
    }
    FRUGAL_CONFIG_CHECK(root["devices"] && root["devices"].IsMap(), "hardware catalogue ", path,
                        ": expected a 'devices:' mapping (see configs/hardware.yaml)");
    std::map<std::string, Device> out;
    for (auto it = root["devices"].begin(); it != root["devices"].end(); ++it) {
        Device d;
        d.key = it->first.as<std::string>();
        const YAML::Node& n = it->second;
        auto num = [&](const char* k) -> double {
            FRUGAL_CONFIG_CHECK(n[k], "hardware catalogue: device '", d.key, "' lacks '", k, "'");
            try {
                return n[k].as<double>();
            } catch (const YAML::Exception&) {
                FRUGAL_CONFIG_ERROR("hardware catalogue: device '", d.key, "': '", k, "' is not a number");
            }
        };
        d.name = n["name"] ? n["name"].as<std::string>() : d.key;
        d.bf16_tflops = num("bf16_tflops");
        d.fp8_tflops = num("fp8_tflops");
        d.memory_gb = num("memory_gb");
        d.bandwidth_tbs = num("bandwidth_tbs");
        d.price_per_hour = num("price_per_hour");
        out[d.key] = d;
    }
    return out;
}

Device find_device(const std::map<std::string, Device>& catalogue, const std::string& key, const std::string& what) {
    auto it = catalogue.find(key);
    if (it != catalogue.end()) return it->second;
    std::string known, nearest;
    size_t best = std::string::npos;
    for (const auto& [k, d] : catalogue) {
        known += (known.empty() ? "" : ", ") + k;
        size_t dist = edit_distance(key, k);
        if (dist < best) {
            best = dist;
            nearest = k;
        }
    }
    FRUGAL_CONFIG_ERROR(what, " '", key, "' is not in the hardware catalogue; did you mean '", nearest,
                        "'? Known devices: ", known, " (add your own to a copy of configs/hardware.yaml)");
}

}  // namespace frugal::accounting
