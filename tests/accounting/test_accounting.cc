// Accounting: parameter counts against the parameters the model really allocates, FLOPs per token against a hand
// calculation, the meter's phases summing to the wall time, the report's arithmetic and JSON round trip, and the
// cost report of real runs (including 2 ranks and bad input).
#include <gtest/gtest.h>

#include <array>
#include <fstream>
#include <thread>

#include "accounting/flops.h"
#include "accounting/hardware.h"
#include "accounting/meter.h"
#include "accounting/report.h"
#include "model/transformer.h"
#include "tests/util.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;

model::ModelConfig tiny() {
    model::ModelConfig c;
    c.vocab_size = 50;
    c.d_model = 16;
    c.n_layers = 3;
    c.dense_layers = 1;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.qk_norm = true;
    c.d_ff = 40;
    c.moe.n_experts = 6;
    c.moe.top_k = 2;
    c.moe.d_expert = 12;
    c.moe.n_shared_experts = 1;
    return c;
}

TEST(Accounting, TotalParametersEqualWhatTheModelAllocates) {
    for (bool tied : {false, true}) {
        model::ModelConfig c = tiny();
        c.tie_embeddings = tied;
        model::Transformer<float> net(c);
        EXPECT_EQ(accounting::count_params(c).total, double(net.params().numel())) << "tied " << tied;
    }
    // Qwen2-MoE and OLMoE pieces: QKV biases, the shared-expert gate, QK-norm over the whole projection.
    model::ModelConfig c = tiny();
    c.attn_bias = true;
    c.moe.shared_expert_gate = true;
    c.qk_norm_scope = "projection";
    model::Transformer<float> net(c);
    EXPECT_EQ(accounting::count_params(c).total, double(net.params().numel())) << "biases, gate, projection norm";
}

TEST(Accounting, ActiveParametersAndFlopsMatchAHandCalculation) {
    const model::ModelConfig c = tiny();
    // By hand: head_dim 4; attention q 16x16, k and v 16x8 each, o 16x16 = 768; norms 2*16 + q/k norms 2*4 = 40;
    // dense FFN 3*16*40 = 1920; routed expert 3*16*12 = 576 (2 active of 6), shared 576, router 16*6 = 96;
    // embedding and head 50*16 = 800 each; final norm 16.
    const double attn = 768, norms = 40, dense = 1920, expert = 576, router = 96, embed = 800;
    const double layer0 = attn + norms + dense;
    const double moe_active = attn + norms + 2 * expert + expert + router;
    const double moe_total = attn + norms + 6 * expert + expert + router;
    auto p = accounting::count_params(c);
    EXPECT_DOUBLE_EQ(p.total, layer0 + 2 * moe_total + 2 * embed + 16);
    EXPECT_DOUBLE_EQ(p.active, layer0 + 2 * moe_active + 2 * embed + 16);
    EXPECT_DOUBLE_EQ(p.active_no_embed, layer0 + 2 * moe_active + 16);
    // FLOPs: 6 x matmul parameters a token touches (attention, FFN, top-2 + shared experts, router, head) plus the
    // causal attention core 6 * S * heads * head_dim per layer.
    const double matmul = (attn + dense) + 2 * (attn + 3 * expert + router) + embed;
    const int64_t seq = 32;
    EXPECT_DOUBLE_EQ(accounting::training_flops_per_token(c, seq), 6 * matmul + 6.0 * 3 * seq * 4 * 4);
}

TEST(Accounting, MeterPhasesSumToTheWallTime) {
    accounting::Meter m;
    {
        accounting::Meter::Scope s(m, accounting::Phase::kCompute);
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
    }
    m.charge(accounting::Phase::kCommunication, 0.01);
    m.move(accounting::Phase::kCompute, accounting::Phase::kCommunication, 0.005);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    auto snap = m.snapshot();
    double sum = 0;
    for (double x : snap) sum += x;
    EXPECT_NEAR(sum, m.wall(), 2e-3);
    EXPECT_GE(snap[size_t(accounting::Phase::kCompute)], 0.024);
    EXPECT_NEAR(snap[size_t(accounting::Phase::kCommunication)], 0.015, 1e-9);
    EXPECT_GT(snap[size_t(accounting::Phase::kIdle)], 0.0);
}

