// Checkpoints: bitwise resume, resharding across layouts, restarts after a real SIGKILL, a kill between writing
// and committing, and every corruption case (truncated file, flipped bytes, missing dataset, other shapes, another
// model) detected with the dataset named and no earlier checkpoint touched.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <fstream>
#include <regex>

#include "checkpoint/checkpoint.h"
#include "parallel/communicator.h"
#include "tests/util.h"
#include "trainer/trainer.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;

std::vector<double> metric_losses(const fs::path& run) {
    std::ifstream f(run / "metrics.jsonl");
    std::vector<double> out;
    std::string line;
    std::regex re("\"loss\": ([-0-9.e+]+)");
    std::smatch m;
    while (std::getline(f, line))
        if (std::regex_search(line, m, re)) out.push_back(std::stod(m[1]));
    return out;
}

class Checkpoint : public ::testing::Test {
  public:
    void SetUp() override {
        ASSERT_FALSE(test::test_corpus().empty()) << "the fortunes package is missing";
        dir_ = test::temp_dir("ckpt");
        ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
        ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    }
    void TearDown() override { fs::remove_all(dir_); }

    trainer::TrainConfig small(const std::string& name) {
        trainer::TrainConfig c;
        c.run.out_dir = (dir_ / name).string();
        c.run.log_every = 1;
        c.model.d_model = 64;
        c.model.n_layers = 2;
        c.model.n_heads = 4;
        c.model.d_ff = 128;
        c.model.dense_layers = 1;
        c.model.max_seq_len = 64;
        c.model.moe.n_experts = 4;
        c.model.moe.d_expert = 64;
        c.model.moe.bias_update_rate = 0.001;  // the expert bias is state that must survive a resume
        c.train.seq_len = 64;
        c.train.global_batch = 8;
        c.train.micro_batch = 4;
        c.train.eval_every = 0;
        c.optim.warmup_steps = 2;
        c.precision.optimizer_state = "bf16";  // BF16 moments round-trip through the FP32 file format
        c.checkpoint.every = 3;
        c.data.dir = test::test_corpus().string();
        return c;
    }
    // The demo model through the CLI, writing into dir_/name; in FP32, whose losses agree across layouts to float
    // tolerance (FP8's 128 x 1 weight-gradient tiles group each expert's tokens by layout).
    std::string demo(const std::string& name, const std::string& extra) {
        return std::string(FRUGAL_SOURCE_DIR) + "/configs/demo.yaml --set data.dir=" + test::test_corpus().string() +
               " --set run.out_dir=" + (dir_ / name).string() +
               " --set run.log_every=1 --set train.eval_every=0 --set train.threads=1 --set precision.recipe=fp32 " +
               extra;
    }
    fs::path dir_;
};

// Resumes after step 3 of 9 and compares every later step bitwise with the uninterrupted run, for a recipe
// without state (fp32) and for fp8-delayed, whose per-layer amax histories are part of the checkpoint.
void resume_case(Checkpoint& t, const std::string& recipe) {
    auto config = [&](const std::string& name, int64_t steps) {
        trainer::TrainConfig c = t.small(name + "_" + recipe);
        c.precision.recipe = recipe;
        c.train.steps = steps;
        return c;
    };
    trainer::TrainConfig full = config("full", 9);
    auto ref = trainer::train(full);
    trainer::TrainConfig first = config("resumed", 3);
    trainer::train(first);
    trainer::TrainConfig second = config("resumed", 9);
    second.checkpoint.resume = "auto";
    auto rest = trainer::train(second);
    ASSERT_EQ(rest.history.size(), 6u);
    for (size_t i = 0; i < 6; ++i) {
        EXPECT_EQ(std::memcmp(&rest.history[i].loss, &ref.history[i + 3].loss, sizeof(double)), 0)
            << recipe << " step " << i + 4 << ": " << rest.history[i].loss << " vs " << ref.history[i + 3].loss;
        EXPECT_EQ(rest.history[i].grad_norm, ref.history[i + 3].grad_norm) << recipe << " step " << i + 4;
    }
    // Retention kept the last 3 of steps 3, 6, 9 (and the resumed run continued the metrics file).
    const fs::path run = fs::path(second.run.out_dir);
    EXPECT_EQ(metric_losses(run).size(), 9u);
    EXPECT_TRUE(fs::exists(run / "checkpoints" / "step_00000009.h5"));
}

