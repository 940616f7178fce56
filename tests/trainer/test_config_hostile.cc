// Hostile YAML run configs and --set overrides: every one is refused with exit code 2 (or a ConfigError) whose
// message starts with FILE:LINE:COL (or the --set argument) and names the key and the value.
#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "tests/util.h"
#include "trainer/run_config.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;

class HostileYaml : public ::testing::Test {
  protected:
    void SetUp() override { dir_ = test::temp_dir("hostile_yaml"); }
    void TearDown() override { fs::remove_all(dir_); }
    std::string rejected(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
        const std::string path = (dir_ / "c.yaml").string();
        std::ofstream(path) << yaml;
        try {
            trainer::load_config(path, overrides, 1);
        } catch (const ConfigError& e) {
            return e.what();
        }
        ADD_FAILURE() << "accepted:\n" << yaml;
        return "";
    }
    void expect(const std::string& yaml, const std::vector<std::string>& needles,
                const std::vector<std::string>& overrides = {}) {
        const std::string m = rejected(yaml, overrides);
        for (const auto& n : needles) EXPECT_NE(m.find(n), std::string::npos) << "'" << n << "' missing in\n" << m;
    }
    fs::path dir_;
};

TEST_F(HostileYaml, StructureErrorsNameFileLineAndColumn) {
    expect("model:\n  d_model: 64\n  d_model: 32\n", {"c.yaml:3:3", "model.d_model appears twice (first on line 2)"});
    expect("model:\n  d_model: [1, 2]\n", {"c.yaml:2:3", "model.d_model takes one value", "not a list"});
    expect("model:\n  d_model:\n    x: 1\n", {"c.yaml:2:3", "model.d_model takes a value", "not a mapping"});
    expect("model: 5\n", {"c.yaml:1:1", "model is a section", "got '5'"});
    expect("model:\n", {"c.yaml:1:1", "model is a section", "nothing"});
    expect("model:\n  d_model: 64\n   n_heads: 4\n", {"c.yaml:3:", "not valid YAML"});
    expect("model: {d_model: 64\n", {"c.yaml:", "not valid YAML"});
    expect("? [a, b]\n: 3\n", {"c.yaml:1:", "a section name: expected a string"});
    expect("- a\n- b\n", {"c.yaml:1:1", "top level must be a mapping"});
    expect("train:\n  freeze: [[router]]\n", {"c.yaml:2:", "must be a list of plain values"});
    expect("run:\n  out_dir:\n", {"c.yaml:2:3", "run.out_dir has no value"});
}

TEST_F(HostileYaml, BadValuesAndMalformedOverridesAreRefusedAndSpacesAroundAnOverrideKeyAreIgnored) {
    expect("model:\n  n_layers: 0x10\n", {"c.yaml:2:3", "model.n_layers", "expected an integer", "0x10"});
    expect("optim:\n  lr: .nan\n", {"c.yaml:2:3", "optim.lr", "expected a number"});
    expect("optim:\n  lr: 1e999\n", {"optim.lr", "expected a number"});
    expect("", {"--set =5", "expected key=value"}, {"=5"});
    expect("", {"--set  = 5", "the key is empty"}, {" = 5"});
    expect("", {"--set model.d_model", "expected key=value"}, {"model.d_model"});
    expect("", {"--set model.d_model=1e3", "expected an integer"}, {"model.d_model=1e3"});
    // Spaces around the key are not part of it.
    const std::string path = (dir_ / "ok.yaml").string();
    std::ofstream(path) << "model:\n  d_model: 64\n";
    EXPECT_EQ(trainer::load_config(path, {" model.d_model =128"}, 1).model.d_model, 128);
}

TEST_F(HostileYaml, ADirectoryAMissingFileOrADuplicateKeyGivenToTrainExitsTwoNamingIt) {
    auto r = test::run_frugal("train " + dir_.string());
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("is a directory, not a file"), std::string::npos) << r.output;
    r = test::run_frugal("train " + (dir_ / "none.yaml").string());
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("does not exist"), std::string::npos) << r.output;
    std::ofstream(dir_ / "dup.yaml") << "train:\n  steps: 1\n  steps: 2\n";
    r = test::run_frugal("train " + (dir_ / "dup.yaml").string());
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("dup.yaml:3:3: train.steps appears twice"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace frugal
