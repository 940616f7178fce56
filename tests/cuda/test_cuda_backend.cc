// The CUDA backend (backend/cuda/cuda_backend.h) against the CPU backend (backend::cpu_backend()), through the
// Backend seam only: every operation of Ops<float> and of Backend on random inputs of ragged shapes, then a tiny MoE
// transformer's forward and backward, then 50 training steps of the demo job through the CLI.
//
// Every buffer of the CUDA side comes from its allocator (Tensor::empty(shape, dtype, be.allocator())) and is filled
// by Tensor::copy_from from the same host data the CPU side gets. Each comparison prints its largest absolute and
// relative error and where. Tolerances, as fractions of the largest |want| of a comparison, are those of the kernels'
// own GPU tests (tests/cuda/test_*_gpu.cc): exact for elementwise operations, embeddings, integers, routing weights,
// permutations, quantizers and AdamW; 1e-6 where the CPU fuses a product into a sum (rotary); 4e-6 where expf
// differs (SwiGLU, cross-entropy, router scores, the shared-expert gate); 1e-5 where a reduction runs in another
// order (RMSNorm, bias and gate gradients); FP32 GEMMs within the forward error bound 2 k u sum |a||b| per element
// (u = 2^-24); 2e-2 for attention, which runs in BF16 on the GPU (cuDNN), with equal and with unequal query/key
// and value head dims (multi-head latent attention). Without a GPU everything skips with the
// reason backend::backend_available gives, except the two-rank refusal, which needs none.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/tensor.h"
#include "model/transformer.h"
#include "tests/util.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;
using backend::Backend;
using backend::ScoreFunc;

#define FRUGAL_REQUIRE_CUDA_BACKEND()                                                \
    do {                                                                             \
        std::string why_;                                                            \
        if (!backend::backend_available(Device::kCuda, &why_)) GTEST_SKIP() << why_; \
    } while (0)

constexpr uint64_t kSeed = 20261202;
constexpr double kExact = 0.0;
constexpr double kFmaTol = 1e-6;
constexpr double kExpTol = 4e-6;
constexpr double kOrderTol = 1e-5;
constexpr double kBf16AttentionTol = 2e-2;

Backend& cpu() { return backend::cpu_backend(); }
Backend& gpu() { return backend::backend_for(Device::kCuda); }

// ---- Buffers on both backends ----

template <typename T>
Tensor upload(Backend& be, const std::vector<T>& host) {
    const int64_t n = std::max<int64_t>(int64_t(host.size()), 1);
    Tensor h = Tensor::zeros({n}, DTypeOf<T>::value);
    if (!host.empty()) std::memcpy(h.raw_data(), host.data(), host.size() * sizeof(T));
    Tensor t = Tensor::empty({n}, DTypeOf<T>::value, be.allocator());
    t.copy_from(h);
    return t;
}

template <typename T>
std::vector<T> download(const Tensor& t, int64_t n) {
    Tensor h = Tensor::empty(t.shape(), t.dtype());
    h.copy_from(t);
    return std::vector<T>(h.data<T>(), h.data<T>() + n);
}

// One buffer with the same contents on the CPU (c) and the GPU (g).
struct Pair {
    Tensor c, g;
    int64_t n = 0;
    template <typename T>
    T* at(bool on_gpu) const {
        return (on_gpu ? g : c).data<T>();
    }
};

template <typename T>
Pair both(const std::vector<T>& host) {
    return {upload(cpu(), host), upload(gpu(), host), int64_t(host.size())};
}
template <typename T>
Pair zeros(int64_t n) {
    return both(std::vector<T>(size_t(n), T(0)));
}
std::vector<float> rnd(int64_t n, uint64_t salt, double scale = 1.0) {
    return test::random_vec<float>(n, kSeed + salt, scale);
}

// Runs f(backend, on_gpu) on the CPU, then on the GPU, and waits for the GPU.
template <typename F>
void on_both(F&& f) {
    f(cpu(), false);
    f(gpu(), true);
    gpu().synchronize();
}

// Prints the largest absolute and relative error of got against want, and fails where an element differs by more
// than tol * max |want| (tol 0: the same values; NaNs must match NaNs).
template <typename T>
void expect_near(const std::vector<T>& got, const std::vector<T>& want, double tol, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    double scale = 0;
    for (T w : want) scale = std::max(scale, std::fabs(double(w)));
    const test::Comparison c = test::compare(got.data(), want.data(), int64_t(got.size()));
    std::printf("%-44s max abs %.3e  max rel %.3e  at %lld (got %.9g want %.9g)  tol %.1e of %.3e\n", what.c_str(),
                c.max_abs, c.max_rel, static_cast<long long>(c.where), c.got, c.want, tol, scale);
    for (size_t i = 0; i < got.size(); ++i) {
        const double g = double(got[i]), w = double(want[i]);
        if (std::isnan(w) && std::isnan(g)) continue;
        if (!(std::fabs(g - w) <= tol * scale)) {
            ADD_FAILURE() << what << ": element " << i << " got " << g << " want " << w << "; largest abs error "
                          << c.max_abs << " at " << c.where << ", tolerance " << tol << " of " << scale << ", seed "
                          << kSeed;
            return;
        }
    }
}

template <typename T>
void expect_pair(const Pair& p, double tol, const std::string& what) {
    expect_near(download<T>(p.g, p.n), download<T>(p.c, p.n), tol, what);
}

void expect_scalar(double got, double want, double rel, const std::string& what) {
    std::printf("%-44s got %.17g want %.17g  rel %.3e  tol %.1e\n", what.c_str(), got, want,
                std::fabs(got - want) / std::max(std::fabs(want), 1e-300), rel);
    EXPECT_LE(std::fabs(got - want), rel * std::max(std::fabs(want), 1e-300)) << what;
}

std::string dims(const char* op, int64_t a, int64_t b) {
    return std::string(op) + " " + std::to_string(a) + "x" + std::to_string(b);
}

struct Dims {
    int64_t n, d;
};
const Dims kDims[] = {{1, 1}, {3, 7}, {77, 300}, {130, 1000}, {1000, 33}};

// ---- Elementwise and bias ----