TEST_F(Checkpoint, ResumeIsBitwiseIdenticalToAnUninterruptedRun) { resume_case(*this, "fp32"); }
TEST_F(Checkpoint, ResumeWithDelayedScalingIsBitwiseIdentical) { resume_case(*this, "fp8-delayed"); }
TEST_F(Checkpoint, ResumeWithStatelessFp8RecipesIsBitwiseIdentical) {
    for (const char* recipe : {"fp8-tensorwise", "fp8-blockwise", "bf16"}) resume_case(*this, recipe);
}

// A DeepSeek-V3-style model (MLA with compressed queries, group-limited sigmoid routing with the expert bias, a
// shared expert, an MTP module whose block is MoE, fp8-blockwise): the MTP parameters and the MTP block's expert
// bias are checkpoint state, so a resume is bitwise identical too, main and MTP losses alike.
TEST_F(Checkpoint, ResumeOfADeepSeekStyleModelWithMtpIsBitwiseIdentical) {
    auto config = [&](const std::string& name, int64_t steps) {
        trainer::TrainConfig c = small(name);
        c.model.attention = "mla";
        c.model.q_lora_rank = 32;
        c.model.kv_lora_rank = 32;
        c.model.qk_nope_head_dim = 16;
        c.model.qk_rope_head_dim = 8;
        c.model.v_head_dim = 16;
        c.model.mtp_modules = 1;
        c.model.moe.score_func = "sigmoid";
        c.model.moe.n_group = 2;
        c.model.moe.topk_group = 1;
        c.model.moe.n_shared_experts = 1;
        c.model.moe.routed_scaling_factor = 2.5;
        c.precision.recipe = "fp8-blockwise";
        c.train.steps = steps;
        return c;
    };
    trainer::TrainConfig full = config("ds_full", 6);
    auto ref = trainer::train(full);
    trainer::TrainConfig first = config("ds_resumed", 3);
    trainer::train(first);
    trainer::TrainConfig second = config("ds_resumed", 6);
    second.checkpoint.resume = "auto";
    auto rest = trainer::train(second);
    ASSERT_EQ(rest.history.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
        EXPECT_EQ(std::memcmp(&rest.history[i].loss, &ref.history[i + 3].loss, sizeof(double)), 0) << "step " << i + 4;
        EXPECT_EQ(std::memcmp(&rest.history[i].mtp_loss, &ref.history[i + 3].mtp_loss, sizeof(double)), 0)
            << "step " << i + 4 << ": " << rest.history[i].mtp_loss << " vs " << ref.history[i + 3].mtp_loss;
        EXPECT_GT(rest.history[i].mtp_loss, 0);
    }
}

TEST_F(Checkpoint, ReshardsFourToTwoToOneAndOneToFour) {
    // Uninterrupted reference on one rank.
    test::CliResult r =
        test::run_frugal("train " + demo("ref", "--set parallel.ep=1 --set train.micro_batch=4 --set train.steps=6"));
    ASSERT_EQ(r.code, 0) << r.output;
    auto ref = metric_losses(dir_ / "ref");
    // 4 ranks (ep 4) -> 2 ranks (ep 2) -> 1 rank, two steps each, one run directory.
    const std::string ck = "--set checkpoint.every=2 --set checkpoint.resume=auto --set train.micro_batch=4 ";
    r = test::run_frugal("launch -n 4 " + demo("a", ck + "--set parallel.ep=4 --set train.steps=2"));
    ASSERT_EQ(r.code, 0) << r.output;
    r = test::run_frugal("launch -n 2 " + demo("a", ck + "--set parallel.ep=2 --set train.steps=4"));
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("written by 4 ranks with ep 4"), std::string::npos) << r.output;
    r = test::run_frugal("train " + demo("a", ck + "--set parallel.ep=1 --set train.steps=6"));
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("written by 2 ranks with ep 2"), std::string::npos) << r.output;
    auto a = metric_losses(dir_ / "a");
    ASSERT_EQ(a.size(), 6u);
    for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(a[i], ref[i], 1e-5 * ref[i]) << "step " << i + 1;
    // 1 rank -> 4 ranks.
    r = test::run_frugal("train " + demo("b", ck + "--set parallel.ep=1 --set train.steps=3"));
    ASSERT_EQ(r.code, 0) << r.output;
    r = test::run_frugal("launch -n 4 " + demo("b", ck + "--set parallel.ep=4 --set train.steps=6"));
    ASSERT_EQ(r.code, 0) << r.output;
    auto b = metric_losses(dir_ / "b");
    ASSERT_EQ(b.size(), 6u);
    for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(b[i], ref[i], 1e-5 * ref[i]) << "step " << i + 1;
}

