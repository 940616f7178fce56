// Frugal's model against an independent PyTorch implementation (tests/golden/make_golden.py): logits, loss and
// every parameter gradient for fixed batches, in double (to 1e-9) and in float (to 1e-5), relative to the largest
// magnitude of each tensor.
#include <gtest/gtest.h>

#include <cmath>

#include "model/transformer.h"
#include "tests/golden/golden_models.h"
#include "tests/golden/tensor_file.h"

namespace frugal {
namespace {

const golden::TensorMap& golden_file() {
    static golden::TensorMap m =
        golden::read_tensor_file(std::string(FRUGAL_SOURCE_DIR) + "/tests/golden/tiny_golden.bin");
    return m;
}

template <typename T>
void expect_rel(const T* got, const golden::NamedTensor& want, double tol, const std::string& what, uint64_t seed) {
    double max_ref = 0, max_err = 0, got_at = 0, want_at = 0;
    size_t where = 0;
    for (size_t i = 0; i < want.data.size(); ++i) {
        max_ref = std::max(max_ref, std::fabs(want.data[i]));
        double err = std::fabs(double(got[i]) - want.data[i]);
        if (err > max_err || err != err) {
            max_err = err;
            where = i;
            got_at = double(got[i]);
            want_at = want.data[i];
        }
    }
    double rel = max_err / std::max(max_ref, 1e-300);
    EXPECT_LE(rel, tol) << what << ": largest error " << max_err << " (relative to max |ref| " << rel << ") at "
                        << where << ": frugal " << got_at << ", pytorch " << want_at << ", seed " << seed;
}

template <typename T>
void check_case(const golden::GoldenCase& c, double tol) {
    const auto& g = golden_file();
    auto at = [&](const std::string& k) -> const golden::NamedTensor& {
        auto it = g.find(c.name + "/" + k);
        if (it == g.end())
            throw Error("test_golden",
                        "golden file lacks " + c.name + "/" + k + ": regenerate it (tests/golden/make_golden.py)");
        return it->second;
    };
    model::Transformer<T> net(c.cfg);
    net.init(c.seed);
    for (model::Param* p : net.params().params()) {
        const auto& w = at(p->name);
        ASSERT_EQ(int64_t(w.data.size()), p->value.numel()) << p->name;
        T* v = p->value.template data<T>();
        for (size_t i = 0; i < w.data.size(); ++i) {
            // Frugal's initialization has not drifted from the one the golden data was made with.
            ASSERT_EQ(v[i], T(w.data[i])) << p->name << "[" << i << "] init differs: regenerate the golden data";
        }
    }
    int64_t l_idx = 0;
    for (int64_t l = 0; l < c.cfg.n_layers; ++l) {
        if (!c.cfg.is_moe_layer(l)) continue;
        auto* layer = net.moe_layers()[size_t(l_idx++)];
        const auto& b = at("layers." + std::to_string(l) + ".moe.expert_bias");
        std::vector<float> bias(b.data.size());
        for (size_t j = 0; j < b.data.size(); ++j) bias[j] = float(b.data[j]);
        layer->router().set_expert_bias(bias);
    }
    std::vector<int32_t> tokens, targets;
    golden::golden_batch(c, tokens, targets);
    const auto& gt = at("tokens");
    for (size_t i = 0; i < tokens.size(); ++i) ASSERT_EQ(double(tokens[i]), gt.data[i]);
    model::ForwardResult r = net.forward(tokens.data(), targets.data(), c.batch, c.seq);
    const double loss = r.ce_sum / double(r.num_valid) + r.aux_loss + r.z_loss;
    const std::string tag = std::string(sizeof(T) == 8 ? "double" : "float") + " case " + c.name;
    expect_rel(net.logits(), at("logits"), tol, tag + " logits", c.seed);
    EXPECT_LE(std::fabs(loss - at("loss").data[0]) / at("loss").data[0], tol)
        << tag << " loss: frugal " << loss << ", pytorch " << at("loss").data[0];
    net.params().zero_grad();
    net.backward(T(1.0 / double(r.num_valid)), T(1));
    for (model::Param* p : net.params().params())
        expect_rel(p->grad.template data<T>(), at("grad/" + p->name), tol, tag + " grad " + p->name, c.seed);
}

TEST(Golden, DoubleMatchesPyTorch) {
    for (const auto& c : golden::golden_cases()) check_case<double>(c, 1e-9);
}

TEST(Golden, FloatMatchesPyTorch) {
    for (const auto& c : golden::golden_cases()) check_case<float>(c, 1e-5);
}

}  // namespace
}  // namespace frugal