TEST(CudaBackend, ElementwiseOperationsAndBiasEqualTheCpuBackend) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    for (Dims s : kDims) {
        const int64_t nd = s.n * s.d;
        Pair a = both(rnd(nd, 1)), b = both(rnd(nd, 2)), bias = both(rnd(s.d, 3));
        Pair filled = zeros<float>(nd), sum = zeros<float>(nd), acc = both(rnd(nd, 4)), y = both(rnd(nd, 5)),
             db = both(rnd(s.d, 6)), alias = both(rnd(nd, 7));
        on_both([&](Backend& be, bool g) {
            const auto& o = be.ops<float>();
            o.fill(filled.at<float>(g), nd, -2.5f);
            o.add(sum.at<float>(g), a.at<float>(g), b.at<float>(g), nd);
            o.add(alias.at<float>(g), alias.at<float>(g), a.at<float>(g), nd);
            o.add_inplace(acc.at<float>(g), a.at<float>(g), nd);
            o.bias_add(y.at<float>(g), bias.at<float>(g), s.n, s.d);
            o.bias_backward(db.at<float>(g), a.at<float>(g), s.n, s.d);
        });
        expect_pair<float>(filled, kExact, dims("fill", s.n, s.d));
        expect_pair<float>(sum, kExact, dims("add", s.n, s.d));
        expect_pair<float>(alias, kExact, dims("add (aliased)", s.n, s.d));
        expect_pair<float>(acc, kExact, dims("add_inplace", s.n, s.d));
        expect_pair<float>(y, kExact, dims("bias_add", s.n, s.d));
        expect_pair<float>(db, kOrderTol, dims("bias_backward", s.n, s.d));
    }
}

// ---- Matrix products ----

// C = op(A) op(B) + beta C on the host in double, and the forward error bound of an FP32 sum of k products in any
// order, 2 k u sum_k |a||b| (u = 2^-24), for each element. Every matrix starts `shift` elements into its buffer.
void reference_gemm(std::vector<double>* want, std::vector<double>* bound, const std::vector<float>& c, int64_t ldc,
                    const std::vector<float>& a, int64_t lda, const std::vector<float>& b, int64_t ldb, int64_t m,
                    int64_t n, int64_t k, bool ta, bool tb, float beta, int64_t shift) {
    want->assign(c.begin(), c.end());
    bound->assign(c.size(), 0.0);
    const double u = std::ldexp(1.0, -24);
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
            double s = 0, abs = 0;
            for (int64_t p = 0; p < k; ++p) {
                const double x = a[size_t(shift + (ta ? p * lda + i : i * lda + p))],
                             y = b[size_t(shift + (tb ? j * ldb + p : p * ldb + j))];
                s += x * y;
                abs += std::fabs(x * y);
            }
            const size_t at = size_t(shift + i * ldc + j);
            (*want)[at] = s + double(beta) * double(c[at]);
            (*bound)[at] = 2.0 * double(k + 2) * u * (abs + std::fabs(double(beta) * double(c[at])));
        }
}

TEST(CudaBackend, GemmOfEveryTransposeBetaAndLeadingDimensionIsWithinTheFp32ErrorBound) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    struct Mnk {
        int64_t m, n, k;
    };
    for (Mnk d : {Mnk{37, 53, 70}, Mnk{1, 5, 3}, Mnk{130, 17, 257}, Mnk{64, 128, 1}})
        for (bool ta : {false, true})
            for (bool tb : {false, true})
                for (float beta : {0.0f, 1.0f})
                    for (int64_t pad : {0, 5})
                        for (int64_t shift : {0, 3}) {
                            const int64_t a_rows = ta ? d.k : d.m, a_cols = ta ? d.m : d.k;
                            const int64_t b_rows = tb ? d.n : d.k, b_cols = tb ? d.k : d.n;
                            const int64_t lda = a_cols + pad, ldb = b_cols + 2 * pad, ldc = d.n + 3 * pad;
                            auto ha = rnd(shift + a_rows * lda, 10), hb = rnd(shift + b_rows * ldb, 11),
                                 hc = rnd(shift + d.m * ldc, 12);
                            Pair a = both(ha), b = both(hb), c = both(hc);
                            on_both([&](Backend& be, bool g) {
                                be.ops<float>().gemm(c.at<float>(g) + shift, ldc, a.at<float>(g) + shift, lda,
                                                     b.at<float>(g) + shift, ldb, d.m, d.n, d.k, ta, tb, beta);
                            });
                            std::vector<double> want, bound;
                            reference_gemm(&want, &bound, hc, ldc, ha, lda, hb, ldb, d.m, d.n, d.k, ta, tb, beta,
                                           shift);
                            const std::string what = "gemm " + std::to_string(d.m) + "x" + std::to_string(d.n) + "x" +
                                                     std::to_string(d.k) + (ta ? " T" : " N") + (tb ? "T" : "N") +
                                                     " beta " + std::to_string(int(beta)) + " pad " +
                                                     std::to_string(pad) + " shift " + std::to_string(shift);
                            for (bool on_gpu : {false, true}) {
                                const auto got = download<float>(on_gpu ? c.g : c.c, c.n);
                                double worst = 0;
                                int64_t where = -1;
                                for (size_t i = 0; i < got.size(); ++i) {
                                    const double err = std::fabs(double(got[i]) - want[i]);
                                    // Padding columns of C (j >= n) and the elements before it (a pointer `shift`
                                    // floats into its buffer, not 256-byte aligned) keep their values exactly.
                                    if (err > bound[i] && (worst == 0 || err / std::max(bound[i], 1e-300) > worst)) {
                                        worst = err / std::max(bound[i], 1e-300);
                                        where = int64_t(i);
                                    }
                                }
                                std::printf("%-44s %s: %s\n", what.c_str(), on_gpu ? "cuda" : "cpu",
                                            where < 0 ? "within the bound" : "OUTSIDE the bound");
                                EXPECT_LT(where, 0) << what << (on_gpu ? " on cuda" : " on cpu") << ": element "
                                                    << where << " got " << got[size_t(std::max<int64_t>(where, 0))]
                                                    << " want " << want[size_t(std::max<int64_t>(where, 0))];
                            }
                            expect_pair<float>(c, 1e-5, what + " cuda vs cpu");
                        }
}

TEST(CudaBackend, LinearForwardAndBackwardEqualTheCpuBackend) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    const int64_t n = 45, in = 72, out = 33;
    Pair x = both(rnd(n * in, 20)), w = both(rnd(out * in, 21)), dy = both(rnd(n * out, 22));
    Pair y = zeros<float>(n * out), dx = both(rnd(n * in, 23)), dw = both(rnd(out * in, 24));
    on_both([&](Backend& be, bool g) {
        const auto& o = be.ops<float>();
        o.linear_forward(y.at<float>(g), x.at<float>(g), w.at<float>(g), n, in, out);
        o.linear_backward(dx.at<float>(g), dw.at<float>(g), dy.at<float>(g), x.at<float>(g), w.at<float>(g), n, in,
                          out);
    });
    expect_pair<float>(y, 1e-5, "linear_forward");
    expect_pair<float>(dx, 1e-5, "linear_backward dx");
    expect_pair<float>(dw, 1e-5, "linear_backward dw");
}

