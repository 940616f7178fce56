#include "backend/cuda/cuda_backend.h"

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "backend/cuda/allocator.h"
#include "backend/cuda/attention_cudnn.h"
#include "backend/cuda/check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/layers.h"
#include "backend/cuda/moe.h"
#include "backend/cuda/native_matmul.h"
#include "backend/cuda/optim.h"
#include "core/tensor.h"

namespace frugal::cuda {

namespace {

using backend::ScoreFunc;

// A device buffer that grows once and is reused (operand copies, workspaces).
class Scratch {
  public:
    void* get(Allocator& alloc, size_t nbytes) {
        if (!t_.defined() || t_.nbytes() < nbytes)
            t_ = Tensor::empty({int64_t(std::max<size_t>(nbytes, 1))}, DType::kU8, alloc);
        return t_.raw_data();
    }
    template <typename U>
    U* get(Allocator& alloc, int64_t n) {
        return static_cast<U*>(get(alloc, size_t(n) * sizeof(U)));
    }

  private:
    Tensor t_;
};

// Row-major C[M,N] = op(A) op(B) + beta C through cuBLASLt, which is column-major: C^T = op(B)^T op(A)^T, so
// cuBLASLt's first operand is B (stored column-major as B^T, leading dimension ldb) and its second is A.
class Fp32Gemm {
  public:
    static constexpr size_t kWorkspaceBytes = size_t(32) << 20;
    Fp32Gemm(CudaAllocator& alloc) : alloc_(alloc) {
        FRUGAL_CUBLAS_CHECK(cublasLtCreate(&handle_));
        workspace_ = Tensor::empty({int64_t(kWorkspaceBytes)}, DType::kU8, alloc_);
    }
    ~Fp32Gemm() {
        for (auto& [key, plan] : plans_) {
            cublasLtMatrixLayoutDestroy(plan.a);
            cublasLtMatrixLayoutDestroy(plan.b);
            cublasLtMatrixLayoutDestroy(plan.c);
            cublasLtMatmulDescDestroy(plan.desc);
        }
        cublasLtDestroy(handle_);
    }
    void run(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m, int64_t n,
             int64_t k, bool trans_a, bool trans_b, float beta) {
        if (m == 0 || n == 0) return;
        if (k == 0) {
            FRUGAL_CHECK(beta == 0.0f || beta == 1.0f, "a GEMM with k = 0 and beta ", beta);
            if (beta == 0.0f)
                FRUGAL_CUDA_CHECK(cudaMemset2DAsync(c, size_t(ldc) * sizeof(float), 0, size_t(n) * sizeof(float),
                                                    size_t(m), alloc_.stream()));
            return;
        }
        const Plan& p = plan(m, n, k, lda, ldb, ldc, trans_a, trans_b, alignment(b), alignment(a), alignment(c));
        const float alpha = 1.0f;
        FRUGAL_CUBLAS_CHECK(cublasLtMatmul(handle_, p.desc, &alpha, b, p.a, a, p.b, &beta, c, p.c, c, p.c, &p.algo,
                                           workspace_.raw_data(), kWorkspaceBytes, alloc_.stream()));
    }

  private:
    struct Plan {
        cublasLtMatmulDesc_t desc = nullptr;
        cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
        cublasLtMatmulAlgo_t algo = {};
    };
    // The pointers' alignment (up to 256 bytes) is part of a plan: cuBLASLt assumes 256 unless told, and model code
    // passes slices at any float offset (per-expert rows, parts of the flat gradients).
    using Key =
        std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool, uint32_t, uint32_t, uint32_t>;
    static uint32_t alignment(const void* p) {
        const uintptr_t u = reinterpret_cast<uintptr_t>(p);
        uint32_t a = 256;
        while (a > 4 && (u % a) != 0) a /= 2;
        return a;
    }

