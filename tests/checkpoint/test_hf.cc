// Hugging Face import and export: a model exported in BF16, imported and exported again is bit for bit the same;
// the imported weights are what the safetensors hold; every rank reads only its experts; bad input exits 2 with the
// problem named; a short expert-parallel fine-tuning run from an imported model lowers the loss.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include "checkpoint/hf.h"
#include "checkpoint/safetensors.h"
#include "core/bf16.h"
#include "model/hf_config.h"
#include "model/transformer.h"
#include "tests/util.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;

model::ModelConfig tiny_qwen3() {
    model::ModelConfig m;
    m.vocab_size = 257;
    m.d_model = 32;
    m.n_layers = 2;
    m.n_heads = 4;
    m.n_kv_heads = 2;
    m.qk_norm = true;
    m.max_seq_len = 64;
    m.moe.n_experts = 4;
    m.moe.top_k = 2;
    m.moe.d_expert = 24;
    m.init_std = 0.1;
    return m;
}

// name -> (dtype, bytes) of every tensor of an exported directory.
std::map<std::string, std::pair<std::string, std::vector<uint8_t>>> tensors_of(const fs::path& dir) {
    std::map<std::string, std::pair<std::string, std::vector<uint8_t>>> out;
    for (const auto& e : fs::directory_iterator(dir)) {
        if (e.path().extension() != ".safetensors") continue;
        checkpoint::SafetensorsFile f(e.path().string());
        for (const auto& [name, info] : f.tensors()) {
            const uint8_t* b = f.bytes(name);
            out[name] = {info.dtype, std::vector<uint8_t>(b, b + (info.end - info.begin))};
        }
    }
    return out;
}

class Hf : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = test::temp_dir("hf");
        model::Transformer<float> net(tiny_qwen3());
        net.init(5);
        // Small shards force the index and several files.
        checkpoint::export_hf((dir_ / "src").string(), net.params(), tiny_qwen3(), "qwen3_moe", "bf16", "", 64 << 10);
        ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
        ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    }
    void TearDown() override { fs::remove_all(dir_); }
    fs::path dir_;
};

TEST_F(Hf, ImportThenExportIsBitForBit) {
    auto src = tensors_of(dir_ / "src");
    ASSERT_GT(src.size(), 20u);
    int shards = 0;
    for (const auto& e : fs::directory_iterator(dir_ / "src")) shards += e.path().extension() == ".safetensors";
    EXPECT_GT(shards, 1);
    auto r = test::run_frugal("import-hf " + (dir_ / "src").string() + " --out " + (dir_ / "m.h5").string());
    ASSERT_EQ(r.code, 0) << r.output;
    r = test::run_frugal("export-hf " + (dir_ / "m.h5").string() + " --out " + (dir_ / "back").string() +
                         " --dtype bf16 --model-type qwen3_moe");
    ASSERT_EQ(r.code, 0) << r.output;
    auto back = tensors_of(dir_ / "back");
    ASSERT_EQ(back.size(), src.size());
    for (const auto& [name, t] : src) {
        ASSERT_TRUE(back.count(name)) << name;
        EXPECT_EQ(back[name].first, "BF16");
        EXPECT_TRUE(back[name].second == t.second) << name << " differs after import + export";
    }
    EXPECT_TRUE(fs::exists(dir_ / "back" / "model.safetensors.index.json"));
    // Exporting again over it replaces it whole, leaving no staging directory; a refused export leaves it as it was.
    r = test::run_frugal("export-hf " + (dir_ / "m.h5").string() + " --out " + (dir_ / "back").string() +
                         " --dtype bf16");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_FALSE(fs::exists(dir_ / ".back.partial"));
    EXPECT_FALSE(fs::exists(dir_ / ".back.old"));
    r = test::run_frugal("export-hf " + (dir_ / "m.h5").string() + " --out " + (dir_ / "back").string() +
                         " --dtype fp8");
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_EQ(tensors_of(dir_ / "back").size(), src.size());
    // The checkpoint remembers its source: its config.json is copied without --config.
    std::ifstream a(dir_ / "src" / "config.json"), b(dir_ / "back" / "config.json");
    std::stringstream sa, sb;
    sa << a.rdbuf();
    sb << b.rdbuf();
    EXPECT_EQ(sa.str(), sb.str());
}

// The conversions under frugal launch: each rank reads (import) or writes (export) only its experts.
TEST_F(Hf, ImportAndExportOnTwoRanksAreBitForBit) {
    auto src = tensors_of(dir_ / "src");
    auto r =
        test::run_frugal("launch -n 2 import-hf " + (dir_ / "src").string() + " --out " + (dir_ / "m2.h5").string());
    ASSERT_EQ(r.code, 0) << r.output;
    r = test::run_frugal("export-hf " + (dir_ / "m2.h5").string() + " --out " + (dir_ / "one").string());
    ASSERT_EQ(r.code, 0) << r.output;
    r = test::run_frugal("launch -n 2 export-hf " + (dir_ / "m2.h5").string() + " --out " + (dir_ / "two").string());
    ASSERT_EQ(r.code, 0) << r.output;
    for (const char* out : {"one", "two"}) {
        auto back = tensors_of(dir_ / out);
        ASSERT_EQ(back.size(), src.size()) << out;
        for (const auto& [name, t] : src) EXPECT_TRUE(back[name] == t) << out << ": " << name;
    }
    // The checkpoint written collectively by two ranks passes the full integrity check.
    EXPECT_EQ(test::run_frugal("ckpt verify " + (dir_ / "m2.h5").string()).code, 0);
    r = test::run_frugal("launch -n 3 import-hf " + (dir_ / "src").string() + " --out " + (dir_ / "m3.h5").string());
    EXPECT_EQ(r.code, 2) << "4 experts do not split over 3 ranks: " << r.output;
}

