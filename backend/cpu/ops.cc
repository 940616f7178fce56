#include "backend/cpu/ops.h"

#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/threads.h"
#include "core/error.h"

namespace frugal::backend::cpu {

namespace {
template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MapMat = Eigen::Map<RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using ConstMapMat = Eigen::Map<const RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

template <typename T, typename A, typename B>
void assign_product(MapMat<T>& c, const A& a, const B& b, T beta) {
    if (beta == T(0))
        c.noalias() = a * b;
    else if (beta == T(1))
        c.noalias() += a * b;
    else {
        c *= beta;
        c.noalias() += a * b;
    }
}
}  // namespace

template <typename T>
void gemm(T* c, int64_t ldc, const T* a, int64_t lda, const T* b, int64_t ldb, int64_t m, int64_t n, int64_t k,
          bool trans_a, bool trans_b, T beta) {
    if (m == 0 || n == 0) return;
    MapMat<T> cm(c, m, n, Eigen::OuterStride<>(ldc));
    if (k == 0) {
        if (beta == T(0))
            cm.setZero();
        else
            cm *= beta;
        return;
    }
    ConstMapMat<T> am(a, trans_a ? k : m, trans_a ? m : k, Eigen::OuterStride<>(lda));
    ConstMapMat<T> bm(b, trans_b ? n : k, trans_b ? k : n, Eigen::OuterStride<>(ldb));
    if (!trans_a && !trans_b)
        assign_product(cm, am, bm, beta);
    else if (!trans_a && trans_b)
        assign_product(cm, am, bm.transpose(), beta);
    else if (trans_a && !trans_b)
        assign_product(cm, am.transpose(), bm, beta);
    else
        assign_product(cm, am.transpose(), bm.transpose(), beta);
}

template <typename T>
void embedding_forward(T* out_ND, const int32_t* tokens_N, const T* wte_VD, int64_t n, int64_t d) {
#pragma omp parallel for schedule(static) if (worth_a_team(n * d))
    for (int64_t i = 0; i < n; ++i) std::copy_n(wte_VD + int64_t(tokens_N[i]) * d, d, out_ND + i * d);
}

template <typename T>
void embedding_backward(T* dwte_VD, const T* dout_ND, const int32_t* tokens_N, int64_t n, int64_t d) {
    // Serial over rows: two rows may share a token, and a fixed order keeps the sum bitwise reproducible.
    for (int64_t i = 0; i < n; ++i) {
        T* dst = dwte_VD + int64_t(tokens_N[i]) * d;
        const T* src = dout_ND + i * d;
        for (int64_t j = 0; j < d; ++j) dst[j] += src[j];
    }
}

template <typename T>
void rmsnorm_forward(T* out_ND, T* rstd_N, const T* x_ND, const T* w_D, int64_t n, int64_t d, double eps) {
#pragma omp parallel for schedule(static) if (worth_a_team(n * d))
    for (int64_t i = 0; i < n; ++i) {
        const T* x = x_ND + i * d;
        T* o = out_ND + i * d;
        T ss = 0;
        for (int64_t j = 0; j < d; ++j) ss += x[j] * x[j];
        T rstd = T(1) / std::sqrt(ss / T(d) + T(eps));
        rstd_N[i] = rstd;
        for (int64_t j = 0; j < d; ++j) o[j] = x[j] * rstd * w_D[j];
    }
}

template <typename T>
void rmsnorm_backward(T* dx_ND, T* dw_D, const T* dout_ND, const T* x_ND, const T* w_D, const T* rstd_N, int64_t n,
                      int64_t d) {
    // y_j = w_j x_j r, r = (mean x^2 + eps)^-1/2  =>  dx_j = r w_j g_j - x_j r^3 / d * sum_k w_k g_k x_k
#pragma omp parallel for schedule(static) if (worth_a_team(n * d))
    for (int64_t i = 0; i < n; ++i) {
        const T* x = x_ND + i * d;
        const T* g = dout_ND + i * d;
        T* dx = dx_ND + i * d;
        T r = rstd_N[i];
        T dot = 0;
        for (int64_t j = 0; j < d; ++j) dot += w_D[j] * g[j] * x[j];
        T c = dot * r * r * r / T(d);
        for (int64_t j = 0; j < d; ++j) dx[j] += r * w_D[j] * g[j] - x[j] * c;
    }
    if (dw_D) {
        for (int64_t i = 0; i < n; ++i) {
            const T* x = x_ND + i * d;
            const T* g = dout_ND + i * d;
            T r = rstd_N[i];
            for (int64_t j = 0; j < d; ++j) dw_D[j] += g[j] * x[j] * r;
        }
    }
}

template <typename T>
void rope_apply(T* x, int64_t row_stride, int64_t head_stride, const int32_t* pos_N, const T* cos_PH, const T* sin_PH,
                int64_t n, int64_t heads, int64_t rot_dim, bool inverse) {
    const int64_t half = rot_dim / 2;
    const T sign = inverse ? T(-1) : T(1);
#pragma omp parallel for schedule(static) if (worth_a_team(n * heads * rot_dim))
    for (int64_t i = 0; i < n; ++i) {
        const T* c = cos_PH + int64_t(pos_N[i]) * half;
        const T* s = sin_PH + int64_t(pos_N[i]) * half;
        for (int64_t h = 0; h < heads; ++h) {
            T* v = x + i * row_stride + h * head_stride;
            for (int64_t j = 0; j < half; ++j) {
                T a = v[j], b = v[j + half];
                v[j] = a * c[j] - sign * b * s[j];
                v[j + half] = b * c[j] + sign * a * s[j];
            }
        }
    }
}

template <typename T>
void attention_forward(T* out, T* probs_BHSS, const T* q, const T* k, const T* v, const AttentionDims& dims,
                       const int32_t* start_BS) {
    const int64_t b = dims.b, s = dims.s, hq = dims.hq, dqk = dims.hd_qk, dv = dims.hd_v;
    const int64_t group = hq / dims.hkv;
    const int64_t ldq = hq * dqk, ldk = dims.hkv * dqk, ldv = dims.hkv * dv, ldo = hq * dv;
    const T scale = T(dims.scale);
#pragma omp parallel for collapse(2) schedule(static) if (worth_a_team(b * hq * s * s * (dqk + dv)))
    for (int64_t bi = 0; bi < b; ++bi) {
        for (int64_t h = 0; h < hq; ++h) {
            const int64_t kvh = h / group;
            const T* qb = q + bi * s * ldq + h * dqk;
            const T* kb = k + bi * s * ldk + kvh * dqk;
            const T* vb = v + bi * s * ldv + kvh * dv;
            T* p = probs_BHSS + (bi * hq + h) * s * s;
            // scores = q k^T (inside a parallel region Eigen runs single-threaded)
            gemm(p, s, qb, ldq, kb, ldk, s, s, dqk, false, true, T(0));
            for (int64_t i = 0; i < s; ++i) {
                T* row = p + i * s;
                const int64_t lo = start_BS ? start_BS[bi * s + i] : 0;  // first key of the query's document
                T mx = -INFINITY;
                for (int64_t j = lo; j <= i; ++j) mx = std::max(mx, row[j] * scale);
                T sum = 0;
                for (int64_t j = lo; j <= i; ++j) {
                    row[j] = std::exp(row[j] * scale - mx);
                    sum += row[j];
                }
                T inv = T(1) / sum;
                for (int64_t j = lo; j <= i; ++j) row[j] *= inv;
                for (int64_t j = 0; j < lo; ++j) row[j] = 0;
                for (int64_t j = i + 1; j < s; ++j) row[j] = 0;
            }
            gemm(out + bi * s * ldo + h * dv, ldo, p, s, vb, ldv, s, dv, s, false, false, T(0));
        }
    }
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* probs_BHSS, const T* q, const T* k, const T* v,
                        const AttentionDims& dims, const int32_t* start_BS) {
    const int64_t b = dims.b, s = dims.s, hq = dims.hq, hkv = dims.hkv, dqk = dims.hd_qk, dvw = dims.hd_v;
    const int64_t group = hq / hkv;
    const int64_t ldq = hq * dqk, ldk = hkv * dqk, ldv = hkv * dvw, ldo = hq * dvw;
    const T scale = T(dims.scale);
    // Parallel over (batch, kv head): the query heads of one group all add into the same dk/dv slice, so they run
    // in one thread, in a fixed order.
#pragma omp parallel if (worth_a_team(b * hq * s * s * (dqk + dvw)))
    {
        thread_local std::vector<T> dp;  // [S, S] scratch; grows once, reused across steps
        if (dp.size() < size_t(s * s)) dp.resize(size_t(s * s));
#pragma omp for collapse(2) schedule(static)
        for (int64_t bi = 0; bi < b; ++bi) {
            for (int64_t kvh = 0; kvh < hkv; ++kvh) {
                const T* kb = k + bi * s * ldk + kvh * dqk;
                const T* vb = v + bi * s * ldv + kvh * dvw;
                T* dkb = dk + bi * s * ldk + kvh * dqk;
                T* dvb = dv + bi * s * ldv + kvh * dvw;
                for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
                    const T* p = probs_BHSS + (bi * hq + h) * s * s;
                    const T* qb = q + bi * s * ldq + h * dqk;
                    const T* dob = dout + bi * s * ldo + h * dvw;
                    T* dqb = dq + bi * s * ldq + h * dqk;
                    // dv += p^T do ; dp = do v^T
                    gemm(dvb, ldv, p, s, dob, ldo, s, dvw, s, true, false, T(1));
                    gemm(dp.data(), s, dob, ldo, vb, ldv, s, s, dvw, false, true, T(0));
                    // softmax backward: ds = p * (dp - sum_j p dp), times the score scale
                    for (int64_t i = 0; i < s; ++i) {
                        const T* pr = p + i * s;
                        T* g = dp.data() + i * s;
                        const int64_t lo = start_BS ? start_BS[bi * s + i] : 0;
                        T dot = 0;
                        for (int64_t j = lo; j <= i; ++j) dot += pr[j] * g[j];
                        for (int64_t j = lo; j <= i; ++j) g[j] = pr[j] * (g[j] - dot) * scale;
                        for (int64_t j = 0; j < lo; ++j) g[j] = 0;
                        for (int64_t j = i + 1; j < s; ++j) g[j] = 0;
                    }
                    // dq += ds k ; dk += ds^T q
                    gemm(dqb, ldq, dp.data(), s, kb, ldk, s, dqk, s, false, false, T(1));
                    gemm(dkb, ldk, dp.data(), s, qb, ldq, s, dqk, s, true, false, T(1));
                }
            }
        }
    }
}

