// The launcher and the whole expert-parallel job, end to end through `frugal launch` (mpirun underneath):
// 1, 2 and 4 ranks agree on the demo model's losses; a bad layout exits 2 everywhere; a failing or hanging rank
// brings the whole job down quickly with its message.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <fstream>
#include <regex>

#include "launch/launcher.h"
#include "tests/util.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;

class Launch : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        dir_ = new fs::path(test::temp_dir("launch"));
        ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
        ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    }
    static void TearDownTestSuite() {
        fs::remove_all(*dir_);
        delete dir_;
    }
    void SetUp() override { ASSERT_FALSE(test::test_corpus().empty()) << "the fortunes package is missing"; }
    // The demo config on this test's corpus, writing into run.out_dir = dir/name. In FP32: the layouts agree to
    // float tolerance only there (FP8's 128 x 1 weight-gradient tiles group each expert's tokens by layout).
    static std::string demo(const std::string& name, const std::string& extra = "") {
        return std::string(FRUGAL_SOURCE_DIR) + "/configs/demo.yaml --set data.dir=" + test::test_corpus().string() +
               " --set run.out_dir=" + (*dir_ / name).string() + " --set precision.recipe=fp32 " + extra;
    }
    // The "loss" (or another key's) value of every metrics line that has it.
    static std::vector<double> losses(const std::string& name, const std::string& key = "loss") {
        std::ifstream f(*dir_ / name / "metrics.jsonl");
        std::vector<double> out;
        std::string line;
        std::regex re("\"" + key + "\": ([-0-9.e+]+)");
        std::smatch m;
        while (std::getline(f, line))
            if (std::regex_search(line, m, re)) out.push_back(std::stod(m[1]));
        return out;
    }
    static fs::path* dir_;
};
fs::path* Launch::dir_ = nullptr;

// ZeRO-1 on 4 ranks (ep 2, edp 2): over 30 steps the losses equal zero 0's to 1e-6 relative, and the optimizer
// state this rank holds falls to a quarter of the replicated parameters' moments (dp 4) plus half of its experts'
// (edp 2), as the log reports it; the memory check at start-up predicts the same moments.
TEST_F(Launch, ZeroOneTrainsLikeZeroZeroWithItsOptimizerStateSharded) {
    const std::string common =
        "--set parallel.ep=2 --set train.steps=30 --set train.eval_every=0 --set run.log_every=1 "
        "--set train.threads=1 --set checkpoint.every=0 ";
    test::CliResult full = test::run_frugal("launch -n 4 " + demo("zero0", common + "--set parallel.zero=0"));
    ASSERT_EQ(full.code, 0) << full.output;
    test::CliResult sharded = test::run_frugal("launch -n 4 " + demo("zero1", common + "--set parallel.zero=1"));
    ASSERT_EQ(sharded.code, 0) << sharded.output;
    auto a = losses("zero0"), b = losses("zero1");
    ASSERT_EQ(a.size(), 30u);
    ASSERT_EQ(b.size(), 30u);
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-6 * a[i]) << "step " << i + 1;
    EXPECT_LT(b.back(), 0.8 * b.front());
    // "N parameters on this rank on cpu (D replicated) ... optimizer state X MB on this rank"
    std::regex re("([0-9]+) parameters on this rank on cpu \\(([0-9]+) replicated\\).*optimizer state ([0-9.]+) MB");
    std::smatch m0, m1;
    ASSERT_TRUE(std::regex_search(full.output, m0, re)) << full.output;
    ASSERT_TRUE(std::regex_search(sharded.output, m1, re)) << sharded.output;
    const double total = std::stod(m0[1]), dense = std::stod(m0[2]), experts = total - dense;
    EXPECT_NEAR(std::stod(m0[3]), 8.0 * total / 1e6, 0.1);  // two FP32 moments of every parameter
    EXPECT_NEAR(std::stod(m1[3]), 8.0 * (dense / 4 + experts / 2) / 1e6, 0.1);
    EXPECT_NE(sharded.output.find("ZeRO-1"), std::string::npos);
    EXPECT_NE(sharded.output.find("peak resident"), std::string::npos);
}

