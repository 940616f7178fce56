// The CPU backend's results do not move: the demo model's per-step training losses and validation losses, recorded
// by tests/golden/make_demo_losses.sh from a build of the code as it was before the backend seam, are reproduced
// bit for bit. The two runs are the script's: the demo as `make demo` runs it (4 ranks, ep 4, fp8-blockwise) and a
// 1-rank FP32 variant that takes the paths the demo leaves out (sigmoid scores, sequence-wise aux loss, capacity
// dropping, bias updates, the gated shared expert, tied embeddings, attention biases, document masking).
//
// Eigen chooses its GEMM kernels by instruction set, so the bits are those of one: the file names the one it was
// recorded with, and on a CPU with another the test is skipped with the reason (record again at that commit).
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "tests/util.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;

std::string this_isa() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind("flags", 0) != 0) continue;
        std::istringstream words(line);
        std::string w;
        bool avx2 = false, avx512f = false;
        while (words >> w) {
            avx2 |= w == "avx2";
            avx512f |= w == "avx512f";
        }
        return avx512f ? "avx512f" : avx2 ? "avx2" : "baseline";
    }
    return "unknown";
}

// (run, step, key) -> value, from tests/golden/demo_losses.txt; *isa gets the recording's instruction set.
using Recorded = std::map<std::tuple<std::string, int64_t, std::string>, double>;
Recorded read_recorded(std::string* isa) {
    std::ifstream f(std::string(FRUGAL_SOURCE_DIR) + "/tests/golden/demo_losses.txt");
    Recorded out;
    std::string line;
    while (std::getline(f, line)) {
        if (line.empty() || line[0] == '#') continue;
        std::istringstream in(line);
        std::string a, key, value;
        int64_t step = 0;
        in >> a;
        if (a == "isa") {
            in >> *isa;
            continue;
        }
        in >> step >> key >> value;
        out[{a, step, key}] = std::stod(value);
    }
    return out;
}

// Every "loss" and "val_loss" of a run's metrics.jsonl (shortest round-trip decimals, so exact).
Recorded read_run(const fs::path& dir, const std::string& run) {
    std::ifstream f(dir / run / "metrics.jsonl");
    Recorded out;
    std::string line;
    std::smatch m;
    const std::regex step_re("\"step\": ([0-9]+)");
    while (std::getline(f, line)) {
        if (!std::regex_search(line, m, step_re)) continue;
        const int64_t step = std::stoll(m[1]);
        for (const char* key : {"loss", "val_loss"})
            if (std::regex_search(line, m, std::regex(std::string("\"") + key + "\": ([-0-9.e+]+)")))
                out[{run, step, key}] = std::stod(m[1]);
    }
    return out;
}

TEST(RecordedLosses, TheCpuBackendReproducesTheDemoModelsLossesBitForBit) {
    std::string isa;
    const Recorded want = read_recorded(&isa);
    ASSERT_EQ(want.size(), 66u) << "tests/golden/demo_losses.txt: 2 runs x (30 losses + 3 validation losses)";
    if (isa != this_isa())
        GTEST_SKIP() << "the losses were recorded on a CPU with " << isa << " and this one has " << this_isa()
                     << ": Eigen's kernels differ, so the bits do; run tests/golden/make_demo_losses.sh at the "
                        "commit the file names to record them for this CPU";
    ASSERT_FALSE(test::test_corpus().empty()) << "the fortunes package is missing";
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    const fs::path dir = test::temp_dir("recorded_losses");
    const std::string cfg = std::string(FRUGAL_SOURCE_DIR) + "/configs/demo.yaml";
    const std::string common = " --set data.dir=" + test::test_corpus().string() +
                               " --set train.steps=30 --set run.log_every=1 --set train.eval_every=10"
                               " --set train.eval_batches=4 --set train.threads=1 --set checkpoint.every=0";
    test::CliResult demo =
        test::run_frugal("launch -n 4 " + cfg + common + " --set run.out_dir=" + (dir / "demo-ep4-fp8").string());
    ASSERT_EQ(demo.code, 0) << demo.output;
    test::CliResult variant = test::run_frugal(
        "train " + cfg + common + " --set run.out_dir=" + (dir / "ep1-variant").string() +
        " --set parallel.ep=1 --set precision.recipe=fp32 --set moe.score_func=sigmoid --set moe.aux_loss=seq"
        " --set moe.capacity_factor=1.0 --set moe.bias_update_rate=0.001 --set moe.shared_expert_gate=true"
        " --set model.tie_embeddings=true --set model.attn_bias=true --set data.document_mask=true");
    ASSERT_EQ(variant.code, 0) << variant.output;
    Recorded got = read_run(dir, "demo-ep4-fp8");
    got.merge(read_run(dir, "ep1-variant"));
    ASSERT_EQ(got.size(), want.size());
    int64_t differing = 0;
    for (const auto& [where, value] : want) {
        const auto it = got.find(where);
        ASSERT_NE(it, got.end()) << std::get<0>(where) << " step " << std::get<1>(where) << " has no "
                                 << std::get<2>(where);
        if (it->second != value) {
            ++differing;
            ADD_FAILURE() << std::get<0>(where) << " step " << std::get<1>(where) << " " << std::get<2>(where) << ": "
                          << it->second << " now, " << value << " recorded (difference " << it->second - value << ")";
        }
    }
    EXPECT_EQ(differing, 0);
    std::printf("%zu recorded losses reproduced bit for bit (%.1f s and %.1f s)\n", want.size(), demo.seconds,
                variant.seconds);
    fs::remove_all(dir);
}

}  // namespace
}  // namespace frugal
