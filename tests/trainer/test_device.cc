// run.device: where the model computes. cuda without a usable GPU (or in a build without the CUDA backend) is a
// configuration error with exit 2 that says what to set; auto falls back to the CPU and says where it computes.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "tests/util.h"

namespace frugal {
namespace {

std::string demo_args(const std::string& name) {
    return std::string(FRUGAL_SOURCE_DIR) + "/configs/demo.yaml --set parallel.ep=1 --set train.steps=1" +
           " --set train.eval_every=0 --set data.dir=" + test::test_corpus().string() +
           " --set run.out_dir=" + (test::temp_dir("device") / name).string();
}

TEST(Device, CudaWithoutAGpuIsRefusedWithExitTwoNamingTheKeyAndTheFix) {
    std::string why;
    if (backend::backend_available(Device::kCuda, &why)) GTEST_SKIP() << "a GPU is present: cuda is available";
    ASSERT_FALSE(test::test_corpus().empty()) << "the fortunes package is missing";
    test::CliResult r = test::run_frugal("train " + demo_args("cuda") + " --set run.device=cuda");
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("run.device is cuda but"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("set run.device to cpu or auto"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("parameters on this rank"), std::string::npos) << "refused before the model is built";
}

TEST(Device, AutoComputesOnTheCpuWhenNoGpuCanRunTheJobAndSaysSo) {
    std::string why;
    if (backend::backend_available(Device::kCuda, &why)) GTEST_SKIP() << "a GPU is present: auto picks it";
    ASSERT_FALSE(test::test_corpus().empty()) << "the fortunes package is missing";
    test::CliResult r = test::run_frugal("train " + demo_args("auto"));
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("parameters on this rank on cpu"), std::string::npos) << r.output;
}

TEST(Device, AnUnknownDeviceIsRefusedWithTheChoices) {
    test::CliResult r = test::run_frugal("train " + demo_args("tpu") + " --set run.device=tpu");
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("run.device"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("cuda"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace frugal