// configs/deepseek-demo.yaml (MLA, a dense first block, sigmoid + bias + group-limited routing, a shared expert, one
// MTP module, fp8-blockwise) as its comment says to run it, on 4 ranks with ep 4: the loss falls, and the MTP loss is
// in every metrics line and in the progress lines beside the main loss, falling too. In FP32 the same model on one
// rank gives the same losses (expert parallelism changes nothing for MLA, MTP and group routing).
TEST_F(Launch, TheDeepSeekDemoTrainsOnFourRanksAndReportsItsMtpLoss) {
    auto deepseek = [](const std::string& name, const std::string& extra) {
        return std::string(FRUGAL_SOURCE_DIR) +
               "/configs/deepseek-demo.yaml --set data.dir=" + test::test_corpus().string() +
               " --set run.out_dir=" + (*dir_ / name).string() +
               " --set train.threads=1 --set train.eval_every=0 --set checkpoint.every=0 " + extra;
    };
    test::CliResult r =
        test::run_frugal("launch -n 4 " + deepseek("ds4", "--set train.steps=30 --set run.log_every=1"));
    ASSERT_EQ(r.code, 0) << r.output;
    const auto loss = losses("ds4"), mtp = losses("ds4", "mtp_loss");
    ASSERT_EQ(loss.size(), 30u);
    ASSERT_EQ(mtp.size(), 30u);
    EXPECT_LT(loss.back(), 0.6 * loss.front()) << "first " << loss.front() << ", last " << loss.back();
    EXPECT_LT(mtp.back(), 0.7 * mtp.front()) << "first " << mtp.front() << ", last " << mtp.back();
    EXPECT_TRUE(std::regex_search(r.output, std::regex("step +30/30  loss [0-9.]+  mtp [0-9.]+"))) << r.output;
    const std::string fp32 = "--set precision.recipe=fp32 --set train.steps=6 --set run.log_every=1 ";
    test::CliResult a = test::run_frugal("train " + deepseek("ds1", fp32 + "--set parallel.ep=1"));
    ASSERT_EQ(a.code, 0) << a.output;
    test::CliResult b = test::run_frugal("launch -n 4 " + deepseek("ds4f", fp32));
    ASSERT_EQ(b.code, 0) << b.output;
    const auto l1 = losses("ds1"), l4 = losses("ds4f"), m1 = losses("ds1", "mtp_loss"), m4 = losses("ds4f", "mtp_loss");
    ASSERT_EQ(l1.size(), 6u);
    ASSERT_EQ(l4.size(), 6u);
    ASSERT_EQ(m1.size(), 6u);
    ASSERT_EQ(m4.size(), 6u);
    for (size_t i = 0; i < 6; ++i) {
        EXPECT_NEAR(l4[i], l1[i], 1e-5 * l1[i]) << "step " << i + 1;
        EXPECT_NEAR(m4[i], m1[i], 1e-5 * m1[i]) << "step " << i + 1;
    }
}

TEST_F(Launch, OneTwoAndFourRanksAgreeOnTheDemoModel) {
    const std::string common =
        "--set train.steps=30 --set run.log_every=1 --set train.eval_every=5 --set train.eval_batches=3 "
        "--set train.micro_batch=4 --set train.threads=1";
    test::CliResult r1 = test::run_frugal("train " + demo("ep1", common + " --set parallel.ep=1"));
    ASSERT_EQ(r1.code, 0) << r1.output;
    test::CliResult r2 = test::run_frugal("launch -n 2 " + demo("ep2", common + " --set parallel.ep=2"));
    ASSERT_EQ(r2.code, 0) << r2.output;
    test::CliResult r4 = test::run_frugal("launch -n 4 " + demo("ep4", common + " --set parallel.ep=4"));
    ASSERT_EQ(r4.code, 0) << r4.output;
    auto l1 = losses("ep1"), l2 = losses("ep2"), l4 = losses("ep4");
    ASSERT_EQ(l1.size(), 30u);
    ASSERT_EQ(l2.size(), 30u);
    ASSERT_EQ(l4.size(), 30u);
    double worst10 = 0, worst30 = 0;
    for (size_t i = 0; i < 30; ++i)
        for (double other : {l2[i], l4[i]}) {
            double rel = std::fabs(other - l1[i]) / std::fabs(l1[i]);
            worst30 = std::max(worst30, rel);
            if (i < 10) worst10 = std::max(worst10, rel);
        }
    EXPECT_LE(worst10, 1e-5) << "first 10 steps";
    // Validation evaluates the same 3 micro-batches on every layout (on 2 and 4 ranks some ranks run fillers).
    auto v1 = losses("ep1", "val_loss"), v2 = losses("ep2", "val_loss"), v4 = losses("ep4", "val_loss");
    ASSERT_EQ(v1.size(), 6u);
    ASSERT_EQ(v2.size(), 6u);
    ASSERT_EQ(v4.size(), 6u);
    double worst_val = 0;
    for (size_t i = 0; i < 2; ++i) {  // steps 5 and 10
        EXPECT_NEAR(v2[i], v1[i], 1e-5 * v1[i]) << "validation at step " << 5 * (i + 1);
        EXPECT_NEAR(v4[i], v1[i], 1e-5 * v1[i]) << "validation at step " << 5 * (i + 1);
        worst_val = std::max({worst_val, std::fabs(v2[i] - v1[i]) / v1[i], std::fabs(v4[i] - v1[i]) / v1[i]});
    }
    std::printf("largest relative validation-loss difference vs 1 rank (steps 5, 10): %.2e\n", worst_val);
    // Over 30 steps the different summation order (sequential accumulation on one rank, all-to-all-grouped
    // expert GEMMs and MPI all-reduce on several) eventually flips a near-tied top-k choice of one token, after
    // which AdamW amplifies the difference: measured 4e-4 to 8e-4 here, above the 1e-4 goal. The bound keeps that
    // regime from growing unnoticed.
    EXPECT_LE(worst30, 2e-3) << "all 30 steps";
    EXPECT_LT(l1.back(), l1.front() - 1.0) << "the model should learn";
    std::printf(
        "largest relative loss difference vs 1 rank: %.2e (steps 1-10), %.2e (steps 1-30); wall %.1f s, "
        "%.1f s, %.1f s for 1, 2, 4 ranks\n",
        worst10, worst30, r1.seconds, r2.seconds, r4.seconds);
}

