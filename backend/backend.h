// The backend seam (DESIGN.md): model, precision and optimizer code call every kernel through a Backend object, a
// table of operations over device buffers in the way ggml's backends are, never a concrete backend's namespace. One
// model code runs on every device; the CPU backend (backend/cpu) is the reference that every other must equal within
// a stated tolerance, op by op and step by step.
//
// A Backend owns:
//   - the allocator its buffers come from (core/allocator.h; Tensor::empty(shape, dtype, backend.allocator()));
//   - the operations that do not depend on the model's scalar: byte copies between host and device, the routing
//     permutation and capacity counts (integers), the FP8/BF16 quantizers of the precision recipes and the
//     optimizer's kernels (FP32 master weights);
//   - one Ops<T> table per scalar it supports: float for training, and on the CPU double for the gradient checks.
//
// Conventions of every operation (the llm.c kernel style of backend/cpu/ops.h):
//   - outputs first, then saved values, then inputs, then dims; a backward ADDS into its gradient outputs unless its
//     comment says it writes them;
//   - every pointer is memory of this backend's device, except parameters and results whose name ends in _host
//     (routing counts, loss sums returned as double): those are host memory, and an operation that returns one
//     waits for the device (on the CPU nothing waits);
//   - row-major buffers with the shape suffixes of the legend: N rows (tokens), D model dim, F ffn dim, V vocab,
//     B batch, S sequence, Hq/Hkv heads, hd head dim, T tokens of an MoE layer, E experts, K choices per token,
//     R routed rows, G aux-loss groups.
//   - results do not depend on timing or thread count: reductions run in a fixed order (the CPU's OpenMP loops use
//     static schedules and reduce per row), so the same inputs give the same bits run after run.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/allocator.h"
#include "core/dtype.h"
#include "core/error.h"
#include "precision/fp8.h"

namespace frugal::backend {

// moe.score_func and moe.aux_loss, resolved once from their strings (model/moe/router.h parses them).
enum class ScoreFunc { kSoftmax, kSigmoid };
// moe.group_score: a group's score for group-limited routing, from its experts' keys (score + bias): the sum of the
// two largest (DeepSeek-V3 noaux_tc, GLM-4.5, dots.llm1) or the largest (DeepSeek-V2 group_limited_greedy).
enum class GroupScore { kTop2Sum, kMax };
// The most expert groups router_select_forward takes (its per-token group scores live on the stack).
constexpr int64_t kMaxRouterGroups = 64;

// The grouping router_select_forward accepts, checked by every backend before it selects (model validation gives the
// same rules as ConfigErrors naming the keys; this catches a caller that skipped it).
inline void check_router_groups(int64_t e, int64_t k, int64_t n_group, int64_t topk_group, GroupScore group_score) {
    FRUGAL_CHECK(n_group >= 1 && n_group <= kMaxRouterGroups && e % n_group == 0,
                 "router_select_forward: moe.n_group (", n_group, ") must be in [1, ", kMaxRouterGroups,
                 "] and divide moe.n_experts (", e, "): set moe.n_group to a divisor of the experts");
    FRUGAL_CHECK(topk_group >= 1 && topk_group <= n_group, "router_select_forward: moe.topk_group (", topk_group,
                 ") must be in [1, moe.n_group (", n_group, ")]");
    FRUGAL_CHECK(k <= topk_group * (e / n_group), "router_select_forward: moe.top_k (", k, ") exceeds the ",
                 topk_group * (e / n_group), " experts of moe.topk_group (", topk_group,
                 ") groups: raise moe.topk_group or lower moe.top_k");
    FRUGAL_CHECK(n_group == 1 || group_score != GroupScore::kTop2Sum || e / n_group >= 2,
                 "router_select_forward: moe.group_score top2_sum needs two experts per group, and moe.n_group (",
                 n_group, ") leaves ", e / n_group, ": use moe.group_score max or fewer groups");
}
// E4M3 for activations and weights, E5M2 for gradients (precision/fp8.h: the formats, header-only, and with
// precision/quantize the CPU's reference quantizers, which depend on core only and are built into the CPU backend).
using precision::Fp8Format;

class Backend;

// The shape of one attention call: B sequences of S tokens; Hq query heads, each reading key/value head
// h / (Hq / Hkv); queries and keys hd_qk wide, values (and the output) hd_v wide (MLA: hd_qk = nope + rope >
// hd_v). Token-major rows: q [B*S, Hq*hd_qk], k [B*S, Hkv*hd_qk], v [B*S, Hkv*hd_v], out [B*S, Hq*hd_v].
// scale multiplies q.k before the softmax (1 / sqrt(hd_qk), or YaRN's corrected value).
struct AttentionDims {
    int64_t b = 0, s = 0, hq = 0, hkv = 0, hd_qk = 0, hd_v = 0;
    double scale = 0;
};

// A linear layer's three matrix products in a low-precision format run natively by a backend (cuBLASLt BF16 or FP8
// GEMMs on a GPU), the counterpart of precision/recipe.h's emulating recipes: same contract as MatmulRecipe<float>
// (y_NO = x_NI w_OI^T; backward: dx_NI += dy_NO w_OI, dw_OI += dy_NO^T x_NI, either output may be null), and
// weights_updated() drops any cached quantized weight. precision::make_matmul_recipe uses one when the backend
// offers it (Backend::make_native_matmul) and emulates otherwise.
class NativeMatmul {
  public:
    virtual ~NativeMatmul() = default;
    virtual void forward(float* y_NO, const float* x_NI, const float* w_OI, int64_t n, int64_t in, int64_t out) = 0;
    virtual void backward(float* dx_NI, float* dw_OI, const float* dy_NO, const float* x_NI, const float* w_OI,
                          int64_t n, int64_t in, int64_t out) = 0;
    virtual void weights_updated() {}
};

// What a native low-precision product follows (the precision.* keys, precision/recipe.h).
struct NativeMatmulSpec {
    std::string recipe;  // bf16 | fp8-tensorwise | fp8-blockwise (fp8-delayed has no native form)
    int64_t block_size = 128;
    bool power_of_2_scales = true;
};

// The operations of the model's math in scalar T.
template <typename T>
class Ops {
  public:
    explicit Ops(Backend& backend) : backend_(backend) {}
    virtual ~Ops() = default;
    Backend& backend() const { return backend_; }