TEST_F(Hf, F16ImportThenExportIsBitForBit) {
    model::Transformer<float> net(tiny_qwen3());
    net.init(6);
    checkpoint::export_hf((dir_ / "f16").string(), net.params(), tiny_qwen3(), "qwen3_moe", "f16", "");
    auto src = tensors_of(dir_ / "f16");
    ASSERT_EQ(src.begin()->second.first, "F16");
    ASSERT_EQ(test::run_frugal("import-hf " + (dir_ / "f16").string() + " --out " + (dir_ / "h.h5").string()).code, 0);
    auto r = test::run_frugal("export-hf " + (dir_ / "h.h5").string() + " --out " + (dir_ / "f16back").string() +
                              " --dtype f16");
    ASSERT_EQ(r.code, 0) << r.output;
    auto back = tensors_of(dir_ / "f16back");
    ASSERT_EQ(back.size(), src.size());
    for (const auto& [name, t] : src) EXPECT_TRUE(back[name] == t) << name << " differs after import + export";
}

TEST_F(Hf, ImportedWeightsAreTheSafetensorsValuesAndShardsReadOnlyTheirExperts) {
    auto src = tensors_of(dir_ / "src");
    auto decode = [&](const std::string& name, int64_t i) {
        uint16_t b;
        std::memcpy(&b, src[name].second.data() + 2 * i, 2);
        return bf16_bits_to_float(b);
    };
    model::ModelConfig cfg = tiny_qwen3();
    // Experts 2 and 3 of 4 (the second rank of ep = 2).
    model::Transformer<float> shard(cfg, {2, 2});
    checkpoint::load_hf_weights((dir_ / "src").string(), shard.params());
    model::Param* w13 = shard.params().find("layers.1.moe.experts.w13");
    const int64_t f = 24, d = 32;
    // Expert 3's up projection (rows F..2F of the w13 block of local expert 1).
    const std::string up = "model.layers.1.mlp.experts.3.up_proj.weight";
    for (int64_t i = 0; i < f * d; i += 37)
        ASSERT_EQ(w13->value.data<float>()[1 * 2 * f * d + f * d + i], decode(up, i)) << i;
    model::Param* wq = shard.params().find("layers.0.attn.wq.weight");
    for (int64_t i = 0; i < wq->value.numel(); i += 11)
        ASSERT_EQ(wq->value.data<float>()[i], decode("model.layers.0.self_attn.q_proj.weight", i)) << i;
    // A shard that holds experts 0 and 1 never opens the tensors of 2 and 3: point them at a file that does not
    // exist, and the load still succeeds.
    std::ifstream in(dir_ / "src" / "model.safetensors.index.json");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string index = std::regex_replace(
        ss.str(), std::regex("(\"[^\"]*mlp\\.experts\\.[23]\\.[^\"]*\": )\"[^\"]*\""), "$1\"absent.safetensors\"");
    std::ofstream(dir_ / "src" / "model.safetensors.index.json") << index;
    model::Transformer<float> first(cfg, {0, 2});
    EXPECT_NO_THROW(checkpoint::load_hf_weights((dir_ / "src").string(), first.params()));
    EXPECT_THROW(checkpoint::load_hf_weights((dir_ / "src").string(), shard.params()), ConfigError);
}