template <typename T>
void strided_copy(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t rows, int64_t cols,
                  int64_t src_repeat) {
#pragma omp parallel for schedule(static) if (worth_a_team(rows * cols))
    for (int64_t r = 0; r < rows; ++r) {
        const T* in = src + (r / src_repeat) * ld_src;
        T* out = dst + r * ld_dst;
        for (int64_t c = 0; c < cols; ++c) out[c] = in[c];
    }
}

template <typename T>
void strided_add(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t rows, int64_t cols, int64_t dst_repeat) {
    // One destination row per iteration, its dst_repeat source rows added in order: no two threads share a row.
    const int64_t dst_rows = (rows + dst_repeat - 1) / dst_repeat;
#pragma omp parallel for schedule(static) if (worth_a_team(rows * cols))
    for (int64_t q = 0; q < dst_rows; ++q) {
        T* out = dst + q * ld_dst;
        for (int64_t r = q * dst_repeat; r < std::min(rows, (q + 1) * dst_repeat); ++r) {
            const T* in = src + r * ld_src;
            for (int64_t c = 0; c < cols; ++c) out[c] += in[c];
        }
    }
}

template <typename T>
void swiglu_forward(T* out_NF, const T* gu_N2F, int64_t n, int64_t f) {
#pragma omp parallel for schedule(static) if (worth_a_team(n * f))
    for (int64_t i = 0; i < n; ++i) {
        const T* g = gu_N2F + i * 2 * f;
        const T* u = g + f;
        T* o = out_NF + i * f;
        for (int64_t j = 0; j < f; ++j) o[j] = g[j] / (T(1) + std::exp(-g[j])) * u[j];
    }
}