    // ---- Elementwise ----
    virtual void fill(T* x, int64_t n, T value) const = 0;
    // out = a + b (out may alias a or b)
    virtual void add(T* out, const T* a, const T* b, int64_t n) const = 0;
    // y += x
    virtual void add_inplace(T* y, const T* x, int64_t n) const = 0;
    // y_NO[r] += b_O for every row
    virtual void bias_add(T* y_NO, const T* b_O, int64_t n, int64_t out) const = 0;
    // db_O += sum over rows of dy_NO
    virtual void bias_backward(T* db_O, const T* dy_NO, int64_t n, int64_t out) const = 0;

    // ---- Matrix products ----
    // C[M,N] = op(A)[M,K] * op(B)[K,N] + beta * C, leading dimensions (row strides) lda, ldb, ldc; op(A) = A^T when
    // trans_a (A is then stored [K, M]), likewise for B.
    virtual void gemm(T* c, int64_t ldc, const T* a, int64_t lda, const T* b, int64_t ldb, int64_t m, int64_t n,
                      int64_t k, bool trans_a, bool trans_b, T beta) const = 0;
    void matmul(T* c, const T* a, const T* b, int64_t m, int64_t n, int64_t k, bool trans_a, bool trans_b,
                T beta) const {
        gemm(c, n, a, trans_a ? m : k, b, trans_b ? k : n, m, n, k, trans_a, trans_b, beta);
    }
    // y_NO = x_NI w_OI^T (nn.Linear's layout, no bias)
    void linear_forward(T* y_NO, const T* x_NI, const T* w_OI, int64_t n, int64_t in, int64_t out) const {
        matmul(y_NO, x_NI, w_OI, n, out, in, false, true, T(0));
    }
    // dx_NI += dy_NO w_OI ; dw_OI += dy_NO^T x_NI (either output may be null to skip it)
    void linear_backward(T* dx_NI, T* dw_OI, const T* dy_NO, const T* x_NI, const T* w_OI, int64_t n, int64_t in,
                         int64_t out) const {
        if (dx_NI) matmul(dx_NI, dy_NO, w_OI, n, in, out, false, false, T(1));
        if (dw_OI) matmul(dw_OI, dy_NO, x_NI, out, in, n, true, false, T(1));
    }

