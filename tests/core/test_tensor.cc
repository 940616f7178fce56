#include <gtest/gtest.h>

#include "core/config_fields.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace frugal {
namespace {

TEST(Tensor, StorageIs64ByteAlignedViewsShareItAndMisuseThrows) {
    Tensor t = Tensor::zeros({4, 6}, DType::kF32);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
    EXPECT_TRUE(t.is_contiguous());
    float* p = t.data<float>();
    for (int i = 0; i < 24; ++i) p[i] = float(i);
    Tensor row = t.select(0, 2);
    EXPECT_EQ(row.shape(), (Shape{6}));
    EXPECT_EQ(row.data<float>()[0], 12.0f);
    Tensor cols = t.slice(1, 2, 4);
    EXPECT_EQ(cols.shape(), (Shape{4, 2}));
    EXPECT_FALSE(cols.is_contiguous());
    EXPECT_EQ(cols.strides(), (Shape{6, 1}));
    EXPECT_EQ(cols.data<float>()[6], 8.0f);  // row 1, column 2
    Tensor v = t.view({2, 12});
    EXPECT_EQ(v.data<float>()[13], 13.0f);
    EXPECT_THROW(cols.view({8}), Error);
    EXPECT_THROW(t.data<double>(), Error);
    EXPECT_THROW(t.view({5, 5}), Error);
    EXPECT_EQ(dtype_size(DType::kBF16), 2u);
    EXPECT_EQ(dtype_size(DType::kE4M3), 1u);
    EXPECT_EQ(Tensor::empty({3}, DType::kE5M2).nbytes(), 3u);
}

TEST(Rng, DrawDependsOnlyOnKeyAndIndex) {
    rng::Stream a(7, "layers.1.moe.experts.w13"), b(7, "layers.1.moe.experts.w13");
    rng::Stream other_seed(8, "layers.1.moe.experts.w13"), other_name(7, "layers.1.moe.experts.w2");
    // Drawing in any order gives the same value per index: what layout-independent init relies on.
    double x = a.normal(123456);
    for (int i = 0; i < 100; ++i) b.normal(uint64_t(i));
    EXPECT_EQ(x, b.normal(123456));
    EXPECT_NE(x, other_seed.normal(123456));
    EXPECT_NE(x, other_name.normal(123456));
    // Moments of 20000 normals: mean ~ 0, variance ~ 1 (5 sigma bounds).
    double sum = 0, sq = 0;
    const int n = 20000;
    for (int i = 0; i < n; ++i) {
        double v = a.normal(uint64_t(i));
        sum += v;
        sq += v * v;
    }
    EXPECT_NEAR(sum / n, 0.0, 5.0 / std::sqrt(double(n)));
    EXPECT_NEAR(sq / n, 1.0, 5.0 * std::sqrt(2.0 / n));
    for (int i = 0; i < 1000; ++i) {
        uint64_t k = a.below(10, uint64_t(i));
        EXPECT_LT(k, 10u);
    }
}

TEST(Error, CheckThrowsWithLocationAndValues) {
    try {
        int ep = 6, world = 8;
        FRUGAL_CHECK(world % ep == 0, "parallel.ep (", ep, ") must divide the world size (", world, ")");
        FAIL() << "no throw";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("parallel.ep (6) must divide the world size (8)"), std::string::npos);
        EXPECT_NE(e.where().find("test_tensor.cc:"), std::string::npos) << e.where();
    }
}

TEST(ConfigFields, SetParsesEveryTypeRefusesBadValuesAndSuggestsTheNearestKey) {
    int64_t layers = 4;
    double lr = 1e-3;
    bool flag = false;
    std::string func = "softmax";
    std::vector<std::string> list;
    ConfigFields f;
    f.add("model.n_layers", &layers, "layers", 1, 100);
    f.add("optim.lr", &lr, "lr", 0.0, 1.0);
    f.add("model.qk_norm", &flag, "qk");
    f.add("moe.score_func", &func, "score", {"softmax", "sigmoid"});
    f.add("optim.no_decay", &list, "nd", {"norm", "bias"});
    f.set("model.n_layers", "12", "t");
    f.set("optim.lr", "3e-4", "t");
    f.set("model.qk_norm", "true", "t");
    f.set("moe.score_func", "sigmoid", "t");
    f.set("optim.no_decay", "[norm, bias]", "t");
    EXPECT_EQ(layers, 12);
    EXPECT_DOUBLE_EQ(lr, 3e-4);
    EXPECT_TRUE(flag);
    EXPECT_EQ(func, "sigmoid");
    EXPECT_EQ(list, (std::vector<std::string>{"norm", "bias"}));
    EXPECT_THROW(f.set("model.n_layers", "four", "t"), ConfigError);
    EXPECT_THROW(f.set("model.n_layers", "0", "t"), ConfigError);
    EXPECT_THROW(f.set("moe.score_func", "relu", "t"), ConfigError);
    EXPECT_THROW(f.set("optim.no_decay", "[norm, weights]", "t"), ConfigError);
    try {
        f.set("model.n_layer", "3", "cfg.yaml:7");
        FAIL();
    } catch (const ConfigError& e) {
        std::string m = e.what();
        EXPECT_NE(m.find("cfg.yaml:7"), std::string::npos) << m;
        EXPECT_NE(m.find("did you mean 'model.n_layers'"), std::string::npos) << m;
    }
}

}  // namespace
}  // namespace frugal
