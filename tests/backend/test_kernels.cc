// Each Eigen fast path of backend/cpu against its naive reference in backend/cpu/reference.
#include <gtest/gtest.h>

#include "backend/cpu/ops.h"
#include "backend/cpu/reference/ops.h"
#include "tests/util.h"

namespace frugal {
namespace {

namespace fast = backend::cpu;
namespace ref = backend::reference;

TEST(Kernels, GemmAllTransposesAndStridesMatchReference) {
    const int64_t m = 37, n = 29, k = 53;
    for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb)
            for (float beta : {0.0f, 1.0f, 0.5f}) {
                // Padded leading dimensions exercise the strided views attention relies on.
                const int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5, ldc = n + 2;
                auto a = test::random_vec<float>((ta ? k : m) * lda, 1);
                auto b = test::random_vec<float>((tb ? n : k) * ldb, 2);
                auto c0 = test::random_vec<float>(m * ldc, 3);
                auto c_fast = c0, c_ref = c0;
                fast::gemm(c_fast.data(), ldc, a.data(), lda, b.data(), ldb, m, n, k, bool(ta), bool(tb), beta);
                ref::gemm(c_ref.data(), ldc, a.data(), lda, b.data(), ldb, m, n, k, bool(ta), bool(tb), beta);
                test::expect_close(
                    c_fast.data(), c_ref.data(), m * ldc, 1e-4, 1e-4,
                    "gemm ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) + " beta=" + std::to_string(beta));
            }
}

TEST(Kernels, AttentionForwardBackwardMatchReferenceWithGQA) {
    const int64_t b = 2, s = 19, hq = 4, hkv = 2, hd = 8;
    const int64_t n = b * s;
    const backend::AttentionDims dims{b, s, hq, hkv, hd, hd, 1.0 / std::sqrt(double(hd))};
    auto q = test::random_vec<double>(n * hq * hd, 11);
    auto k = test::random_vec<double>(n * hkv * hd, 12);
    auto v = test::random_vec<double>(n * hkv * hd, 13);
    auto dout = test::random_vec<double>(n * hq * hd, 14);
    std::vector<double> out_f(static_cast<size_t>(n * hq * hd)), out_r(out_f.size()),
        probs(static_cast<size_t>(b * hq * s * s));
    fast::attention_forward(out_f.data(), probs.data(), q.data(), k.data(), v.data(), dims);
    ref::attention_forward(out_r.data(), q.data(), k.data(), v.data(), dims);
    test::expect_close(out_f.data(), out_r.data(), int64_t(out_f.size()), 1e-12, 1e-10, "attention forward");
    // Causality: probabilities above the diagonal are exactly zero, rows sum to one.
    for (int64_t i = 0; i < s; ++i) {
        double sum = 0;
        for (int64_t j = 0; j < s; ++j) {
            if (j > i) {
                EXPECT_EQ(probs[static_cast<size_t>(i * s + j)], 0.0);
            }
            sum += probs[static_cast<size_t>(i * s + j)];
        }
        EXPECT_NEAR(sum, 1.0, 1e-12);
    }
    std::vector<double> dq_f(q.size()), dk_f(k.size()), dv_f(v.size()), dq_r(q.size()), dk_r(k.size()), dv_r(v.size());
    fast::attention_backward(dq_f.data(), dk_f.data(), dv_f.data(), dout.data(), probs.data(), q.data(), k.data(),
                             v.data(), dims);
    ref::attention_backward(dq_r.data(), dk_r.data(), dv_r.data(), dout.data(), q.data(), k.data(), v.data(), dims);
    test::expect_close(dq_f.data(), dq_r.data(), int64_t(dq_f.size()), 1e-12, 1e-10, "attention dq");
    test::expect_close(dk_f.data(), dk_r.data(), int64_t(dk_f.size()), 1e-12, 1e-10, "attention dk");
    test::expect_close(dv_f.data(), dv_r.data(), int64_t(dv_f.size()), 1e-12, 1e-10, "attention dv");
}

// Document masking: window 0 holds documents starting at 0, 5 and 12; window 1 is one document. The fast kernel
// takes each token's document start, the reference each token's document id.
TEST(Kernels, DocumentMaskedAttentionMatchesReference) {
    const int64_t b = 2, s = 19, hq = 4, hkv = 2, hd = 8, n = b * s;
    const backend::AttentionDims dims{b, s, hq, hkv, hd, hd, 1.0 / std::sqrt(double(hd))};
    std::vector<int32_t> start(static_cast<size_t>(n), 0), doc(static_cast<size_t>(n), 0);
    for (int64_t i = 0; i < s; ++i) {
        start[static_cast<size_t>(i)] = i < 5 ? 0 : i < 12 ? 5 : 12;
        doc[static_cast<size_t>(i)] = i < 5 ? 0 : i < 12 ? 1 : 2;
    }
    auto q = test::random_vec<double>(n * hq * hd, 51);
    auto k = test::random_vec<double>(n * hkv * hd, 52);
    auto v = test::random_vec<double>(n * hkv * hd, 53);
    auto dout = test::random_vec<double>(n * hq * hd, 54);
    std::vector<double> out_f(static_cast<size_t>(n * hq * hd)), out_r(out_f.size()),
        probs(static_cast<size_t>(b * hq * s * s));
    fast::attention_forward(out_f.data(), probs.data(), q.data(), k.data(), v.data(), dims, start.data());
    ref::attention_forward(out_r.data(), q.data(), k.data(), v.data(), dims, doc.data());
    test::expect_close(out_f.data(), out_r.data(), int64_t(out_f.size()), 1e-12, 1e-10, "masked attention forward");
    // No probability crosses a document boundary; rows still sum to one.
    for (int64_t h = 0; h < hq; ++h)
        for (int64_t i = 0; i < s; ++i) {
            double sum = 0;
            for (int64_t j = 0; j < s; ++j) {
                const double p = probs[static_cast<size_t>((h * s + i) * s + j)];
                if (j > i || doc[static_cast<size_t>(j)] != doc[static_cast<size_t>(i)]) {
                    EXPECT_EQ(p, 0.0) << i << " " << j;
                }
                sum += p;
            }
            EXPECT_NEAR(sum, 1.0, 1e-12);
        }
    std::vector<double> dq_f(q.size()), dk_f(k.size()), dv_f(v.size()), dq_r(q.size()), dk_r(k.size()), dv_r(v.size());
    fast::attention_backward(dq_f.data(), dk_f.data(), dv_f.data(), dout.data(), probs.data(), q.data(), k.data(),
                             v.data(), dims, start.data());
    ref::attention_backward(dq_r.data(), dk_r.data(), dv_r.data(), dout.data(), q.data(), k.data(), v.data(), dims,
                            doc.data());
    test::expect_close(dq_f.data(), dq_r.data(), int64_t(dq_f.size()), 1e-12, 1e-10, "masked attention dq");
    test::expect_close(dk_f.data(), dk_r.data(), int64_t(dk_f.size()), 1e-12, 1e-10, "masked attention dk");
    test::expect_close(dv_f.data(), dv_r.data(), int64_t(dv_f.size()), 1e-12, 1e-10, "masked attention dv");
}

TEST(Kernels, AttentionFloatMatchesReference) {
    const int64_t b = 3, s = 64, hq = 4, hkv = 1, hd = 16, n = b * s;
    const backend::AttentionDims dims{b, s, hq, hkv, hd, hd, 1.0 / std::sqrt(double(hd))};
    auto q = test::random_vec<float>(n * hq * hd, 21);
    auto k = test::random_vec<float>(n * hkv * hd, 22);
    auto v = test::random_vec<float>(n * hkv * hd, 23);
    std::vector<float> out_f(static_cast<size_t>(n * hq * hd)), out_r(out_f.size()),
        probs(static_cast<size_t>(b * hq * s * s));
    fast::attention_forward(out_f.data(), probs.data(), q.data(), k.data(), v.data(), dims);
    ref::attention_forward(out_r.data(), q.data(), k.data(), v.data(), dims);
    test::expect_close(out_f.data(), out_r.data(), int64_t(out_f.size()), 1e-5, 1e-4, "attention forward f32");
}

// MLA's shape: queries and keys wider than values (dn + dr = 12 vs dv = 6), every query head its own key head, and
// a softmax scale that is not 1 / sqrt(hd_qk) (YaRN's correction).
TEST(Kernels, AttentionWithValueWidthAndScaleOfItsOwnMatchesReference) {
    const int64_t b = 2, s = 9, hq = 3, hkv = 3, dqk = 12, dv = 6, n = b * s;
    const backend::AttentionDims dims{b, s, hq, hkv, dqk, dv, 0.37};
    auto q = test::random_vec<double>(n * hq * dqk, 61);
    auto k = test::random_vec<double>(n * hkv * dqk, 62);
    auto v = test::random_vec<double>(n * hkv * dv, 63);
    auto dout = test::random_vec<double>(n * hq * dv, 64);
    std::vector<double> out_f(static_cast<size_t>(n * hq * dv)), out_r(out_f.size()),
        probs(static_cast<size_t>(b * hq * s * s));
    fast::attention_forward(out_f.data(), probs.data(), q.data(), k.data(), v.data(), dims);
    ref::attention_forward(out_r.data(), q.data(), k.data(), v.data(), dims);
    test::expect_close(out_f.data(), out_r.data(), int64_t(out_f.size()), 1e-12, 1e-10, "mla-shaped forward");
    std::vector<double> dq_f(q.size()), dk_f(k.size()), dv_f(v.size()), dq_r(q.size()), dk_r(k.size()), dv_r(v.size());
    fast::attention_backward(dq_f.data(), dk_f.data(), dv_f.data(), dout.data(), probs.data(), q.data(), k.data(),
                             v.data(), dims);
    ref::attention_backward(dq_r.data(), dk_r.data(), dv_r.data(), dout.data(), q.data(), k.data(), v.data(), dims);
    test::expect_close(dq_f.data(), dq_r.data(), int64_t(dq_f.size()), 1e-12, 1e-10, "mla-shaped dq");
    test::expect_close(dk_f.data(), dk_r.data(), int64_t(dk_f.size()), 1e-12, 1e-10, "mla-shaped dk");
    test::expect_close(dv_f.data(), dv_r.data(), int64_t(dv_f.size()), 1e-12, 1e-10, "mla-shaped dv");
    // The scale is used, not 1 / sqrt(dqk): the default scale gives other outputs.
    const backend::AttentionDims plain{b, s, hq, hkv, dqk, dv, 1.0 / std::sqrt(double(dqk))};
    std::vector<double> out_p(out_f.size());
    ref::attention_forward(out_p.data(), q.data(), k.data(), v.data(), plain);
    double diff = 0;
    for (size_t i = 0; i < out_p.size(); ++i) diff = std::max(diff, std::abs(out_p[i] - out_r[i]));
    EXPECT_GT(diff, 1e-3);
}

// strided_copy broadcasts a source row over src_repeat destination rows; strided_add sums dst_repeat source rows
// into one, in order: the shared rotary key of MLA and its gradient.
TEST(Kernels, StridedCopyAndAddBroadcastAndSumRows) {
    const int64_t rows = 6, cols = 3, rep = 3;
    std::vector<double> src = {1, 2, 3, 9, 4, 5, 6, 9};  // two rows of stride 4
    std::vector<double> dst(size_t(rows * 5), -1.0);
    fast::strided_copy(dst.data(), 5, src.data(), 4, rows, cols, rep);
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(dst[size_t(r * 5 + c)], src[size_t((r / rep) * 4 + c)]);
        EXPECT_EQ(dst[size_t(r * 5 + 3)], -1.0);  // outside cols untouched
    }
    std::vector<double> acc(size_t(2 * 4), 10.0);
    fast::strided_add(acc.data(), 4, dst.data(), 5, rows, cols, rep);
    for (int64_t q = 0; q < 2; ++q) {
        for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(acc[size_t(q * 4 + c)], 10.0 + 3 * src[size_t(q * 4 + c)]);
        EXPECT_EQ(acc[size_t(q * 4 + 3)], 10.0);
    }
}

TEST(Kernels, RmsnormMatchesReference) {
    const int64_t n = 33, d = 96;
    auto x = test::random_vec<float>(n * d, 31);
    auto w = test::random_vec<float>(d, 32);
    std::vector<float> out_f(static_cast<size_t>(n * d)), out_r(out_f.size()), rstd(static_cast<size_t>(n));
    fast::rmsnorm_forward(out_f.data(), rstd.data(), x.data(), w.data(), n, d, 1e-6);
    ref::rmsnorm_forward(out_r.data(), x.data(), w.data(), n, d, 1e-6);
    test::expect_close(out_f.data(), out_r.data(), n * d, 1e-6, 1e-5, "rmsnorm");
}

TEST(Kernels, CrossEntropyIgnoresIndexAndMatchesDefinition) {
    const int64_t n = 5, v = 7;
    auto logits = test::random_vec<double>(n * v, 41, 3.0);
    std::vector<int32_t> targets = {0, 6, -100, 3, 2};
    std::vector<double> loss(static_cast<size_t>(n));
    double total = fast::cross_entropy_forward(loss.data(), logits.data(), targets.data(), n, v, -100);
    double want = 0;
    for (int64_t i = 0; i < n; ++i) {
        if (targets[static_cast<size_t>(i)] < 0) continue;
        double z = 0;
        for (int64_t j = 0; j < v; ++j) z += std::exp(logits[static_cast<size_t>(i * v + j)]);
        want += std::log(z) - logits[static_cast<size_t>(i * v + targets[static_cast<size_t>(i)])];
    }
    EXPECT_NEAR(total, want, 1e-12);
    EXPECT_EQ(loss[2], 0.0);
    std::vector<double> d(static_cast<size_t>(n * v), 0.0);
    fast::cross_entropy_backward(d.data(), logits.data(), targets.data(), 1.0, n, v, -100);
    for (int64_t j = 0; j < v; ++j) EXPECT_EQ(d[static_cast<size_t>(2 * v + j)], 0.0);  // ignored row has no gradient
}

}  // namespace
}  // namespace frugal