    // ---- Layers (semantics as stated in backend/cpu/ops.h) ----
    virtual void embedding_forward(T* out_ND, const int32_t* tokens_N, const T* wte_VD, int64_t n, int64_t d) const = 0;
    virtual void embedding_backward(T* dwte_VD, const T* dout_ND, const int32_t* tokens_N, int64_t n,
                                    int64_t d) const = 0;
    virtual void rmsnorm_forward(T* out_ND, T* rstd_N, const T* x_ND, const T* w_D, int64_t n, int64_t d,
                                 double eps) const = 0;
    virtual void rmsnorm_backward(T* dx_ND, T* dw_D, const T* dout_ND, const T* x_ND, const T* w_D, const T* rstd_N,
                                  int64_t n, int64_t d) const = 0;
    // Rotates the first rot_dim values of each of `heads` heads (head h at x + row * row_stride + h * head_stride)
    // by the table row of the token's position; cos_PH / sin_PH are [max_pos, rot_dim / 2].
    virtual void rope_apply(T* x, int64_t row_stride, int64_t head_stride, const int32_t* pos_N, const T* cos_PH,
                            const T* sin_PH, int64_t n, int64_t heads, int64_t rot_dim, bool inverse) const = 0;
    // Causal attention over grouped heads (AttentionDims). What forward saves for backward is the backend's choice:
    // saved holds attention_saved_numel(b, s, hq) elements (the CPU keeps the probabilities [B, Hq, S, S]; a fused
    // kernel keeps a logsumexp per query row). start_BS (optional): document masking, query i attends keys
    // [start_BS[i], i].
    virtual int64_t attention_saved_numel(int64_t b, int64_t s, int64_t hq) const = 0;
    virtual void attention_forward(T* out, T* saved, const T* q, const T* k, const T* v, const AttentionDims& dims,
                                   const int32_t* start_BS) const = 0;
    virtual void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* saved, const T* out, const T* q,
                                    const T* k, const T* v, const AttentionDims& dims,
                                    const int32_t* start_BS) const = 0;
    // Strided row copies (MLA's splits of its latent and per-head projections): for r < rows, c < cols,
    //   strided_copy: dst[r * ld_dst + c] = src[(r / src_repeat) * ld_src + c]   (src_repeat >= 1 broadcasts a row)
    //   strided_add:  dst[(r / dst_repeat) * ld_dst + c] += src[r * ld_src + c]  (summed in r order per dst row)
    virtual void strided_copy(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t rows, int64_t cols,
                              int64_t src_repeat) const = 0;
    virtual void strided_add(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t rows, int64_t cols,
                             int64_t dst_repeat) const = 0;
    virtual void swiglu_forward(T* out_NF, const T* gu_N2F, int64_t n, int64_t f) const = 0;
    virtual void swiglu_backward(T* dgu_N2F, const T* dout_NF, const T* gu_N2F, int64_t n, int64_t f) const = 0;
    // Returns the sum of the per-row losses over rows whose target is not ignore_index (double accumulation in row
    // order) and writes each row's loss into loss_N (0 for ignored rows).
    virtual double cross_entropy_forward(T* loss_N, const T* logits_NV, const int32_t* targets_N, int64_t n, int64_t v,
                                         int32_t ignore_index) const = 0;
    // dlogits += scale * (softmax(logits) - onehot(target)) for every row not ignored
    virtual void cross_entropy_backward(T* dlogits_NV, const T* logits_NV, const int32_t* targets_N, T scale, int64_t n,
                                        int64_t v, int32_t ignore_index) const = 0;
    // The shared experts' sigmoid gate (Qwen2-MoE): gate_T holds the gate's logits and is overwritten with
    // g = sigmoid(logit); out_TD = g * shared_TD.
    virtual void sigmoid_gate_forward(T* out_TD, T* gate_T, const T* shared_TD, int64_t t, int64_t d) const = 0;
    // WRITES d_shared_TD = g dout and d_logit_T = g (1 - g) <dout, shared>.
    virtual void sigmoid_gate_backward(T* d_shared_TD, T* d_logit_T, const T* dout_TD, const T* shared_TD,
                                       const T* gate_T, int64_t t, int64_t d) const = 0;

