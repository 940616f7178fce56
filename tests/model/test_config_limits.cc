// Sizes that overflow and Hugging Face config.json files that the YAML keys they map to would refuse: each is a
// ConfigError naming the key (or config.json's path and field), the value and the limit.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <sstream>

#include "core/checked.h"
#include "core/error.h"
#include "model/config.h"
#include "model/hf_config.h"
#include "tests/util.h"
#include "trainer/run_config.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;
using test::config_error;
using test::expect_has;

TEST(CheckedMath, ProductsRefuseToWrap) {
    int64_t p = 0;
    EXPECT_FALSE(checked_mul(int64_t(1) << 62, int64_t(4), &p));
    EXPECT_TRUE(checked_mul(int64_t(1) << 31, int64_t(1) << 31, &p));
    EXPECT_EQ(p, int64_t(1) << 62);
    EXPECT_EQ(product_within({1 << 20, 1 << 20, 1 << 20}, int64_t(1) << 62), int64_t(1) << 60);
    EXPECT_EQ(product_within({int64_t(1) << 40, int64_t(1) << 40}, int64_t(1) << 62), -1);
    EXPECT_EQ(product_within({3, -1}, 100), -1);
    expect_has(config_error([] {
                   mul_or_throw({1 << 30, 1 << 30}, 1 << 20, "x", "fix it");
               }),
               {"x = 1073741824 x 1073741824 exceeds 1048576: fix it"});
}

TEST(ConfigLimits, HugeSizesAreRefusedWithKeyValueAndLimit) {
    auto err = [](const std::string& set) { return config_error([&] { trainer::load_config("", {set}, 1); }); };
    expect_has(err("model.d_model=4611686018427387904"),
               {"model.d_model = 4611686018427387904 is out of range", "[1, 1048576]"});
    expect_has(err("model.head_dim=4611686018427387904"), {"model.head_dim", "[0, 65536]"});
    expect_has(err("moe.n_shared_experts=4611686018427387904"), {"moe.n_shared_experts", "[0, 65536]"});
    expect_has(err("model.norm_eps=0"), {"model.norm_eps", "out of range"});
    expect_has(err("train.steps=9223372036854775807"), {"train.steps", "out of range"});
    // Each in range, the product too large: every expert weight of a layer past 2^50 elements.
    expect_has(
        config_error([] {
            trainer::load_config("", {"moe.n_experts=1048576", "moe.d_expert=16777216", "model.d_model=1048576"}, 1);
        }),
        {"routed expert weights", "3 x 1048576 x 16777216 x 1048576", "exceeds"});
    expect_has(config_error([] {
                   trainer::load_config(
                       "", {"train.micro_batch=1073741824", "train.global_batch=1073741824", "train.seq_len=128"}, 1);
               }),
               {"per micro-batch", "exceeds 281474976710656", "lower train.micro_batch or train.seq_len"});
}

TEST(ConfigLimits, ValidateChecksConfigsBuiltInCode) {
    // A config that never passed through the key registry (a config.json, a test) gets the same ranges.
    model::ModelConfig m;
    m.d_model = int64_t(1) << 62;
    expect_has(config_error([&] { m.validate(); }), {"model.d_model = 4611686018427387904", "[1, 1048576]"});
    m = model::ModelConfig();
    m.moe.n_shared_experts = int64_t(1) << 62;
    expect_has(config_error([&] { m.validate(); }), {"moe.n_shared_experts"});
    m = model::ModelConfig();
    m.n_kv_heads = 8;  // more key/value heads than the 4 query heads
    expect_has(config_error([&] { m.validate(); }), {"model.n_kv_heads (8) exceeds model.n_heads (4)"});
    m = model::ModelConfig();
    EXPECT_NO_THROW(m.validate());
    EXPECT_GT(m.check_param_count(), 0);
}

class HostileHfConfig : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = test::temp_dir("hostile_hf");
        std::ifstream in(std::string(FRUGAL_SOURCE_DIR) + "/tests/golden/hf/qwen3_moe/config.json");
        std::stringstream ss;
        ss << in.rdbuf();
        good_ = ss.str();
    }
    void TearDown() override { fs::remove_all(dir_); }
    // The golden qwen3_moe config.json with `field: value` replaced (or added when absent).
    std::string with(const std::string& field, const std::string& value) const {
        const std::regex re("\"" + field + "\": [^,\\n]+");
        if (std::regex_search(good_, re)) return std::regex_replace(good_, re, "\"" + field + "\": " + value);
        return "{\"" + field + "\": " + value + "," + good_.substr(good_.find('{') + 1);
    }
    std::string rejected(const std::string& json) {
        const std::string path = (dir_ / "config.json").string();
        std::ofstream(path) << json;
        return config_error([&] { model::model_from_hf_config(path); });
    }
    fs::path dir_;
    std::string good_;
};