TEST_F(Hf, BadInputIsNamedWithExitCodeTwo) {
    const std::string src = (dir_ / "src").string(), out = (dir_ / "x.h5").string();
    // A missing shard.
    std::vector<std::string> shards;
    for (const auto& e : fs::directory_iterator(dir_ / "src"))
        if (e.path().extension() == ".safetensors") shards.push_back(e.path().filename().string());
    std::sort(shards.begin(), shards.end());
    ASSERT_GE(shards.size(), 2u);
    fs::copy(dir_ / "src", dir_ / "missing", fs::copy_options::recursive);
    fs::remove(dir_ / "missing" / shards[1]);
    auto r = test::run_frugal("import-hf " + (dir_ / "missing").string() + " --out " + out);
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find(shards[1]), std::string::npos) << r.output;
    // A wrong shape: the config says the model is wider than the tensors.
    fs::copy(dir_ / "src", dir_ / "shape", fs::copy_options::recursive);
    {
        std::ifstream in(dir_ / "shape" / "config.json");
        std::stringstream ss;
        ss << in.rdbuf();
        std::ofstream(dir_ / "shape" / "config.json") << std::regex_replace(
            ss.str(), std::regex("\"moe_intermediate_size\": 24"), "\"moe_intermediate_size\": 32");
    }
    r = test::run_frugal("import-hf " + (dir_ / "shape").string() + " --out " + out);
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("has shape"), std::string::npos) << r.output;
    // A config that disagrees with the tensors in another way: relabelled olmoe, whose QK-norms span the whole
    // projection ([32]) where the file has per-head ones ([8]).
    fs::copy(dir_ / "src", dir_ / "olmoe", fs::copy_options::recursive);
    {
        std::ifstream in(dir_ / "olmoe" / "config.json");
        std::stringstream ss;
        ss << in.rdbuf();
        std::string t = std::regex_replace(ss.str(), std::regex("\"qwen3_moe\""), "\"olmoe\"");
        t = std::regex_replace(t, std::regex("\"intermediate_size\": 64"), "\"intermediate_size\": 24");
        std::ofstream(dir_ / "olmoe" / "config.json") << t;
    }
    r = test::run_frugal("import-hf " + (dir_ / "olmoe").string() + " --out " + out);
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("q_norm.weight' has shape [8], the model (config.json) needs [32]"), std::string::npos)
        << r.output;
    // A tensor of the wrong dtype: one tensor's bytes relabelled as I16.
    fs::copy(dir_ / "src", dir_ / "dtype", fs::copy_options::recursive);
    {
        checkpoint::SafetensorsFile f((dir_ / "src" / shards[0]).string());
        std::vector<checkpoint::StTensorOut> ts;
        for (const auto& [name, info] : f.tensors()) {
            const uint8_t* b = f.bytes(name);
            ts.push_back({name, ts.empty() ? "I16" : info.dtype, info.shape,
                          std::vector<uint8_t>(b, b + (info.end - info.begin))});
        }
        checkpoint::write_safetensors((dir_ / "dtype" / shards[0]).string(), ts, {});
        r = test::run_frugal("import-hf " + (dir_ / "dtype").string() + " --out " + out);
        EXPECT_EQ(r.code, 2) << r.output;
        EXPECT_NE(r.output.find("'" + ts.front().name + "' is I16; F32, BF16 and F16 are supported"), std::string::npos)
            << r.output;
    }
    // A model_type whose config Frugal reads (for estimates) but whose weights it cannot import.
    fs::copy(dir_ / "src", dir_ / "minimax", fs::copy_options::recursive);
    {
        std::ifstream in(dir_ / "minimax" / "config.json");
        std::stringstream ss;
        ss << in.rdbuf();
        std::string t = std::regex_replace(ss.str(), std::regex("\"qwen3_moe\""), "\"minimax_m2\"");
        std::ofstream(dir_ / "minimax" / "config.json") << t;
    }
    r = test::run_frugal("import-hf " + (dir_ / "minimax").string() + " --out " + out);
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("model_type 'minimax_m2' cannot be imported"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("importable: qwen3_moe, qwen2_moe, mixtral, olmoe, deepseek_v3"), std::string::npos)
        << r.output;
    // A truncated safetensors header.
    fs::copy(dir_ / "src", dir_ / "trunc", fs::copy_options::recursive);
    fs::resize_file(dir_ / "trunc" / shards[0], 20);
    r = test::run_frugal("import-hf " + (dir_ / "trunc").string() + " --out " + out);
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("truncated"), std::string::npos) << r.output;
}

// Fine-tunes the Hugging Face model in src for `steps` steps on 2 ranks with ep 2, exporting it to exported;
// returns the loss of every step.
std::vector<double> fine_tune(const fs::path& src, const fs::path& run, const fs::path& exported, int steps,
                              int ranks = 2) {
    EXPECT_FALSE(test::test_corpus().empty());
    auto r = test::run_frugal(
        "launch -n " + std::to_string(ranks) + " " + std::string(FRUGAL_SOURCE_DIR) +
        "/configs/demo.yaml --set model.init_from=hf:" + src.string() +
        " --set data.dir=" + test::test_corpus().string() + " --set run.out_dir=" + run.string() +
        " --set parallel.ep=2 --set train.micro_batch=" + std::to_string(16 / ranks) +
        " --set train.seq_len=64 --set model.max_seq_len=64 " + "--set train.steps=" + std::to_string(steps) +
        " --set run.log_every=1 --set train.eval_every=0 " + "--set checkpoint.every=" + std::to_string(steps) +
        " --set train.threads=1 --set train.freeze=[router] --set checkpoint.export_hf=" + exported.string());
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("weights from"), std::string::npos) << r.output;
    std::ifstream m(run / "metrics.jsonl");
    std::vector<double> losses;
    std::string line;
    std::regex re("\"loss\": ([-0-9.e+]+)");
    std::smatch mm;
    while (std::getline(m, line))
        if (std::regex_search(line, mm, re)) losses.push_back(std::stod(mm[1]));
    return losses;
}