// The native BF16 and FP8 products (the CPU offers none: its recipes emulate) against the CPU's FP32 product, within
// the format's rounding: 2e-2 for BF16, 1.5e-1 for FP8 (E4M3 forward, E5M2 gradients).
TEST(CudaBackend, NativeLowPrecisionProductsAreCloseToTheFp32ProductOfTheCpu) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    EXPECT_EQ(cpu().make_native_matmul({"bf16"}), nullptr);
    const int64_t n = 256, in = 384, out = 128;
    for (auto [recipe, tol] :
         {std::pair<const char*, double>{"bf16", 2e-2}, {"fp8-blockwise", 1.5e-1}, {"fp8-tensorwise", 1.5e-1}}) {
        backend::NativeMatmulSpec spec;
        spec.recipe = recipe;
        std::unique_ptr<backend::NativeMatmul> mm = gpu().make_native_matmul(spec);
        ASSERT_NE(mm, nullptr) << recipe;
        Pair x = both(rnd(n * in, 30)), w = both(rnd(out * in, 31, 0.05)), dy = both(rnd(n * out, 32));
        Pair y = zeros<float>(n * out), dx = zeros<float>(n * in), dw = zeros<float>(out * in);
        const auto& o = cpu().ops<float>();
        o.linear_forward(y.c.data<float>(), x.c.data<float>(), w.c.data<float>(), n, in, out);
        o.linear_backward(dx.c.data<float>(), dw.c.data<float>(), dy.c.data<float>(), x.c.data<float>(),
                          w.c.data<float>(), n, in, out);
        mm->forward(y.g.data<float>(), x.g.data<float>(), w.g.data<float>(), n, in, out);
        mm->backward(dx.g.data<float>(), dw.g.data<float>(), dy.g.data<float>(), x.g.data<float>(), w.g.data<float>(),
                     n, in, out);
        gpu().synchronize();
        expect_pair<float>(y, tol, std::string("native ") + recipe + " forward");
        expect_pair<float>(dx, tol, std::string("native ") + recipe + " dx");
        expect_pair<float>(dw, tol, std::string("native ") + recipe + " dw");
    }
}

// ---- Layers ----

TEST(CudaBackend, EmbeddingRmsNormRopeSwigluAndGateEqualTheCpuBackend) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    for (Dims s : kDims) {
        const int64_t n = s.n, d = s.d, v = 13;
        std::vector<int32_t> tok(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) tok[size_t(i)] = int32_t((i * 7 + i / 3) % v);
        Pair tokens = both(tok), wte = both(rnd(v * d, 40)), emb = zeros<float>(n * d), dwte = both(rnd(v * d, 41));
        Pair x = both(rnd(n * d, 42)), w = both(rnd(d, 43)), dout = both(rnd(n * d, 44));
        Pair norm = zeros<float>(n * d), rstd = zeros<float>(n), dx = both(rnd(n * d, 45)), dw = both(rnd(d, 46));
        // SwiGLU of f = d columns, gate with t = n rows of width d
        Pair gu = both(rnd(n * 2 * d, 47, 2.0)), act = zeros<float>(n * d), dgu = both(rnd(n * 2 * d, 48));
        Pair gate = both(rnd(n, 49, 2.0)), gated = zeros<float>(n * d), dshared = zeros<float>(n * d),
             dlogit = zeros<float>(n);
        on_both([&](Backend& be, bool g) {
            const auto& o = be.ops<float>();
            o.embedding_forward(emb.at<float>(g), tokens.at<int32_t>(g), wte.at<float>(g), n, d);
            o.embedding_backward(dwte.at<float>(g), dout.at<float>(g), tokens.at<int32_t>(g), n, d);
            o.rmsnorm_forward(norm.at<float>(g), rstd.at<float>(g), x.at<float>(g), w.at<float>(g), n, d, 1e-6);
            o.rmsnorm_backward(dx.at<float>(g), dw.at<float>(g), dout.at<float>(g), x.at<float>(g), w.at<float>(g),
                               rstd.at<float>(g), n, d);
            o.swiglu_forward(act.at<float>(g), gu.at<float>(g), n, d);
            o.swiglu_backward(dgu.at<float>(g), dout.at<float>(g), gu.at<float>(g), n, d);
            o.sigmoid_gate_forward(gated.at<float>(g), gate.at<float>(g), x.at<float>(g), n, d);
            o.sigmoid_gate_backward(dshared.at<float>(g), dlogit.at<float>(g), dout.at<float>(g), x.at<float>(g),
                                    gate.at<float>(g), n, d);
        });
        expect_pair<float>(emb, kExact, dims("embedding_forward", n, d));
        expect_pair<float>(dwte, kExact, dims("embedding_backward", n, d));
        expect_pair<float>(norm, kOrderTol, dims("rmsnorm_forward out", n, d));
        expect_pair<float>(rstd, kOrderTol, dims("rmsnorm_forward rstd", n, d));
        expect_pair<float>(dx, kOrderTol, dims("rmsnorm_backward dx", n, d));
        expect_pair<float>(dw, kOrderTol, dims("rmsnorm_backward dw", n, d));
        expect_pair<float>(act, kExpTol, dims("swiglu_forward", n, d));
        expect_pair<float>(dgu, kExpTol, dims("swiglu_backward", n, d));
        expect_pair<float>(gate, kExpTol, dims("sigmoid_gate_forward gate", n, d));
        expect_pair<float>(gated, kExpTol, dims("sigmoid_gate_forward out", n, d));
        expect_pair<float>(dshared, kExpTol, dims("sigmoid_gate_backward d_shared", n, d));
        expect_pair<float>(dlogit, kOrderTol, dims("sigmoid_gate_backward d_logit", n, d));
    }
}

TEST(CudaBackend, RopeForwardAndInverseEqualTheCpuBackendOnStridedRows) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    const int64_t n = 37, heads = 3, hd = 16, max_pos = 50, stride = heads * hd + 8;
    std::vector<float> cos_h(size_t(max_pos * hd / 2)), sin_h(cos_h.size());
    for (int64_t p = 0; p < max_pos; ++p)
        for (int64_t i = 0; i < hd / 2; ++i) {
            const double angle = double(p) * std::pow(500.0, -2.0 * double(i) / double(hd));
            cos_h[size_t(p * hd / 2 + i)] = float(std::cos(angle));
            sin_h[size_t(p * hd / 2 + i)] = float(std::sin(angle));
        }
    std::vector<int32_t> pos_h(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) pos_h[size_t(i)] = int32_t((i * 11) % max_pos);
    Pair cos_t = both(cos_h), sin_t = both(sin_h), pos = both(pos_h);
    for (bool inverse : {false, true}) {
        Pair x = both(rnd(n * stride, 50));
        on_both([&](Backend& be, bool g) {
            be.ops<float>().rope_apply(x.at<float>(g), stride, hd, pos.at<int32_t>(g), cos_t.at<float>(g),
                                       sin_t.at<float>(g), n, heads, hd, inverse);
        });
        expect_pair<float>(x, kFmaTol, inverse ? "rope_apply inverse" : "rope_apply");
    }
}

