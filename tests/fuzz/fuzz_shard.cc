// libFuzzer target: fuzz::shard (see tests/fuzz/targets.h and scripts/fuzz.sh).
#include "tests/fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    frugal::fuzz::shard(data, size);
    return 0;
}