TEST_F(Hf, FineTuningAnImportedModelOnTwoRanksLowersTheLoss) {
    std::vector<double> losses = fine_tune(dir_ / "src", dir_ / "ft", dir_ / "exported", 25);
    ASSERT_EQ(losses.size(), 25u);
    EXPECT_LT(losses.back(), losses.front() - 0.5) << losses.front() << " -> " << losses.back();
    std::printf("qwen3_moe import, 2 ranks ep 2, 25 steps: loss %.3f -> %.3f\n", losses.front(), losses.back());
    // Exported at the end in Hugging Face format: the source's config.json, every tensor, the frozen router as it
    // was and trained weights changed.
    auto src = tensors_of(dir_ / "src"), out = tensors_of(dir_ / "exported");
    ASSERT_EQ(out.size(), src.size());
    std::ifstream a(dir_ / "src" / "config.json"), b(dir_ / "exported" / "config.json");
    std::stringstream sa, sb;
    sa << a.rdbuf();
    sb << b.rdbuf();
    EXPECT_EQ(sa.str(), sb.str());
    EXPECT_TRUE(out["model.layers.1.mlp.gate.weight"].second == src["model.layers.1.mlp.gate.weight"].second);
    EXPECT_FALSE(out["model.layers.1.self_attn.q_proj.weight"].second ==
                 src["model.layers.1.self_attn.q_proj.weight"].second);
    // Each rank wrote its own experts (ep rank 0 also the rest): the same tensors, byte for byte, as a
    // single-process export of the final checkpoint, in one file per rank here.
    auto r = test::run_frugal("export-hf " + (dir_ / "ft" / "checkpoints" / "step_00000025.h5").string() + " --out " +
                              (dir_ / "single").string());
    ASSERT_EQ(r.code, 0) << r.output;
    auto single = tensors_of(dir_ / "single");
    ASSERT_EQ(single.size(), out.size());
    for (const auto& [name, t] : single) EXPECT_TRUE(out[name] == t) << name;
    int files = 0;
    for (const auto& e : fs::directory_iterator(dir_ / "exported")) files += e.path().extension() == ".safetensors";
    EXPECT_EQ(files, 3) << "replicated tensors, then the experts of ep rank 0 and of ep rank 1";
    EXPECT_FALSE(fs::exists(dir_ / ".exported.partial"));
}

}  // namespace
}  // namespace frugal

namespace frugal {
namespace {

// Qwen2-MoE (QKV biases, gated shared experts) and OLMoE (QK-norm over the whole projection) layouts: the same
// expert-parallel fine-tuning from an import lowers the loss and exports every tensor under its name, trained.
TEST_F(Hf, FineTuningQwen2MoeAndOlmoeImportsLowersTheLossAndTrainsAllButTheFrozenRouters) {
    for (const std::string family : {"qwen2_moe", "olmoe"}) {
        model::ModelConfig cfg = tiny_qwen3();
        if (family == "qwen2_moe") {
            cfg.qk_norm = false;
            cfg.attn_bias = true;
            cfg.moe.n_shared_experts = 2;
            cfg.moe.shared_expert_gate = true;
            cfg.moe.norm_topk_prob = false;
        } else {
            cfg.qk_norm_scope = "projection";
            cfg.moe.norm_topk_prob = false;
        }
        model::Transformer<float> net(cfg);
        net.init(7);
        const fs::path src = dir_ / family;
        checkpoint::export_hf(src.string(), net.params(), cfg, family, "bf16", "");
        // OLMoE on 4 ranks: ep 2 twice over, so only the first replica's ranks write.
        const int ranks = family == "olmoe" ? 4 : 2;
        std::vector<double> losses = fine_tune(src, dir_ / ("ft_" + family), dir_ / ("out_" + family), 15, ranks);
        ASSERT_EQ(losses.size(), 15u) << family;
        EXPECT_LT(losses.back(), losses.front() - 0.3) << family << ": " << losses.front() << " -> " << losses.back();
        std::printf("%s import, %d ranks ep 2, 15 steps: loss %.3f -> %.3f\n", family.c_str(), ranks, losses.front(),
                    losses.back());
        auto before = tensors_of(src), after = tensors_of(dir_ / ("out_" + family));
        ASSERT_EQ(after.size(), before.size()) << family;
        int changed = 0;
        for (const auto& [name, t] : before) {
            ASSERT_TRUE(after.count(name)) << family << ": " << name;
            changed += after[name].second != t.second;
        }
        // Everything but the frozen routers (2 layers) is trained.
        EXPECT_EQ(changed, int(before.size()) - 2) << family;
        auto r =
            test::run_frugal("export-hf " + (dir_ / ("ft_" + family) / "checkpoints" / "step_00000015.h5").string() +
                             " --out " + (dir_ / ("single_" + family)).string());
        ASSERT_EQ(r.code, 0) << r.output;
        auto single = tensors_of(dir_ / ("single_" + family));
        for (const auto& [name, t] : single) EXPECT_TRUE(after[name] == t) << family << ": " << name;
    }
}

TEST_F(Hf, ScoreReportsTheModelsLogProbabilities) {
    const std::string text = "The quick brown fox jumps over the lazy dog.\n";
    std::ofstream(dir_ / "t.txt") << text;
    auto a = test::run_frugal("score hf:" + (dir_ / "src").string() + " --text-file " + (dir_ / "t.txt").string() +
                              " --json");
    ASSERT_EQ(a.code, 0) << a.output;
    ASSERT_EQ(test::run_frugal("import-hf " + (dir_ / "src").string() + " --out " + (dir_ / "m.h5").string()).code, 0);
    auto b =
        test::run_frugal("score " + (dir_ / "m.h5").string() + " --text-file " + (dir_ / "t.txt").string() + " --json");
    ASSERT_EQ(b.code, 0) << b.output;
    EXPECT_EQ(a.output.substr(a.output.find('{')), b.output.substr(b.output.find('{')))
        << "hf:DIR and its imported checkpoint score the same";
    // Independent check: log-softmax of the logits of an in-process forward pass.
    model::ModelConfig cfg = tiny_qwen3();
    model::Transformer<float> net(cfg);
    checkpoint::load_hf_weights((dir_ / "src").string(), net.params());
    const int64_t s = int64_t(text.size()) - 1;
    std::vector<int32_t> x(text.begin(), text.end() - 1), y(text.begin() + 1, text.end());
    for (auto& v : x) v = int32_t(static_cast<unsigned char>(v));
    for (auto& v : y) v = int32_t(static_cast<unsigned char>(v));
    net.forward(x.data(), y.data(), 1, s);
    double sum = 0;
    std::vector<double> want;
    for (int64_t i = 0; i < s; ++i) {
        const float* l = net.logits() + i * cfg.vocab_size;
        double mx = l[0], z = 0;
        for (int64_t v = 1; v < cfg.vocab_size; ++v) mx = std::max(mx, double(l[v]));
        for (int64_t v = 0; v < cfg.vocab_size; ++v) z += std::exp(double(l[v]) - mx);
        want.push_back(double(l[y[size_t(i)]]) - mx - std::log(z));
        sum -= want.back();
    }
    std::smatch m;
    ASSERT_TRUE(std::regex_search(
        a.output, m, std::regex("\"num_tokens\": (\\d+), \"mean_nll\": ([-0-9.e+]+), \"perplexity\": ([-0-9.e+]+)")));
    EXPECT_EQ(std::stoll(m[1]), s);
    EXPECT_NEAR(std::stod(m[2]), sum / double(s), 1e-5);
    EXPECT_NEAR(std::stod(m[3]), std::exp(std::stod(m[2])), 1e-6 * std::stod(m[3]));
    std::regex lp("\"logprobs\": \\[([^\\]]*)\\]");
    ASSERT_TRUE(std::regex_search(a.output, m, lp));
    std::stringstream list(m[1].str());
    std::string item;
    size_t i = 0;
    while (std::getline(list, item, ',')) {
        ASSERT_LT(i, want.size());
        EXPECT_NEAR(std::stod(item), want[i], 1e-5) << i;
        ++i;
    }
    EXPECT_EQ(i, want.size());
}

}  // namespace
}  // namespace frugal

