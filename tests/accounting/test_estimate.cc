// `frugal estimate`: the presets reproduce the published parameter counts, Hugging Face configs of each family
// load to the same models, DeepSeek-V3's published budget is reproduced exactly, and bad input exits 2.
#include <gtest/gtest.h>

#include <array>
#include <cmath>

#include "accounting/estimate.h"
#include "accounting/flops.h"
#include "accounting/model_source.h"
#include "core/error.h"
#include "tests/util.h"

namespace frugal {
namespace {

const std::string kPresets = std::string(FRUGAL_SOURCE_DIR) + "/configs/models";
const std::string kHf = std::string(FRUGAL_SOURCE_DIR) + "/tests/data/hf/";

struct Published {
    const char* preset;
    double total, active;
};

TEST(Estimate, PresetsReproducePublishedCounts) {
    // Total within 1%; activated within 3% under one of the two conventions (with or without embedding + head).
    for (Published p : {Published{"deepseek-v3", 671e9, 37e9}, Published{"qwen3-235b-a22b", 235e9, 22e9},
                        Published{"qwen3-30b-a3b", 30.5e9, 3.3e9}, Published{"mixtral-8x7b", 46.7e9, 12.9e9}}) {
        auto m = accounting::load_model(p.preset, kPresets, nullptr);
        auto c = accounting::count_params(m);
        EXPECT_NEAR(c.total / p.total, 1.0, 0.01) << p.preset << " total " << c.total;
        const double best = std::min(std::fabs(c.active / p.active - 1), std::fabs(c.active_no_embed / p.active - 1));
        EXPECT_LE(best, 0.03) << p.preset << " active " << c.active << " / " << c.active_no_embed;
    }
    // DeepSeek-V3's multi-token-prediction module is counted separately: about 11.5B.
    auto ds = accounting::load_model("deepseek-v3", kPresets, nullptr);
    EXPECT_NEAR(accounting::mtp_params(ds) / 11.5e9, 1.0, 0.03);
}

TEST(Estimate, HuggingFaceConfigsLoadToTheSameCounts) {
    for (auto [file, preset] : std::vector<std::pair<std::string, std::string>>{{"qwen3_moe.json", "qwen3-30b-a3b"},
                                                                                {"mixtral.json", "mixtral-8x7b"},
                                                                                {"deepseek_v3.json", "deepseek-v3"}}) {
        auto hf = accounting::count_params(accounting::model_from_hf_config(kHf + file));
        auto yaml = accounting::count_params(accounting::load_model(preset, kPresets, nullptr));
        EXPECT_DOUBLE_EQ(hf.total, yaml.total) << file;
        EXPECT_DOUBLE_EQ(hf.active, yaml.active) << file;
    }
    // DeepSeek-V2-Lite (MLA without query compression, deepseek_v2): 15.7B total (published). Its published 2.4B
    // activated sits between our two conventions (2.24B without embedding and head, 2.66B with both): it counts the
    // embedding but not the head.
    auto lite = accounting::count_params(accounting::model_from_hf_config(kHf + "deepseek_v2_lite.json"));
    EXPECT_NEAR(lite.total / 15.7e9, 1.0, 0.01) << lite.total;
    EXPECT_NEAR((lite.active_no_embed + 102400.0 * 2048) / 2.4e9, 1.0, 0.03) << lite.active_no_embed;
}

TEST(Estimate, EveryHuggingFaceFamilyLoadsWithItsPublishedSize) {
    // (file, published total, published activated). Published: OLMoE-1B-7B 6.9B / 1.3B; Qwen1.5-MoE-A2.7B
    // (qwen2_moe) 14.3B / 2.7B; GLM-4.5-Air (glm4_moe) 106B / 12B. Attention biases (qwen2_moe, glm4_moe) and
    // the shared-expert gate (qwen2_moe) are counted.
    struct Case {
        const char* file;
        double total, active;
    };
    for (Case c : {Case{"olmoe.json", 6.9e9, 1.3e9}, Case{"qwen2_moe.json", 14.3e9, 2.7e9},
                   Case{"glm4_moe.json", 106e9, 12e9}}) {
        auto n = accounting::count_params(accounting::model_from_hf_config(kHf + c.file));
        EXPECT_NEAR(n.total / c.total, 1.0, 0.01) << c.file << " total " << n.total;
        EXPECT_LE(std::min(std::fabs(n.active / c.active - 1), std::fabs(n.active_no_embed / c.active - 1)), 0.03)
            << c.file << " active " << n.active << " / " << n.active_no_embed;
    }
    // ERNIE-4.5-21B-A3B publishes rounded figures ("21B", "3B"); check the count by hand instead: 27 MoE layers
    // (64 experts of 3*2560*1536, 2 shared, router) and 1 dense layer (3*2560*12288), GQA 20/4 heads of 128, tied
    // embedding 103424*2560, norms.
    auto ernie = accounting::count_params(accounting::model_from_hf_config(kHf + "ernie4_5_moe.json"));
    const double attn = 2560.0 * 128 * (20 + 8) + 20.0 * 128 * 2560, expert = 3.0 * 2560 * 1536, norms = 2 * 2560.0;
    const double want =
        27 * (attn + norms + 66 * expert + 2560.0 * 64) + (attn + norms + 3.0 * 2560 * 12288) + 103424.0 * 2560 + 2560;
    EXPECT_DOUBLE_EQ(ernie.total, want);
    EXPECT_NEAR(ernie.active_no_embed / 3e9, 1.0, 0.03) << ernie.active_no_embed;
}

TEST(Estimate, DeepSeekV3BudgetIsReproducedExactly) {
    accounting::EstimateInput in;
    in.model = accounting::load_model("deepseek-v3", kPresets, nullptr);
    in.tokens = accounting::parse_count("14.8T", "--tokens");
    in.device = accounting::find_device(accounting::load_catalogue(), "h800", "--gpu");
    in.gpus = 2048;
    in.gpu_hours_per_trillion = accounting::parse_count("180K", "x");
    auto e = accounting::estimate(in);
    EXPECT_NEAR(e.gpu_hours, 2.664e6, 1e-6);
    EXPECT_NEAR(e.cost_usd, 5.328e6, 1e-3);
    EXPECT_NEAR(e.wall_days, 2.664e6 / 2048 / 24, 1e-9);
    // The MFU this implies on H800: FLOPs / (GPU-seconds x peak).
    EXPECT_NEAR(e.mfu, e.flops_per_token * 14.8e12 / (2.664e6 * 3600 * 989e12), 1e-12);
    EXPECT_GT(e.mfu, 0.2);
    EXPECT_LT(e.mfu, 0.6);
    // The other throughput sources give the same arithmetic.
    in.gpu_hours_per_trillion = -1;
    in.tokens_per_gpu_second = e.tokens_per_gpu_second;
    EXPECT_NEAR(accounting::estimate(in).gpu_hours, 2.664e6, 1e-3);
    in.tokens_per_gpu_second = -1;
    in.mfu = e.mfu;
    EXPECT_NEAR(accounting::estimate(in).gpu_hours, 2.664e6, 1e-3);
}

// ZeRO-1 on DeepSeek-V3's layout (2048 GPUs, ep 64, pp 16): the moments of the replicated parameters are split
// over the data-parallel group and the experts' over the ranks that hold the same experts (dp / ep), as
// parallel.zero does; weights and gradients stay whole.
TEST(Estimate, ZeroOneShardsTheReplicatedStateOverDpAndTheExpertsOverDpOverEp) {
    accounting::EstimateInput in;
    in.model = accounting::load_model("deepseek-v3", kPresets, nullptr);
    in.tokens = 1e12;
    in.device = accounting::find_device(accounting::load_catalogue(), "h800", "--gpu");
    in.gpus = 2048;
    in.ep = 64;
    in.pp = 16;
    in.mfu = 0.4;
    in.zero = 0;
    const auto whole = accounting::estimate(in);
    in.zero = 1;
    const auto sharded = accounting::estimate(in);
    const double experts = accounting::routed_expert_params(in.model);
    const double dense = whole.params.total - experts, dp = 2048.0 / 16, edp = dp / 64;
    EXPECT_NEAR(whole.mem_optimizer, 12.0 * (dense / 16 + experts / (64 * 16)), 1.0);
    EXPECT_NEAR(sharded.mem_optimizer, 12.0 * (dense / 16 / dp + experts / (64 * 16) / edp), 1.0);
    EXPECT_EQ(sharded.mem_weights, whole.mem_weights);
    EXPECT_EQ(sharded.mem_grads, whole.mem_grads);
    EXPECT_LT(sharded.mem_optimizer, whole.mem_optimizer / edp * 1.0001);
}

TEST(Estimate, CountsAcceptKMBAndTSuffixesAndRefuseNegativeOrUnknownOnes) {
    EXPECT_EQ(accounting::parse_count("14.8T", "t"), 14.8e12);
    EXPECT_EQ(accounting::parse_count("180K", "t"), 180e3);
    EXPECT_EQ(accounting::parse_count("2.5M", "t"), 2.5e6);
    EXPECT_EQ(accounting::parse_count("7B", "t"), 7e9);
    EXPECT_EQ(accounting::parse_count("1e9", "t"), 1e9);
    EXPECT_THROW(accounting::parse_count("-5T", "t"), ConfigError);
    EXPECT_THROW(accounting::parse_count("lots", "t"), ConfigError);
    EXPECT_THROW(accounting::parse_count("5X", "t"), ConfigError);
}

TEST(Estimate, JsonHasEveryFigureAndBadArgumentsOrHfConfigsExitTwoNamingTheProblem) {
    const std::string ds = kPresets + "/deepseek-v3.yaml";
    test::CliResult ok = test::run_frugal(
        "estimate " + ds + " --tokens 14.8T --gpu h800 --gpus 2048 --gpu-hours-per-trillion-tokens 180K --json");
    ASSERT_EQ(ok.code, 0) << ok.output;
    for (const char* key :
         {"\"total_params\"", "\"active_params\"", "\"active_params_without_embeddings\"", "\"flops_per_token\"",
          "\"gpu_hours\": 2664000", "\"wall_days\"", "\"cost_usd\": 5328000", "\"mfu\""})
        EXPECT_NE(ok.output.find(key), std::string::npos) << key << " in " << ok.output;
    test::CliResult text =
        test::run_frugal("estimate " + ds + " --tokens 14.8T --gpu h800 --gpus 2048 --mfu 0.4 --ep 64 --pp 16");
    EXPECT_EQ(text.code, 0) << text.output;
    EXPECT_NE(text.output.find("memory per GPU"), std::string::npos) << text.output;
    struct Bad {
        std::string args, needle;
    };
    for (const Bad& b : {Bad{"--tokens 1T --gpu h900 --gpus 8 --mfu 0.4", "--gpu 'h900'"},
                         Bad{"--tokens -1T --gpu h800 --gpus 8 --mfu 0.4", "must be positive"},
                         Bad{"--tokens many --gpu h800 --gpus 8 --mfu 0.4", "'many' is not a number"},
                         Bad{"--tokens 1T --gpu h800 --gpus 8", "give exactly one of"},
                         Bad{"--gpu h800 --gpus 8 --mfu 0.4", "--tokens N is required"}}) {
        test::CliResult r = test::run_frugal("estimate " + ds + " " + b.args);
        EXPECT_EQ(r.code, 2) << b.args << "\n" << r.output;
        EXPECT_NE(r.output.find(b.needle), std::string::npos) << b.args << "\n" << r.output;
    }
    // Hugging Face configs: an unknown model_type and a missing field are named.
    const std::string dir = ::testing::TempDir();
    std::FILE* f = std::fopen((dir + "/unknown.json").c_str(), "w");
    std::fputs(
        "{\"model_type\": \"llama\", \"vocab_size\": 10, \"hidden_size\": 8, \"num_hidden_layers\": 1, "
        "\"num_attention_heads\": 2}",
        f);
    std::fclose(f);
    test::CliResult u = test::run_frugal("estimate " + dir + "/unknown.json --tokens 1T --gpu h800 --gpus 8 --mfu 0.4");
    EXPECT_EQ(u.code, 2);
    EXPECT_NE(u.output.find("model_type 'llama' is not supported"), std::string::npos) << u.output;
    f = std::fopen((dir + "/missing.json").c_str(), "w");
    std::fputs(
        "{\"model_type\": \"mixtral\", \"vocab_size\": 10, \"hidden_size\": 8, \"num_hidden_layers\": 1, "
        "\"num_attention_heads\": 2, \"num_experts_per_tok\": 2}",
        f);
    std::fclose(f);
    test::CliResult mi =
        test::run_frugal("estimate " + dir + "/missing.json --tokens 1T --gpu h800 --gpus 8 --mfu 0.4");
    EXPECT_EQ(mi.code, 2);
    EXPECT_NE(mi.output.find("\"num_local_experts\""), std::string::npos) << mi.output;
}

}  // namespace
}  // namespace frugal
