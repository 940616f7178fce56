// libFuzzer target: fuzz::safetensors_header (see tests/fuzz/targets.h and scripts/fuzz.sh).
#include "tests/fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    frugal::fuzz::safetensors_header(data, size);
    return 0;
}
