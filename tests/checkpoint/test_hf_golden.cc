// Frugal on imported Hugging Face models against transformers itself (tests/golden/make_hf_golden.py): tiny random
// qwen3_moe, qwen2_moe (QKV biases, gated shared expert), mixtral and olmoe (QK-norm over the whole projection)
// models saved with save_pretrained; logits, loss and every gradient for a fixed batch match
// to 1e-4 relative to each tensor's largest magnitude (the loss to 1e-5). Importing each and exporting it in F32
// gives back every tensor of the transformers file bit for bit, under the same name and shape.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <tuple>

#include "checkpoint/hf.h"
#include "checkpoint/safetensors.h"
#include "model/hf_config.h"
#include "model/transformer.h"
#include "tests/golden/tensor_file.h"
#include "tests/util.h"

namespace frugal {
namespace {

double rel_error(const float* got, const golden::NamedTensor& want) {
    double max_ref = 0, max_err = 0;
    for (size_t i = 0; i < want.data.size(); ++i) {
        max_ref = std::max(max_ref, std::fabs(want.data[i]));
        max_err = std::max(max_err, std::fabs(double(got[i]) - want.data[i]));
    }
    return max_err / std::max(max_ref, 1e-30);
}

void check_family(const std::string& family) {
    const std::string dir = std::string(FRUGAL_SOURCE_DIR) + "/tests/golden/hf/" + family;
    const golden::TensorMap g = golden::read_tensor_file(dir + ".golden");
    model::ModelConfig cfg = model::model_from_hf_config(dir + "/config.json");
    cfg.moe.aux_loss = "none";  // the golden loss is the cross-entropy alone
    cfg.moe.z_loss_coef = 0;
    model::Transformer<float> net(cfg);
    checkpoint::load_hf_weights(dir, net.params());
    const auto& tk = g.at("tokens");
    const int64_t b = tk.shape[0], s = tk.shape[1];
    std::vector<int32_t> tokens(tk.data.begin(), tk.data.end()),
        targets(g.at("targets").data.begin(), g.at("targets").data.end());
    model::ForwardResult r = net.forward(tokens.data(), targets.data(), b, s);
    const double logits_err = rel_error(net.logits(), g.at("logits"));
    EXPECT_LE(logits_err, 1e-4) << family << " logits";
    const double loss = r.ce_sum / double(r.num_valid);
    EXPECT_NEAR(loss, g.at("loss").data[0], 1e-5 * g.at("loss").data[0]) << family << " loss";
    net.params().zero_grad();
    net.backward(float(1.0 / double(r.num_valid)), 0.0f);
    int compared = 0;
    double worst = 0;
    std::string worst_name;
    for (model::Param* p : net.params().params()) {
        auto it = g.find("grad/" + p->name);
        ASSERT_NE(it, g.end()) << family << ": no golden gradient for " << p->name;
        ASSERT_EQ(int64_t(it->second.data.size()), p->grad.numel()) << p->name;
        const double err = rel_error(p->grad.data<float>(), it->second);
        EXPECT_LE(err, 1e-4) << family << " grad " << p->name;
        if (err > worst) std::tie(worst, worst_name) = std::make_pair(err, p->name);
        ++compared;
    }
    std::printf("%s: logits %.2e, worst gradient %.2e (%s), %d gradients\n", family.c_str(), logits_err, worst,
                worst_name.c_str(), compared);
    EXPECT_EQ(compared,
              int(std::count_if(g.begin(), g.end(), [](auto& kv) { return kv.first.rfind("grad/", 0) == 0; })));
}

void check_round_trip(const std::string& family) {
    namespace fs = std::filesystem;
    const std::string dir = std::string(FRUGAL_SOURCE_DIR) + "/tests/golden/hf/" + family;
    model::ModelConfig cfg = model::model_from_hf_config(dir + "/config.json");
    model::Transformer<float> net(cfg);
    checkpoint::load_hf_weights(dir, net.params());
    EXPECT_EQ(checkpoint::hf_model_type(cfg), family);
    const fs::path out = test::temp_dir("hf_round_" + family);
    checkpoint::export_hf(out.string(), net.params(), cfg, family, "f32", "");
    checkpoint::SafetensorsFile src(dir + "/model.safetensors");
    std::map<std::string, std::vector<uint8_t>> back;
    for (const auto& e : fs::directory_iterator(out)) {
        if (e.path().extension() != ".safetensors") continue;
        checkpoint::SafetensorsFile f(e.path().string());
        for (const auto& [name, info] : f.tensors()) {
            EXPECT_EQ(info.shape, src.info(name).shape) << name;
            const uint8_t* b = f.bytes(name);
            back[name].assign(b, b + (info.end - info.begin));
        }
    }
    EXPECT_EQ(back.size(), src.tensors().size()) << family;
    for (const auto& [name, info] : src.tensors()) {
        ASSERT_TRUE(back.count(name)) << family << ": " << name << " not exported";
        const uint8_t* b = src.bytes(name);
        EXPECT_TRUE(back[name] == std::vector<uint8_t>(b, b + (info.end - info.begin))) << family << ": " << name;
    }
    // The generated config.json (no source given) reads back as the same model.
    model::ModelConfig again = model::model_from_hf_config((out / "config.json").string());
    EXPECT_EQ(checkpoint::hf_model_type(again), family);
    EXPECT_EQ(again.moe.n_shared_experts, cfg.moe.n_shared_experts);
    EXPECT_EQ(again.moe.norm_topk_prob, cfg.moe.norm_topk_prob);
    EXPECT_EQ(again.norm_eps, cfg.norm_eps);
    fs::remove_all(out);
}

TEST(HfGolden, ImportThenExportGivesBackEveryTensorBitForBit) {
    for (const char* family : {"qwen3_moe", "qwen2_moe", "mixtral", "olmoe"}) check_round_trip(family);
}

TEST(HfGolden, Qwen3MoeMatchesTransformers) { check_family("qwen3_moe"); }
TEST(HfGolden, MixtralMatchesTransformers) { check_family("mixtral"); }
TEST(HfGolden, Qwen2MoeMatchesTransformers) { check_family("qwen2_moe"); }
TEST(HfGolden, OlmoeMatchesTransformers) { check_family("olmoe"); }

}  // namespace
}  // namespace frugal