TEST_F(HostileHfConfig, AnOutOfRangeOrMistypedFieldIsRefusedNamingItAndItsYamlKey) {
    EXPECT_NO_THROW(model::model_from_hf_config_text(good_, "config.json"));
    const std::string path = (dir_ / "config.json").string();
    expect_has(rejected(with("num_attention_heads", "0")),
               {path, "\"num_attention_heads\"", "model.n_heads = 0 is out of range"});
    expect_has(rejected(with("num_hidden_layers", "0")), {"\"num_hidden_layers\"", "model.n_layers = 0"});
    expect_has(rejected(with("num_experts_per_tok", "0")), {"\"num_experts_per_tok\"", "moe.top_k = 0"});
    expect_has(rejected(with("num_experts_per_tok", "9")),
               {path, "moe.top_k (9) exceeds moe.n_experts (4)", "moe.top_k is \"num_experts_per_tok\""});
    expect_has(rejected(with("rms_norm_eps", "-1e-06")), {"\"rms_norm_eps\"", "model.norm_eps", "out of range"});
    expect_has(rejected(with("rms_norm_eps", "0")), {"\"rms_norm_eps\"", "out of range"});
    expect_has(rejected(with("hidden_size", "-32")), {"\"hidden_size\"", "model.d_model = -32"});
    expect_has(rejected(with("hidden_size", "4611686018427387904")), {"\"hidden_size\"", "[1, 1048576]"});
    expect_has(rejected(with("vocab_size", "97.5")), {"\"vocab_size\"", "expected an integer", "97.5"});
    expect_has(rejected(with("vocab_size", "\"97\"")), {"\"vocab_size\"", "the string \"97\""});
    expect_has(rejected(with("rope_theta", "\"big\"")), {"rope_parameters.rope_theta\"", "the string"});
    expect_has(rejected(with("num_key_value_heads", "3")), {"model.n_kv_heads (3)", "\"num_key_value_heads\""});
    expect_has(rejected(with("tie_word_embeddings", "\"no\"")), {"\"tie_word_embeddings\"", "true or false"});
    expect_has(rejected(with("moe_intermediate_size", "[24]")), {"\"moe_intermediate_size\"", "got a list"});
    expect_has(rejected(with("model_type", "[1]")), {"\"model_type\"", "expected a string"});
}

TEST_F(HostileHfConfig, AMalformedOrMissingFileIsRefusedAndABadFieldIsNamedByLineAndColumn) {
    const std::string path = (dir_ / "config.json").string();
    expect_has(rejected("[1, 2]"), {path, "not a JSON object"});
    expect_has(rejected("{\"model_type\": \"qwen3_moe\",\n \"vocab_size\": [3}"), {path + ":2:", "not valid JSON"});
    expect_has(rejected(with("hidden_size", "32, \"hidden_size\": 64")), {"\"hidden_size\" appears twice"});
    // The line and column of the bad field.
    const std::string bad = with("num_attention_heads", "0");
    const size_t at = bad.find("\"num_attention_heads\": 0");
    const int64_t line = 1 + std::count(bad.begin(), bad.begin() + at, '\n');
    expect_has(rejected(bad), {path + ":" + std::to_string(line) + ":"});
    // A directory where config.json is expected, and a missing file.
    expect_has(config_error([&] { model::model_from_hf_config(dir_.string()); }), {"is a directory, not a file"});
    expect_has(config_error([&] { model::model_from_hf_config((dir_ / "none.json").string()); }), {"does not exist"});
}

TEST_F(HostileHfConfig, EveryFieldHasAPlaceInTheTensorNames) {
    const model::ModelConfig m = model::model_from_hf_config_text(good_, "config.json");
    const auto names = model::hf_tensor_names(m, "qwen3_moe");
    EXPECT_TRUE(names.count("model.layers.1.mlp.experts.3.down_proj.weight"));
    EXPECT_TRUE(names.count("model.layers.0.self_attn.q_norm.weight"));
    EXPECT_FALSE(names.count("model.layers.2.input_layernorm.weight")) << "the config has 2 layers";
    EXPECT_FALSE(names.count("model.layers.0.mlp.experts.4.up_proj.weight")) << "the config has 4 experts";
}

}  // namespace
}  // namespace frugal