    const Plan& plan(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc, bool ta, bool tb,
                     uint32_t align_first, uint32_t align_second, uint32_t align_c) {
        const Key key{m, n, k, lda, ldb, ldc, ta, tb, align_first, align_second, align_c};
        auto it = plans_.find(key);
        if (it != plans_.end()) return it->second;
        Plan p;
        FRUGAL_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        const cublasOperation_t op_first = tb ? CUBLAS_OP_T : CUBLAS_OP_N, op_second = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
        FRUGAL_CUBLAS_CHECK(
            cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)));
        FRUGAL_CUBLAS_CHECK(
            cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)));
        // Column-major: the first operand is op(B)^T, N x K; the second op(A)^T, K x M; C^T is N x M.
        FRUGAL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_32F, tb ? k : n, tb ? n : k, ldb));
        FRUGAL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_32F, ta ? m : k, ta ? k : m, lda));
        FRUGAL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, n, m, ldc));
        cublasLtMatmulPreference_t pref = nullptr;
        FRUGAL_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
        const size_t ws = kWorkspaceBytes;
        FRUGAL_CUBLAS_CHECK(
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
        cublasLtMatmulHeuristicResult_t result = {};
        int found = 0;
        const cublasStatus_t st =
            cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
        cublasLtMatmulPreferenceDestroy(pref);
        FRUGAL_CUBLAS_CHECK(st);
        FRUGAL_CHECK(found > 0, "cuBLASLt has no FP32 algorithm for a ", m, " x ", n, " x ", k, " GEMM");
        p.algo = result.algo;
        return plans_.emplace(key, p).first->second;
    }

    CudaAllocator& alloc_;
    cublasLtHandle_t handle_ = nullptr;
    Tensor workspace_;
    std::map<Key, Plan> plans_;
};

class CudaBackend;

class CudaOps final : public backend::Ops<float> {
  public:
    CudaOps(backend::Backend& be, CudaAllocator& alloc, Fp32Gemm& gemm, cudnnHandle_t dnn, int sm)
        : Ops<float>(be), alloc_(alloc), gemm_(gemm), dnn_(dnn), sm_(sm) {}

