#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cstring>

#include "backend/cpu/moe.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/optim.h"
#include "backend/cpu/router.h"
#include "core/reduce.h"
#include "precision/quantize.h"

namespace frugal::backend::cpu {

namespace {

template <typename T>
class CpuOps final : public Ops<T> {
  public:
    using Ops<T>::Ops;

    void fill(T* x, int64_t n, T value) const override { cpu::fill(x, n, value); }
    void add(T* out, const T* a, const T* b, int64_t n) const override { cpu::add(out, a, b, n); }
    void add_inplace(T* y, const T* x, int64_t n) const override { cpu::add_inplace(y, x, n); }
    void bias_add(T* y_NO, const T* b_O, int64_t n, int64_t out) const override { cpu::bias_add(y_NO, b_O, n, out); }
    void bias_backward(T* db_O, const T* dy_NO, int64_t n, int64_t out) const override {
        cpu::bias_backward(db_O, dy_NO, n, out);
    }
    void gemm(T* c, int64_t ldc, const T* a, int64_t lda, const T* b, int64_t ldb, int64_t m, int64_t n, int64_t k,
              bool trans_a, bool trans_b, T beta) const override {
        cpu::gemm(c, ldc, a, lda, b, ldb, m, n, k, trans_a, trans_b, beta);
    }
    void embedding_forward(T* out_ND, const int32_t* tokens_N, const T* wte_VD, int64_t n, int64_t d) const override {
        cpu::embedding_forward(out_ND, tokens_N, wte_VD, n, d);
    }
    void embedding_backward(T* dwte_VD, const T* dout_ND, const int32_t* tokens_N, int64_t n,
                            int64_t d) const override {
        cpu::embedding_backward(dwte_VD, dout_ND, tokens_N, n, d);
    }
    void rmsnorm_forward(T* out_ND, T* rstd_N, const T* x_ND, const T* w_D, int64_t n, int64_t d,
                         double eps) const override {
        cpu::rmsnorm_forward(out_ND, rstd_N, x_ND, w_D, n, d, eps);
    }
    void rmsnorm_backward(T* dx_ND, T* dw_D, const T* dout_ND, const T* x_ND, const T* w_D, const T* rstd_N, int64_t n,
                          int64_t d) const override {
        cpu::rmsnorm_backward(dx_ND, dw_D, dout_ND, x_ND, w_D, rstd_N, n, d);
    }
    void rope_apply(T* x, int64_t row_stride, int64_t head_stride, const int32_t* pos_N, const T* cos_PH,
                    const T* sin_PH, int64_t n, int64_t heads, int64_t rot_dim, bool inverse) const override {
        cpu::rope_apply(x, row_stride, head_stride, pos_N, cos_PH, sin_PH, n, heads, rot_dim, inverse);
    }
    // The CPU keeps the probabilities [B, Hq, S, S].
    int64_t attention_saved_numel(int64_t b, int64_t s, int64_t hq) const override { return b * hq * s * s; }
    void attention_forward(T* out, T* saved, const T* q, const T* k, const T* v, const AttentionDims& dims,
                           const int32_t* start_BS) const override {
        cpu::attention_forward(out, saved, q, k, v, dims, start_BS);
    }
    void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* saved, const T*, const T* q, const T* k,
                            const T* v, const AttentionDims& dims, const int32_t* start_BS) const override {
        cpu::attention_backward(dq, dk, dv, dout, saved, q, k, v, dims, start_BS);
    }
    void strided_copy(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t rows, int64_t cols,
                      int64_t src_repeat) const override {
        cpu::strided_copy(dst, ld_dst, src, ld_src, rows, cols, src_repeat);
    }
    void strided_add(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t rows, int64_t cols,
                     int64_t dst_repeat) const override {
        cpu::strided_add(dst, ld_dst, src, ld_src, rows, cols, dst_repeat);
    }
    void swiglu_forward(T* out_NF, const T* gu_N2F, int64_t n, int64_t f) const override {
        cpu::swiglu_forward(out_NF, gu_N2F, n, f);
    }
    void swiglu_backward(T* dgu_N2F, const T* dout_NF, const T* gu_N2F, int64_t n, int64_t f) const override {
        cpu::swiglu_backward(dgu_N2F, dout_NF, gu_N2F, n, f);
    }
    double cross_entropy_forward(T* loss_N, const T* logits_NV, const int32_t* targets_N, int64_t n, int64_t v,
                                 int32_t ignore_index) const override {
        return cpu::cross_entropy_forward(loss_N, logits_NV, targets_N, n, v, ignore_index);
    }
    void cross_entropy_backward(T* dlogits_NV, const T* logits_NV, const int32_t* targets_N, T scale, int64_t n,
                                int64_t v, int32_t ignore_index) const override {
        cpu::cross_entropy_backward(dlogits_NV, logits_NV, targets_N, scale, n, v, ignore_index);
    }
    void sigmoid_gate_forward(T* out_TD, T* gate_T, const T* shared_TD, int64_t t, int64_t d) const override {
        cpu::sigmoid_gate_forward(out_TD, gate_T, shared_TD, t, d);
    }
    void sigmoid_gate_backward(T* d_shared_TD, T* d_logit_T, const T* dout_TD, const T* shared_TD, const T* gate_T,
                               int64_t t, int64_t d) const override {
        cpu::sigmoid_gate_backward(d_shared_TD, d_logit_T, dout_TD, shared_TD, gate_T, t, d);
    }