// Partial rotary over strided heads and multi-head latent attention's rope parts: at an offset inside each query
// head, and the one key rope row shared by all heads (heads = 1).
TEST(CudaBackend, RopeOnPartialAndOffsetRopePartsEqualsTheCpuBackend) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    struct Layout {
        const char* name;
        int64_t n, row_stride, offset, head_stride, heads, rot_dim;
    };
    const int64_t max_pos = 50;
    for (const Layout& l : {Layout{"partial rotary", 37, 3 * 16 + 8, 0, 16, 3, 4},
                            Layout{"mla query rope part", 41, 4 * 24, 16, 24, 4, 8},
                            Layout{"mla shared key rope row", 29, 32 + 8, 32, 8, 1, 8}}) {
        const int64_t half = l.rot_dim / 2;
        std::vector<int32_t> pos_h(static_cast<size_t>(l.n));
        for (int64_t i = 0; i < l.n; ++i) pos_h[size_t(i)] = int32_t((i * 11) % max_pos);
        Pair cos_t = both(rnd(max_pos * half, 51)), sin_t = both(rnd(max_pos * half, 52)), pos = both(pos_h);
        for (bool inverse : {false, true}) {
            Pair x = both(rnd(l.n * l.row_stride, 53));
            on_both([&](Backend& be, bool g) {
                be.ops<float>().rope_apply(x.at<float>(g) + l.offset, l.row_stride, l.head_stride, pos.at<int32_t>(g),
                                           cos_t.at<float>(g), sin_t.at<float>(g), l.n, l.heads, l.rot_dim, inverse);
            });
            expect_pair<float>(x, kFmaTol, std::string("rope_apply ") + l.name + (inverse ? " inverse" : ""));
        }
    }
}

// Broadcast copies (src_repeat > 1) and grouped adds (dst_repeat > 1) between buffers of different leading dims,
// with a ragged last group.
TEST(CudaBackend, StridedCopyAndAddEqualTheCpuBackendBitForBit) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    struct Case {
        int64_t rows, cols, ld_small, ld_big, repeat;
    };
    for (const Case& c : {Case{3, 7, 9, 8, 1}, Case{77, 30, 31, 45, 4}, Case{130, 64, 64, 100, 16}}) {
        const std::string shape = dims("", c.rows, c.cols) + " repeat " + std::to_string(c.repeat);
        const int64_t groups = (c.rows + c.repeat - 1) / c.repeat;
        Pair src = both(rnd(groups * c.ld_small, 54)), dst = both(rnd(c.rows * c.ld_big, 55));
        Pair add_src = both(rnd(c.rows * c.ld_big, 56)), add_dst = both(rnd(groups * c.ld_small, 57));
        on_both([&](Backend& be, bool g) {
            const auto& o = be.ops<float>();
            o.strided_copy(dst.at<float>(g), c.ld_big, src.at<float>(g), c.ld_small, c.rows, c.cols, c.repeat);
            o.strided_add(add_dst.at<float>(g), c.ld_small, add_src.at<float>(g), c.ld_big, c.rows, c.cols, c.repeat);
        });
        expect_pair<float>(dst, kExact, "strided_copy" + shape);
        expect_pair<float>(add_dst, kExact, "strided_add" + shape);
    }
}

TEST(CudaBackend, CrossEntropyEqualsTheCpuBackendWithIgnoredTargets) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    for (Dims s : {Dims{5, 11}, Dims{77, 300}, Dims{33, 5000}}) {
        const int64_t n = s.n, v = s.d;
        std::vector<int32_t> tgt(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) tgt[size_t(i)] = i % 4 == 1 ? -100 : int32_t((i * 13) % v);
        Pair logits = both(rnd(n * v, 60, 3.0)), targets = both(tgt), loss = zeros<float>(n),
             dlogits = both(rnd(n * v, 61));
        double sums[2] = {0, 0};
        on_both([&](Backend& be, bool g) {
            const auto& o = be.ops<float>();
            sums[g] =
                o.cross_entropy_forward(loss.at<float>(g), logits.at<float>(g), targets.at<int32_t>(g), n, v, -100);
            o.cross_entropy_backward(dlogits.at<float>(g), logits.at<float>(g), targets.at<int32_t>(g), 0.5f, n, v,
                                     -100);
        });
        expect_scalar(sums[1], sums[0], 1e-5, dims("cross_entropy_forward (host sum)", n, v));
        expect_pair<float>(loss, kExpTol, dims("cross_entropy_forward loss_N", n, v));
        expect_pair<float>(dlogits, kExpTol, dims("cross_entropy_backward", n, v));
    }
}

// Query i of each window attends keys [start_BS[i], i]: documents start at 0, 10 and 25 of every window.
std::vector<int32_t> document_starts(int64_t b, int64_t s) {
    std::vector<int32_t> out(size_t(b * s));
    for (int64_t i = 0; i < b * s; ++i) {
        const int64_t p = i % s;
        out[size_t(i)] = int32_t(p >= 25 ? 25 : p >= 10 ? 10 : 0);
    }
    return out;
}

// Attention of dims (queries/keys hd_qk wide, values hd_v wide) on both backends, causal and document masked.
void expect_attention_within_bf16(const backend::AttentionDims& d, const std::string& name) {
    const int64_t n = d.b * d.s;
    const int64_t nq = n * d.hq * d.hd_qk, nk = n * d.hkv * d.hd_qk, nv = n * d.hkv * d.hd_v, no = n * d.hq * d.hd_v;
    EXPECT_EQ(gpu().ops<float>().attention_saved_numel(d.b, d.s, d.hq), d.b * d.hq * d.s);
    for (bool masked : {false, true}) {
        const std::string tag = name + (masked ? " (documents)" : " (causal)");
        Pair q = both(rnd(nq, 70)), k = both(rnd(nk, 71)), v = both(rnd(nv, 72)), dout = both(rnd(no, 73));
        Pair start = both(document_starts(d.b, d.s)), out = zeros<float>(no);
        Pair dq = both(rnd(nq, 74)), dk = both(rnd(nk, 75)), dv = both(rnd(nv, 76));
        Tensor saved_c = Tensor::zeros({cpu().ops<float>().attention_saved_numel(d.b, d.s, d.hq)}, DType::kF32);
        Tensor saved_g =
            Tensor::zeros({gpu().ops<float>().attention_saved_numel(d.b, d.s, d.hq)}, DType::kF32, gpu().allocator());
        on_both([&](Backend& be, bool g) {
            const auto& o = be.ops<float>();
            float* saved = (g ? saved_g : saved_c).data<float>();
            const int32_t* st = masked ? start.at<int32_t>(g) : nullptr;
            o.attention_forward(out.at<float>(g), saved, q.at<float>(g), k.at<float>(g), v.at<float>(g), d, st);
            o.attention_backward(dq.at<float>(g), dk.at<float>(g), dv.at<float>(g), dout.at<float>(g), saved,
                                 out.at<float>(g), q.at<float>(g), k.at<float>(g), v.at<float>(g), d, st);
        });
        expect_pair<float>(out, kBf16AttentionTol, tag + " out");
        expect_pair<float>(dq, kBf16AttentionTol, tag + " dq");
        expect_pair<float>(dk, kBf16AttentionTol, tag + " dk");
        expect_pair<float>(dv, kBf16AttentionTol, tag + " dv");
    }
}

