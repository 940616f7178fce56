// Reliability: nothing a run owns or does not own is lost. An export never replaces what is not an export; a run
// never overwrites or deletes another run's checkpoints and refuses to resume another run's; two runs cannot share
// an out_dir; a full disk ends with a message naming the disk and the bytes, no temporary left and the previous
// checkpoint still the latest; flipped bits anywhere in a checkpoint are refused or change nothing (never a crash);
// and a signal stops every rank at a step boundary with a checkpoint.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "checkpoint/hf.h"
#include "core/file_io.h"
#include "parallel/communicator.h"
#include "tests/util.h"
#include "trainer/run_guard.h"
#include "trainer/trainer.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;

class Reliability : public ::testing::Test {
  public:
    void SetUp() override {
        ASSERT_FALSE(test::test_corpus().empty()) << "the fortunes package is missing";
        dir_ = test::temp_dir("reliability_" +
                              std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
        ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
        ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    }
    void TearDown() override {
        if (mounted_) ::umount2(mount_.c_str(), MNT_DETACH);
        fs::remove_all(dir_);
    }

    trainer::TrainConfig small(const std::string& out_dir) {
        trainer::TrainConfig c;
        c.run.out_dir = out_dir;
        c.run.log_every = 1;
        c.model.d_model = 32;
        c.model.n_layers = 2;
        c.model.n_heads = 2;
        c.model.d_ff = 64;
        c.model.dense_layers = 1;
        c.model.max_seq_len = 32;
        c.model.moe.n_experts = 4;
        c.model.moe.d_expert = 32;
        c.train.seq_len = 32;
        c.train.global_batch = 4;
        c.train.micro_batch = 4;
        c.train.eval_every = 0;
        c.train.eval_batches = 1;
        c.train.steps = 2;
        c.checkpoint.every = 1;
        c.data.dir = test::test_corpus().string();
        return c;
    }
    // The small model as command-line overrides of configs/demo.yaml.
    std::string small_cli(const fs::path& out_dir, const std::string& extra) {
        return std::string(FRUGAL_SOURCE_DIR) + "/configs/demo.yaml --set data.dir=" + test::test_corpus().string() +
               " --set run.out_dir=" + out_dir.string() +
               " --set model.d_model=32 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.d_ff=64"
               " --set moe.d_expert=32 --set model.max_seq_len=32 --set train.seq_len=32 --set train.global_batch=4"
               " --set train.micro_batch=2 --set train.eval_every=0 --set train.eval_batches=2"
               " --set run.log_every=1 --set train.threads=1 " +
               extra;
    }
    // A tmpfs of `bytes` at dir_/name (root only; false elsewhere).
    bool small_disk(const std::string& name, int64_t bytes) {
        mount_ = (dir_ / name).string();
        fs::create_directories(mount_);
        const std::string opts = "size=" + std::to_string(bytes);
        mounted_ = ::geteuid() == 0 && ::mount("tmpfs", mount_.c_str(), "tmpfs", 0, opts.c_str()) == 0;
        return mounted_;
    }

    fs::path dir_;
    std::string mount_;
    bool mounted_ = false;
};

std::string first_line(const fs::path& p) {
    std::ifstream f(p);
    std::string s;
    std::getline(f, s);
    return s;
}

TEST_F(Reliability, ExportRefusesToReplaceAnythingButAPreviousExport) {
    const fs::path notes = dir_ / "notes";
    fs::create_directories(notes / "sub");
    std::ofstream(notes / "draft.txt") << "keep me";
    EXPECT_THROW(checkpoint::check_export_target(notes.string(), "--out", false), ConfigError);
    const fs::path file = dir_ / "a_file";
    std::ofstream(file) << "keep me too";
    EXPECT_THROW(checkpoint::check_export_target(file.string(), "--out", false), ConfigError);

    // Through the CLI, from a checkpoint of an imported model: refused with exit 2, nothing touched.
    const std::string hf = std::string(FRUGAL_SOURCE_DIR) + "/tests/golden/hf/qwen3_moe";
    const fs::path ckpt = dir_ / "model.h5";
    test::CliResult r = test::run_frugal("import-hf " + hf + " --out " + ckpt.string());
    ASSERT_EQ(r.code, 0) << r.output;
    r = test::run_frugal("import-hf " + hf + " --out " + ckpt.string());
    EXPECT_EQ(r.code, 2) << "an existing checkpoint is not replaced without --force: " << r.output;
    EXPECT_NE(r.output.find("--force"), std::string::npos) << r.output;
    r = test::run_frugal("export-hf " + ckpt.string() + " --out " + notes.string());
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("not a previous export"), std::string::npos) << r.output;
    EXPECT_EQ(first_line(notes / "draft.txt"), "keep me");
    EXPECT_TRUE(fs::is_directory(notes / "sub"));
    r = test::run_frugal("export-hf " + ckpt.string() + " --out " + file.string());
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_EQ(first_line(file), "keep me too");

