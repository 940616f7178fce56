// The device catalogue (configs/hardware.yaml): peaks, memory and the default price per device-hour. A copy of the
// file is compiled in, so the catalogue works from any directory; accounting.hardware points at another file.
#pragma once

#include <map>
#include <string>

namespace frugal::accounting {

struct Device {
    std::string key, name;
    double bf16_tflops = 0, fp8_tflops = 0, memory_gb = 0, bandwidth_tbs = 0, price_per_hour = 0;
    // The catalogue's peak: FP8 when the run's matmuls are FP8 and the device has FP8 units, BF16 otherwise. MFU
    // takes device_peak() (accounting/cpu_peak.h), which is this figure for every device but `cpu`, whose peak is
    // measured on the machine.
    double peak_tflops(bool fp8) const { return fp8 && fp8_tflops > 0 ? fp8_tflops : bf16_tflops; }
};

// path empty: the built-in copy of configs/hardware.yaml.
std::map<std::string, Device> load_catalogue(const std::string& path = "");
// Throws ConfigError listing the known devices when key is unknown.
Device find_device(const std::map<std::string, Device>& catalogue, const std::string& key, const std::string& what);

}  // namespace frugal::accounting