    void fill(float* x, int64_t n, float value) const override { cuda::fill(st(), x, n, value); }
    void add(float* out, const float* a, const float* b, int64_t n) const override { cuda::add(st(), out, a, b, n); }
    void add_inplace(float* y, const float* x, int64_t n) const override { cuda::add_inplace(st(), y, x, n); }
    void bias_add(float* y_NO, const float* b_O, int64_t n, int64_t out) const override {
        cuda::bias_add(st(), y_NO, b_O, n, out);
    }
    void bias_backward(float* db_O, const float* dy_NO, int64_t n, int64_t out) const override {
        cuda::bias_backward(st(), db_O, dy_NO, n, out, alloc_);
    }
    void gemm(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m, int64_t n,
              int64_t k, bool trans_a, bool trans_b, float beta) const override {
        gemm_.run(c, ldc, a, lda, b, ldb, m, n, k, trans_a, trans_b, beta);
    }
    void embedding_forward(float* out_ND, const int32_t* tokens_N, const float* wte_VD, int64_t n,
                           int64_t d) const override {
        cuda::embedding_forward(st(), out_ND, tokens_N, wte_VD, n, d);
    }
    void embedding_backward(float* dwte_VD, const float* dout_ND, const int32_t* tokens_N, int64_t n,
                            int64_t d) const override {
        cuda::embedding_backward(st(), dwte_VD, dout_ND, tokens_N, n, d, alloc_);
    }
    void rmsnorm_forward(float* out_ND, float* rstd_N, const float* x_ND, const float* w_D, int64_t n, int64_t d,
                         double eps) const override {
        cuda::rmsnorm_forward(st(), out_ND, rstd_N, x_ND, w_D, n, d, eps);
    }
    void rmsnorm_backward(float* dx_ND, float* dw_D, const float* dout_ND, const float* x_ND, const float* w_D,
                          const float* rstd_N, int64_t n, int64_t d) const override {
        cuda::rmsnorm_backward(st(), dx_ND, dw_D, dout_ND, x_ND, w_D, rstd_N, n, d, alloc_);
    }
    void rope_apply(float* x, int64_t row_stride, int64_t head_stride, const int32_t* pos_N, const float* cos_PH,
                    const float* sin_PH, int64_t n, int64_t heads, int64_t rot_dim, bool inverse) const override {
        cuda::rope_apply(st(), x, row_stride, head_stride, pos_N, cos_PH, sin_PH, n, heads, rot_dim, inverse);
    }
    void strided_copy(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                      int64_t src_repeat) const override {
        cuda::strided_copy(st(), dst, ld_dst, src, ld_src, rows, cols, src_repeat);
    }
    void strided_add(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                     int64_t dst_repeat) const override {
        cuda::strided_add(st(), dst, ld_dst, src, ld_src, rows, cols, dst_repeat);
    }
    // cuDNN keeps the logsumexp of each query row.
    int64_t attention_saved_numel(int64_t b, int64_t s, int64_t hq) const override { return b * hq * s; }
    void attention_forward(float* out, float* saved, const float* q, const float* k, const float* v,
                           const backend::AttentionDims& dims, const int32_t* start_BS) const override;
    void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* saved, const float* out,
                            const float* q, const float* k, const float* v, const backend::AttentionDims& dims,
                            const int32_t* start_BS) const override;
    void swiglu_forward(float* out_NF, const float* gu_N2F, int64_t n, int64_t f) const override {
        cuda::swiglu_forward(st(), out_NF, gu_N2F, n, f);
    }
    void swiglu_backward(float* dgu_N2F, const float* dout_NF, const float* gu_N2F, int64_t n,
                         int64_t f) const override {
        cuda::swiglu_backward(st(), dgu_N2F, dout_NF, gu_N2F, n, f);
    }
    double cross_entropy_forward(float* loss_N, const float* logits_NV, const int32_t* targets_N, int64_t n, int64_t v,
                                 int32_t ignore_index) const override {
        return cuda::cross_entropy_forward(st(), loss_N, logits_NV, targets_N, n, v, ignore_index, alloc_);
    }
    void cross_entropy_backward(float* dlogits_NV, const float* logits_NV, const int32_t* targets_N, float scale,
                                int64_t n, int64_t v, int32_t ignore_index) const override {
        cuda::cross_entropy_backward(st(), dlogits_NV, logits_NV, targets_N, scale, n, v, ignore_index);
    }
    void sigmoid_gate_forward(float* out_TD, float* gate_T, const float* shared_TD, int64_t t,
                              int64_t d) const override {
        cuda::sigmoid_gate_forward(st(), out_TD, gate_T, shared_TD, t, d);
    }
    void sigmoid_gate_backward(float* d_shared_TD, float* d_logit_T, const float* dout_TD, const float* shared_TD,
                               const float* gate_T, int64_t t, int64_t d) const override {
        cuda::sigmoid_gate_backward(st(), d_shared_TD, d_logit_T, dout_TD, shared_TD, gate_T, t, d);
    }

    void router_scores_forward(float* scores_TE, float* lse_T, const float* logits_TE, ScoreFunc func, int64_t t,
                               int64_t e) const override {
        cuda::router_scores_forward(st(), scores_TE, lse_T, logits_TE, func, t, e);
    }
    void router_select_forward(int32_t* selected_TK, double* keys_TE, const float* scores_TE, const float* bias_E,
                               int64_t t, int64_t e, int64_t k, int64_t n_group, int64_t topk_group,
                               GroupScore group_score) const override {
        cuda::router_select_forward(st(), selected_TK, keys_TE, scores_TE, bias_E, t, e, k, n_group, topk_group,
                                    group_score);
    }
    void router_weights_forward(float* weight_TK, const float* scores_TE, const int32_t* selected_TK, bool renormalize,
                                double scale, int64_t t, int64_t e, int64_t k) const override {
        cuda::router_weights_forward(st(), weight_TK, scores_TE, selected_TK, renormalize, scale, t, e, k);
    }
    double router_aux_loss_forward(double* score_sum_T, const float* scores_TE, const int32_t* selected_TK,
                                   ScoreFunc func, double coef, int64_t groups, int64_t t, int64_t e,
                                   int64_t k) const override {
        return cuda::router_aux_loss_forward(st(), score_sum_T, scores_TE, selected_TK, func, coef, groups, t, e, k,
                                             alloc_);
    }
    double router_z_loss_forward(const float* lse_T, double coef, int64_t t) const override {
        return cuda::router_z_loss_forward(st(), lse_T, coef, t);
    }
    void router_weights_backward(float* d_scores_TE, const float* d_weight_TK, const float* scores_TE,
                                 const int32_t* selected_TK, bool renormalize, double scale, int64_t t, int64_t e,
                                 int64_t k) const override {
        cuda::router_weights_backward(st(), d_scores_TE, d_weight_TK, scores_TE, selected_TK, renormalize, scale, t, e,
                                      k);
    }
    void router_aux_loss_backward(float* d_scores_TE, float* d_aux_GE, const float* scores_TE,
                                  const int32_t* selected_TK, ScoreFunc func, double coef, float aux_scale,
                                  int64_t groups, int64_t t, int64_t e, int64_t k) const override {
        cuda::router_aux_loss_backward(st(), d_scores_TE, d_aux_GE, scores_TE, selected_TK, func, coef, aux_scale,
                                       groups, t, e, k, alloc_);
    }
    void router_scores_backward(float* d_logits_TE, const float* d_scores_TE, const float* scores_TE, ScoreFunc func,
                                int64_t t, int64_t e) const override {
        cuda::router_scores_backward(st(), d_logits_TE, d_scores_TE, scores_TE, func, t, e);
    }
    void router_z_loss_backward(float* d_logits_TE, const float* logits_TE, const float* lse_T, double coef,
                                float aux_scale, int64_t t, int64_t e) const override {
        cuda::router_z_loss_backward(st(), d_logits_TE, logits_TE, lse_T, coef, aux_scale, t, e);
    }
    void permute_rows(float* rows_RD, const float* x_TD, const int32_t* token_of_row_R, int64_t num_rows,
                      int64_t d) const override {
        cuda::permute_rows(st(), rows_RD, x_TD, token_of_row_R, num_rows, d);
    }
    void permute_rows_backward(float* dx_TD, const float* drows_RD, const int32_t* row_of_TK, int64_t t, int64_t k,
                               int64_t d) const override {
        cuda::permute_rows_backward(st(), dx_TD, drows_RD, row_of_TK, t, k, d);
    }
    void unpermute_combine(float* out_TD, const float* rows_RD, const float* weight_TK, const int32_t* row_of_TK,
                           int64_t t, int64_t k, int64_t d) const override {
        cuda::unpermute_combine(st(), out_TD, rows_RD, weight_TK, row_of_TK, t, k, d);
    }
    void unpermute_combine_backward(float* drows_RD, float* dweight_TK, const float* dout_TD, const float* rows_RD,
                                    const float* weight_TK, const int32_t* row_of_TK, int64_t t, int64_t k,
                                    int64_t d) const override {
        cuda::unpermute_combine_backward(st(), drows_RD, dweight_TK, dout_TD, rows_RD, weight_TK, row_of_TK, t, k, d);
    }

  private:
    cudaStream_t st() const { return alloc_.stream(); }
    // The graph of one attention call and, when document masked, its packing uploaded to the device.
    AttentionGraph& attention_graph(const backend::AttentionDims& dims, const int32_t* start_BS, AttentionDirection dir,
                                    const int32_t** doc_index) const;
    uint16_t* to_bf16(Scratch& buf, const float* x, int64_t n) const {
        uint16_t* out = buf.get<uint16_t>(alloc_, n);
        cuda::f32_to_bf16(st(), out, x, n);
        return out;
    }

    CudaAllocator& alloc_;
    Fp32Gemm& gemm_;
    cudnnHandle_t dnn_;
    int sm_;
    mutable AttentionGraphCache graphs_;
    mutable Scratch q_, k_, v_, o_, do_, dq_, dk_, dv_, grad_f32_, workspace_, doc_index_;
};