TEST(CudaBackend, AttentionWithAndWithoutDocumentMaskingIsWithinBf16OfTheCpuBackend) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    expect_attention_within_bf16({2, 37, 4, 2, 64, 64, 1.0 / std::sqrt(64.0)}, "attention");
}

TEST(CudaBackend, LatentAttentionWithWiderQueryKeyThanValueHeadsIsWithinBf16OfTheCpuBackend) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    // DeepSeek-V3's head dims with a YaRN-like scale, and a tiny model's.
    expect_attention_within_bf16({2, 37, 4, 4, 192, 128, 0.9 / std::sqrt(192.0)}, "mla attention 192/128");
    expect_attention_within_bf16({2, 37, 4, 4, 24, 16, 0.3}, "mla attention 24/16");
}

// ---- Router ----

TEST(CudaBackend, RouterStepsEqualTheCpuBackendForSoftmaxAndSigmoid) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    const int64_t t = 36, e = 8, k = 2, groups = 3;
    for (ScoreFunc func : {ScoreFunc::kSoftmax, ScoreFunc::kSigmoid}) {
        const std::string f = func == ScoreFunc::kSoftmax ? "softmax " : "sigmoid ";
        Pair logits = both(rnd(t * e, 80, 2.0)), scores = zeros<float>(t * e), lse = zeros<float>(t);
        on_both([&](Backend& be, bool g) {
            be.ops<float>().router_scores_forward(scores.at<float>(g), lse.at<float>(g), logits.at<float>(g), func, t,
                                                  e);
        });
        expect_pair<float>(scores, kOrderTol, f + "router_scores_forward scores");
        expect_pair<float>(lse, kExpTol, f + "router_scores_forward lse");
        // The later steps get the CPU's scores on both sides, so each is judged by itself.
        const std::vector<float> scores_h = download<float>(scores.c, scores.n);
        const std::vector<float> lse_h = download<float>(lse.c, lse.n);
        Pair sc = both(scores_h), ls = both(lse_h), bias = both(rnd(e, 81, 0.01));
        Pair selected = zeros<int32_t>(t * k), keys = zeros<double>(t * e), weight = zeros<float>(t * k);
        Pair score_sum = zeros<double>(t);
        double aux[2] = {0, 0}, z[2] = {0, 0};
        on_both([&](Backend& be, bool g) {
            const auto& o = be.ops<float>();
            o.router_select_forward(selected.at<int32_t>(g), keys.at<double>(g), sc.at<float>(g), bias.at<float>(g), t,
                                    e, k, 1, 1, backend::GroupScore::kTop2Sum);
        });
        expect_pair<int32_t>(selected, kExact, f + "router_select_forward");
        const std::vector<int32_t> sel_h = download<int32_t>(selected.c, selected.n);
        Pair sel = both(sel_h);
        Pair d_weight = both(rnd(t * k, 82)), d_scores = both(rnd(t * e, 83)), d_aux = zeros<float>(groups * e);
        Pair d_logits = zeros<float>(t * e);
        on_both([&](Backend& be, bool g) {
            const auto& o = be.ops<float>();
            o.router_weights_forward(weight.at<float>(g), sc.at<float>(g), sel.at<int32_t>(g), true, 2.5, t, e, k);
            aux[g] = o.router_aux_loss_forward(func == ScoreFunc::kSigmoid ? score_sum.at<double>(g) : nullptr,
                                               sc.at<float>(g), sel.at<int32_t>(g), func, 0.01, groups, t, e, k);
            z[g] = o.router_z_loss_forward(ls.at<float>(g), 0.001, t);
            o.router_weights_backward(d_scores.at<float>(g), d_weight.at<float>(g), sc.at<float>(g), sel.at<int32_t>(g),
                                      true, 2.5, t, e, k);
            o.router_aux_loss_backward(d_scores.at<float>(g), d_aux.at<float>(g), sc.at<float>(g), sel.at<int32_t>(g),
                                       func, 0.01, 0.5f, groups, t, e, k);
        });
        expect_pair<float>(weight, kExact, f + "router_weights_forward");
        expect_scalar(aux[1], aux[0], 1e-13, f + "router_aux_loss_forward");
        expect_scalar(z[1], z[0], 1e-13, f + "router_z_loss_forward");
        if (func == ScoreFunc::kSigmoid) expect_pair<double>(score_sum, 1e-15, f + "aux score_sum_T");
        expect_pair<float>(d_scores, kExact, f + "router weights + aux backward");
        expect_pair<float>(d_aux, kExact, f + "router_aux_loss_backward d_aux_GE");
        const std::vector<float> ds_h = download<float>(d_scores.c, d_scores.n);
        Pair ds = both(ds_h);
        on_both([&](Backend& be, bool g) {
            const auto& o = be.ops<float>();
            o.router_scores_backward(d_logits.at<float>(g), ds.at<float>(g), sc.at<float>(g), func, t, e);
            o.router_z_loss_backward(d_logits.at<float>(g), logits.at<float>(g), ls.at<float>(g), 0.001, 0.5f, t, e);
        });
        expect_pair<float>(d_logits, kFmaTol, f + "router scores + z-loss backward");
    }
}

// ---- Backend: memory, tokens, routing integers, permutation ----

TEST(CudaBackend, ByteCopiesRoundTripExactly) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    Backend& be = gpu();
    const std::vector<float> host = rnd(1001, 90);
    Tensor a = Tensor::empty({1001}, DType::kF32, be.allocator()),
           b = Tensor::empty({1001}, DType::kF32, be.allocator());
    be.copy_to_device(a.raw_data(), host.data(), host.size() * sizeof(float));
    be.copy(b.raw_data(), a.raw_data(), host.size() * sizeof(float));
    std::vector<float> back(host.size(), 0.0f);
    be.copy_to_host(back.data(), b.raw_data(), back.size() * sizeof(float));
    be.synchronize();
    EXPECT_EQ(std::memcmp(back.data(), host.data(), host.size() * sizeof(float)), 0);
}