TEST_F(Launch, BadLayoutExitsTwoOnEveryRankWithoutHanging) {
    test::CliResult r = test::run_frugal("launch -n 4 " + demo("bad", "--set parallel.ep=3"));
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("parallel.ep (3) must divide the world size (4)"), std::string::npos) << r.output;
    EXPECT_LT(r.seconds, 30.0);
    test::CliResult r2 = test::run_frugal("launch -n 2 " + demo("bad2", "--set parallel.ep=2 --set moe.n_experts=5"));
    EXPECT_EQ(r2.code, 2) << r2.output;
    EXPECT_NE(r2.output.find("moe.n_experts (5)"), std::string::npos) << r2.output;
}

TEST_F(Launch, ARankThatThrowsStopsTheWholeJob) {
    test::CliResult r =
        test::run_frugal("launch -n 4 " + demo("throw",
                                               "--set train.steps=50 --set fault.kill_rank=2 --set fault.at_step=3 "
                                               "--set fault.kind=throw"));
    EXPECT_NE(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("[rank 2] error: injected fault"), std::string::npos) << r.output;
    EXPECT_LT(r.seconds, 30.0);
}

TEST_F(Launch, AHungRankTimesOutWithStepLayerAndCollective) {
    test::CliResult r =
        test::run_frugal("launch -n 2 " + demo("hang",
                                               "--set parallel.ep=2 --set train.micro_batch=8 --set train.steps=50 "
                                               "--set fault.kill_rank=1 --set fault.at_step=2 --set fault.kind=hang "
                                               "--set parallel.timeout_s=3"));
    EXPECT_EQ(r.code, 3) << r.output;
    EXPECT_NE(r.output.find("did not finish within 3 s at step 2"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("all_reduce"), std::string::npos) << r.output;
    EXPECT_LT(r.seconds, 30.0);
}

TEST_F(Launch, RestartsAfterAFailureOncePerRunDirectory) {
    // The fault fires once per run directory: the relaunched job runs to the end.
    test::CliResult r = test::run_frugal("launch -n 2 --max-restarts 2 " +
                                         demo("restart",
                                              "--set parallel.ep=2 --set train.micro_batch=8 --set train.steps=4 "
                                              "--set fault.kill_rank=1 --set fault.at_step=2"));
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("restart 1 of 2"), std::string::npos) << r.output;
    // Without checkpoints the relaunch starts over and rewrites the metrics: steps 1 and 4 (log_every 10).
    auto l = losses("restart");
    EXPECT_EQ(l.size(), 2u);
    std::ifstream m(*dir_ / "restart" / "metrics.jsonl");
    std::string line, last;
    while (std::getline(m, line)) last = line;
    EXPECT_NE(last.find("\"step\": 4,"), std::string::npos) << last;
}