AttentionGraph& CudaOps::attention_graph(const backend::AttentionDims& dims, const int32_t* start_BS,
                                         AttentionDirection dir, const int32_t** doc_index) const {
    const int64_t b = dims.b, s = dims.s, hq = dims.hq, hkv = dims.hkv, hd_qk = dims.hd_qk, hd_v = dims.hd_v;
    const float scale = float(dims.scale);
    *doc_index = nullptr;
    AttentionKey key = causal_attention_key(b, s, hq, hkv, hd_qk, hd_v, scale, dir);
    if (start_BS) {
        // The document starts come to the host to be packed (cuDNN takes per-document lengths and offsets).
        std::vector<int32_t> starts(size_t(b * s));
        alloc_.copy_to_host(starts.data(), start_BS, starts.size() * sizeof(int32_t));
        const DocumentPacking packing = pack_documents(starts.data(), b, s, hq, hkv, hd_qk, hd_v);
        key = document_attention_key(b, s, hq, hkv, hd_qk, hd_v, scale, packing, dir);
        int32_t* index = doc_index_.get<int32_t>(alloc_, int64_t(packing.index_I.size()));
        alloc_.copy_from_host(index, packing.index_I.data(), packing.index_I.size() * sizeof(int32_t));
        *doc_index = index;
    }
    (void)sm_;
    return graphs_.get(dnn_, key);
}

