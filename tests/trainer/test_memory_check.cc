// The memory check before allocation: `frugal train` refuses a run whose parameters, gradients, AdamW moments and
// activations (accounting::rank_memory) cannot fit in this rank's share of the machine, in seconds and with both
// figures; the estimate agrees with the resident memory a real run grows by; and building a model takes time
// linear in its number of layers, so a config past the memory is refused rather than built for minutes.
#include <gtest/gtest.h>
#include <malloc.h>

#include <chrono>
#include <fstream>
#include <regex>

#include "accounting/estimate.h"
#include "core/memory.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "tests/util.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// A field of /proc/self/status ("VmHWM", "VmRSS") in bytes.
int64_t status_bytes(const std::string& field) {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
    return -1;
}

// Lowers the peak (VmHWM) to the current resident size (Linux 4.0+: "5" to clear_refs), after handing the heap's
// free pages back so that a new allocation cannot reuse memory that is already resident.
void reset_peak() {
    ::malloc_trim(0);
    std::ofstream("/proc/self/clear_refs") << "5";
}

TEST(MemoryCheck, TrainRefusesARunThatCannotFitBeforeAllocating) {
    ASSERT_FALSE(test::test_corpus().empty()) << "the fortunes package is missing";
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    const fs::path out = test::temp_dir("memory_check");
    // 3 MoE layers x 8 experts x 3 x 256 x 2^24 (the largest moe.d_expert): 3.1e11 parameters, 1.2 TB in FP32.
    const auto t0 = Clock::now();
    test::CliResult r = test::run_frugal(std::string("train ") + FRUGAL_SOURCE_DIR +
                                         "/configs/demo.yaml --set data.dir=" + test::test_corpus().string() +
                                         " --set run.out_dir=" + (out / "huge").string() +
                                         " --set parallel.ep=1 --set moe.d_expert=16777216");
    const double elapsed = seconds_since(t0);
    fs::remove_all(out);
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_LT(elapsed, 10.0) << "the refusal must come before anything is allocated";
    std::smatch need, avail;
    ASSERT_TRUE(std::regex_search(r.output, need, std::regex("needs about params .* = ([0-9.]+) GB per rank")))
        << r.output;
    ASSERT_TRUE(std::regex_search(r.output, avail, std::regex("of the ([0-9.]+) GB available to each rank")))
        << r.output;
    EXPECT_GT(std::stod(need[1]), 1200.0) << r.output;
    EXPECT_GT(std::stod(avail[1]), 0.0) << r.output;
    EXPECT_NE(r.output.find("parallel.ep"), std::string::npos) << "the message says what to do: " << r.output;
    EXPECT_EQ(r.output.find("parameters on this rank"), std::string::npos) << "no model was built: " << r.output;
    std::cout << "refused in " << elapsed << " s: need " << need[1] << " GB, available " << avail[1] << " GB\n";
}

model::ModelConfig demo_model() {
    model::ModelConfig m;
    m.vocab_size = 257;
    m.d_model = 256;
    m.n_layers = 4;
    m.n_heads = 4;
    m.n_kv_heads = 2;
    m.qk_norm = true;
    m.d_ff = 768;
    m.dense_layers = 1;
    m.max_seq_len = 256;
    m.moe.n_experts = 8;
    m.moe.top_k = 2;
    m.moe.d_expert = 256;
    m.moe.n_shared_experts = 1;
    return m;
}

// The estimate against the resident memory one process grows by when it builds the model and AdamW (parameters,
// gradients, moments) and then takes a training step (one micro-batch's activations): within a factor of 1.5.
TEST(MemoryCheck, EstimateAgreesWithMeasuredPeakResidentMemory) {
    const model::ModelConfig m = demo_model();
    const int64_t b = 8, s = 256;
    accounting::RankMemoryInput in;
    in.model = m;
    in.micro_batch = b;
    in.seq_len = s;
    const accounting::RankMemory est = accounting::rank_memory(in);

    reset_peak();
    const int64_t base = status_bytes("VmRSS");
    ASSERT_GT(base, 0) << "/proc/self/status is unreadable";
    model::Transformer<float> net(m);
    net.init(7);
    std::vector<optim::OptimParam> params;
    for (model::Param* p : net.params().params())
        params.push_back({p->value.data<float>(), p->grad.data<float>(), p->value.numel(), true});
    optim::AdamW opt(optim::OptimConfig{}, params);
    const double built = double(status_bytes("VmHWM") - base);
    std::vector<int32_t> tokens(size_t(b * s)), targets(size_t(b * s));
    for (size_t i = 0; i < tokens.size(); ++i) {
        tokens[i] = int32_t((i * 7919) % 257);
        targets[i] = int32_t((i * 104729 + 3) % 257);
    }
    net.forward(tokens.data(), targets.data(), b, s);
    net.backward(1.0f / float(b * s), 1.0f);
    opt.step(1e-3);
    const double stepped = double(status_bytes("VmHWM") - base);

    const double state = est.params + est.grads + est.optimizer;
    std::cout << "estimate: " << accounting::format_rank_memory(est) << "\nmeasured: built " << built / 1e9
              << " GB (estimate " << state / 1e9 << "), after one step " << stepped / 1e9 << " GB (estimate "
              << est.total() / 1e9 << "), activations " << (stepped - built) / 1e9 << " GB (estimate "
              << est.activations / 1e9 << ")\n";
    EXPECT_GT(est.activations, 0.2 * est.total()) << "the case must exercise the activation term";
    EXPECT_GE(built / state, 0.8) << "parameters, gradients and moments";
    EXPECT_LE(built / state, 1.25) << "parameters, gradients and moments";
    EXPECT_GE(stepped / est.total(), 0.67) << "after one step";
    EXPECT_LE(stepped / est.total(), 1.5) << "after one step";
}