    // --config must be the model's config.json: another family, or a directory, is refused.
    r = test::run_frugal("export-hf " + ckpt.string() + " --out " + (dir_ / "e2").string() + " --config " +
                         FRUGAL_SOURCE_DIR + "/tests/golden/hf/mixtral/config.json");
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("model_type 'mixtral' but the export writes 'qwen3_moe'"), std::string::npos) << r.output;
    r = test::run_frugal("export-hf " + ckpt.string() + " --out " + (dir_ / "e2").string() + " --config " + hf);
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_FALSE(fs::exists(dir_ / "e2"));

    // A previous export is replaced; --force replaces anything.
    const fs::path out = dir_ / "export";
    ASSERT_EQ(test::run_frugal("export-hf " + ckpt.string() + " --out " + out.string()).code, 0);
    EXPECT_NO_THROW(checkpoint::check_export_target(out.string(), "--out", false));
    r = test::run_frugal("export-hf " + ckpt.string() + " --out " + out.string());
    EXPECT_EQ(r.code, 0) << r.output;
    r = test::run_frugal("export-hf " + ckpt.string() + " --out " + notes.string() + " --force");
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_TRUE(fs::exists(notes / "config.json"));
    EXPECT_FALSE(fs::exists(notes / "draft.txt"));
}

TEST_F(Reliability, AFreshRunRefusesAnotherRunsCheckpointsAndAResumeRefusesAnotherSeed) {
    const std::string out = (dir_ / "run").string();
    trainer::TrainConfig a = small(out);
    trainer::train(a);
    const fs::path ck = fs::path(out) / "checkpoints";
    ASSERT_TRUE(fs::exists(ck / "step_00000002.h5"));
    const auto before = fs::last_write_time(ck / "step_00000002.h5");

    trainer::TrainConfig fresh = small(out);
    fresh.run.seed = 99;
    try {
        trainer::train(fresh);
        ADD_FAILURE() << "a fresh run over another run's checkpoints must be refused";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("checkpoint.resume=auto"), std::string::npos) << e.what();
    }
    trainer::TrainConfig other_seed = small(out);
    other_seed.run.seed = 99;
    other_seed.train.steps = 4;
    other_seed.checkpoint.resume = "auto";
    try {
        trainer::train(other_seed);
        ADD_FAILURE() << "resuming with another seed must be refused";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("run.seed: 1234 in the checkpoint, 99 now"), std::string::npos)
            << e.what();
    }
    EXPECT_EQ(fs::last_write_time(ck / "step_00000002.h5"), before) << "the first run's checkpoint was touched";
    EXPECT_EQ(first_line(ck / "latest"), "step_00000002.h5");

    // The same run continues: its id carries over, and retention (keep_last 3) removes only its own oldest.
    trainer::TrainConfig same = small(out);
    same.train.steps = 5;
    same.checkpoint.resume = "auto";
    trainer::train(same);
    const std::string id = checkpoint::read_state((ck / "step_00000005.h5").string()).run_id;
    EXPECT_EQ(id.size(), 32u);
    EXPECT_EQ(checkpoint::read_state((ck / "step_00000003.h5").string()).run_id, id);
    EXPECT_FALSE(fs::exists(ck / "step_00000002.h5"));
}

