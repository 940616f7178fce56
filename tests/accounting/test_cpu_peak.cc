// The `cpu` device's peak is measured on the machine that runs (accounting/cpu_peak.h): the FMA benchmark agrees
// with the peak derived from the clock and the vector width, scales with threads, is shared by the ranks of one
// machine, and is what MFU divides by; the cost report says where its peak came from, in print and in cost.json.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "accounting/cpu_peak.h"
#include "accounting/estimate.h"
#include "accounting/hardware.h"
#include "accounting/model_source.h"
#include "accounting/report.h"
#include "tests/util.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;

TEST(CpuPeak, TheMeasuredPeakIsPositiveAndWithinTwiceTheDerivedOne) {
    const accounting::CpuDescription cpu = accounting::describe_cpu();
    const double measured = accounting::measure_fma_tflops(1);
    const double derived = accounting::derived_fma_tflops(cpu, 1);
    EXPECT_GT(measured, 0);
    if (derived <= 0) GTEST_SKIP() << "the system reports no clock: nothing to derive a peak from";
    // Above: a turbo clock higher than the one reported, or more FMA ports than assumed (at most 2x together).
    // Below: a benchmark that does not keep the vector FMA units busy (scalar code would be 8x or 16x lower).
    EXPECT_LE(measured, 2.0 * derived) << cpu.isa << " " << cpu.lanes << " lanes at " << cpu.ghz << " GHz";
    EXPECT_GE(measured, derived / 4.0) << cpu.isa << " " << cpu.lanes << " lanes at " << cpu.ghz << " GHz";
}

TEST(CpuPeak, TwoThreadsOnTwoCoresMeasureTwiceOneThread) {
    const accounting::CpuDescription cpu = accounting::describe_cpu();
    if (cpu.physical_cores < 2 || cpu.logical_cpus < 2) GTEST_SKIP() << "one core";
    const double one = accounting::measure_fma_tflops(1), two = accounting::measure_fma_tflops(2);
    EXPECT_NEAR(two / one, 2.0, 0.4) << "1 thread " << one << " TFLOP/s, 2 threads " << two;
}

TEST(CpuPeak, RanksOnOneMachineShareItsPeak) {
    const accounting::CpuDescription cpu = accounting::describe_cpu();
    const accounting::PeakFigure alone = accounting::cpu_peak(1, 1);
    const accounting::PeakFigure shared = accounting::cpu_peak(1, 4);
    // Four one-thread ranks run on min(4, physical cores) cores' FMA units (SMT siblings share them): each gets that
    // many cores' worth over four.
    const double cores_each = double(std::min(4, cpu.physical_cores)) / 4.0;
    EXPECT_NEAR(shared.tflops / alone.tflops, cores_each, 0.25 * cores_each) << shared.source;
    test::expect_has(shared.source, {"measured: FP32 FMA microbenchmark", "shared by 4 ranks", cpu.isa});
}

TEST(CpuPeak, TheCpuDeviceIsMeasuredAndAGpuComesFromTheCatalogue) {
    const auto catalogue = accounting::load_catalogue();
    const accounting::PeakFigure gpu = accounting::device_peak(catalogue.at("h100-sxm"), true);
    EXPECT_EQ(gpu.tflops, 1979);
    test::expect_has(gpu.source, {"catalogue", "FP8"});
    const accounting::PeakFigure cpu = accounting::device_peak(catalogue.at("cpu"), false, 1, 1);
    EXPECT_GT(cpu.tflops, 0);
    EXPECT_EQ(cpu.source.rfind("measured: FP32 FMA microbenchmark", 0), 0u) << cpu.source;
    // One figure per process and thread count: a second call does not measure again.
    EXPECT_EQ(accounting::device_peak(catalogue.at("cpu"), false, 1, 1).tflops, cpu.tflops);
}

accounting::CostReport cpu_report(const accounting::PeakFigure& peak) {
    accounting::CostReport r;
    r.device = "cpu";
    r.device_name = "CPU rank";
    r.price_per_hour = 0.1;
    r.ranks = 2;
    r.tokens = 1e5;
    r.train_seconds = 10;
    r.flops_per_token = 3e6;
    r.set_peak(peak);
    return r;
}

TEST(CpuPeak, MfuDividesByTheMeasuredPeak) {
    const accounting::PeakFigure peak = accounting::cpu_peak(1, 1);
    const accounting::CostReport r = cpu_report(peak);
    EXPECT_EQ(r.peak_tflops_per_device, peak.tflops);
    EXPECT_NEAR(r.mfu(), 1e4 * 3e6 / (peak.tflops * 1e12 * 2), 1e-12);
}

TEST(CpuPeak, TheCostReportPrintsThePeakSourceAndCostJsonKeepsIt) {
    const accounting::CostReport r = cpu_report({0.05, "measured: FP32 FMA microbenchmark (AVX2+FMA), \"quoted\""});
    const fs::path dir = test::temp_dir("cpu_peak_json");
    std::ofstream(dir / "cost.json") << accounting::to_json(r);
    const accounting::CostReport back = accounting::read_cost_json((dir / "cost.json").string());
    EXPECT_EQ(back.peak_source, r.peak_source);
    EXPECT_EQ(back.peak_tflops_per_device, 0.05);
    EXPECT_NEAR(back.mfu(), r.mfu(), 1e-12);
    test::expect_has(accounting::format_report(back),
                     {"MFU", "TFLOP/s peak (measured: FP32 FMA microbenchmark (AVX2+FMA), \"quoted\")"});
    fs::remove_all(dir);
}

TEST(CpuPeak, ACostJsonWrittenBeforeThePeakSourceStillReads) {
    const fs::path dir = test::temp_dir("cpu_peak_old_json");
    std::string json = accounting::to_json(cpu_report({0.05, "measured: x"}));
    const std::string field = "\"peak_source\": \"measured: x\", ";
    ASSERT_NE(json.find(field), std::string::npos) << json;
    json.erase(json.find(field), field.size());
    std::ofstream(dir / "cost.json") << json;
    const accounting::CostReport back = accounting::read_cost_json((dir / "cost.json").string());
    EXPECT_EQ(back.peak_source, "");
    EXPECT_EQ(back.peak_tflops_per_device, 0.05);
    EXPECT_EQ(accounting::format_report(back).find("peak ("), std::string::npos) << accounting::format_report(back);
    fs::remove_all(dir);
}

TEST(CpuPeak, TheEstimateOfACpuRunUsesTheMeasuredPeak) {
    accounting::EstimateInput in;
    in.model = accounting::load_model("deepseek-v3", std::string(FRUGAL_SOURCE_DIR) + "/configs/models", nullptr);
    in.model_label = "deepseek-v3";
    in.tokens = 1e9;
    in.device = accounting::find_device(accounting::load_catalogue(), "cpu", "--gpu");
    in.mfu = 0.5;
    const accounting::Estimate e = accounting::estimate(in);
    const accounting::PeakFigure peak = accounting::device_peak(in.device, false);
    EXPECT_EQ(e.peak_tflops, peak.tflops);
    EXPECT_NEAR(e.tokens_per_gpu_second, 0.5 * peak.tflops * 1e12 / e.flops_per_token, 1e-9);
    test::expect_has(accounting::format_estimate(in, e), {"MFU", peak.source});
    test::expect_has(accounting::estimate_json(in, e), {"\"peak_source\": \"measured: FP32 FMA microbenchmark"});
}

}  // namespace
}  // namespace frugal
