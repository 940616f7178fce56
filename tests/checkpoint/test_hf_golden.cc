// Frugal on imported Hugging Face models against transformers itself (tests/golden/make_hf_golden.py): tiny random
// qwen3_moe and mixtral models saved with save_pretrained; logits, loss and every gradient for a fixed batch match
// to 1e-4 relative to each tensor's largest magnitude (the loss to 1e-5).
#include <gtest/gtest.h>

#include <cmath>

#include "checkpoint/hf.h"
#include "model/hf_config.h"
#include "model/transformer.h"
#include "tests/golden/tensor_file.h"

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
    EXPECT_LE(rel_error(net.logits(), g.at("logits")), 1e-4) << family << " logits";
    const double loss = r.ce_sum / double(r.num_valid);
    EXPECT_NEAR(loss, g.at("loss").data[0], 1e-5 * g.at("loss").data[0]) << family << " loss";
    net.params().zero_grad();
    net.backward(float(1.0 / double(r.num_valid)), 0.0f);
    int compared = 0;
    for (model::Param* p : net.params().params()) {
        auto it = g.find("grad/" + p->name);
        ASSERT_NE(it, g.end()) << family << ": no golden gradient for " << p->name;
        ASSERT_EQ(int64_t(it->second.data.size()), p->grad.numel()) << p->name;
        EXPECT_LE(rel_error(p->grad.data<float>(), it->second), 1e-4) << family << " grad " << p->name;
        ++compared;
    }
    EXPECT_EQ(compared,
              int(std::count_if(g.begin(), g.end(), [](auto& kv) { return kv.first.rfind("grad/", 0) == 0; })));
}

TEST(HfGolden, Qwen3MoeMatchesTransformers) { check_family("qwen3_moe"); }
TEST(HfGolden, MixtralMatchesTransformers) { check_family("mixtral"); }

}  // namespace
}  // namespace frugal
