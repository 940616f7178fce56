// `frugal estimate` refuses layouts that cannot exist, with exit code 2 and the legal choices.
#include <gtest/gtest.h>

#include <fstream>

#include "accounting/estimate.h"
#include "core/error.h"
#include "tests/util.h"

namespace frugal {
namespace {

// mixtral-8x7b: 32 heads, 8 experts, 32 layers.
test::CliResult estimate(const std::string& layout) {
    return test::run_frugal("estimate " + std::string(FRUGAL_SOURCE_DIR) +
                            "/configs/models/mixtral-8x7b.yaml --tokens 1T --gpu h800 --mfu 0.4 " + layout);
}

void expect_refused(const std::string& layout, const std::vector<std::string>& needles) {
    const auto r = estimate(layout);
    EXPECT_EQ(r.code, 2) << layout << "\n" << r.output;
    for (const auto& n : needles)
        EXPECT_NE(r.output.find(n), std::string::npos) << layout << ": '" << n << "' missing in\n" << r.output;
}

TEST(EstimateLayout, ImpossibleLayoutsExitTwoWithTheLegalChoices) {
    expect_refused("--gpus 64 --tp 64", {"--tp 64 must divide the model's 32 attention heads", "1, 2, 4, 8, 16, 32"});
    expect_refused("--gpus 64 --tp 3", {"--tp 3 must divide", "use --tp 1, 2, 4, 8, 16, 32"});
    expect_refused("--gpus 64 --ep 3", {"--ep 3 must divide the 8 routed experts", "use --ep 1, 2, 4, 8"});
    expect_refused("--gpus 4 --tp 4 --pp 2", {"--gpus 4 is not a multiple of the model-parallel size", "4 x 2 = 8"});
    expect_refused("--gpus 12 --tp 8", {"--gpus 12 is not a multiple", "= 8"});
    expect_refused("--gpus 16 --tp 8 --ep 4", {"--ep 4 must divide the 2 data-parallel ranks", "use --ep 1, 2"});
    expect_refused("--gpus 64 --pp 33", {"--pp 33 exceeds the model's 32 layers"});
    expect_refused("--gpus 2.5", {"--gpus 2.5 must be a whole number"});
    expect_refused("--gpus 1e30", {"--gpus", "must be a whole number in [1, 16777216]"});
    expect_refused("--gpus 8 --zero x", {"--zero 'x' must be a ZeRO stage"});
    expect_refused("--gpus 8 --tp 0.5", {"--tp 0.5 must be a whole number"});
    const auto ok = estimate("--gpus 64 --tp 4 --pp 2 --ep 8");
    EXPECT_EQ(ok.code, 0) << ok.output;
}

TEST(EstimateLayout, BadModelAndHardwareFilesNameFileLineAndField) {
    namespace fs = std::filesystem;
    const fs::path dir = test::temp_dir("estimate_files");
    std::ofstream(dir / "m.yaml") << "model:\n  d_model: {a: 1}\n";
    std::ofstream(dir / "hw.yaml") << "devices:\n  x:\n    bf16_tflops: fast\n";
    std::ofstream(dir / "hw2.yaml") << "devices:\n  x:\n    bf16_tflops: -5\n";
    const std::string tail = " --tokens 1T --gpu h800 --gpus 8 --mfu 0.4";
    auto r = test::run_frugal("estimate " + (dir / "m.yaml").string() + tail);
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("m.yaml:2:12: model.d_model: expected a plain value, got an object"), std::string::npos)
        << r.output;
    r = test::run_frugal("estimate " + dir.string() + tail);
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("is a directory, not a file"), std::string::npos) << r.output;
    const std::string mixtral = std::string(FRUGAL_SOURCE_DIR) + "/configs/models/mixtral-8x7b.yaml";
    r = test::run_frugal("estimate " + mixtral + tail + " --hardware " + (dir / "hw.yaml").string());
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("hw.yaml:3:18: devices.x.bf16_tflops: expected a finite number, got 'fast'"),
              std::string::npos)
        << r.output;
    r = test::run_frugal("estimate " + mixtral + tail + " --hardware " + (dir / "hw2.yaml").string());
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("devices.x.bf16_tflops = -5 is out of range"), std::string::npos) << r.output;
    r = test::run_frugal("estimate " + mixtral + tail + " --hardware " + dir.string());
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("hardware catalogue " + dir.string() + " is a directory"), std::string::npos) << r.output;
    fs::remove_all(dir);
}

}  // namespace
}  // namespace frugal
