// Hostile safetensors headers: every one is a ConfigError naming the file, the tensor and the field, never a read
// outside the file. And tensors a config.json does not account for are refused by name.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "tests/util.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;
using test::config_error;
using test::expect_has;

std::string file_bytes(const std::string& header, size_t payload, uint64_t length = 0) {
    const uint64_t n = length ? length : header.size();
    std::string b(8, '\0');
    std::memcpy(&b[0], &n, 8);
    return b + header + std::string(payload, '\0');
}

std::string rejected(const std::string& header, size_t payload, uint64_t length = 0) {
    const std::string b = file_bytes(header, payload, length);
    return config_error([&] {
        checkpoint::parse_safetensors_header(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "m.safetensors");
    });
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, int64_t b, int64_t e) {
    return "\"" + name + "\": {\"dtype\": \"" + dtype + "\", \"shape\": " + shape + ", \"data_offsets\": [" +
           std::to_string(b) + ", " + std::to_string(e) + "]}";
}

TEST(HostileSafetensors, EveryMalformedHeaderIsRefusedNamingTheTensorAndField) {
    const std::string a = entry("a", "F32", "[2]", 0, 8);
    {
        const std::string ok = file_bytes("{" + a + ", " + entry("b", "BF16", "[2, 2]", 8, 16) + "}", 16);
        const auto h =
            checkpoint::parse_safetensors_header(reinterpret_cast<const uint8_t*>(ok.data()), ok.size(), "ok");
        EXPECT_EQ(h.tensors.size(), 2u);
        EXPECT_EQ(h.tensors.at("b").begin, 8u);
    }
    expect_has(rejected("{" + a + ", " + entry("a", "F32", "[2]", 8, 16) + "}", 16),
               {"m.safetensors", "tensor \"a\" appears twice"});
    expect_has(rejected("{" + a + ", " + entry("b", "F32", "[2]", 4, 12) + "}", 12),
               {"tensors \"a\" [0, 8) and \"b\" [4, 12) overlap"});
    expect_has(rejected("{" + entry("a", "F32", "[2]", 8, 0) + "}", 8), {"tensor \"a\".data_offsets", "ends before"});
    expect_has(rejected("{" + entry("a", "F32", "[2]", 0, 8) + "}", 4), {"run past the file's 4 data bytes"});
    expect_has(rejected("{" + entry("a", "F32", "[3]", 0, 8) + "}", 8), {"hold 8 bytes", "needs 12"});
    // 2^40 x 2^40 elements: the old product wrapped; now refused as too many elements.
    expect_has(rejected("{" + entry("a", "F32", "[1099511627776, 1099511627776]", 0, 0) + "}", 0),
               {"tensor \"a\".shape", "more than 2^48 elements"});
    expect_has(rejected("{" + entry("a", "F32", "[-2, -2]", 0, 16) + "}", 16), {"tensor \"a\".shape[0]", "-2"});
    expect_has(rejected("{" + entry("a", "F32", "[2.5]", 0, 8) + "}", 8), {"tensor \"a\".shape[0]", "an integer"});
    expect_has(rejected("{" + entry("a", "F33", "[2]", 0, 8) + "}", 8), {"tensor \"a\".dtype", "'F33'"});
    expect_has(rejected("{\"a\": {\"dtype\": \"F32\", \"shape\": [2]}}", 8), {"tensor \"a\"", "no \"data_offsets\""});
    expect_has(rejected("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8], \"x\": 1}}", 8),
               {"unknown field \"x\""});
    expect_has(rejected("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0]}}", 8),
               {"tensor \"a\".data_offsets", "[begin, end]"});
    expect_has(rejected("{\"a\": 5}", 8), {"tensor \"a\"", "expected an object"});
    expect_has(rejected("[1, 2]", 0), {"not a JSON object"});
    expect_has(rejected("{\"a\": ", 0), {"not valid JSON"});
    expect_has(rejected("{}", 0, 1000), {"header length 1000 exceeds the file"});
    expect_has(rejected("{}", 0, ~uint64_t(0)), {"header length 18446744073709551615 exceeds"});
    expect_has(rejected("{\"__metadata__\": {\"k\": [1]}}", 0), {"__metadata__.k", "a list"});
    expect_has(rejected("{\"__metadata__\": 3}", 0), {"__metadata__", "object of strings"});
    expect_has(config_error([] {
                   const uint8_t four[4] = {};
                   checkpoint::parse_safetensors_header(four, 4, "tiny");
               }),
               {"tiny is 4 bytes"});
}

TEST(HostileSafetensors, ADirectoryUnaccountedTensorsAndEscapingOrDuplicateIndexEntriesAreRefused) {
    const fs::path dir = test::temp_dir("hostile_st");
    expect_has(config_error([&] { checkpoint::SafetensorsFile f(dir.string()); }), {"is a directory, not a file"});
    std::vector<float> v(4, 1.0f);
    checkpoint::write_safetensors(
        (dir / "model.safetensors").string(),
        {{"model.norm.weight", "F32", {4}, {}, v.data()}, {"model.layers.9.mlp.gate.weight", "F32", {4}, {}, v.data()}},
        {});
    checkpoint::SafetensorsFile f((dir / "model.safetensors").string());
    EXPECT_EQ(f.tensors().size(), 2u);
    EXPECT_NO_THROW(
        checkpoint::check_hf_tensors_expected(dir.string(), {"model.norm.weight", "model.layers.9.mlp.gate.weight"}));
    expect_has(config_error([&] { checkpoint::check_hf_tensors_expected(dir.string(), {"model.norm.weight"}); }),
               {dir.string(), "config.json does not account for: model.layers.9.mlp.gate.weight"});
    // An index that points outside the directory is refused before any file is opened.
    std::ofstream(dir / "model.safetensors.index.json")
        << R"({"weight_map": {"model.norm.weight": "../../etc/passwd"}})";
    expect_has(config_error([&] { checkpoint::hf_dir_tensor_names(dir.string()); }),
               {"weight_map.\"model.norm.weight\"", "../../etc/passwd", "a file name inside"});
    std::ofstream(dir / "model.safetensors.index.json") << R"({"weight_map": {"a": "x", "a": "y"}})";
    expect_has(config_error([&] { checkpoint::hf_dir_tensor_names(dir.string()); }), {"names tensor \"a\" twice"});
    fs::remove_all(dir);
}

}  // namespace
}  // namespace frugal