// ZeRO-1's optimizer state is written as the global tensors, each rank its shard, so a checkpoint of it loads into
// any layout and zero setting: 4 ranks with zero 1 -> 2 ranks with zero 0 -> 4 ranks with zero 1 follows the
// uninterrupted 4-rank zero 0 run, and a zero 1 checkpoint holds the same optimizer state as a zero 0 one.
TEST_F(Checkpoint, ZeroOneStateReshardsIntoAnyLayoutAndZeroSetting) {
    const std::string common = "--set parallel.ep=2 --set train.micro_batch=4 --set checkpoint.every=2 ";
    test::CliResult r =
        test::run_frugal("launch -n 4 " + demo("ref", common + "--set parallel.zero=0 --set train.steps=6"));
    ASSERT_EQ(r.code, 0) << r.output;
    auto ref = metric_losses(dir_ / "ref");
    const std::string ck = common + "--set checkpoint.resume=auto ";
    r = test::run_frugal("launch -n 4 " + demo("a", ck + "--set parallel.zero=1 --set train.steps=2"));
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("ZeRO-1"), std::string::npos) << r.output;
    // Step 2's state, written by zero 1, equals zero 0's: the same tensors, loaded by a tool with no layout.
    {
        checkpoint::TrainingState st_ref, st_a;
        std::vector<checkpoint::TensorSlot> slots_ref, slots_a;
        std::vector<std::vector<float>> data_ref, data_a;
        for (auto* side : {&slots_ref, &slots_a}) {
            auto& data = side == &slots_ref ? data_ref : data_a;
            for (const auto& e :
                 checkpoint::read_manifest((dir_ / "ref" / "checkpoints" / "step_00000002.h5").string())) {
                if (e.name.rfind("optim/", 0) != 0) continue;
                data.emplace_back(size_t(shape_numel(e.shape)));
                side->push_back({e.name, e.shape, 0, e.shape, false, data.back().data()});
            }
        }
        checkpoint::load((dir_ / "ref" / "checkpoints" / "step_00000002.h5").string(), slots_ref, st_ref);
        checkpoint::load((dir_ / "a" / "checkpoints" / "step_00000002.h5").string(), slots_a, st_a);
        ASSERT_GT(slots_ref.size(), 10u);
        for (size_t i = 0; i < slots_ref.size(); ++i)
            for (size_t j = 0; j < data_ref[i].size(); ++j)
                ASSERT_NEAR(data_a[i][j], data_ref[i][j], 1e-6 * std::abs(data_ref[i][j]) + 1e-12)
                    << slots_ref[i].name << " element " << j;
    }
    r = test::run_frugal("launch -n 2 " + demo("a", ck + "--set parallel.zero=0 --set train.steps=4"));
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("written by 4 ranks with ep 2"), std::string::npos) << r.output;
    r = test::run_frugal("launch -n 4 " + demo("a", ck + "--set parallel.zero=1 --set train.steps=6"));
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("written by 2 ranks with ep 2"), std::string::npos) << r.output;
    auto a = metric_losses(dir_ / "a");
    ASSERT_EQ(a.size(), 6u);
    ASSERT_EQ(ref.size(), 6u);
    for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(a[i], ref[i], 1e-5 * ref[i]) << "step " << i + 1;
}

TEST_F(Checkpoint, AKilledRankUnderMaxRestartsEndsWithTheUninterruptedLoss) {
    // The kill step is drawn from a fixed seed; an even step, so that the step before it (completed, not yet
    // checkpointed: checkpoints are at even steps) is lost and computed again.
    const int kill_step = 4 + 2 * int(rng::Stream(7, "kill step").below(2, 0));  // 4 or 6
    const std::string common =
        "--set parallel.ep=2 --set train.micro_batch=4 --set train.steps=8 "
        "--set checkpoint.every=2 ";
    test::CliResult ref = test::run_frugal("launch -n 2 " + demo("ref", common));
    ASSERT_EQ(ref.code, 0) << ref.output;
    test::CliResult r = test::run_frugal(
        "launch -n 2 --max-restarts 2 " +
        demo("killed", common + "--set fault.kill_rank=1 --set fault.at_step=" + std::to_string(kill_step)));
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("restart 1 of 2"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
    auto a = metric_losses(dir_ / "ref"), b = metric_losses(dir_ / "killed");
    ASSERT_FALSE(b.empty());
    EXPECT_EQ(a.back(), b.back()) << "kill at step " << kill_step;
    // The lost steps were recorded for the accounting.
    std::ifstream f(dir_ / "killed" / "failures.jsonl");
    std::string line;
    ASSERT_TRUE(std::getline(f, line)) << "failures.jsonl missing";
    EXPECT_NE(line.find("\"lost_steps\""), std::string::npos) << line;
}

TEST_F(Checkpoint, AKillBetweenWritingAndCommittingLeavesThePreviousOneLoadable) {
    test::CliResult r = test::run_frugal(
        "train " + demo("k",
                        "--set parallel.ep=1 --set train.steps=6 --set checkpoint.every=2 "
                        "--set fault.kill_rank=0 --set fault.at_step=4 --set fault.kind=kill_in_checkpoint"));
    EXPECT_EQ(r.code, 137) << r.output;  // SIGKILL
    const fs::path ck = dir_ / "k" / "checkpoints";
    EXPECT_TRUE(fs::exists(ck / "step_00000004.h5.tmp")) << "the uncommitted file is left as .tmp";
    EXPECT_FALSE(fs::exists(ck / "step_00000004.h5"));
    std::ifstream latest(ck / "latest");
    std::string name;
    latest >> name;
    EXPECT_EQ(name, "step_00000002.h5");
    EXPECT_EQ(checkpoint::find_resumable(ck.string()), (ck / "step_00000002.h5").string());
    r = test::run_frugal("train " + demo("k",
                                         "--set parallel.ep=1 --set train.steps=6 --set checkpoint.every=2 "
                                         "--set checkpoint.resume=auto"));
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("resumed from " + (ck / "step_00000002.h5").string()), std::string::npos) << r.output;
}

