#include "accounting/hardware.h"

#include <yaml-cpp/yaml.h>

#include "accounting/hardware_builtin.h"
#include "core/config_fields.h"
#include "core/error.h"
#include "core/input_file.h"

namespace frugal::accounting {

std::map<std::string, Device> load_catalogue(const std::string& path) {
    const std::string where = path.empty() ? std::string("hardware catalogue (built-in)") : path;
    const std::string text =
        path.empty() ? std::string(kBuiltinHardwareYaml)
                     : input::read_file(path, "hardware catalogue", "give a YAML file like configs/hardware.yaml");
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
        FRUGAL_CONFIG_ERROR(input::at(where, e.mark), ": not valid YAML: ", e.msg);
    }
    FRUGAL_CONFIG_CHECK(root.IsMap() && root["devices"] && root["devices"].IsMap(), where,
                        ": expected a 'devices:' mapping (see configs/hardware.yaml)");
    std::map<std::string, Device> out;
    for (auto it = root["devices"].begin(); it != root["devices"].end(); ++it) {
        Device d;
        d.key = input::as_string(it->first, where, "a device name");
        FRUGAL_CONFIG_CHECK(!out.count(d.key), input::at(where, it->first.Mark()), ": device '", d.key,
                            "' appears twice: keep one");
        const YAML::Node n = it->second;
        FRUGAL_CONFIG_CHECK(n.IsMap(), input::at(where, n.Mark()), ": device '", d.key,
                            "': expected a mapping of its numbers (bf16_tflops, fp8_tflops, ...)");
        auto num = [&](const char* k) -> double {
            FRUGAL_CONFIG_CHECK(n[k], input::at(where, n.Mark()), ": device '", d.key, "' lacks '", k, "'");
            return input::as_number(n[k], where, "devices." + d.key + "." + k, 0.0, 1e12);
        };
        d.name = n["name"] ? input::as_string(n["name"], where, "devices." + d.key + ".name") : d.key;
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