    // ---- Router steps (semantics and shapes as stated in model/moe/router.h) ----
    virtual void router_scores_forward(T* scores_TE, T* lse_T, const T* logits_TE, ScoreFunc func, int64_t t,
                                       int64_t e) const = 0;
    // Group-limited when n_group > 1 (backend/cpu/router.h states the semantics); n_group == 1 is plain top-k.
    virtual void router_select_forward(int32_t* selected_TK, double* keys_TE, const T* scores_TE, const float* bias_E,
                                       int64_t t, int64_t e, int64_t k, int64_t n_group, int64_t topk_group,
                                       GroupScore group_score) const = 0;
    virtual void router_weights_forward(T* weight_TK, const T* scores_TE, const int32_t* selected_TK, bool renormalize,
                                        double scale, int64_t t, int64_t e, int64_t k) const = 0;
    // Returns the coefficient-weighted balancing loss; score_sum_T is the sigmoid row sums' scratch (null for
    // softmax).
    virtual double router_aux_loss_forward(double* score_sum_T, const T* scores_TE, const int32_t* selected_TK,
                                           ScoreFunc func, double coef, int64_t groups, int64_t t, int64_t e,
                                           int64_t k) const = 0;
    virtual double router_z_loss_forward(const T* lse_T, double coef, int64_t t) const = 0;
    virtual void router_weights_backward(T* d_scores_TE, const T* d_weight_TK, const T* scores_TE,
                                         const int32_t* selected_TK, bool renormalize, double scale, int64_t t,
                                         int64_t e, int64_t k) const = 0;
    virtual void router_aux_loss_backward(T* d_scores_TE, T* d_aux_GE, const T* scores_TE, const int32_t* selected_TK,
                                          ScoreFunc func, double coef, T aux_scale, int64_t groups, int64_t t,
                                          int64_t e, int64_t k) const = 0;
    virtual void router_scores_backward(T* d_logits_TE, const T* d_scores_TE, const T* scores_TE, ScoreFunc func,
                                        int64_t t, int64_t e) const = 0;
    virtual void router_z_loss_backward(T* d_logits_TE, const T* logits_TE, const T* lse_T, double coef, T aux_scale,
                                        int64_t t, int64_t e) const = 0;

    // ---- Dispatch permutation (layout in model/moe/dispatcher.h) ----
    // rows_RD[r] = x_TD[token_of_row_R[r]]
    virtual void permute_rows(T* rows_RD, const T* x_TD, const int32_t* token_of_row_R, int64_t num_rows,
                              int64_t d) const = 0;
    // dx_TD[t] += sum over the kept choices k of drows_RD[row_of_TK[t, k]]
    virtual void permute_rows_backward(T* dx_TD, const T* drows_RD, const int32_t* row_of_TK, int64_t t, int64_t k,
                                       int64_t d) const = 0;
    // out_TD[t] += sum_k weight_TK[t, k] rows_RD[row_of_TK[t, k]]
    virtual void unpermute_combine(T* out_TD, const T* rows_RD, const T* weight_TK, const int32_t* row_of_TK, int64_t t,
                                   int64_t k, int64_t d) const = 0;
    // drows_RD[r] += weight dout_TD[t] ; dweight_TK[t, k] += <dout_TD[t], rows_RD[r]>
    virtual void unpermute_combine_backward(T* drows_RD, T* dweight_TK, const T* dout_TD, const T* rows_RD,
                                            const T* weight_TK, const int32_t* row_of_TK, int64_t t, int64_t k,
                                            int64_t d) const = 0;

  private:
    Backend& backend_;
};

class Backend {
  public:
    virtual ~Backend() = default;
    virtual Device device() const = 0;
    virtual std::string name() const = 0;
    virtual Allocator& allocator() = 0;

    // The Ops table of scalar T (float or double); an Error naming the backend when it has none for T.
    template <typename T>
    const Ops<T>& ops() const;

    // ---- Memory (bytes) ----
    virtual void copy_to_host(void* dst_host, const void* src, size_t nbytes) = 0;
    virtual void copy_to_device(void* dst, const void* src_host, size_t nbytes) = 0;
    virtual void copy(void* dst, const void* src, size_t nbytes) = 0;
    // Waits until every operation issued so far has finished.
    virtual void synchronize() = 0;

    // ---- Tokens ----
    // Copies the micro-batch's tokens and targets (host memory, from the data loader) to tokens_N and targets_N,
    // checks that every token is in [0, v) and every target is ignore_index or in [0, v), and writes each token's
    // document start start_N (doc_start_host, or 0 where it is null) and rotary position pos_N = i % s - start.
    // Returns the number of targets that are not ignore_index. Bad input is an Error naming the position and the fix.
    virtual int64_t prepare_tokens(int32_t* tokens_N, int32_t* targets_N, int32_t* pos_N, int32_t* start_N,
                                   const int32_t* tokens_host, const int32_t* targets_host,
                                   const int32_t* doc_start_host, int64_t n, int64_t s, int64_t v,
                                   int32_t ignore_index) = 0;

