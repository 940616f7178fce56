// The libFuzzer entry points, shared by the fuzz executables (tests/fuzz/fuzz_*.cc, built with clang and
// -fsanitize=fuzzer,address,undefined by scripts/fuzz.sh) and by the GoogleTest replay of tests/fuzz/regressions/.
// Each calls a real parser on an in-memory buffer. frugal::Error (ConfigError included) is a clean rejection and
// returns false; anything else that escapes, or a sanitizer report, is a finding.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"
#include "core/config_fields.h"
#include "core/error.h"
#include "data/hf_tokenizer.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "model/config.h"
#include "model/hf_config.h"
#include "trainer/run_config_yaml.h"

namespace frugal::fuzz {

template <typename F>
bool accepts(F&& parse) {
    try {
        parse();
        return true;
    } catch (const Error&) {
        return false;
    }
}

inline std::string text(const uint8_t* data, size_t size) {
    return std::string(reinterpret_cast<const char*>(data), size);
}

// A safetensors file held in memory: header length, header, tensor bytes.
inline bool safetensors_header(const uint8_t* data, size_t size) {
    return accepts([&] { checkpoint::parse_safetensors_header(data, size, "fuzz.safetensors"); });
}

inline bool hf_config(const uint8_t* data, size_t size) {
    return accepts([&] { model::model_from_hf_config_text(text(data, size), "config.json"); });
}

// A tokenizer.json, then an encoding with it of a text with spaces, digits, multi-byte UTF-8 and a special token.
inline bool tokenizer(const uint8_t* data, size_t size) {
    return accepts([&] {
        data::HfTokenizer tok(text(data, size), "tokenizer.json");
        std::vector<int32_t> ids;
        tok.encode("Hello world 123 <|endoftext|> d\xc3\xa9j\xc3\xa0 \xe4\xb8\xad\xe6\x96\x87  \n\tx", ids);
        for (int32_t id : ids) FRUGAL_CHECK(id >= 0 && id < tok.vocab_size(), "id ", id, " outside the vocabulary");
    });
}

// The run config's key registry over a model config and one key of every other kind (list, string, float).
struct RunConfigFields {
    model::ModelConfig model;
    std::vector<std::string> freeze;
    std::string out_dir;
    double timeout_s = 300;
    ConfigFields fields;
    RunConfigFields() {
        model.register_fields(fields, "model.");
        fields.add("train.freeze", &freeze, "kinds", {"norm", "bias", "embedding", "router", "weight"});
        fields.add("run.out_dir", &out_dir, "dir");
        fields.add("parallel.timeout_s", &timeout_s, "seconds", 0.0);
    }
};

inline bool run_config(const uint8_t* data, size_t size) {
    return accepts([&] {
        RunConfigFields c;
        trainer::apply_yaml_config(text(data, size), "config.yaml", c.fields);
        c.model.validate();
    });
}

// `--set` overrides, one per non-empty line.
inline bool set_override(const uint8_t* data, size_t size) {
    return accepts([&] {
        RunConfigFields c;
        const std::string all = text(data, size);
        size_t begin = 0;
        while (begin <= all.size()) {
            size_t end = all.find('\n', begin);
            if (end == std::string::npos) end = all.size();
            if (end > begin) trainer::apply_override(all.substr(begin, end - begin), c.fields);
            begin = end + 1;
        }
        c.model.validate();
    });
}

// A token shard: its header against the file size, then every token and target read (the id checks).
inline bool shard(const uint8_t* data, size_t size) {
    return accepts([&] {
        data::parse_shard_header(data, size, "fuzz.bin");
        const std::string path = "/tmp/frugal_fuzz_shard_" + std::to_string(::getpid()) + ".bin";
        {
            std::FILE* f = std::fopen(path.c_str(), "wb");
            FRUGAL_CHECK(f && std::fwrite(data, 1, size, f) == size && std::fclose(f) == 0, "cannot write ", path);
        }
        struct Remove {
            const std::string& p;
            ~Remove() { std::remove(p.c_str()); }
        } remove{path};
        data::ShardReader r(path);
        std::vector<int32_t> ids(size_t(r.num_tokens()));
        r.read(ids.data(), 0, r.num_tokens());
        r.read_targets(ids.data(), 0, r.num_tokens());
    });
}

inline bool jsonl(const uint8_t* data, size_t size) {
    return accepts([&] { data::parse_jsonl(text(data, size), "fuzz.jsonl"); });
}

}  // namespace frugal::fuzz
