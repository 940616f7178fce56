#include <gtest/gtest.h>

#include <cmath>

#include "optim/adamw.h"
#include "tests/util.h"

namespace frugal {
namespace {

TEST(AdamW, MatchesDoublePrecisionReference) {
    optim::OptimConfig cfg;
    cfg.beta1 = 0.9;
    cfg.beta2 = 0.95;
    cfg.eps = 1e-8;
    cfg.weight_decay = 0.1;
    const int64_t n = 50;
    auto p0 = test::random_vec<float>(n, 1);
    std::vector<float> pd = p0, pn = p0, gd(static_cast<size_t>(n)), gn(static_cast<size_t>(n));
    optim::AdamW opt(cfg, {{pd.data(), gd.data(), n, true}, {pn.data(), gn.data(), n, false}});
    std::vector<double> ref_d(p0.begin(), p0.end()), ref_n = ref_d, m_d(static_cast<size_t>(n)),
                                                     v_d(static_cast<size_t>(n)), m_n(static_cast<size_t>(n)),
                                                     v_n(static_cast<size_t>(n));
    for (int step = 1; step <= 5; ++step) {
        auto g = test::random_vec<float>(n, uint64_t(10 + step));
        gd = g;
        gn = g;
        const double lr = 1e-2 * step;
        opt.step(lr);
        auto ref_step = [&](std::vector<double>& p, std::vector<double>& m, std::vector<double>& v, bool decay) {
            for (int64_t i = 0; i < n; ++i) {
                if (decay) p[static_cast<size_t>(i)] *= 1 - lr * cfg.weight_decay;
                m[static_cast<size_t>(i)] = 0.9 * m[static_cast<size_t>(i)] + 0.1 * g[static_cast<size_t>(i)];
                v[static_cast<size_t>(i)] = 0.95 * v[static_cast<size_t>(i)] +
                                            0.05 * double(g[static_cast<size_t>(i)]) * g[static_cast<size_t>(i)];
                double mh = m[static_cast<size_t>(i)] / (1 - std::pow(0.9, step)),
                       vh = v[static_cast<size_t>(i)] / (1 - std::pow(0.95, step));
                p[static_cast<size_t>(i)] -= lr * mh / (std::sqrt(vh) + 1e-8);
            }
        };
        ref_step(ref_d, m_d, v_d, true);
        ref_step(ref_n, m_n, v_n, false);
    }
    test::expect_close(pd.data(), ref_d.data(), n, 1e-6, 1e-5, "adamw with decay");
    test::expect_close(pn.data(), ref_n.data(), n, 1e-6, 1e-5, "adamw without decay");
    // Decay actually happened where configured and not elsewhere.
    EXPECT_GT(std::fabs(ref_d[0] - ref_n[0]), 1e-5);
}

TEST(Schedule, LrWarmsUpThenDecaysByCosineOrLinearlyToMinLrOrStaysConstant) {
    optim::OptimConfig cfg;
    cfg.lr = 1.0;
    cfg.min_lr = 0.1;
    cfg.warmup_steps = 10;
    EXPECT_DOUBLE_EQ(optim::lr_at(cfg, 0, 110), 0.1);
    EXPECT_DOUBLE_EQ(optim::lr_at(cfg, 9, 110), 1.0);
    EXPECT_DOUBLE_EQ(optim::lr_at(cfg, 10, 110), 1.0);
    EXPECT_NEAR(optim::lr_at(cfg, 109, 110), 0.1, 1e-12);
    EXPECT_NEAR(optim::lr_at(cfg, 10 + 99 / 2.0, 110), 0.55, 1e-2);
    for (int64_t s = 11; s < 110; ++s) EXPECT_LE(optim::lr_at(cfg, s, 110), optim::lr_at(cfg, s - 1, 110));
    cfg.schedule = "linear";
    EXPECT_NEAR(optim::lr_at(cfg, 109, 110), 0.1, 1e-12);
    cfg.schedule = "constant";
    EXPECT_DOUBLE_EQ(optim::lr_at(cfg, 100, 110), 1.0);
}

TEST(Clipping, GlobalNormSpansEveryParameterAndScalingByItsInverseGivesUnitNorm) {
    std::vector<float> a = {3, 0}, b = {0, 4}, va(2), vb(2);
    std::vector<optim::OptimParam> ps = {{va.data(), a.data(), 2, true}, {vb.data(), b.data(), 2, true}};
    EXPECT_DOUBLE_EQ(std::sqrt(optim::grad_sq_sum(ps)), 5.0);
    optim::scale_grads(ps, 0.2f);
    EXPECT_NEAR(std::sqrt(optim::grad_sq_sum(ps)), 1.0, 1e-6);
}

}  // namespace
}  // namespace frugal