TEST(Accounting, ReportHoursCostAndMfuAreRightAndSurviveAJsonRoundTrip) {
    accounting::CostReport r;
    r.device = "h800";
    r.device_name = "NVIDIA H800";
    r.price_per_hour = 2.0;
    r.ranks = 8;
    r.device_seconds[size_t(accounting::Phase::kCompute)] = 3600 * 6;
    r.device_seconds[size_t(accounting::Phase::kCommunication)] = 3600 * 2;
    r.tokens = 1e9;
    r.train_seconds = 3600;
    r.flops_per_token = 1e9;
    r.peak_tflops_per_device = 989;
    r.projection_tokens = 1e12;
    EXPECT_DOUBLE_EQ(r.device_hours(), 8.0);
    EXPECT_DOUBLE_EQ(r.cost_usd(), 16.0);
    EXPECT_NEAR(r.mfu(), (1e9 / 3600.0) * 1e9 / (989e12 * 8), 1e-15);
    EXPECT_NEAR(r.projection_device_hours(), 1e12 / (1e9 / 3600.0) * 8 / 3600.0, 1e-6);
    fs::path dir = test::temp_dir("cost");
    std::ofstream(dir / "cost.json") << accounting::to_json(r);
    accounting::CostReport back = accounting::read_cost_json((dir / "cost.json").string());
    EXPECT_NEAR(back.device_hours(), 8.0, 1e-9);
    EXPECT_NEAR(back.cost_usd(), 16.0, 1e-9);
    EXPECT_NEAR(back.mfu(), r.mfu(), 1e-12);
    EXPECT_NE(accounting::format_report(back).find("communication"), std::string::npos);
    fs::remove_all(dir);
}

TEST(Accounting, CatalogueHasEveryDeviceWithItsPrice) {
    auto cat = accounting::load_catalogue();
    for (const char* k : {"h100-sxm", "h800", "h200", "a100-80gb", "b200", "mi300x", "ascend-910b", "cpu"})
        EXPECT_TRUE(cat.count(k)) << k;
    EXPECT_EQ(cat.at("h800").price_per_hour, 2.0);
    EXPECT_EQ(cat.at("h100-sxm").bf16_tflops, 989);
    EXPECT_EQ(cat.at("h100-sxm").fp8_tflops, 1979);
    EXPECT_EQ(cat.at("a100-80gb").peak_tflops(true), 312) << "no FP8 units: MFU against the BF16 peak";
    EXPECT_THROW(accounting::find_device(cat, "h900", "accounting.device"), ConfigError);
}

TEST(Accounting, RunsWriteACostReportThatSumsToRanksTimesWallTime) {
    ASSERT_FALSE(test::test_corpus().empty());
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    fs::path dir = test::temp_dir("costrun");
    const std::string common = std::string(FRUGAL_SOURCE_DIR) +
                               "/configs/demo.yaml --set data.dir=" + test::test_corpus().string() +
                               " --set run.out_dir=" + (dir / "run").string() +
                               " --set train.steps=4 --set run.log_every=2 --set train.threads=1 "
                               "--set checkpoint.every=0 --set accounting.device=h800";
    test::CliResult r = test::run_frugal("launch -n 2 " + common + " --set parallel.ep=2 --set train.micro_batch=8");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("cost $"), std::string::npos) << "progress lines show the cost so far";
    EXPECT_NE(r.output.find("cost report: 2 x NVIDIA H800"), std::string::npos) << r.output;
    accounting::CostReport rep = accounting::read_cost_json((dir / "run" / "cost.json").string());
    EXPECT_EQ(rep.ranks, 2);
    EXPECT_EQ(rep.price_per_hour, 2.0);
    EXPECT_GT(rep.device_seconds[size_t(accounting::Phase::kCompute)], 0);
    EXPECT_GT(rep.device_seconds[size_t(accounting::Phase::kCommunication)], 0);
    // The phases cover both ranks' whole time: about 2 x the run's wall time (startup included).
    double wall = 0;
    {
        std::ifstream m(dir / "run" / "metrics.jsonl");
        std::string line, last;
        while (std::getline(m, line)) last = line;
        wall = std::stod(last.substr(last.find("\"elapsed_s\": ") + 13));
    }
    EXPECT_GE(rep.device_hours() * 3600, 2 * wall * 0.99);
    EXPECT_LE(rep.device_hours() * 3600, 2 * wall + 2 * 10.0);
    test::CliResult again = test::run_frugal("report " + (dir / "run").string());
    EXPECT_EQ(again.code, 0) << again.output;
    EXPECT_NE(again.output.find("total"), std::string::npos);
    // Bad input: an unknown device is a configuration error naming the key and the nearest device.
    test::CliResult bad = test::run_frugal("train " + common + " --set parallel.ep=1 --set accounting.device=h900");
    EXPECT_EQ(bad.code, 2) << bad.output;
    EXPECT_NE(bad.output.find("accounting.device 'h900'"), std::string::npos) << bad.output;
    EXPECT_NE(bad.output.find("did you mean 'h"), std::string::npos) << bad.output;
    EXPECT_EQ(bad.output.find("parameters on this rank"), std::string::npos) << "rejected before the model is built";
    fs::remove_all(dir);
}

}  // namespace
}  // namespace frugal