    // ---- Routing (integers; model/moe/router.h and dispatcher.h) ----
    // Capacity dropping in token order; writes expert_TK and the host counts num_kept_E_host, num_selected_E_host
    // and returns the number dropped.
    virtual int64_t router_capacity(int32_t* expert_TK, int64_t* num_kept_E_host, int64_t* num_selected_E_host,
                                    const int32_t* selected_TK, int64_t capacity, int64_t t, int64_t k, int64_t e) = 0;
    // Aux-loss-free balancing (DeepSeek-V3 section 2.1.2): bias_E[e] += rate * sign(mean load - load_e), from the
    // step's selection counts (host).
    virtual void router_bias_update(float* bias_E, const int64_t* selected_E_host, double rate, int64_t e) = 0;
    // The stable permutation by expert of expert_TK (-1: dropped): writes row_of_TK, token_of_row_R and the host
    // tokens_per_expert_E_host [E] and offset_E_host [E + 1]; returns the number of rows.
    virtual int64_t build_permutation(int32_t* row_of_TK, int32_t* token_of_row_R, int64_t* tokens_per_expert_E_host,
                                      int64_t* offset_E_host, const int32_t* expert_TK, int64_t t, int64_t k,
                                      int64_t e) = 0;

    // ---- Precision (float; semantics as stated in precision/quantize.h) ----
    virtual float amax(const float* x, int64_t n) = 0;
    virtual void fake_quant(float* out, const float* in, int64_t n, Fp8Format fmt, float scale) = 0;
    virtual void fake_quant_row_tiles(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile,
                                      Fp8Format fmt, bool power_of_2) = 0;
    virtual void fake_quant_col_tiles(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile,
                                      Fp8Format fmt, bool power_of_2) = 0;
    virtual void fake_quant_blocks(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                                   bool power_of_2) = 0;
    virtual void round_bf16(float* out, const float* in, int64_t n) = 0;
    virtual void quantize_row_tiles(uint8_t* codes, float* scales, const float* in, int64_t rows, int64_t cols,
                                    int64_t tile, Fp8Format fmt, bool power_of_2) = 0;
    virtual void dequantize_row_tiles(float* out, const uint8_t* codes, const float* scales, int64_t rows, int64_t cols,
                                      int64_t tile, Fp8Format fmt) = 0;
    // FNV-1a over the bits of every 997th element and the last one (the recipes' weight-cache check).
    virtual uint64_t fingerprint(const float* x, int64_t n) = 0;

    // ---- Optimizer (FP32 master weights) ----
    // One AdamW update of n elements (optim/adamw.h): m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    // value = value * decay - step_size m / (sqrt(v) inv_sqrt_bc2 + eps). Moments in FP32, or in BF16
    // (moments_bf16: m and v are uint16_t BF16 bits, rounded to nearest even after the update).
    virtual void adamw_update(float* value, const float* grad, void* m, void* v, bool moments_bf16, int64_t n, float b1,
                              float b2, float step_size, float inv_sqrt_bc2, float eps, float decay) = 0;
    // Sum of squares in double, in a fixed order (core/reduce.h's blocked sum on the CPU).
    virtual double sum_squares(const float* x, int64_t n) = 0;
    // x *= factor
    virtual void scale(float* x, int64_t n, float factor) = 0;

    // ---- Native low-precision products ----
    // A native implementation of spec's recipe, or null when this backend has none (the CPU: the recipes emulate).
    virtual std::unique_ptr<NativeMatmul> make_native_matmul(const NativeMatmulSpec&) { return nullptr; }

  protected:
    virtual const Ops<float>* ops_f32() const = 0;
    virtual const Ops<double>* ops_f64() const = 0;
};

template <>
inline const Ops<float>& Backend::ops<float>() const {
    const Ops<float>* o = ops_f32();
    FRUGAL_CHECK(o != nullptr, "the ", name(), " backend has no float operations");
    return *o;
}
template <>
inline const Ops<double>& Backend::ops<double>() const {
    const Ops<double>* o = ops_f64();
    FRUGAL_CHECK(o != nullptr, "the ", name(),
                 " backend computes in float only; the double-precision model (gradient "
                 "checks) runs on the CPU backend");
    return *o;
}

// The process-wide backend of a device: the CPU one always exists; the CUDA one when the build has it and a GPU is
// present (an Error naming what is missing otherwise). backend_available says whether backend_for would succeed,
// and why not.
Backend& backend_for(Device device);
bool backend_available(Device device, std::string* why_not);
inline Backend& cpu_backend() { return backend_for(Device::kCpu); }

}  // namespace frugal::backend