TEST_F(Reliability, RetentionDeletesOnlyItsOwnRunsCheckpoints) {
    parallel::SingleProcessComm world;
    std::vector<float> w(64, 1.0f);
    std::vector<checkpoint::TensorSlot> slots{{"params/w", {8, 8}, 0, {8, 8}, true, w.data()}};
    const std::string ck = (dir_ / "ck").string();
    auto save = [&](const std::string& run, int64_t step) {
        checkpoint::TrainingState st;
        st.step = step;
        st.run_id = run;
        checkpoint::save(ck, slots, st, world, 2, 0);
    };
    for (int64_t step : {10, 20, 30}) save("other", step);  // a newer run's files, higher steps
    for (int64_t step : {1, 2, 3, 4}) save("mine", step);
    std::vector<std::string> names;
    for (const std::string& p : checkpoint::list_checkpoints(ck)) names.push_back(fs::path(p).filename().string());
    const std::vector<std::string> want{"step_00000030.h5", "step_00000020.h5", "step_00000004.h5", "step_00000003.h5"};
    EXPECT_EQ(names, want) << "keep_last 2 of run 'mine', and every file of run 'other' (of which only 2 were kept "
                              "by its own saves)";
    EXPECT_EQ(first_line(fs::path(ck) / "latest"), "step_00000004.h5");
}

TEST_F(Reliability, TwoRunsCannotShareAnOutDir) {
    trainer::DirLock first(dir_.string(), "run.out_dir");
    try {
        trainer::DirLock second(dir_.string(), "run.out_dir");
        ADD_FAILURE() << "a second lock on the same directory must fail";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("pid " + std::to_string(::getpid())), std::string::npos) << e.what();
    }
    // Through the CLI: a second run in a running run's out_dir exits 2 naming the holder.
    const fs::path out = dir_ / "shared";
    fs::create_directories(out);
    trainer::DirLock held(out.string(), "run.out_dir");
    test::CliResult r = test::run_frugal("train " + small_cli(out, "--set parallel.ep=1 --set train.steps=1"));
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("is in use by another run (pid " + std::to_string(::getpid())), std::string::npos)
        << r.output;
}

