// Bad configurations: every class is rejected by the real CLI with exit code 2 and a message naming the key.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "tests/util.h"
#include "trainer/run_config.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;

class BadConfig : public ::testing::Test {
  protected:
    void SetUp() override { dir_ = test::temp_dir("config"); }
    void TearDown() override { fs::remove_all(dir_); }
    std::string write(const std::string& yaml) {
        std::string path = (dir_ / "c.yaml").string();
        std::ofstream(path) << yaml;
        return path;
    }
    void expect_rejected(const std::string& yaml, const std::vector<std::string>& needles,
                         const std::string& extra = "") {
        // data.dir points nowhere: a config that passed validation would fail later with exit 1, not 2.
        test::CliResult r =
            test::run_frugal("train " + write(yaml) + " --set data.dir=" + (dir_ / "no-data").string() + " " + extra);
        EXPECT_EQ(r.code, 2) << r.output;
        for (const auto& n : needles)
            EXPECT_NE(r.output.find(n), std::string::npos) << "missing '" << n << "' in\n" << r.output;
    }
    fs::path dir_;
};

TEST_F(BadConfig, UnknownKeySuggestsNearestWithLine) {
    expect_rejected("model:\n  d_model: 64\n  n_layer: 3\n",
                    {"model.n_layer", "did you mean 'model.n_layers'", "c.yaml:3"});
}
TEST_F(BadConfig, AnUnknownSectionIsRefusedWithTheNearestName) {
    expect_rejected("trian:\n  steps: 3\n", {"trian.steps", "train.steps"});
}
TEST_F(BadConfig, AValueOfTheWrongTypeIsRefusedNamingTheExpectedType) {
    expect_rejected("train:\n  steps: many\n", {"train.steps", "expected an integer", "many"});
}
TEST_F(BadConfig, AnOutOfRangeValueIsRefusedAsOutOfRange) {
    expect_rejected("optim:\n  lr: -1\n", {"optim.lr", "out of range"});
}
TEST_F(BadConfig, AnUnknownChoiceIsRefusedListingTheLegalOnes) {
    expect_rejected("moe:\n  score_func: relu\n", {"moe.score_func", "softmax, sigmoid"});
}
TEST_F(BadConfig, HeadsNotDivisibleByKvHeadsAreRefusedNamingBothValues) {
    expect_rejected("model:\n  n_heads: 4\n  n_kv_heads: 3\n", {"model.n_heads (4)", "model.n_kv_heads (3)"});
}
TEST_F(BadConfig, ATopKAboveTheExpertCountIsRefusedNamingBothValues) {
    expect_rejected("moe:\n  n_experts: 4\n  top_k: 5\n", {"moe.top_k (5)", "moe.n_experts (4)"});
}
TEST_F(BadConfig, AGlobalBatchThatIsNotAMultipleOfTheMicroBatchIsRefused) {
    expect_rejected("train:\n  global_batch: 10\n  micro_batch: 4\n",
                    {"train.global_batch (10)", "train.micro_batch (4)"});
}
TEST_F(BadConfig, ASequenceLongerThanTheModelMaximumIsRefused) {
    expect_rejected("train:\n  seq_len: 512\nmodel:\n  max_seq_len: 256\n",
                    {"train.seq_len (512)", "model.max_seq_len"});
}
TEST_F(BadConfig, ExpertsNotDivisibleByTheExpertParallelSizeAreRefused) {
    expect_rejected("parallel:\n  ep: 3\n", {"parallel.ep (3)"});
}
TEST_F(BadConfig, TheHierarchicalDispatchWithFp8RowsIsRefusedNamingBothKeys) {
    expect_rejected("parallel:\n  dispatch: hierarchical\nprecision:\n  fp8_dispatch: true\n",
                    {"parallel.dispatch: hierarchical", "precision.fp8_dispatch"});
}
TEST_F(BadConfig, AMistypedOverrideIsRefusedWithTheNearestName) {
    expect_rejected("{}\n", {"train.stepz", "did you mean 'train.steps'"}, "--set train.stepz=5");
}
TEST_F(BadConfig, InvalidYamlIsRefusedAsNotValidYaml) { expect_rejected("model: [\n", {"not valid YAML"}); }
TEST_F(BadConfig, AKeyWithoutAValueIsRefusedNamingIt) { expect_rejected("model:\n  d_model:\n", {"model.d_model"}); }

TEST(Cli, HelpExitsZeroForEveryCommandAndAnUnknownOrIncompleteCommandExitsTwo) {
    for (std::string c : {"", "train ", "prepare-data ", "config "}) {
        test::CliResult r = test::run_frugal(c + "--help");
        EXPECT_EQ(r.code, 0) << c;
        EXPECT_NE(r.output.find("usage: frugal"), std::string::npos) << c << r.output;
    }
    EXPECT_EQ(test::run_frugal("no-such-command").code, 2);
    EXPECT_EQ(test::run_frugal("train").code, 2);
}

TEST(Cli, MissingDataIsAClearError) {
    test::CliResult r = test::run_frugal("train " + std::string(FRUGAL_SOURCE_DIR) +
                                         "/configs/demo.yaml --set parallel.ep=1 --set data.dir=/nonexistent/dir");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("prepare-data"), std::string::npos) << r.output;
}

TEST(Docs, ConfigReferenceIsCurrent) {
    std::ifstream f(std::string(FRUGAL_SOURCE_DIR) + "/docs/config.md");
    std::stringstream ss;
    ss << f.rdbuf();
    EXPECT_EQ(ss.str(), trainer::config_docs()) << "docs/config.md is stale: run `make docs`";
}

TEST(Config, DemoConfigLoadsAndResolvedYamlRoundTrips) {
    trainer::TrainConfig cfg =
        trainer::load_config(std::string(FRUGAL_SOURCE_DIR) + "/configs/demo.yaml", {"train.steps=7"}, 4);
    EXPECT_EQ(cfg.train.steps, 7);
    fs::path dir = test::temp_dir("roundtrip");
    std::ofstream(dir / "resolved.yaml") << trainer::to_yaml(cfg);
    trainer::TrainConfig again = trainer::load_config((dir / "resolved.yaml").string(), {}, 4);
    EXPECT_EQ(trainer::to_yaml(again), trainer::to_yaml(cfg));
    fs::remove_all(dir);
}

}  // namespace
}  // namespace frugal

namespace frugal {
namespace {

TEST(Config, FinetuneExampleIsValid) {
    // Every key of the example exists and has a legal value (its init_from points at a placeholder directory,
    // which the loader reports as such).
    auto r = test::run_frugal("config --print " + std::string(FRUGAL_SOURCE_DIR) + "/configs/finetune-example.yaml");
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("MODEL_DIR has no config.json"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace frugal