void CudaOps::attention_forward(float* out, float* saved, const float* q, const float* k, const float* v,
                                const backend::AttentionDims& dims, const int32_t* start_BS) const {
    // Element counts: q [N, Hq*Dqk], k [N, Hkv*Dqk], v [N, Hkv*Dv], out [N, Hq*Dv].
    const int64_t n = dims.b * dims.s;
    const int64_t nq = n * dims.hq * dims.hd_qk, nk = n * dims.hkv * dims.hd_qk, nv = n * dims.hkv * dims.hd_v,
                  no = n * dims.hq * dims.hd_v;
    const int32_t* doc_index = nullptr;
    AttentionGraph& graph = attention_graph(dims, start_BS, AttentionDirection::kForward, &doc_index);
    uint16_t* o = o_.get<uint16_t>(alloc_, no);
    void* ws = workspace_.get(alloc_, size_t(std::max<int64_t>(graph.workspace_bytes(), 1)));
    cuda::attention_forward(graph, dnn_, o, saved, to_bf16(q_, q, nq), to_bf16(k_, k, nk), to_bf16(v_, v, nv),
                            doc_index, ws, graph.workspace_bytes());
    cuda::bf16_to_f32(st(), out, o, no);
}

void CudaOps::attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* saved,
                                 const float* out, const float* q, const float* k, const float* v,
                                 const backend::AttentionDims& dims, const int32_t* start_BS) const {
    // Element counts: q, dq [N, Hq*Dqk]; k, dk [N, Hkv*Dqk]; v, dv [N, Hkv*Dv]; out, dout [N, Hq*Dv].
    const int64_t n = dims.b * dims.s;
    const int64_t nq = n * dims.hq * dims.hd_qk, nk = n * dims.hkv * dims.hd_qk, nv = n * dims.hkv * dims.hd_v,
                  no = n * dims.hq * dims.hd_v;
    const int32_t* doc_index = nullptr;
    AttentionGraph& graph = attention_graph(dims, start_BS, AttentionDirection::kBackward, &doc_index);
    uint16_t* gq = dq_.get<uint16_t>(alloc_, nq);
    uint16_t* gk = dk_.get<uint16_t>(alloc_, nk);
    uint16_t* gv = dv_.get<uint16_t>(alloc_, nv);
    void* ws = workspace_.get(alloc_, size_t(std::max<int64_t>(graph.workspace_bytes(), 1)));
    cuda::attention_backward(graph, dnn_, gq, gk, gv, to_bf16(do_, dout, no), to_bf16(o_, out, no), saved,
                             to_bf16(q_, q, nq), to_bf16(k_, k, nk), to_bf16(v_, v, nv), doc_index, ws,
                             graph.workspace_bytes());
    // cuDNN writes the gradients; the operation adds them.
    float* g = grad_f32_.get<float>(alloc_, std::max(nq, std::max(nk, nv)));
    for (auto [dst, src, count] : {std::tuple{dq, gq, nq}, std::tuple{dk, gk, nk}, std::tuple{dv, gv, nv}}) {
        cuda::bf16_to_f32(st(), g, src, count);
        cuda::add_inplace(st(), dst, g, count);
    }
}

