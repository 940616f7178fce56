// Replays every input the fuzzers found a crash with (tests/fuzz/regressions/<target>/) through the same entry point
// as the fuzz target, built with the normal compiler: each must now be rejected cleanly (frugal::Error), or, for a
// file named accept-*, accepted. The seed corpora (tests/fuzz/corpus/<target>/) are replayed too: no input may
// escape with anything but frugal::Error.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "tests/fuzz/targets.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;

const std::map<std::string, std::function<bool(const uint8_t*, size_t)>>& targets() {
    static const std::map<std::string, std::function<bool(const uint8_t*, size_t)>> t = {
        {"safetensors_header", fuzz::safetensors_header},
        {"hf_config", fuzz::hf_config},
        {"tokenizer", fuzz::tokenizer},
        {"run_config", fuzz::run_config},
        {"set_override", fuzz::set_override},
        {"shard", fuzz::shard},
        {"jsonl", fuzz::jsonl}};
    return t;
}

std::string bytes_of(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// Runs every file under tests/fuzz/<kind>/<target>/; returns how many.
int replay(const std::string& kind, bool check_outcome) {
    const fs::path root = fs::path(FRUGAL_SOURCE_DIR) / "tests" / "fuzz" / kind;
    int n = 0;
    if (!fs::exists(root)) return 0;
    for (const auto& dir : fs::directory_iterator(root)) {
        if (!dir.is_directory()) continue;
        const auto it = targets().find(dir.path().filename().string());
        EXPECT_NE(it, targets().end()) << "no fuzz target named " << dir.path();
        if (it == targets().end()) continue;
        for (const auto& f : fs::directory_iterator(dir.path())) {
            if (!f.is_regular_file()) continue;
            const std::string b = bytes_of(f.path());
            SCOPED_TRACE(f.path().string());
            const bool accepted = it->second(reinterpret_cast<const uint8_t*>(b.data()), b.size());
            if (check_outcome) {
                EXPECT_EQ(accepted, f.path().filename().string().rfind("accept-", 0) == 0);
            }
            ++n;
        }
    }
    return n;
}

TEST(FuzzRegressions, EveryFoundCrashIsNowACleanRejection) { replay("regressions", true); }

TEST(FuzzRegressions, SeedCorporaParseOrRejectCleanly) {
    EXPECT_GE(replay("corpus", false), 7) << "a seed corpus per target";
    // The valid seeds are accepted: the targets are not rejecting everything.
    const std::string demo = bytes_of(fs::path(FRUGAL_SOURCE_DIR) / "tests/fuzz/corpus/run_config/demo_model.yaml");
    EXPECT_TRUE(fuzz::run_config(reinterpret_cast<const uint8_t*>(demo.data()), demo.size()));
    for (const char* f : {"safetensors_header/valid", "hf_config/qwen3_moe", "tokenizer/tiny_bytelevel",
                          "set_override/simple", "shard/bytes", "jsonl/text.jsonl"}) {
        const std::string b = bytes_of(fs::path(FRUGAL_SOURCE_DIR) / "tests/fuzz/corpus" / f);
        const std::string target = std::string(f).substr(0, std::string(f).find('/'));
        EXPECT_TRUE(targets().at(target)(reinterpret_cast<const uint8_t*>(b.data()), b.size())) << f;
    }
    for (const char* f : {"safetensors_header/duplicate_key", "safetensors_header/overlap", "shard/id_past_vocab",
                          "run_config/duplicate", "set_override/bad", "jsonl/bad.jsonl", "tokenizer/wordpiece",
                          "hf_config/string_number"}) {
        const std::string b = bytes_of(fs::path(FRUGAL_SOURCE_DIR) / "tests/fuzz/corpus" / f);
        const std::string target = std::string(f).substr(0, std::string(f).find('/'));
        EXPECT_FALSE(targets().at(target)(reinterpret_cast<const uint8_t*>(b.data()), b.size())) << f;
    }
}

}  // namespace
}  // namespace frugal