// Expert parallelism keeps 1/ep of the routed experts; bf16 moments halve the optimizer; inference holds weights only.
TEST(MemoryCheck, EstimateFollowsTheLayout) {
    accounting::RankMemoryInput in;
    in.model = demo_model();
    const accounting::RankMemory one = accounting::rank_memory(in);
    in.ep = 4;
    const accounting::RankMemory four = accounting::rank_memory(in);
    const double experts = accounting::routed_expert_params(in.model);
    EXPECT_DOUBLE_EQ(one.params - four.params, 4.0 * experts * 0.75);
    EXPECT_DOUBLE_EQ(four.grads, four.params);
    EXPECT_DOUBLE_EQ(four.optimizer, 2 * four.params);
    in.bf16_moments = true;
    EXPECT_DOUBLE_EQ(accounting::rank_memory(in).optimizer, four.params);
    in.with_grads = in.with_optimizer = false;
    const accounting::RankMemory weights = accounting::rank_memory(in);
    EXPECT_EQ(weights.grads + weights.optimizer + weights.activations, 0.0);
    EXPECT_DOUBLE_EQ(weights.params, four.params);
}

TEST(MemoryCheck, RanksOnThisMachineReadTheLauncher) {
    const char* saved = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    const std::string old = saved ? saved : "";
    ::setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "3", 1);
    EXPECT_EQ(ranks_on_this_machine(8), 3);
    ::unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    if (!std::getenv("MPI_LOCALNRANKS") && !std::getenv("SLURM_NTASKS_PER_NODE")) {
        EXPECT_EQ(ranks_on_this_machine(8), 8) << "without a launcher every rank is assumed on this machine";
    }
    if (saved) ::setenv("OMPI_COMM_WORLD_LOCAL_SIZE", old.c_str(), 1);
}

// Seconds to build (inference only, no gradients) a model of n_layers tiny dense layers; the best of `tries`.
double construction_seconds(int64_t n_layers, int tries) {
    model::ModelConfig m;
    m.vocab_size = 16;
    m.d_model = 8;
    m.n_heads = 1;
    m.d_ff = 8;
    m.max_seq_len = 8;
    m.moe.n_experts = 0;
    m.n_layers = n_layers;
    double best = 1e30;
    for (int i = 0; i < tries; ++i) {
        const auto t0 = Clock::now();
        model::Transformer<float> net(m, {}, false);
        best = std::min(best, seconds_since(t0));
    }
    return best;
}

// 10 times the layers may take at most 40 times as long: linear is 10 (12-25 measured beside other tests under
// ctest -j, the small build being a few milliseconds), while one lookup per parameter over all the parameters
// registered so far made it 100. The two sizes are timed in interleaved pairs and the smallest ratio of a pair
// counts, so that a burst of load from other tests slows both members of some pair alike.
TEST(MemoryCheck, ModelConstructionIsLinearInTheLayers) {
    double best = 1e30, small = 0, large = 0;
    for (int pair = 0; pair < 5; ++pair) {
        const double s = construction_seconds(2000, 1), l = construction_seconds(20000, 1);
        if (l / s < best) best = l / s, small = s, large = l;
    }
    std::cout << "construction: 2000 layers " << small << " s, 20000 layers " << large << " s, ratio " << best
              << " (the smallest of 5 interleaved pairs)\n";
    EXPECT_LT(best, 40.0);
}

}  // namespace
}  // namespace frugal