TEST(CudaBackend, PrepareTokensEqualsTheCpuBackendAndRefusesTheSameBadToken) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    const int64_t b = 3, s = 17, n = b * s, v = 29;
    std::vector<int32_t> tok(static_cast<size_t>(n)), tgt(static_cast<size_t>(n)), doc(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        tok[size_t(i)] = int32_t((i * 5) % v);
        tgt[size_t(i)] = i % 6 == 2 ? -100 : int32_t((i * 3 + 1) % v);
        doc[size_t(i)] = int32_t(i % s >= 9 ? 9 : 0);
    }
    for (bool with_docs : {false, true}) {
        Pair tokens = zeros<int32_t>(n), targets = zeros<int32_t>(n), pos = zeros<int32_t>(n),
             start = zeros<int32_t>(n);
        int64_t valid[2] = {0, 0};
        on_both([&](Backend& be, bool g) {
            valid[g] = be.prepare_tokens(tokens.at<int32_t>(g), targets.at<int32_t>(g), pos.at<int32_t>(g),
                                         start.at<int32_t>(g), tok.data(), tgt.data(), with_docs ? doc.data() : nullptr,
                                         n, s, v, -100);
        });
        EXPECT_EQ(valid[1], valid[0]);
        expect_pair<int32_t>(tokens, kExact, "prepare_tokens tokens");
        expect_pair<int32_t>(targets, kExact, "prepare_tokens targets");
        expect_pair<int32_t>(pos, kExact, with_docs ? "prepare_tokens pos (documents)" : "prepare_tokens pos");
        expect_pair<int32_t>(start, kExact, with_docs ? "prepare_tokens start (documents)" : "prepare_tokens start");
    }
    std::vector<int32_t> bad = tok;
    bad[size_t(20)] = int32_t(v);
    Pair scratch = zeros<int32_t>(4 * n);
    for (bool g : {false, true}) {
        Backend& be = g ? gpu() : cpu();
        int32_t* p = scratch.at<int32_t>(g);
        EXPECT_THROW(be.prepare_tokens(p, p + n, p + 2 * n, p + 3 * n, bad.data(), tgt.data(), nullptr, n, s, v, -100),
                     Error)
            << (g ? "cuda" : "cpu");
    }
}

TEST(CudaBackend, CapacityBiasUpdatePermutationAndCombineEqualTheCpuBackend) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    const int64_t t = 53, k = 2, e = 8, d = 70, capacity = 11;
    std::vector<int32_t> sel_h(size_t(t * k));
    for (int64_t i = 0; i < t; ++i) {
        sel_h[size_t(i * k)] = int32_t((i * 3) % e);
        sel_h[size_t(i * k + 1)] = int32_t((i * 3 + 1 + i % 5) % e);
    }
    Pair sel = both(sel_h), expert = zeros<int32_t>(t * k);
    std::vector<int64_t> kept[2], selected[2];
    int64_t dropped[2] = {0, 0};
    on_both([&](Backend& be, bool g) {
        kept[g].assign(size_t(e), -1);
        selected[g].assign(size_t(e), -1);
        dropped[g] = be.router_capacity(expert.at<int32_t>(g), kept[g].data(), selected[g].data(), sel.at<int32_t>(g),
                                        capacity, t, k, e);
    });
    EXPECT_EQ(dropped[1], dropped[0]);
    EXPECT_GT(dropped[0], 0) << "the capacity drops some assignments";
    EXPECT_EQ(kept[1], kept[0]);
    EXPECT_EQ(selected[1], selected[0]);
    expect_pair<int32_t>(expert, kExact, "router_capacity expert_TK");

    Pair bias = both(rnd(e, 100, 0.01));
    on_both([&](Backend& be, bool g) { be.router_bias_update(bias.at<float>(g), selected[0].data(), 1e-3, e); });
    expect_pair<float>(bias, kExact, "router_bias_update");

    Pair row_of = zeros<int32_t>(t * k), token_of = zeros<int32_t>(t * k);
    std::vector<int64_t> per_expert[2], offset[2];
    int64_t rows[2] = {0, 0};
    on_both([&](Backend& be, bool g) {
        per_expert[g].assign(size_t(e), -1);
        offset[g].assign(size_t(e + 1), -1);
        rows[g] = be.build_permutation(row_of.at<int32_t>(g), token_of.at<int32_t>(g), per_expert[g].data(),
                                       offset[g].data(), expert.at<int32_t>(g), t, k, e);
    });
    EXPECT_EQ(rows[1], rows[0]);
    EXPECT_EQ(rows[0], t * k - dropped[0]);
    EXPECT_EQ(per_expert[1], per_expert[0]);
    EXPECT_EQ(offset[1], offset[0]);
    expect_pair<int32_t>(row_of, kExact, "build_permutation row_of_TK");
    {
        Pair tok_rows{token_of.c, token_of.g, rows[0]};
        expect_pair<int32_t>(tok_rows, kExact, "build_permutation token_of_row_R");
    }

    const int64_t r = rows[0];
    Pair x = both(rnd(t * d, 101)), routed = zeros<float>(r * d), drows = both(rnd(r * d, 102)),
         dx = both(rnd(t * d, 103));
    Pair weight = both(rnd(t * k, 104)), out = both(rnd(t * d, 105)), dout = both(rnd(t * d, 106)),
         dweight = both(rnd(t * k, 107)), drows2 = both(rnd(r * d, 108));
    on_both([&](Backend& be, bool g) {
        const auto& o = be.ops<float>();
        o.permute_rows(routed.at<float>(g), x.at<float>(g), token_of.at<int32_t>(g), r, d);
        o.permute_rows_backward(dx.at<float>(g), drows.at<float>(g), row_of.at<int32_t>(g), t, k, d);
        o.unpermute_combine(out.at<float>(g), drows.at<float>(g), weight.at<float>(g), row_of.at<int32_t>(g), t, k, d);
        o.unpermute_combine_backward(drows2.at<float>(g), dweight.at<float>(g), dout.at<float>(g), drows.at<float>(g),
                                     weight.at<float>(g), row_of.at<int32_t>(g), t, k, d);
    });
    expect_pair<float>(routed, kExact, "permute_rows");
    expect_pair<float>(dx, kExact, "permute_rows_backward");
    expect_pair<float>(out, kExact, "unpermute_combine");
    expect_pair<float>(drows2, kExact, "unpermute_combine_backward drows");
    expect_pair<float>(dweight, kOrderTol, "unpermute_combine_backward dweight");
}

// ---- Backend: precision and optimizer ----