class CudaBackend final : public backend::Backend {
  public:
    explicit CudaBackend(int device) : device_(device), stream_(make_stream(device)), alloc_(device, stream_) {
        cudaDeviceProp prop{};
        FRUGAL_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
        sm_ = prop.major * 10 + prop.minor;
        name_ = std::string("cuda:") + std::to_string(device) + " (" + prop.name + ")";
        FRUGAL_CUDNN_CHECK(cudnnCreate(&dnn_));
        FRUGAL_CUDNN_CHECK(cudnnSetStream(dnn_, stream_));
        gemm_ = std::make_unique<Fp32Gemm>(alloc_);
        f32_ = std::make_unique<CudaOps>(*this, alloc_, *gemm_, dnn_, sm_);
        register_allocator(Device::kCuda, &alloc_);
    }

    Device device() const override { return Device::kCuda; }
    std::string name() const override { return name_; }
    Allocator& allocator() override { return alloc_; }

    void copy_to_host(void* dst_host, const void* src, size_t nbytes) override {
        alloc_.copy_to_host(dst_host, src, nbytes);
    }
    void copy_to_device(void* dst, const void* src_host, size_t nbytes) override {
        alloc_.copy_from_host(dst, src_host, nbytes);
    }
    void copy(void* dst, const void* src, size_t nbytes) override { alloc_.copy_within(dst, src, nbytes); }
    void synchronize() override { FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

    int64_t prepare_tokens(int32_t* tokens_N, int32_t* targets_N, int32_t* pos_N, int32_t* start_N,
                           const int32_t* tokens_host, const int32_t* targets_host, const int32_t* doc_start_host,
                           int64_t n, int64_t s, int64_t v, int32_t ignore_index) override {
        return cuda::prepare_tokens(stream_, tokens_N, targets_N, pos_N, start_N, tokens_host, targets_host,
                                    doc_start_host, n, s, v, ignore_index);
    }
    int64_t router_capacity(int32_t* expert_TK, int64_t* num_kept_E_host, int64_t* num_selected_E_host,
                            const int32_t* selected_TK, int64_t capacity, int64_t t, int64_t k, int64_t e) override {
        return cuda::router_capacity(stream_, expert_TK, num_kept_E_host, num_selected_E_host, selected_TK, capacity, t,
                                     k, e);
    }
    void router_bias_update(float* bias_E, const int64_t* selected_E_host, double rate, int64_t e) override {
        cuda::router_bias_update(stream_, bias_E, selected_E_host, rate, e);
    }
    int64_t build_permutation(int32_t* row_of_TK, int32_t* token_of_row_R, int64_t* tokens_per_expert_E_host,
                              int64_t* offset_E_host, const int32_t* expert_TK, int64_t t, int64_t k,
                              int64_t e) override {
        return cuda::build_permutation(stream_, row_of_TK, token_of_row_R, tokens_per_expert_E_host, offset_E_host,
                                       expert_TK, t, k, e);
    }

    float amax(const float* x, int64_t n) override { return cuda::amax(stream_, x, n, alloc_); }
    void fake_quant(float* out, const float* in, int64_t n, Fp8Format fmt, float scale) override {
        cuda::fake_quant(stream_, out, in, n, fmt, scale);
    }
    void fake_quant_row_tiles(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                              bool power_of_2) override {
        cuda::fake_quant_row_tiles(stream_, out, in, rows, cols, tile, fmt, power_of_2);
    }
    void fake_quant_col_tiles(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                              bool power_of_2) override {
        cuda::fake_quant_col_tiles(stream_, out, in, rows, cols, tile, fmt, power_of_2);
    }
    void fake_quant_blocks(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                           bool power_of_2) override {
        cuda::fake_quant_blocks(stream_, out, in, rows, cols, tile, fmt, power_of_2);
    }
    void round_bf16(float* out, const float* in, int64_t n) override { cuda::round_bf16(stream_, out, in, n); }
    void quantize_row_tiles(uint8_t* codes, float* scales, const float* in, int64_t rows, int64_t cols, int64_t tile,
                            Fp8Format fmt, bool power_of_2) override {
        cuda::quantize_row_tiles(stream_, codes, scales, in, rows, cols, tile, fmt, power_of_2);
    }
    void dequantize_row_tiles(float* out, const uint8_t* codes, const float* scales, int64_t rows, int64_t cols,
                              int64_t tile, Fp8Format fmt) override {
        cuda::dequantize_row_tiles(stream_, out, codes, scales, rows, cols, tile, fmt);
    }
    uint64_t fingerprint(const float* x, int64_t n) override { return cuda::fingerprint(stream_, x, n, alloc_); }

    void adamw_update(float* value, const float* grad, void* m, void* v, bool moments_bf16, int64_t n, float b1,
                      float b2, float step_size, float inv_sqrt_bc2, float eps, float decay) override {
        cuda::adamw_update(stream_, value, grad, m, v, moments_bf16, n, b1, b2, step_size, inv_sqrt_bc2, eps, decay);
    }
    double sum_squares(const float* x, int64_t n) override { return cuda::sum_squares(stream_, x, n, alloc_); }
    void scale(float* x, int64_t n, float factor) override { cuda::scale(stream_, x, n, factor); }

    // cuBLASLt BF16 and FP8 products (backend/cuda/native_matmul.h); null for fp8-delayed, which emulates.
    std::unique_ptr<backend::NativeMatmul> make_native_matmul(const backend::NativeMatmulSpec& spec) override {
        if (!has_native_matmul(spec)) return nullptr;
        if (!lt_gemm_) lt_gemm_ = std::make_unique<LtGemm>(alloc_);
        return make_cuda_native_matmul(spec, alloc_, *lt_gemm_);
    }

  protected:
    const backend::Ops<float>* ops_f32() const override { return f32_.get(); }
    const backend::Ops<double>* ops_f64() const override { return nullptr; }

  private:
    static cudaStream_t make_stream(int device) {
        FRUGAL_CUDA_CHECK(cudaSetDevice(device));
        cudaStream_t s = nullptr;
        FRUGAL_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        return s;
    }

    int device_;
    cudaStream_t stream_;
    CudaAllocator alloc_;
    int sm_ = 0;
    std::string name_;
    cudnnHandle_t dnn_ = nullptr;
    std::unique_ptr<Fp32Gemm> gemm_;
    std::unique_ptr<CudaOps> f32_;
    std::unique_ptr<LtGemm> lt_gemm_;  // the native products' GEMMs, created with the first of them
};

}  // namespace

bool available(std::string* why_not) { return cuda_device_count(why_not) > 0; }

backend::Backend& backend() {
    // Created once per process, never destroyed: the CUDA runtime may be gone by the time static destructors run.
    static CudaBackend* be = [] {
        const int local_rank = local_rank_from_env([](const char* name) { return std::getenv(name); });
        return new CudaBackend(select_device(local_rank));
    }();
    return *be;
}

}  // namespace frugal::cuda
