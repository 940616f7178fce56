// accounting.* configuration keys.
#pragma once

#include <string>

#include "core/config_fields.h"

namespace frugal::accounting {

struct AccountingConfig {
    std::string device = "cpu";      // a key of the hardware catalogue
    double price_per_hour = 0;       // 0: the catalogue's price
    std::string hardware;            // catalogue file; empty: the built-in configs/hardware.yaml
    double projection_tokens = 1e9;  // the cost report projects training this many tokens at the measured speed

    void register_fields(ConfigFields& f, const std::string& p) {
        f.add(p + "device", &device,
              "device each rank runs on, a key of the hardware catalogue (cpu, h100-sxm, h800, h200, a100-80gb, "
              "b200, mi300x, ascend-910b)");
        f.add(p + "price_per_hour", &price_per_hour, "price per device-hour in dollars; 0 = the catalogue's", 0.0);
        f.add(p + "hardware", &hardware, "hardware catalogue file; empty = the built-in configs/hardware.yaml");
        f.add(p + "projection_tokens", &projection_tokens,
              "the end-of-run cost report projects training this many tokens at the measured throughput", 0.0);
    }
};

}  // namespace frugal::accounting
