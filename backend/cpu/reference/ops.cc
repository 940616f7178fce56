#include "backend/cpu/reference/ops.h"

#include <cmath>
#include <vector>

namespace frugal::backend::reference {

template <typename T>
void gemm(T* c, int64_t ldc, const T* a, int64_t lda, const T* b, int64_t ldb, int64_t m, int64_t n, int64_t k,
          bool trans_a, bool trans_b, T beta) {
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
            double acc = 0;
            for (int64_t p = 0; p < k; ++p) {
                double av = trans_a ? a[p * lda + i] : a[i * lda + p];
                double bv = trans_b ? b[j * ldb + p] : b[p * ldb + j];
                acc += av * bv;
            }
            T& dst = c[i * ldc + j];
            dst = beta == T(0) ? T(acc) : T(double(beta) * double(dst) + acc);
        }
}

// Probabilities of one (batch, head): p[i][j] for j <= i, straight from the definition.
template <typename T>
static std::vector<double> head_probs(const T* q, const T* k, int64_t bi, int64_t h, const AttentionDims& d,
                                      const int32_t* doc_BS) {
    const int64_t s = d.s, kvh = h / (d.hq / d.hkv), ldq = d.hq * d.hd_qk, ldk = d.hkv * d.hd_qk;
    std::vector<double> p(size_t(s * s), 0.0);
    // Key j is visible to query i when j <= i and, with document ids, both belong to the same document.
    auto visible = [&](int64_t i, int64_t j) {
        return j <= i && (!doc_BS || doc_BS[bi * s + i] == doc_BS[bi * s + j]);
    };
    for (int64_t i = 0; i < s; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
            if (!visible(i, j)) continue;
            double dot = 0;
            for (int64_t x = 0; x < d.hd_qk; ++x)
                dot +=
                    double(q[(bi * s + i) * ldq + h * d.hd_qk + x]) * double(k[(bi * s + j) * ldk + kvh * d.hd_qk + x]);
            p[i * s + j] = dot * d.scale;
            mx = std::max(mx, p[i * s + j]);
        }
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j)
            if (visible(i, j)) sum += (p[i * s + j] = std::exp(p[i * s + j] - mx));
        for (int64_t j = 0; j <= i; ++j) p[i * s + j] = visible(i, j) ? p[i * s + j] / sum : 0.0;
    }
    return p;
}

template <typename T>
void attention_forward(T* out, const T* q, const T* k, const T* v, const AttentionDims& d, const int32_t* doc_BS) {
    const int64_t s = d.s, ldv = d.hkv * d.hd_v, ldo = d.hq * d.hd_v;
    for (int64_t bi = 0; bi < d.b; ++bi)
        for (int64_t h = 0; h < d.hq; ++h) {
            const int64_t kvh = h / (d.hq / d.hkv);
            std::vector<double> p = head_probs(q, k, bi, h, d, doc_BS);
            for (int64_t i = 0; i < s; ++i)
                for (int64_t x = 0; x < d.hd_v; ++x) {
                    double acc = 0;
                    for (int64_t j = 0; j <= i; ++j)
                        acc += p[i * s + j] * double(v[(bi * s + j) * ldv + kvh * d.hd_v + x]);
                    out[(bi * s + i) * ldo + h * d.hd_v + x] = T(acc);
                }
        }
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const AttentionDims& d,
                        const int32_t* doc_BS) {
    const int64_t s = d.s;
    for (int64_t bi = 0; bi < d.b; ++bi)
        for (int64_t h = 0; h < d.hq; ++h) {
            const int64_t kvh = h / (d.hq / d.hkv);
            std::vector<double> p = head_probs(q, k, bi, h, d, doc_BS);
            auto Q = [&](int64_t i, int64_t x) -> int64_t { return (bi * s + i) * d.hq * d.hd_qk + h * d.hd_qk + x; };
            auto K = [&](int64_t j, int64_t x) -> int64_t {
                return (bi * s + j) * d.hkv * d.hd_qk + kvh * d.hd_qk + x;
            };
            auto O = [&](int64_t i, int64_t x) -> int64_t { return (bi * s + i) * d.hq * d.hd_v + h * d.hd_v + x; };
            auto V = [&](int64_t j, int64_t x) -> int64_t { return (bi * s + j) * d.hkv * d.hd_v + kvh * d.hd_v + x; };
            for (int64_t i = 0; i < s; ++i) {
                std::vector<double> dp(size_t(i + 1));
                double dot = 0;
                for (int64_t j = 0; j <= i; ++j) {
                    double g = 0;
                    for (int64_t x = 0; x < d.hd_v; ++x) g += double(dout[O(i, x)]) * double(v[V(j, x)]);
                    dp[j] = g;
                    dot += p[i * s + j] * g;
                }
                for (int64_t j = 0; j <= i; ++j) {
                    const double ds = p[i * s + j] * (dp[j] - dot) * d.scale;
                    for (int64_t x = 0; x < d.hd_v; ++x) dv[V(j, x)] += T(p[i * s + j] * double(dout[O(i, x)]));
                    for (int64_t x = 0; x < d.hd_qk; ++x) {
                        dq[Q(i, x)] += T(ds * double(k[K(j, x)]));
                        dk[K(j, x)] += T(ds * double(q[Q(i, x)]));
                    }
                }
            }
        }
}

template <typename T>
void rmsnorm_forward(T* out_ND, const T* x_ND, const T* w_D, int64_t n, int64_t d, double eps) {
    for (int64_t i = 0; i < n; ++i) {
        double ss = 0;
        for (int64_t j = 0; j < d; ++j) ss += double(x_ND[i * d + j]) * double(x_ND[i * d + j]);
        double r = 1.0 / std::sqrt(ss / double(d) + eps);
        for (int64_t j = 0; j < d; ++j) out_ND[i * d + j] = T(double(x_ND[i * d + j]) * r * double(w_D[j]));
    }
}

#define FRUGAL_INSTANTIATE(T)                                                                                       \
    template void gemm<T>(T*, int64_t, const T*, int64_t, const T*, int64_t, int64_t, int64_t, int64_t, bool, bool, \
                          T);                                                                                       \
    template void attention_forward<T>(T*, const T*, const T*, const T*, const AttentionDims&, const int32_t*);     \
    template void attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const AttentionDims&,   \
                                        const int32_t*);                                                            \
    template void rmsnorm_forward<T>(T*, const T*, const T*, int64_t, int64_t, double);

FRUGAL_INSTANTIATE(float)
FRUGAL_INSTANTIATE(double)

}  // namespace frugal::backend::reference