template <typename T>
void swiglu_backward(T* dgu_N2F, const T* dout_NF, const T* gu_N2F, int64_t n, int64_t f) {
    // silu(g) = g s(g), silu'(g) = s(g) (1 + g (1 - s(g)))
#pragma omp parallel for schedule(static) if (worth_a_team(n * f))
    for (int64_t i = 0; i < n; ++i) {
        const T* g = gu_N2F + i * 2 * f;
        const T* u = g + f;
        const T* d = dout_NF + i * f;
        T* dg = dgu_N2F + i * 2 * f;
        T* du = dg + f;
        for (int64_t j = 0; j < f; ++j) {
            T sg = T(1) / (T(1) + std::exp(-g[j]));
            T silu = g[j] * sg;
            du[j] += d[j] * silu;
            dg[j] += d[j] * u[j] * sg * (T(1) + g[j] * (T(1) - sg));
        }
    }
}

template <typename T>
double cross_entropy_forward(T* loss_N, const T* logits_NV, const int32_t* targets_N, int64_t n, int64_t v,
                             int32_t ignore_index) {
#pragma omp parallel for schedule(static) if (worth_a_team(n * v))
    for (int64_t i = 0; i < n; ++i) {
        if (targets_N[i] == ignore_index) {
            loss_N[i] = 0;
            continue;
        }
        const T* row = logits_NV + i * v;
        T mx = row[0];
        for (int64_t j = 1; j < v; ++j) mx = std::max(mx, row[j]);
        double sum = 0;
        for (int64_t j = 0; j < v; ++j) sum += std::exp(double(row[j] - mx));
        double l = std::log(sum) + double(mx) - double(row[targets_N[i]]);
        loss_N[i] = T(l);
    }
    // Summed serially, in row order, so the loss is bitwise reproducible.
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += double(loss_N[i]);
    return total;
}