    void router_scores_forward(T* scores_TE, T* lse_T, const T* logits_TE, ScoreFunc func, int64_t t,
                               int64_t e) const override {
        cpu::router_scores_forward(scores_TE, lse_T, logits_TE, func, t, e);
    }
    void router_select_forward(int32_t* selected_TK, double* keys_TE, const T* scores_TE, const float* bias_E,
                               int64_t t, int64_t e, int64_t k, int64_t n_group, int64_t topk_group,
                               GroupScore group_score) const override {
        cpu::router_select_forward(selected_TK, keys_TE, scores_TE, bias_E, t, e, k, n_group, topk_group, group_score);
    }
    void router_weights_forward(T* weight_TK, const T* scores_TE, const int32_t* selected_TK, bool renormalize,
                                double scale, int64_t t, int64_t e, int64_t k) const override {
        cpu::router_weights_forward(weight_TK, scores_TE, selected_TK, renormalize, scale, t, e, k);
    }
    double router_aux_loss_forward(double* score_sum_T, const T* scores_TE, const int32_t* selected_TK, ScoreFunc func,
                                   double coef, int64_t groups, int64_t t, int64_t e, int64_t k) const override {
        double loss = 0;
        cpu::router_aux_loss_forward(&loss, score_sum_T, scores_TE, selected_TK, func, coef, groups, t, e, k);
        return loss;
    }
    double router_z_loss_forward(const T* lse_T, double coef, int64_t t) const override {
        double loss = 0;
        cpu::router_z_loss_forward(&loss, lse_T, coef, t);
        return loss;
    }
    void router_weights_backward(T* d_scores_TE, const T* d_weight_TK, const T* scores_TE, const int32_t* selected_TK,
                                 bool renormalize, double scale, int64_t t, int64_t e, int64_t k) const override {
        cpu::router_weights_backward(d_scores_TE, d_weight_TK, scores_TE, selected_TK, renormalize, scale, t, e, k);
    }
    void router_aux_loss_backward(T* d_scores_TE, T* d_aux_GE, const T* scores_TE, const int32_t* selected_TK,
                                  ScoreFunc func, double coef, T aux_scale, int64_t groups, int64_t t, int64_t e,
                                  int64_t k) const override {
        cpu::router_aux_loss_backward(d_scores_TE, d_aux_GE, scores_TE, selected_TK, func, coef, aux_scale, groups, t,
                                      e, k);
    }
    void router_scores_backward(T* d_logits_TE, const T* d_scores_TE, const T* scores_TE, ScoreFunc func, int64_t t,
                                int64_t e) const override {
        cpu::router_scores_backward(d_logits_TE, d_scores_TE, scores_TE, func, t, e);
    }
    void router_z_loss_backward(T* d_logits_TE, const T* logits_TE, const T* lse_T, double coef, T aux_scale, int64_t t,
                                int64_t e) const override {
        cpu::router_z_loss_backward(d_logits_TE, logits_TE, lse_T, coef, aux_scale, t, e);
    }

    void permute_rows(T* rows_RD, const T* x_TD, const int32_t* token_of_row_R, int64_t num_rows,
                      int64_t d) const override {
        cpu::permute_rows(rows_RD, x_TD, token_of_row_R, num_rows, d);
    }
    void permute_rows_backward(T* dx_TD, const T* drows_RD, const int32_t* row_of_TK, int64_t t, int64_t k,
                               int64_t d) const override {
        cpu::permute_rows_backward(dx_TD, drows_RD, row_of_TK, t, k, d);
    }
    void unpermute_combine(T* out_TD, const T* rows_RD, const T* weight_TK, const int32_t* row_of_TK, int64_t t,
                           int64_t k, int64_t d) const override {
        cpu::unpermute_combine(out_TD, rows_RD, weight_TK, row_of_TK, t, k, d);
    }
    void unpermute_combine_backward(T* drows_RD, T* dweight_TK, const T* dout_TD, const T* rows_RD, const T* weight_TK,
                                    const int32_t* row_of_TK, int64_t t, int64_t k, int64_t d) const override {
        cpu::unpermute_combine_backward(drows_RD, dweight_TK, dout_TD, rows_RD, weight_TK, row_of_TK, t, k, d);
    }
};

class CpuBackend final : public Backend {
  public:
    CpuBackend() : f32_(*this), f64_(*this) {}
    Device device() const override { return Device::kCpu; }
    std::string name() const override { return "cpu"; }
    Allocator& allocator() override { return host_allocator(); }