TEST(CudaBackend, QuantizersAndHostValuedReductionsEqualTheCpuBackend) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    const int64_t rows = 131, cols = 300, tile = 128, n = rows * cols;
    const int64_t row_tiles = (cols + tile - 1) / tile;
    std::vector<float> in_h = rnd(n, 110, 3.0);
    in_h[size_t(77)] = 0.0f;
    in_h[size_t(500)] = 1e-40f;
    Pair in = both(in_h);
    float amax[2] = {0, 0};
    uint64_t fp[2] = {0, 0};
    double sq[2] = {0, 0};
    on_both([&](Backend& be, bool g) {
        amax[g] = be.amax(in.at<float>(g), n);
        fp[g] = be.fingerprint(in.at<float>(g), n);
        sq[g] = be.sum_squares(in.at<float>(g), n);
    });
    EXPECT_EQ(amax[1], amax[0]) << "amax";
    EXPECT_EQ(fp[1], fp[0]) << "fingerprint";
    expect_scalar(sq[1], sq[0], 1e-12, "sum_squares");
    for (auto fmt : {backend::Fp8Format::kE4M3, backend::Fp8Format::kE5M2})
        for (bool p2 : {false, true}) {
            const std::string f =
                std::string(fmt == backend::Fp8Format::kE4M3 ? "e4m3" : "e5m2") + (p2 ? " pow2 " : " ");
            Pair fq = zeros<float>(n), rowt = zeros<float>(n), colt = zeros<float>(n), blocks = zeros<float>(n);
            Pair codes = zeros<uint8_t>(n), scales = zeros<float>(rows * row_tiles), deq = zeros<float>(n);
            on_both([&](Backend& be, bool g) {
                be.fake_quant(fq.at<float>(g), in.at<float>(g), n, fmt, 448.0f / amax[0]);
                be.fake_quant_row_tiles(rowt.at<float>(g), in.at<float>(g), rows, cols, tile, fmt, p2);
                be.fake_quant_col_tiles(colt.at<float>(g), in.at<float>(g), rows, cols, tile, fmt, p2);
                be.fake_quant_blocks(blocks.at<float>(g), in.at<float>(g), rows, cols, tile, fmt, p2);
                be.quantize_row_tiles(codes.at<uint8_t>(g), scales.at<float>(g), in.at<float>(g), rows, cols, tile, fmt,
                                      p2);
                be.dequantize_row_tiles(deq.at<float>(g), codes.at<uint8_t>(g), scales.at<float>(g), rows, cols, tile,
                                        fmt);
            });
            expect_pair<float>(fq, kExact, f + "fake_quant");
            expect_pair<float>(rowt, kExact, f + "fake_quant_row_tiles");
            expect_pair<float>(colt, kExact, f + "fake_quant_col_tiles");
            expect_pair<float>(blocks, kExact, f + "fake_quant_blocks");
            expect_pair<uint8_t>(codes, kExact, f + "quantize_row_tiles codes");
            expect_pair<float>(scales, kExact, f + "quantize_row_tiles scales");
            expect_pair<float>(deq, kExact, f + "dequantize_row_tiles");
        }
    Pair bf = zeros<float>(n), scaled = both(in_h);
    on_both([&](Backend& be, bool g) {
        be.round_bf16(bf.at<float>(g), in.at<float>(g), n);
        be.scale(scaled.at<float>(g), n, 0.37f);
    });
    expect_pair<float>(bf, kExact, "round_bf16");
    expect_pair<float>(scaled, kExact, "scale");
}

TEST(CudaBackend, AdamwWithFp32AndBf16MomentsEqualsTheCpuBackendOverThreeSteps) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    const int64_t n = 1037;
    for (bool bf16 : {false, true}) {
        Pair value = both(rnd(n, 120)), m = bf16 ? zeros<uint16_t>(n) : zeros<float>(n),
             v = bf16 ? zeros<uint16_t>(n) : zeros<float>(n);
        for (int step = 1; step <= 3; ++step) {
            Pair grad = both(rnd(n, 121 + uint64_t(step)));
            const float b1 = 0.9f, b2 = 0.95f, lr = 1e-3f;
            const float bc1 = 1.0f - std::pow(b1, float(step)), bc2 = 1.0f - std::pow(b2, float(step));
            on_both([&](Backend& be, bool g) {
                be.adamw_update(value.at<float>(g), grad.at<float>(g), (g ? m.g : m.c).raw_data(),
                                (g ? v.g : v.c).raw_data(), bf16, n, b1, b2, lr / bc1, 1.0f / std::sqrt(bc2), 1e-8f,
                                1.0f - lr * 0.1f);
            });
        }
        expect_pair<float>(value, kExact, bf16 ? "adamw value (bf16 moments)" : "adamw value");
        if (bf16) {
            expect_pair<uint16_t>(m, kExact, "adamw m (bf16)");
            expect_pair<uint16_t>(v, kExact, "adamw v (bf16)");
        } else {
            expect_pair<float>(m, kExact, "adamw m");
            expect_pair<float>(v, kExact, "adamw v");
        }
    }
}

// ---- A tiny MoE transformer, step by step ----

model::ModelConfig tiny_gpu_config() {
    model::ModelConfig c;
    c.vocab_size = 50;
    c.d_model = 64;
    c.n_layers = 3;
    c.dense_layers = 1;
    c.n_heads = 4;
    c.n_kv_heads = 2;  // head dim 16: cuDNN's attention wants a multiple of 8
    c.d_ff = 96;
    c.max_seq_len = 16;
    c.init_std = 0.2;
    c.qk_norm = true;
    c.moe.n_experts = 4;
    c.moe.top_k = 2;
    c.moe.d_expert = 48;
    c.moe.n_shared_experts = 1;
    c.moe.aux_loss = "seq";
    c.moe.aux_loss_coef = 0.05;
    c.moe.z_loss_coef = 0.01;
    return c;
}

struct StepResult {
    model::ForwardResult fwd;
    std::vector<std::string> names;
    std::vector<std::vector<float>> grads;  // per parameter, on the host
    std::vector<float> flat;
};

StepResult one_step(Backend& be) {
    const model::ModelConfig cfg = tiny_gpu_config();
    model::Transformer<float> net(cfg, {}, true, be);
    net.init(31);
    const int64_t b = 2, s = 16, n = b * s;
    std::vector<int32_t> tokens(static_cast<size_t>(n)), targets(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        tokens[size_t(i)] = int32_t((i * 7 + 3) % cfg.vocab_size);
        targets[size_t(i)] = i == 4 ? model::kIgnoreIndex : int32_t((i * 5 + 1) % cfg.vocab_size);
    }
    StepResult r;
    r.fwd = net.forward(tokens.data(), targets.data(), b, s);
    net.params().zero_grad();
    net.backward(1.0f / float(r.fwd.num_valid), 0.5f);
    be.synchronize();
    for (model::Param* p : net.params().params()) {
        r.names.push_back(p->name);
        r.grads.push_back(download<float>(p->grad, p->grad.numel()));
    }
    Tensor& flat = net.params().flat_grads();
    r.flat = download<float>(flat, flat.numel());
    return r;
}