namespace frugal {
namespace {

std::vector<double> json_list(const std::string& out, const std::string& key) {
    std::smatch m;
    EXPECT_TRUE(std::regex_search(out, m, std::regex("\"" + key + "\": \\[([^\\]]*)\\]"))) << out;
    std::vector<double> v;
    std::stringstream list(m[1].str());
    std::string item;
    while (std::getline(list, item, ',')) v.push_back(std::stod(item));
    return v;
}

TEST_F(Hf, ScoreUnderLaunchIsExpertParallelAndAgreesWithOneProcess) {
    // 7 windows of 16 tokens over 2 ranks: the second rank scores a filler in the last round.
    std::string text;
    for (int i = 0; i < 7; ++i) text += "Line " + std::to_string(i) + ": pack my box with five dozen jugs.\n";
    text.resize(16 * 6 + 9);
    std::ofstream(dir_ / "t.txt") << text;
    const std::string args = " --text-file " + (dir_ / "t.txt").string() + " --seq-len 16 --json";
    auto one = test::run_frugal("score hf:" + (dir_ / "src").string() + args);
    ASSERT_EQ(one.code, 0) << one.output;
    auto two = test::run_frugal("launch -n 2 score hf:" + (dir_ / "src").string() + args);
    ASSERT_EQ(two.code, 0) << two.output;
    EXPECT_EQ(json_list(one.output, "token_ids"), json_list(two.output, "token_ids"));
    const std::vector<double> a = json_list(one.output, "logprobs"), b = json_list(two.output, "logprobs");
    ASSERT_EQ(a.size(), text.size() - 1);
    ASSERT_EQ(b.size(), a.size());
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
    EXPECT_LT(worst, 1e-5) << "ep 2 vs one process";
    std::printf("score: %zu log-probabilities, ep 2 vs one process: largest difference %.2e\n", a.size(), worst);
    // One output only (rank 0), and a layout the experts do not divide into is refused before any work.
    EXPECT_EQ(std::count(two.output.begin(), two.output.end(), '{'), 1) << two.output;
    auto bad = test::run_frugal("launch -n 3 score hf:" + (dir_ / "src").string() + args);
    EXPECT_EQ(bad.code, 2) << bad.output;
    EXPECT_NE(bad.output.find("parallel.ep"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace frugal

namespace frugal {
namespace {

// Peak-memory growth while loading, from score's log line.
double load_growth_mb(const std::string& out) {
    std::smatch m;
    EXPECT_TRUE(std::regex_search(out, m, std::regex("raised its peak memory by (\\d+) MB"))) << out;
    return m.size() > 1 ? std::stod(m[1]) : 0;
}

TEST_F(Hf, ExpertParallelLoadingHoldsOnlyTheShard) {
    // Experts are 98% of this model (32 x 3 x 64 x 512 per layer, 2 layers: 25 MB in FP32).
    model::ModelConfig cfg = tiny_qwen3();
    cfg.d_model = 64;
    cfg.moe.n_experts = 32;
    cfg.moe.d_expert = 512;
    {
        model::Transformer<float> net(cfg);
        net.init(3);
        checkpoint::export_hf((dir_ / "big").string(), net.params(), cfg, "qwen3_moe", "bf16", "");
    }
    std::ofstream(dir_ / "t.txt") << "Expert parallel loading.\n";
    const std::string args = "score hf:" + (dir_ / "big").string() + " --text-file " + (dir_ / "t.txt").string();
    auto one = test::run_frugal(args);
    ASSERT_EQ(one.code, 0) << one.output;
    auto two = test::run_frugal("launch -n 2 " + args);
    ASSERT_EQ(two.code, 0) << two.output;
    const double full = load_growth_mb(one.output), half = load_growth_mb(two.output);
    std::printf("loading raised the peak memory by %.0f MB on one process, %.0f MB on a rank of ep 2\n", full, half);
    EXPECT_GT(full, 25.0) << "the FP32 copy of every expert";
    EXPECT_LT(full, 50.0) << "FP32 values and the BF16 file pages read, no gradient buffers";
    EXPECT_LT(half, 0.65 * full) << "a rank of ep 2 holds half the experts";
}

}  // namespace
}  // namespace frugal

namespace frugal {
namespace {

TEST_F(Hf, ScoreWithAStrideGivesEveryTokenItsSlidingContext) {
    std::string text;
    for (int i = 0; i < 6; ++i) text += "Sliding windows " + std::to_string(i) + " score with more context. ";
    std::ofstream(dir_ / "t.txt") << text;
    const std::string base =
        "score hf:" + (dir_ / "src").string() + " --text-file " + (dir_ / "t.txt").string() + " --seq-len 32 --json";
    auto plain = test::run_frugal(base);
    auto slide = test::run_frugal(base + " --stride 8");
    ASSERT_EQ(plain.code, 0) << plain.output;
    ASSERT_EQ(slide.code, 0) << slide.output;
    const std::vector<double> a = json_list(plain.output, "logprobs"), b = json_list(slide.output, "logprobs");
    const int64_t n = int64_t(text.size()) - 1, w = 32, s = 8;
    ASSERT_EQ(int64_t(b.size()), n) << "every token after the first exactly once";
    for (int64_t i = 0; i < w; ++i) EXPECT_EQ(a[size_t(i)], b[size_t(i)]) << "the first window is the same";
    // Target t (ids index, 1-based) is reported by the first window reaching it, which starts at
    // max(0, ceil((t - w) / s)) * s: check a few against an in-process forward over that window.
    model::ModelConfig cfg = tiny_qwen3();
    model::Transformer<float> net(cfg, {}, false);
    checkpoint::load_hf_weights((dir_ / "src").string(), net.params());
    std::vector<int32_t> ids(text.begin(), text.end());
    for (auto& v : ids) v = int32_t(static_cast<unsigned char>(v));
    for (int64_t t : {int64_t(33), int64_t(40), int64_t(77), n}) {
        const int64_t start = std::max<int64_t>(0, (t - w + s - 1) / s) * s, len = std::min(w, n - start);
        net.forward(ids.data() + start, ids.data() + start + 1, 1, len);
        EXPECT_NEAR(b[size_t(t - 1)], -double(net.token_losses()[t - 1 - start]), 1e-6) << "target " << t;
        EXPECT_GE(t - start, w - s) << "at least window - stride tokens of context";
    }
    auto bad = test::run_frugal(base + " --stride 33");
    EXPECT_EQ(bad.code, 2) << bad.output;
    EXPECT_NE(bad.output.find("--stride 33 is longer than the window (32 tokens)"), std::string::npos) << bad.output;
}

// config.json of a golden family (tests/golden/hf/FAMILY) with regex edits applied.
std::string golden_config(const std::string& family,
                          const std::vector<std::pair<std::string, std::string>>& edits = {}) {
    std::ifstream in(std::string(FRUGAL_SOURCE_DIR) + "/tests/golden/hf/" + family + "/config.json");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string t = ss.str();
    for (const auto& [from, to] : edits) {
        const std::string before = t;
        t = std::regex_replace(t, std::regex(from), to);
        EXPECT_NE(t, before) << family << ": no match for " << from;
    }
    return t;
}

model::ModelConfig read_config(const std::string& text) {
    return model::model_from_hf_config_text(text, "config.json");
}

TEST(HfFamilies, DeepseekV3ConfigReadsEveryFieldItsModelNeeds) {
    const model::ModelConfig m = read_config(golden_config("deepseek_v3"));
    EXPECT_EQ(m.attention, "mla");
    EXPECT_EQ(m.q_lora_rank, 24);
    EXPECT_EQ(m.kv_lora_rank, 16);
    EXPECT_EQ(m.qk_nope_head_dim, 8);
    EXPECT_EQ(m.qk_rope_head_dim, 4);
    EXPECT_EQ(m.v_head_dim, 8);
    EXPECT_EQ(m.head_dim, 0);  // config.json's head_dim is the rope width, not Frugal's
    EXPECT_EQ(m.rope_scaling, "yarn");
    EXPECT_EQ(m.rope_factor, 4.0);
    EXPECT_EQ(m.rope_original_max_seq_len, 16);
    EXPECT_EQ(m.yarn_mscale, 1.0);
    EXPECT_EQ(m.yarn_mscale_all_dim, 1.0);
    EXPECT_EQ(m.moe.score_func, "sigmoid");
    EXPECT_EQ(m.moe.n_group, 4);
    EXPECT_EQ(m.moe.topk_group, 2);
    EXPECT_EQ(m.moe.group_score, "top2_sum");
    EXPECT_EQ(m.moe.routed_scaling_factor, 2.5);
    EXPECT_EQ(m.moe.n_shared_experts, 1);
    EXPECT_EQ(m.dense_layers, 1);
    EXPECT_TRUE(m.moe.norm_topk_prob);
    EXPECT_EQ(m.mtp_modules, 0);
}

TEST(HfFamilies, AbsentFieldsTakeTheTransformersDefaults) {
    const model::ModelConfig v3 =
        read_config(golden_config("deepseek_v3", {{"\\s*\"n_group\": 4,", ""},
                                                  {"\\s*\"topk_group\": 2,", ""},
                                                  {"\\s*\"routed_scaling_factor\": 2.5,", ""},
                                                  {"\\s*\"first_k_dense_replace\": 1,", ""},
                                                  {"\"num_hidden_layers\": 2", "\"num_hidden_layers\": 4"},
                                                  {"\"n_routed_experts\": 8", "\"n_routed_experts\": 16"}}));
    EXPECT_EQ(v3.moe.n_group, 8);
    EXPECT_EQ(v3.moe.topk_group, 4);
    EXPECT_EQ(v3.moe.routed_scaling_factor, 2.5);
    EXPECT_EQ(v3.dense_layers, 3);
    const model::ModelConfig glm = read_config(golden_config(
        "glm4_moe", {{"\"rope_parameters\": \\{[^}]*\\}", "\"rope_parameters\": {\"rope_theta\": 10000.0}"}}));
    EXPECT_EQ(glm.partial_rotary_factor, 0.5);
    EXPECT_EQ(glm.rope_dim(), 4);
    const model::ModelConfig v2 = read_config(golden_config("deepseek_v2"));
    EXPECT_EQ(v2.q_lora_rank, 0);  // null
    EXPECT_EQ(v2.moe.group_score, "max");
    EXPECT_EQ(v2.moe.score_func, "softmax");
    const model::ModelConfig greedy = read_config(golden_config("deepseek_v2", {{"group_limited_greedy", "greedy"}}));
    EXPECT_EQ(greedy.moe.n_group, 1);  // greedy ignores the groups
}

TEST(HfFamilies, KimiK2AndADeepseekV3ArchitectureReadAsDeepseekV3) {
    std::string type;
    model::model_from_hf_config_text(
        golden_config("deepseek_v3", {{"\"model_type\": \"deepseek_v3\"", "\"model_type\": \"kimi_k2\""}}),
        "config.json", &type);
    EXPECT_EQ(type, "deepseek_v3");
    model::model_from_hf_config_text(
        golden_config("deepseek_v3", {{"\"model_type\": \"deepseek_v3\"", "\"model_type\": \"kimi_k25_text\""}}),
        "config.json", &type);
    EXPECT_EQ(type, "deepseek_v3");
}

TEST(HfFamilies, YarnWithoutAFactorTakesTheRatioOfTheContextLengths) {
    const model::ModelConfig m = read_config(golden_config("deepseek_v3", {{"\"factor\": 4.0,", ""}}));
    EXPECT_EQ(m.rope_factor, 64.0 / 16.0);
    // The legacy spelling: rope_scaling with "type".
    const model::ModelConfig legacy = read_config(
        golden_config("deepseek_v3", {{"\"rope_parameters\"", "\"rope_scaling\""}, {"\"rope_type\"", "\"type\""}}));
    EXPECT_EQ(legacy.rope_scaling, "yarn");
    EXPECT_EQ(legacy.rope_factor, 4.0);
}

TEST(HfFamilies, WhatTheModelCannotExpressIsRefusedByName) {
    using test::config_error;
    using test::expect_has;
    expect_has(
        config_error([] {
            read_config(golden_config("deepseek_v3", {{"\"attention_bias\": false", "\"attention_bias\": true"}}));
        }),
        {"\"attention_bias\": true cannot be imported", "Frugal's MLA has none"});
    expect_has(
        config_error([] {
            read_config(golden_config(
                "deepseek_v3", {{"\"topk_group\"", "\"topk_method\": \"group_limited_greedy\", \"topk_group\""}}));
        }),
        {"\"topk_method\": \"group_limited_greedy\" cannot be imported for deepseek_v3", "noaux_tc"});
    expect_has(config_error([] {
                   read_config(golden_config("deepseek_v2", {{"group_limited_greedy", "best_effort"}}));
               }),
               {"\"topk_method\": \"best_effort\" cannot be imported for deepseek_v2"});
    expect_has(config_error([] {
                   read_config(golden_config("deepseek_v3",
                                             {{"\"topk_group\"", "\"scoring_func\": \"softmax\", \"topk_group\""}}));
               }),
               {"\"scoring_func\": \"softmax\" cannot be imported for deepseek_v3"});
    expect_has(
        config_error([] {
            read_config(golden_config("deepseek_v2", {{"\"norm_topk_prob\": false", "\"norm_topk_prob\": true"}}));
        }),
        {"\"norm_topk_prob\": true cannot be imported for deepseek_v2"});
    expect_has(config_error([] {
                   read_config(golden_config("deepseek_v3", {{"\"yarn\"", "\"longrope\""}}));
               }),
               {"rope_parameters.rope_type \"longrope\" cannot be imported"});
    expect_has(config_error([] {
                   read_config(golden_config("deepseek_v3",
                                             {{"\"mscale\": 1.0", "\"mscale\": 1.0, \"attention_factor\": 2.0"}}));
               }),
               {"rope_parameters.attention_factor cannot be imported"});
    expect_has(config_error([] {
                   read_config(golden_config("dots1", {{"\"attention_bias\": false", "\"attention_bias\": true"}}));
               }),
               {"dots1 would put a bias on o_proj too"});
    expect_has(config_error([] {
                   read_config(golden_config("dots1", {{"\"full_attention\"\\s*\\]", "\"sliding_attention\"]"}}));
               }),
               {"\"layer_types\": \"sliding_attention\" cannot be imported"});
    // Groups that do not divide the experts: the model's own check, naming config.json's field.
    expect_has(config_error([] {
                   read_config(golden_config("deepseek_v3", {{"\"n_group\": 4", "\"n_group\": 3"}}));
               }),
               {"moe.n_group (3) must divide moe.n_experts (8)", "\"n_group\""});
}

TEST(HfFamilies, ExportRefusesWhatTheFamilyCannotHold) {
    using test::config_error;
    using test::expect_has;
    model::ModelConfig v3 = read_config(golden_config("deepseek_v3"));
    EXPECT_EQ(checkpoint::hf_model_type(v3), "deepseek_v3");
    expect_has(config_error([&] { checkpoint::check_exportable(v3, "deepseek_v2"); }),
               {"moe.score_func sigmoid has no deepseek_v2 equivalent"});
    expect_has(config_error([&] { checkpoint::check_exportable(v3, "glm4_moe"); }),
               {"model.attention: mla has no glm4_moe equivalent"});
    expect_has(config_error([&] { checkpoint::check_exportable(v3, "qwen3_moe"); }), {"has no qwen3_moe equivalent"});
    model::ModelConfig glm = read_config(golden_config("glm4_moe"));
    EXPECT_EQ(checkpoint::hf_model_type(glm), "glm4_moe");
    expect_has(config_error([&] { checkpoint::check_exportable(glm, "dots1"); }),
               {"model.attn_bias has no dots1 equivalent"});
    model::ModelConfig dots = read_config(golden_config("dots1"));
    EXPECT_EQ(checkpoint::hf_model_type(dots), "dots1");
    dots.mtp_modules = 1;
    expect_has(config_error([&] { checkpoint::check_exportable(dots, "dots1"); }),
               {"model.mtp_modules (1) has no dots1 equivalent"});
    model::ModelConfig v2 = read_config(golden_config("deepseek_v2"));
    v2.moe.bias_update_rate = 0.001;
    expect_has(config_error([&] { checkpoint::check_exportable(v2, "deepseek_v2"); }),
               {"moe.bias_update_rate (0.001) learns per-expert routing biases that deepseek_v2 has no place for"});
}

TEST(HfFamilies, EstimatesLabelMinimaxM2Dots1KimiK2AndGlm4MoeAsSigmoidRouting) {
    const fs::path dir = test::temp_dir("hf_labels");
    const std::string minimax = R"({"model_type": "minimax_m2", "vocab_size": 200064, "hidden_size": 3072,
        "num_hidden_layers": 62, "num_attention_heads": 48, "num_key_value_heads": 8, "head_dim": 128,
        "intermediate_size": 1536, "num_local_experts": 256, "num_experts_per_tok": 8, "rotary_dim": 64,
        "scoring_func": "sigmoid", "use_qk_norm": true, "max_position_embeddings": 196608, "rope_theta": 5000000})";
    std::ofstream(dir / "minimax_m2.json") << minimax;
    std::ofstream(dir / "kimi_k2.json") << golden_config("deepseek_v3", {{"\"deepseek_v3\"", "\"kimi_k2\""}});
    std::ofstream(dir / "dots1.json") << golden_config("dots1");
    std::ofstream(dir / "glm4_moe.json") << golden_config("glm4_moe");
    for (const auto& [file, label] :
         std::vector<std::pair<std::string, std::string>>{{"minimax_m2.json", "(minimax_m2, sigmoid routing)"},
                                                          {"kimi_k2.json", "(deepseek_v3, sigmoid routing)"},
                                                          {"dots1.json", "(dots1, sigmoid routing)"},
                                                          {"glm4_moe.json", "(glm4_moe, sigmoid routing)"}}) {
        auto r = test::run_frugal("estimate " + (dir / file).string() + " --tokens 1T --gpu h800 --gpus 64 --mfu 0.4");
        EXPECT_EQ(r.code, 0) << file << ": " << r.output;
        EXPECT_NE(r.output.find(label), std::string::npos) << file << ": " << r.output;
    }
    const model::ModelConfig m = read_config(minimax);
    EXPECT_EQ(m.partial_rotary_factor, 0.5);
    EXPECT_EQ(m.qk_norm_scope, "projection");
    EXPECT_TRUE(m.moe.norm_topk_prob);
    fs::remove_all(dir);
}

}  // namespace
}  // namespace frugal