TEST_F(Checkpoint, CorruptionAndMismatchesAreDetectedAndNamed) {
    trainer::TrainConfig c = small("good");
    c.train.steps = 6;
    trainer::train(c);
    const fs::path ck = dir_ / "good" / "checkpoints";
    const fs::path good = ck / "step_00000006.h5", older = ck / "step_00000003.h5";
    ASSERT_TRUE(checkpoint::verify(good.string()).ok);
    test::CliResult v = test::run_frugal("ckpt verify " + good.string());
    EXPECT_EQ(v.code, 0) << v.output;

    // Truncated.
    const fs::path trunc = dir_ / "trunc.h5";
    fs::copy_file(good, trunc);
    fs::resize_file(trunc, fs::file_size(trunc) / 2);
    auto rep = checkpoint::verify(trunc.string());
    EXPECT_FALSE(rep.ok);
    EXPECT_NE(test::run_frugal("ckpt verify " + trunc.string()).code, 0);

    // Flipped bytes in the data: the checksum names the dataset.
    const fs::path flip = dir_ / "flip.h5";
    fs::copy_file(good, flip);
    {
        std::fstream f(flip, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(std::streamoff(fs::file_size(flip) * 3 / 5));
        const char junk[16] = {'\x55', '\x55', '\x55', '\x55', '\x55', '\x55', '\x55', '\x55',
                               '\x55', '\x55', '\x55', '\x55', '\x55', '\x55', '\x55', '\x55'};
        f.write(junk, sizeof(junk));
    }
    rep = checkpoint::verify(flip.string());
    EXPECT_FALSE(rep.ok);
    EXPECT_NE(rep.error.find("dataset '"), std::string::npos) << rep.error;
    test::CliResult fv = test::run_frugal("ckpt verify " + flip.string());
    EXPECT_EQ(fv.code, 1) << fv.output;

    // A different model is refused by name before anything is loaded.
    for (auto [key, want] : std::vector<std::pair<std::string, std::string>>{
             {"model.n_layers=3", "model.n_layers: 2 in the checkpoint, 3 now"},
             {"model.d_model=96", "model.d_model: 64 in the checkpoint, 96 now"}}) {
        trainer::TrainConfig other = small("good");
        ConfigFields f = other.fields();
        f.set(key.substr(0, key.find('=')), key.substr(key.find('=') + 1), "test");
        other.train.steps = 9;
        other.checkpoint.resume = "auto";
        try {
            trainer::train(other);
            ADD_FAILURE() << key << ": loading a checkpoint of another model should fail";
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << key << ": " << e.what();
        }
    }
    // A corrupt newest checkpoint is skipped for the older one that verifies; nothing earlier was touched.
    fs::copy_file(flip, good, fs::copy_options::overwrite_existing);
    EXPECT_EQ(checkpoint::find_resumable(ck.string()), older.string());
    EXPECT_TRUE(checkpoint::verify(older.string()).ok);
    test::CliResult insp = test::run_frugal("ckpt inspect " + older.string());
    EXPECT_EQ(insp.code, 0) << insp.output;
    EXPECT_NE(insp.output.find("step              3"), std::string::npos) << insp.output;
}

}  // namespace
}  // namespace frugal