    void copy_to_host(void* dst_host, const void* src, size_t nbytes) override { copy(dst_host, src, nbytes); }
    void copy_to_device(void* dst, const void* src_host, size_t nbytes) override { copy(dst, src_host, nbytes); }
    void copy(void* dst, const void* src, size_t nbytes) override {
        if (nbytes) std::memcpy(dst, src, nbytes);
    }
    void synchronize() override {}

    int64_t prepare_tokens(int32_t* tokens_N, int32_t* targets_N, int32_t* pos_N, int32_t* start_N,
                           const int32_t* tokens_host, const int32_t* targets_host, const int32_t* doc_start_host,
                           int64_t n, int64_t s, int64_t v, int32_t ignore_index) override {
        return cpu::prepare_tokens(tokens_N, targets_N, pos_N, start_N, tokens_host, targets_host, doc_start_host, n, s,
                                   v, ignore_index);
    }
    int64_t router_capacity(int32_t* expert_TK, int64_t* num_kept_E_host, int64_t* num_selected_E_host,
                            const int32_t* selected_TK, int64_t capacity, int64_t t, int64_t k, int64_t e) override {
        int64_t dropped = 0;
        cpu::router_capacity_forward(expert_TK, num_kept_E_host, num_selected_E_host, &dropped, selected_TK, capacity,
                                     t, k, e);
        return dropped;
    }
    void router_bias_update(float* bias_E, const int64_t* selected_E_host, double rate, int64_t e) override {
        int64_t total = 0;
        for (int64_t j = 0; j < e; ++j) total += selected_E_host[j];
        const double mean = double(total) / double(e);
        const float step = float(rate);
        for (int64_t j = 0; j < e; ++j) {
            const double load = double(selected_E_host[j]);
            if (load > mean)
                bias_E[j] -= step;
            else if (load < mean)
                bias_E[j] += step;
        }
    }
    int64_t build_permutation(int32_t* row_of_TK, int32_t* token_of_row_R, int64_t* tokens_per_expert_E_host,
                              int64_t* offset_E_host, const int32_t* expert_TK, int64_t t, int64_t k,
                              int64_t e) override {
        return cpu::build_permutation(row_of_TK, token_of_row_R, tokens_per_expert_E_host, offset_E_host, expert_TK, t,
                                      k, e);
    }

    float amax(const float* x, int64_t n) override { return precision::amax(x, n); }
    void fake_quant(float* out, const float* in, int64_t n, Fp8Format fmt, float scale) override {
        precision::fake_quant(out, in, n, fmt, scale);
    }
    void fake_quant_row_tiles(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                              bool power_of_2) override {
        precision::fake_quant_row_tiles(out, in, rows, cols, tile, fmt, power_of_2);
    }
    void fake_quant_col_tiles(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                              bool power_of_2) override {
        precision::fake_quant_col_tiles(out, in, rows, cols, tile, fmt, power_of_2);
    }
    void fake_quant_blocks(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                           bool power_of_2) override {
        precision::fake_quant_blocks(out, in, rows, cols, tile, fmt, power_of_2);
    }
    void round_bf16(float* out, const float* in, int64_t n) override { precision::round_bf16(out, in, n); }
    void quantize_row_tiles(uint8_t* codes, float* scales, const float* in, int64_t rows, int64_t cols, int64_t tile,
                            Fp8Format fmt, bool power_of_2) override {
        precision::quantize_row_tiles(codes, scales, in, rows, cols, tile, fmt, power_of_2);
    }
    void dequantize_row_tiles(float* out, const uint8_t* codes, const float* scales, int64_t rows, int64_t cols,
                              int64_t tile, Fp8Format fmt) override {
        precision::dequantize_row_tiles(out, codes, scales, rows, cols, tile, fmt);
    }
    uint64_t fingerprint(const float* x, int64_t n) override { return cpu::fingerprint(x, n); }

    void adamw_update(float* value, const float* grad, void* m, void* v, bool moments_bf16, int64_t n, float b1,
                      float b2, float step_size, float inv_sqrt_bc2, float eps, float decay) override {
        if (moments_bf16)
            cpu::adamw_update(value, grad, static_cast<uint16_t*>(m), static_cast<uint16_t*>(v), n, b1, b2, step_size,
                              inv_sqrt_bc2, eps, decay);
        else
            cpu::adamw_update(value, grad, static_cast<float*>(m), static_cast<float*>(v), n, b1, b2, step_size,
                              inv_sqrt_bc2, eps, decay);
    }
    double sum_squares(const float* x, int64_t n) override { return frugal::sum_squares(x, n); }
    void scale(float* x, int64_t n, float factor) override { cpu::scale(x, n, factor); }

  protected:
    const Ops<float>* ops_f32() const override { return &f32_; }
    const Ops<double>* ops_f64() const override { return &f64_; }

  private:
    CpuOps<float> f32_;
    CpuOps<double> f64_;
};

}  // namespace

Backend& backend() {
    static CpuBackend cpu;
    return cpu;
}

}  // namespace frugal::backend::cpu