TEST_F(Reliability, AFullDiskEndsWithTheBytesNeededAndKeepsThePreviousCheckpoint) {
    // Room for the run's files and one checkpoint of the small model (about 0.5 MB) with the margin a checkpoint
    // asks for (checkpoint::file_bytes), not for two.
    const std::string flags = "--set parallel.ep=1 --set checkpoint.every=1 --set checkpoint.keep_last=3 ";
    ASSERT_EQ(test::run_frugal("train " + small_cli(dir_ / "probe", flags + "--set train.steps=1")).code, 0);
    const int64_t one = int64_t(fs::file_size(dir_ / "probe" / "checkpoints" / "step_00000001.h5"));
    if (!small_disk("disk", 2 * one + 128 * 1024)) GTEST_SKIP() << "mounting a small tmpfs needs root";
    const fs::path out = fs::path(mount_) / "run";
    test::CliResult r = test::run_frugal("train " + small_cli(out, flags + "--set train.steps=3"));
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_NE(r.output.find("the disk is full"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("needs "), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("Segmentation"), std::string::npos) << r.output;
    const fs::path ck = out / "checkpoints";
    EXPECT_EQ(first_line(ck / "latest"), "step_00000001.h5");
    EXPECT_TRUE(checkpoint::verify((ck / "step_00000001.h5").string()).ok);
    for (const auto& e : fs::directory_iterator(ck))
        EXPECT_NE(e.path().extension(), ".tmp") << "left behind: " << e.path();
    EXPECT_GT(fs::file_size(out / "metrics.jsonl"), 0u);

    // A disk with no room at all: the first file the run writes fails by name, with a non-zero exit.
    fs::remove_all(out);
    const fs::path filler = fs::path(mount_) / "filler";
    {
        std::ofstream f(filler, std::ios::binary);
        std::vector<char> block(4096, 'x');
        while (f.write(block.data(), std::streamsize(block.size()))) {
        }
    }
    r = test::run_frugal("train " + small_cli(out, "--set parallel.ep=1 --set train.steps=1 --set checkpoint.every=0"));
    EXPECT_NE(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("No space left on device"), std::string::npos) << r.output;

    // An export to the full disk: refused by name, no staging directory left behind.
    const fs::path ckpt = dir_ / "model.h5";
    ASSERT_EQ(test::run_frugal("import-hf " + std::string(FRUGAL_SOURCE_DIR) + "/tests/golden/hf/qwen3_moe --out " +
                               ckpt.string())
                  .code,
              0);
    r = test::run_frugal("export-hf " + ckpt.string() + " --out " + (fs::path(mount_) / "export").string());
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_NE(r.output.find("the disk is full"), std::string::npos) << r.output;
    for (const auto& e : fs::directory_iterator(mount_))
        EXPECT_EQ(e.path().filename().string().find("export"), std::string::npos) << "left behind: " << e.path();
}

// The disk fills up while two ranks write a checkpoint (another process takes the space once the temporary file
// appears): every rank stops with the reason, none waits forever in the collective close, the temporary is removed.
TEST_F(Reliability, ADiskThatFillsDuringACollectiveWriteStopsEveryRankCleanly) {
    if (!small_disk("disk", 110 << 20)) GTEST_SKIP() << "mounting a small tmpfs needs root";
    const fs::path out = fs::path(mount_) / "run";
    std::thread filler([&] {
        const auto t0 = std::chrono::steady_clock::now();
        while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120)) {
            std::error_code ec;
            for (const auto& e : fs::directory_iterator(out / "checkpoints", ec))
                if (e.path().extension() == ".tmp") {
                    std::ofstream f(fs::path(mount_) / "filler", std::ios::binary);
                    std::vector<char> block(1 << 20, 'x');
                    while (f.write(block.data(), std::streamsize(block.size()))) {
                    }
                    return;
                }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    });
    // The demo model: its 80 MB checkpoint takes long enough to write for the filler to step in.
    test::CliResult r = test::run_frugal(
        "launch -n 2 " + std::string(FRUGAL_SOURCE_DIR) + "/configs/demo.yaml --set data.dir=" +
        test::test_corpus().string() + " --set run.out_dir=" + out.string() +
        " --set parallel.ep=2 --set train.steps=1 --set checkpoint.every=1 --set train.eval_every=0");
    filler.join();
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_LT(r.seconds, 100) << r.output;
    EXPECT_NE(r.output.find("No space left on device: the disk is full"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("the previous checkpoint stays the latest"), std::string::npos) << r.output;
    for (const auto& e : fs::directory_iterator(out / "checkpoints"))
        EXPECT_NE(e.path().extension(), ".tmp") << "left behind: " << e.path();
}

// Flips one random bit of a checkpoint at a time, 2000 times, half of them in the first and last 16 KiB where the
// file's metadata lives: each copy must fail verification with a message, or load exactly the original values.
TEST_F(Reliability, FlippedBitsAreRefusedOrChangeNothing) {
    trainer::TrainConfig c = small((dir_ / "run").string());
    c.train.steps = 1;
    trainer::train(c);
    const fs::path good = dir_ / "run" / "checkpoints" / "step_00000001.h5";
    const auto manifest = checkpoint::read_manifest(good.string());
    auto read_all = [&](const std::string& path, std::vector<std::vector<float>>& out) {
        std::vector<checkpoint::TensorSlot> slots;
        out.assign(manifest.size(), {});
        for (size_t i = 0; i < manifest.size(); ++i) {
            out[i].resize(size_t(shape_numel(manifest[i].shape)));
            slots.push_back({manifest[i].name, manifest[i].shape, 0, manifest[i].shape, false, out[i].data()});
        }
        checkpoint::TrainingState st;
        checkpoint::load(path, slots, st);
        return st;
    };
    std::vector<std::vector<float>> want, got;
    const checkpoint::TrainingState want_state = read_all(good.string(), want);
    std::ifstream in(good, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::mt19937_64 rng(20261201);
    const fs::path bad = dir_ / "flipped.h5";
    int refused = 0, harmless = 0;
    for (int i = 0; i < 2000; ++i) {
        const size_t n = bytes.size(), edge = std::min<size_t>(16384, n / 2);
        size_t at = rng() % n;
        if (i % 2 == 0) at = (i % 4 == 0) ? rng() % edge : n - 1 - rng() % edge;
        std::string copy = bytes;
        copy[at] = char(copy[at] ^ char(1u << (rng() % 8)));
        std::ofstream(bad, std::ios::binary | std::ios::trunc).write(copy.data(), std::streamsize(copy.size()));
        const checkpoint::VerifyReport v = checkpoint::verify(bad.string());
        if (!v.ok) {
            EXPECT_FALSE(v.error.empty()) << "byte " << at;
            ++refused;
            continue;
        }
        const checkpoint::TrainingState st = read_all(bad.string(), got);
        ASSERT_EQ(got, want) << "flipping a bit of byte " << at << " passed verification but changed the data";
        ASSERT_EQ(st.config_yaml, want_state.config_yaml) << "byte " << at;
        ASSERT_EQ(st.step, want_state.step) << "byte " << at;
        ++harmless;
    }
    std::printf("[ figures ] 2000 single-bit flips in a %zu-byte checkpoint: %d refused, %d harmless\n", bytes.size(),
                refused, harmless);
    EXPECT_GT(refused, 1000);
}

// SIGTERM to `frugal launch` (as a scheduler sends before a time limit) stops both ranks at a step boundary with a
// checkpoint; the job exits 143, no process is left, and the run resumes from that checkpoint.
TEST_F(Reliability, SigtermToTheLauncherStopsEveryRankWithACheckpoint) {
    const fs::path out = dir_ / "run";
    const std::string cmd = std::string(FRUGAL_BINARY) + " launch -n 2 " +
                            small_cli(out, "--set parallel.ep=2 --set train.steps=100000 --set checkpoint.every=1000");
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        const std::string log = (dir_ / "launch.log").string();
        ::execl("/bin/sh", "sh", "-c", (cmd + " > " + log + " 2>&1").c_str(), nullptr);
        std::_Exit(127);
    }
    // Wait for training to start (the progress file appears after the first step), then ask it to stop.
    for (int i = 0; i < 600 && !fs::exists(out / "progress"); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_TRUE(fs::exists(out / "progress")) << "training did not start";
    ::system(("pkill -TERM -f '^" + std::string(FRUGAL_BINARY) + " launch -n 2 .*" + out.string() + "'").c_str());
    int status = 0;
    ::waitpid(pid, &status, 0);
    std::ifstream lf(dir_ / "launch.log");
    const std::string log((std::istreambuf_iterator<char>(lf)), std::istreambuf_iterator<char>());
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 143) << log;
    EXPECT_NE(log.find("launch: stopped by SIGTERM"), std::string::npos) << log;
    EXPECT_NE(log.find("[rank 1] warning: stopped by SIGUSR1 after step"), std::string::npos) << log;
    const std::string stopped = checkpoint::find_resumable((out / "checkpoints").string());
    ASSERT_FALSE(stopped.empty()) << log;
    const int64_t step = checkpoint::read_state(stopped).step;
    EXPECT_EQ(std::stoll(first_line(out / "progress")), step) << "the checkpoint is of the last step completed";
    EXPECT_NE(::system(("pgrep -f '[r]un.out_dir=" + out.string() + "' > /dev/null").c_str()), 0)
        << "a process of the job is still running";
    test::CliResult r = test::run_frugal(
        "train " + small_cli(out,
                             "--set parallel.ep=1 --set checkpoint.resume=auto --set checkpoint.every=1000 "
                             "--set train.steps=" +
                                 std::to_string(step + 1)));
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("resumed from " + stopped), std::string::npos) << r.output;
}

}  // namespace
}  // namespace frugal