template <typename T>
void cross_entropy_backward(T* dlogits_NV, const T* logits_NV, const int32_t* targets_N, T scale, int64_t n, int64_t v,
                            int32_t ignore_index) {
#pragma omp parallel for schedule(static) if (worth_a_team(n * v))
    for (int64_t i = 0; i < n; ++i) {
        if (targets_N[i] == ignore_index) continue;
        const T* row = logits_NV + i * v;
        T* d = dlogits_NV + i * v;
        T mx = row[0];
        for (int64_t j = 1; j < v; ++j) mx = std::max(mx, row[j]);
        T sum = 0;
        for (int64_t j = 0; j < v; ++j) sum += std::exp(row[j] - mx);
        T inv = scale / sum;
        for (int64_t j = 0; j < v; ++j) d[j] += std::exp(row[j] - mx) * inv;
        d[targets_N[i]] -= scale;
    }
}

template <typename T>
void add_inplace(T* y, const T* x, int64_t n) {
#pragma omp parallel for schedule(static) if (worth_a_team(n))
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

template <typename T>
void add(T* out, const T* a, const T* b, int64_t n) {
#pragma omp parallel for schedule(static) if (worth_a_team(n))
    for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <typename T>
void fill(T* x, int64_t n, T value) {
    std::fill_n(x, n, value);
}

template <typename T>
void bias_add(T* y_NO, const T* b_O, int64_t n, int64_t out) {
#pragma omp parallel for schedule(static) if (worth_a_team(n * out))
    for (int64_t r = 0; r < n; ++r)
        for (int64_t o = 0; o < out; ++o) y_NO[r * out + o] += b_O[o];
}

template <typename T>
void bias_backward(T* db_O, const T* dy_NO, int64_t n, int64_t out) {
    for (int64_t r = 0; r < n; ++r)
        for (int64_t o = 0; o < out; ++o) db_O[o] += dy_NO[r * out + o];
}

template <typename T>
void sigmoid_gate_forward(T* out_TD, T* gate_T, const T* shared_TD, int64_t t, int64_t d) {
#pragma omp parallel for schedule(static) if (worth_a_team(t * d))
    for (int64_t i = 0; i < t; ++i) {
        gate_T[i] = T(1) / (T(1) + std::exp(-gate_T[i]));
        for (int64_t j = 0; j < d; ++j) out_TD[i * d + j] = gate_T[i] * shared_TD[i * d + j];
    }
}

template <typename T>
void sigmoid_gate_backward(T* d_shared_TD, T* d_logit_T, const T* dout_TD, const T* shared_TD, const T* gate_T,
                           int64_t t, int64_t d) {
#pragma omp parallel for schedule(static) if (worth_a_team(t * d))
    for (int64_t i = 0; i < t; ++i) {
        T dot = 0;
        for (int64_t j = 0; j < d; ++j) {
            dot += dout_TD[i * d + j] * shared_TD[i * d + j];
            d_shared_TD[i * d + j] = gate_T[i] * dout_TD[i * d + j];
        }
        d_logit_T[i] = gate_T[i] * (T(1) - gate_T[i]) * dot;
    }
}

int64_t prepare_tokens(int32_t* tokens_N, int32_t* targets_N, int32_t* pos_N, int32_t* start_N,
                       const int32_t* tokens_in, const int32_t* targets_in, const int32_t* doc_start_in, int64_t n,
                       int64_t s, int64_t v, int32_t ignore_index) {
    int64_t num_valid = 0;
    for (int64_t i = 0; i < n; ++i) {
        FRUGAL_CHECK(tokens_in[i] >= 0 && tokens_in[i] < v, "token id ", tokens_in[i], " at position ", i,
                     " is outside the vocabulary [0, ", v, "): check model.vocab_size against the data");
        // A target indexes the logits and the loss gradient row: an id past the vocabulary would write out of bounds.
        FRUGAL_CHECK(targets_in[i] == ignore_index || (targets_in[i] >= 0 && targets_in[i] < v), "target id ",
                     targets_in[i], " at position ", i, " is outside the vocabulary [0, ", v,
                     "): check model.vocab_size against the data");
        tokens_N[i] = tokens_in[i];
        targets_N[i] = targets_in[i];
        start_N[i] = doc_start_in ? doc_start_in[i] : 0;
        FRUGAL_CHECK(start_N[i] >= 0 && start_N[i] <= i % s, "document start ", start_N[i], " of position ", i % s,
                     " is outside its window");
        pos_N[i] = int32_t(i % s) - start_N[i];
        num_valid += targets_in[i] != ignore_index;
    }
    return num_valid;
}

#define FRUGAL_INSTANTIATE(T)                                                                                        \
    template void gemm<T>(T*, int64_t, const T*, int64_t, const T*, int64_t, int64_t, int64_t, int64_t, bool, bool,  \
                          T);                                                                                        \
    template void embedding_forward<T>(T*, const int32_t*, const T*, int64_t, int64_t);                              \
    template void embedding_backward<T>(T*, const T*, const int32_t*, int64_t, int64_t);                             \
    template void rmsnorm_forward<T>(T*, T*, const T*, const T*, int64_t, int64_t, double);                          \
    template void rmsnorm_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int64_t, int64_t);             \
    template void rope_apply<T>(T*, int64_t, int64_t, const int32_t*, const T*, const T*, int64_t, int64_t, int64_t, \
                                bool);                                                                               \
    template void attention_forward<T>(T*, T*, const T*, const T*, const T*, const AttentionDims&, const int32_t*);  \
    template void attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*,                \
                                        const AttentionDims&, const int32_t*);                                       \
    template void strided_copy<T>(T*, int64_t, const T*, int64_t, int64_t, int64_t, int64_t);                        \
    template void strided_add<T>(T*, int64_t, const T*, int64_t, int64_t, int64_t, int64_t);                         \
    template void swiglu_forward<T>(T*, const T*, int64_t, int64_t);                                                 \
    template void swiglu_backward<T>(T*, const T*, const T*, int64_t, int64_t);                                      \
    template double cross_entropy_forward<T>(T*, const T*, const int32_t*, int64_t, int64_t, int32_t);               \
    template void cross_entropy_backward<T>(T*, const T*, const int32_t*, T, int64_t, int64_t, int32_t);             \
    template void add_inplace<T>(T*, const T*, int64_t);                                                             \
    template void add<T>(T*, const T*, const T*, int64_t);                                                           \
    template void fill<T>(T*, int64_t, T);                                                                           \
    template void bias_add<T>(T*, const T*, int64_t, int64_t);                                                       \
    template void bias_backward<T>(T*, const T*, int64_t, int64_t);                                                  \
    template void sigmoid_gate_forward<T>(T*, T*, const T*, int64_t, int64_t);                                       \
    template void sigmoid_gate_backward<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t);

FRUGAL_INSTANTIATE(float)
FRUGAL_INSTANTIATE(double)

}  // namespace frugal::backend::cpu