TEST(CudaBackend, TinyMoeTransformerLossAndEveryGradientAreCloseToTheCpuAndRepeatBitwise) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    const StepResult want = one_step(cpu());
    const StepResult got = one_step(gpu());
    expect_scalar(got.fwd.ce_sum, want.fwd.ce_sum, 5e-3, "tiny model ce_sum");
    EXPECT_EQ(got.fwd.num_valid, want.fwd.num_valid);
    expect_scalar(got.fwd.aux_loss, want.fwd.aux_loss, 1e-2, "tiny model aux_loss");
    expect_scalar(got.fwd.z_loss, want.fwd.z_loss, 1e-2, "tiny model z_loss");
    ASSERT_EQ(got.names, want.names);
    // BF16 attention: each parameter's gradient within 3e-2 of its largest |want|.
    double worst = 0;
    std::string worst_name;
    for (size_t i = 0; i < want.grads.size(); ++i) {
        double scale = 0, err = 0;
        for (size_t j = 0; j < want.grads[i].size(); ++j) {
            scale = std::max(scale, std::fabs(double(want.grads[i][j])));
            err = std::max(err, std::fabs(double(got.grads[i][j]) - double(want.grads[i][j])));
        }
        const double rel = err / std::max(scale, 1e-30);
        if (rel >= worst) {
            worst = rel;
            worst_name = want.names[i];
        }
        expect_near(got.grads[i], want.grads[i], 3e-2, "grad " + want.names[i]);
    }
    std::printf("worst parameter gradient: %s, %.3e of its largest |want|\n", worst_name.c_str(), worst);

    const StepResult again = one_step(gpu());
    EXPECT_EQ(std::memcmp(&again.fwd.ce_sum, &got.fwd.ce_sum, sizeof(double)), 0) << "ce_sum repeats bitwise";
    EXPECT_EQ(std::memcmp(&again.fwd.aux_loss, &got.fwd.aux_loss, sizeof(double)), 0) << "aux_loss repeats bitwise";
    EXPECT_EQ(std::memcmp(&again.fwd.z_loss, &got.fwd.z_loss, sizeof(double)), 0) << "z_loss repeats bitwise";
    ASSERT_EQ(again.flat.size(), got.flat.size());
    EXPECT_EQ(std::memcmp(again.flat.data(), got.flat.data(), got.flat.size() * sizeof(float)), 0)
        << "the flat gradients repeat bitwise";
}

// ---- Training through the CLI ----

class CudaTraining : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = test::temp_dir(std::string("cuda_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
        ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
        ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    }
    void TearDown() override { fs::remove_all(dir_); }
    // 50 steps of the demo job on one rank, every step logged, writing into dir/name.
    std::string demo(const std::string& name, const std::string& device, const std::string& recipe) const {
        return std::string(FRUGAL_SOURCE_DIR) + "/configs/demo.yaml --set data.dir=" + test::test_corpus().string() +
               " --set run.out_dir=" + (dir_ / name).string() + " --set parallel.ep=1 --set run.device=" + device +
               " --set precision.recipe=" + recipe + " --set train.steps=50 --set run.log_every=1";
    }
    // The logged "loss" of every step, as written (text), so that two runs compare bit for bit.
    std::vector<std::string> losses(const std::string& name) const {
        std::ifstream f(dir_ / name / "metrics.jsonl");
        std::vector<std::string> out;
        std::string line;
        const std::regex re("\"loss\": ([-0-9.e+]+)");
        std::smatch m;
        while (std::getline(f, line))
            if (std::regex_search(line, m, re)) out.push_back(m[1]);
        return out;
    }
    fs::path dir_;
};

TEST_F(CudaTraining, FiftyDemoStepsInBf16AndFp8StayWithinTwoPercentOfTheCpuAndRepeatBitwise) {
    FRUGAL_REQUIRE_CUDA_BACKEND();
    ASSERT_FALSE(test::test_corpus().empty()) << "the fortunes package is missing";
    test::CliResult ref = test::run_frugal("train " + demo("cpu", "cpu", "fp32"));
    ASSERT_EQ(ref.code, 0) << ref.output;
    const std::vector<std::string> want = losses("cpu");
    ASSERT_EQ(want.size(), 50u);
    for (const char* recipe : {"bf16", "fp8-blockwise"}) {
        const std::string a = std::string("cuda_") + recipe, b = a + "_again";
        test::CliResult ra = test::run_frugal("train " + demo(a, "cuda", recipe));
        ASSERT_EQ(ra.code, 0) << ra.output;
        test::CliResult rb = test::run_frugal("train " + demo(b, "cuda", recipe));
        ASSERT_EQ(rb.code, 0) << rb.output;
        const std::vector<std::string> got = losses(a), again = losses(b);
        ASSERT_EQ(got.size(), 50u) << recipe;
        EXPECT_EQ(again, got) << recipe << ": two CUDA runs log the same losses";
        double worst = 0;
        size_t worst_step = 0;
        for (size_t i = 0; i < 50; ++i) {
            const double g = std::stod(got[i]), w = std::stod(want[i]);
            const double rel = std::fabs(g - w) / std::fabs(w);
            if (rel > worst) {
                worst = rel;
                worst_step = i + 1;
            }
        }
        const double final_rel = std::fabs(std::stod(got[49]) - std::stod(want[49])) / std::fabs(std::stod(want[49]));
        std::printf(
            "%s on cuda vs fp32 on cpu: worst step %zu at %.3e relative, final loss %s vs %s (%.3e); cuda %.1f "
            "s, cpu %.1f s\n",
            recipe, worst_step, worst, got[49].c_str(), want[49].c_str(), final_rel, ra.seconds, ref.seconds);
        EXPECT_LE(worst, 2e-2) << recipe << " at step " << worst_step;
        EXPECT_LE(final_rel, 1e-2) << recipe << " final loss";
    }
}

// Runs everywhere: without a GPU the refusal names run.device too (it asks for a device that is not there).
TEST_F(CudaTraining, CudaOnTwoRanksExitsTwoNamingRunDevice) {
    ASSERT_FALSE(test::test_corpus().empty()) << "the fortunes package is missing";
    test::CliResult r = test::run_frugal("launch -n 2 " + std::string(FRUGAL_SOURCE_DIR) +
                                         "/configs/demo.yaml --set data.dir=" + test::test_corpus().string() +
                                         " --set run.out_dir=" + (dir_ / "two").string() +
                                         " --set parallel.ep=2 --set run.device=cuda --set train.steps=2");
    EXPECT_EQ(r.code, 2) << r.output;
    test::expect_has(r.output, {"run.device"});
    std::string why;
    if (backend::backend_available(Device::kCuda, &why)) test::expect_has(r.output, {"2 ranks"});
}

}  // namespace
}  // namespace frugal
