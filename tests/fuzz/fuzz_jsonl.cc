// libFuzzer target: fuzz::jsonl (see tests/fuzz/targets.h and scripts/fuzz.sh).
#include "tests/fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    frugal::fuzz::jsonl(data, size);
    return 0;
}
