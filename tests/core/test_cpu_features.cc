// The start-up check of core/cpu_features.h: the list of instruction sets agrees with the compiler's own macros, this
// CPU passes, and a CPU without them (played by FRUGAL_CPU_FEATURES_OVERRIDE) stops the real frugal binary before
// main with exit code 2 and a message naming what is missing and the build option.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "tests/util.h"

namespace frugal {
namespace {

std::vector<std::string> compiled_for() {
    std::vector<std::string> out;
    for (const char* const* f = cpu_features::kCompiledFor; *f; ++f) out.emplace_back(*f);
    return out;
}

bool has(const std::vector<std::string>& list, const std::string& name) {
    for (const auto& x : list)
        if (x == name) return true;
    return false;
}

// Sets FRUGAL_CPU_FEATURES_OVERRIDE for the scope (this process already passed its own check at start).
class OverrideCpu {
  public:
    explicit OverrideCpu(const std::string& supported) {
        ::setenv("FRUGAL_CPU_FEATURES_OVERRIDE", supported.c_str(), 1);
    }
    ~OverrideCpu() { ::unsetenv("FRUGAL_CPU_FEATURES_OVERRIDE"); }
};

// Every compiled-for instruction set but the last (the widest the list names), comma-separated.
std::string all_but_last(const std::vector<std::string>& list) {
    std::string out;
    for (size_t i = 0; i + 1 < list.size(); ++i) out += (i ? ", " : "") + list[i];
    return out;
}

TEST(CpuFeatures, TheListIsWhatTheCompilerWasAllowedToUse) {
    const auto list = compiled_for();
#if defined(__x86_64__)
    EXPECT_TRUE(has(list, "sse2"));
#endif
#ifdef __AVX2__
    EXPECT_TRUE(has(list, "avx2"));
#else
    EXPECT_FALSE(has(list, "avx2"));
#endif
#ifdef __AVX512F__
    EXPECT_TRUE(has(list, "avx512f"));
#else
    EXPECT_FALSE(has(list, "avx512f"));
#endif
#ifdef __FMA__
    EXPECT_TRUE(has(list, "fma"));
#else
    EXPECT_FALSE(has(list, "fma"));
#endif
}

TEST(CpuFeatures, ThisCpuHasEveryInstructionSetTheBuildUses) {
    ::unsetenv("FRUGAL_CPU_FEATURES_OVERRIDE");
    char missing[1024];
    EXPECT_EQ(cpu_features::missing_features(missing, int(sizeof(missing))), 0) << missing;
}

TEST(CpuFeatures, ACpuWithoutTheWidestInstructionSetLacksExactlyThatOne) {
    const auto list = compiled_for();
    if (list.empty()) GTEST_SKIP() << "a build for no particular instruction set: nothing to check";
    OverrideCpu cpu(all_but_last(list));
    char missing[1024];
    EXPECT_EQ(cpu_features::missing_features(missing, int(sizeof(missing))), 1);
    EXPECT_EQ(std::string(missing), list.back());
    EXPECT_FALSE(cpu_features::cpu_supports("no-such-feature"));
}

TEST(CpuFeatures, AnEmptyCpuLacksEverythingAndTheListIsTruncatedSafely) {
    const auto list = compiled_for();
    if (list.size() < 2) GTEST_SKIP() << "fewer than two instruction sets to list";
    OverrideCpu cpu("");
    char missing[8];
    EXPECT_EQ(cpu_features::missing_features(missing, int(sizeof(missing))), int(list.size()));
    EXPECT_EQ(std::string(missing), (list[0] + ", " + list[1]).substr(0, 7));
}

TEST(CpuFeatures, ABinaryStartedOnACpuWithoutItsInstructionSetsStopsNamingThemAndTheBuildOption) {
    const auto list = compiled_for();
    if (list.empty()) GTEST_SKIP() << "a build for no particular instruction set: nothing to check";
    const test::CliResult normal = test::run_frugal("--version");
    ASSERT_EQ(normal.code, 0) << normal.output;
    test::CliResult stopped{};
    {
        OverrideCpu cpu(all_but_last(list));
        stopped = test::run_frugal("--version");
    }
    EXPECT_EQ(stopped.code, 2) << stopped.output;
    test::expect_has(stopped.output, {"compiled for instruction sets this CPU lacks: " + list.back() + ";",
                                      cpu_features::kNativeBuild ? "cmake -DFRUGAL_NATIVE=OFF" : "FRUGAL_NATIVE=OFF"});
    EXPECT_EQ(stopped.output.find(normal.output), std::string::npos) << "main ran: " << stopped.output;
}

}  // namespace
}  // namespace frugal