// A --hostfile job gets the TCP keepalives that end it when a host or the network is lost, except a setting the user
// gave after "--"; a one-machine job gets none.
TEST(LaunchCommand, AMultiHostJobGetsKeepalivesUnlessTheUserSetsThem) {
    launch::LaunchOptions o;
    o.ranks = 4;
    o.config = "c.yaml";
    o.frugal_binary = "/bin/frugal";
    launch::Environment env;
    env.cores = 2;
    auto joined = [](const std::vector<std::string>& cmd) {
        std::string s;
        for (const auto& a : cmd) s += a + " ";
        return s;
    };
    EXPECT_EQ(joined(launch::build_command(o, env)).find("keepalive"), std::string::npos);
    o.hostfile = "hosts";
    std::string cmd = joined(launch::build_command(o, env));
    EXPECT_NE(cmd.find("--hostfile hosts"), std::string::npos) << cmd;
    for (const auto& [key, value] : launch::multi_host_keepalives())
        EXPECT_NE(cmd.find("--mca " + key + " " + value + " "), std::string::npos) << cmd;
    o.mpirun_args = {"--mca", "oob_tcp_keepalive_time", "60"};
    cmd = joined(launch::build_command(o, env));
    EXPECT_EQ(cmd.find("--mca oob_tcp_keepalive_time 5"), std::string::npos) << cmd;
    EXPECT_NE(cmd.find("--mca oob_tcp_keepalive_time 60"), std::string::npos) << cmd;
    EXPECT_NE(cmd.find("--mca oob_tcp_keepalive_probes 3"), std::string::npos) << cmd;
}

// What mpirun prints when it loses a daemon (a partition, a dead host) or a rank, as Open MPI 4.1 words it.
TEST(LaunchCommand, MpirunsFailureMessagesNameTheLostHostOrRank) {
    const std::string lost =
        "ORTE has lost communication with a remote daemon.\n\n  HNP daemon   : [[23184,0],0] on node vm\n"
        "  Remote daemon: [[23184,0],1] on node 10.213.7.2\n\nThis is usually due to ...\n";
    launch::JobFailure f = launch::read_job_failure(lost, 205);
    EXPECT_TRUE(f.lost_host);
    EXPECT_EQ(f.host, "10.213.7.2");
    // A killed daemon: its agent's death reads as a launch failure; the TCP transport names the peer.
    f = launch::read_job_failure(
        "ORTE was unable to reliably start one or more daemons.\n...\n  Local host: vm\n  Local PID:  16719\n"
        "  Peer host:  10.213.7.2\n",
        9);
    EXPECT_TRUE(f.lost_host);
    EXPECT_EQ(f.host, "10.213.7.2");
    f = launch::read_job_failure(
        "mpirun noticed that process rank 3 with PID 0 on node 10.213.7.2 exited on signal 9 (Killed).\n", 137);
    EXPECT_FALSE(f.lost_host);
    EXPECT_EQ(f.rank, 3);
    EXPECT_EQ(f.host, "10.213.7.2");
    EXPECT_EQ(f.signal, 9);
    f = launch::read_job_failure("[rank 1] error: something\n", 1);
    EXPECT_FALSE(f.lost_host);
    EXPECT_EQ(f.rank, -1);
}

TEST_F(Launch, ADryRunPrintsTheMpirunLineASlurmScriptAsksForEveryRankAndNoRankCountExitsTwo) {
    test::CliResult r = test::run_frugal("launch --dry-run " + demo("dry") + " -n 8 -- --mca btl self,vader");
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("mpirun -n 8"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("--oversubscribe"), std::string::npos) << "8 ranks on this machine's cores";
    EXPECT_NE(r.output.find("--mca btl self,vader"), std::string::npos);
    EXPECT_NE(r.output.find(" train "), std::string::npos);
    const std::string script = (*dir_ / "job.sbatch").string();
    test::CliResult s =
        test::run_frugal("launch --slurm-script " + script + " --nodes 2 --gpus-per-node 8 " + demo("slurm"));
    ASSERT_EQ(s.code, 0) << s.output;
    std::ifstream f(script);
    std::stringstream text;
    text << f.rdbuf();
    for (const char* want :
         {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8", " launch -n 16 "})
        EXPECT_NE(text.str().find(want), std::string::npos) << want << " missing in\n" << text.str();
    EXPECT_EQ(test::run_frugal("launch " + demo("x")).code, 2) << "no -n";
}

}  // namespace
}  // namespace frugal
