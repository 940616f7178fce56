// cuBLASLt linear-layer GEMMs: the spec -> column-major GEMM mapping, the descriptors, and the plan cache (see
// gemm_lt.h for the conventions and the scale layouts).
#include "backend/cuda/gemm_lt.h"

#include <cuda_runtime_api.h>

#include <utility>

#include "backend/cuda/check.h"
#include "core/error.h"

namespace frugal::cuda {

namespace {

constexpr int64_t kTile = 128;        // DeepSeek-V3's FP8 tile and block edge
constexpr int64_t kFp8Multiple = 16;  // FP8 rows and leading dimensions: 16 bytes

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool is_fp8(GemmFormat f) { return f == GemmFormat::kFp8Tensorwise || f == GemmFormat::kFp8Blockwise; }

const char* fp8_name(Fp8Format f) { return f == Fp8Format::kE4M3 ? "E4M3" : "E5M2"; }

cudaDataType_t fp8_type(Fp8Format f) { return f == Fp8Format::kE4M3 ? CUDA_R_8F_E4M3 : CUDA_R_8F_E5M2; }

cudaDataType_t operand_type(GemmFormat format, Fp8Format fp8) {
    switch (format) {
        case GemmFormat::kF32:
            return CUDA_R_32F;
        case GemmFormat::kBF16:
            return CUDA_R_16BF;
        default:
            return fp8_type(fp8);
    }
}

cudaDataType_t out_type(DType d) { return d == DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F; }

// The contraction length of a product.
int64_t contraction(const GemmSpec& s) {
    switch (s.product) {
        case LinearProduct::kForward:
            return s.in;
        case LinearProduct::kBackwardData:
            return s.out;
        default:
            return s.n;
    }
}

// Names of the operands in the storage the format uses, first then second.
std::pair<const char*, const char*> operand_names(const GemmSpec& s) {
    const bool fp8 = is_fp8(s.format);
    switch (s.product) {
        case LinearProduct::kForward:
            return {"x_NI", "w_OI"};
        case LinearProduct::kBackwardData:
            return {"dy_NO", fp8 ? "w_IO" : "w_OI"};
        default:
            return {fp8 ? "dy_ON" : "dy_NO", fp8 ? "x_IN" : "x_NI"};
    }
}

void validate(const GemmSpec& s) {
    FRUGAL_CHECK(s.n > 0 && s.in > 0 && s.out > 0, "GEMM dimensions must be positive: ", describe(s));
    FRUGAL_CHECK(s.out_dtype == DType::kF32 || s.out_dtype == DType::kBF16, "GEMM output must be f32 or bf16, got ",
                 dtype_name(s.out_dtype), ": ", describe(s));
    FRUGAL_CHECK(s.format != GemmFormat::kF32 || s.out_dtype == DType::kF32,
                 "an fp32 GEMM writes f32; a bf16 output needs bf16 or fp8 operands: ", describe(s));
    if (!is_fp8(s.format)) return;
    FRUGAL_CHECK(s.n % kFp8Multiple == 0 && s.in % kFp8Multiple == 0 && s.out % kFp8Multiple == 0,
                 "FP8 GEMMs need every dimension a multiple of ", kFp8Multiple,
                 " (cuBLASLt's 16-byte rows): pad the tokens or choose model dims that are: ", describe(s));
    FRUGAL_CHECK(!(s.first_fp8 == Fp8Format::kE5M2 && s.second_fp8 == Fp8Format::kE5M2),
                 "cuBLASLt has no E5M2 x E5M2 GEMM: keep one operand E4M3 (weights and activations): ", describe(s));
}

template <typename T>
void set_attr(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const T& value) {
    FRUGAL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)));
}

cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
    cublasLtMatrixLayout_t layout = nullptr;
    FRUGAL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, uint64_t(rows), uint64_t(cols), ld));
    return layout;
}

}  // namespace

const char* product_name(LinearProduct product) {
    switch (product) {
        case LinearProduct::kForward:
            return "forward";
        case LinearProduct::kBackwardData:
            return "backward data";
        default:
            return "backward weight";
    }
}

const char* format_name(GemmFormat format) {
    switch (format) {
        case GemmFormat::kF32:
            return "fp32";
        case GemmFormat::kBF16:
            return "bf16";
        case GemmFormat::kFp8Tensorwise:
            return "fp8-tensorwise";
        default:
            return "fp8-blockwise";
    }
}

std::string describe(const GemmSpec& s) {
    const auto [first, second] = operand_names(s);
    std::string formula;
    switch (s.product) {
        case LinearProduct::kForward:
            formula = "y_NO = x_NI w_OI^T";
            break;
        case LinearProduct::kBackwardData:
            formula = is_fp8(s.format) ? "dx_NI += dy_NO w_IO^T" : "dx_NI += dy_NO w_OI";
            break;
        default:
            formula = is_fp8(s.format) ? "dw_OI += dy_ON x_IN^T" : "dw_OI += dy_NO^T x_NI";
            break;
    }
    std::string d = ::frugal::detail::concat(product_name(s.product), " ", formula, " (N=", s.n, " I=", s.in,
                                             " O=", s.out, "), ", format_name(s.format));
    if (is_fp8(s.format))
        d += ::frugal::detail::concat(" ", first, " ", fp8_name(s.first_fp8), " ", second, " ", fp8_name(s.second_fp8));
    return d + " -> " + dtype_name(s.out_dtype);
}

LtGemmDims lt_dims(const GemmSpec& s) {
    LtGemmDims d;
    const bool fp8 = is_fp8(s.format);
    switch (s.product) {
        case LinearProduct::kForward:
            // y^T[O,N] = (w_OI as I x O)^T (x_NI as I x N)
            d.m = s.out, d.n = s.n, d.k = s.in;
            d.trans_a = true, d.trans_b = false;
            d.a_rows = s.in, d.a_cols = s.out;
            d.b_rows = s.in, d.b_cols = s.n;
            d.beta = 0;
            break;
        case LinearProduct::kBackwardData:
            // dx^T[I,N] = (w_OI as I x O) (dy_NO as O x N); FP8: (w_IO as O x I)^T (dy_NO as O x N)
            d.m = s.in, d.n = s.n, d.k = s.out;
            d.trans_a = fp8, d.trans_b = false;
            d.a_rows = fp8 ? s.out : s.in, d.a_cols = fp8 ? s.in : s.out;
            d.b_rows = s.out, d.b_cols = s.n;
            d.beta = 1;
            break;
        default:
            // dw^T[I,O] = (x_NI as I x N) (dy_NO as O x N)^T; FP8: (x_IN as N x I)^T (dy_ON as N x O)
            d.m = s.in, d.n = s.out, d.k = s.n;
            d.trans_a = fp8, d.trans_b = !fp8;
            d.a_rows = fp8 ? s.n : s.in, d.a_cols = fp8 ? s.in : s.n;
            d.b_rows = fp8 ? s.n : s.out, d.b_cols = fp8 ? s.out : s.n;
            d.beta = 1;
            break;
    }
    d.lda = d.a_rows;
    d.ldb = d.b_rows;
    d.ldd = d.m;
    return d;
}

int64_t LtScaleLayout::index(int64_t row, int64_t k) const {
    switch (mode) {
        case CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F:
            return (k / kTile) * rows + row;
        case CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F:
            return (row / kTile) * ceil_div(k_tiles, 4) * 4 + k / kTile;
        default:
            return 0;
    }
}

LtScaleLayout lt_scale_layout(const GemmSpec& s, int operand) {
    FRUGAL_CHECK(operand == 0 || operand == 1, "operand is 0 (first) or 1 (second), got ", operand);
    LtScaleLayout l;
    if (s.format != GemmFormat::kFp8Blockwise) return l;
    const LtGemmDims d = lt_dims(s);
    // The second operand is cuBLAS's A (m rows), the first its B (n rows); the weight is the second operand of the
    // forward and the backward data product, and carries the 128x128 blocks.
    const bool is_weight = operand == 1 && s.product != LinearProduct::kBackwardWeight;
    l.rows = operand == 1 ? d.m : d.n;
    l.k_tiles = ceil_div(d.k, kTile);
    if (is_weight) {
        l.mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
        l.numel = ceil_div(l.rows, kTile) * ceil_div(l.k_tiles, 4) * 4;
    } else {
        l.mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
        l.numel = l.rows * l.k_tiles;
    }
    return l;
}

LtDescriptors::~LtDescriptors() {
    if (c_d) cublasLtMatrixLayoutDestroy(c_d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (matmul) cublasLtMatmulDescDestroy(matmul);
}

LtDescriptors::LtDescriptors(LtDescriptors&& o) noexcept
    : matmul(std::exchange(o.matmul, nullptr)),
      a(std::exchange(o.a, nullptr)),
      b(std::exchange(o.b, nullptr)),
      c_d(std::exchange(o.c_d, nullptr)),
      dims(o.dims) {}

LtDescriptors& LtDescriptors::operator=(LtDescriptors&& o) noexcept {
    if (this != &o) {
        LtDescriptors gone(std::move(*this));
        matmul = std::exchange(o.matmul, nullptr);
        a = std::exchange(o.a, nullptr);
        b = std::exchange(o.b, nullptr);
        c_d = std::exchange(o.c_d, nullptr);
        dims = o.dims;
    }
    return *this;
}

LtDescriptors make_descriptors(const GemmSpec& s) {
    validate(s);
    LtDescriptors desc;
    desc.dims = lt_dims(s);
    const LtGemmDims& d = desc.dims;
    FRUGAL_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.matmul, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_a = d.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = d.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    set_attr(desc.matmul, CUBLASLT_MATMUL_DESC_TRANSA, op_a);
    set_attr(desc.matmul, CUBLASLT_MATMUL_DESC_TRANSB, op_b);
    if (s.format == GemmFormat::kFp8Blockwise) {
        const int32_t mode_a = lt_scale_layout(s, 1).mode;
        const int32_t mode_b = lt_scale_layout(s, 0).mode;
        set_attr(desc.matmul, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, mode_a);
        set_attr(desc.matmul, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, mode_b);
    }
    desc.a = make_layout(operand_type(s.format, s.second_fp8), d.a_rows, d.a_cols, d.lda);
    desc.b = make_layout(operand_type(s.format, s.first_fp8), d.b_rows, d.b_cols, d.ldb);
    desc.c_d = make_layout(out_type(s.out_dtype), d.m, d.n, d.ldd);
    return desc;
}

LtGemm::LtGemm(CudaAllocator& allocator) : allocator_(allocator) { FRUGAL_CUBLAS_CHECK(cublasLtCreate(&handle_)); }

LtGemm::~LtGemm() {
    plans_.clear();
    if (workspace_) allocator_.deallocate(workspace_, kWorkspaceBytes);
    if (handle_) cublasLtDestroy(handle_);
}

const LtPlan& LtGemm::plan(const GemmSpec& spec) {
    // FP32 and BF16 ignore the FP8 element types: one plan whatever they say.
    GemmSpec key = spec;
    if (!is_fp8(key.format)) key.first_fp8 = key.second_fp8 = Fp8Format::kE4M3;
    auto it = plans_.find(key);
    if (it == plans_.end()) it = plans_.emplace(key, build_plan(key)).first;
    return *it->second;
}

std::unique_ptr<LtPlan> LtGemm::build_plan(const GemmSpec& spec) {
    auto plan = std::make_unique<LtPlan>();
    plan->spec = spec;
    plan->desc = make_descriptors(spec);
    if (workspace_ == nullptr) workspace_ = allocator_.allocate(kWorkspaceBytes);

    cublasLtMatmulPreference_t pref = nullptr;
    FRUGAL_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const size_t max_workspace = kWorkspaceBytes;
    cublasLtMatmulHeuristicResult_t result = {};
    int found = 0;
    cublasStatus_t status = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                                 &max_workspace, sizeof(max_workspace));
    if (status == CUBLAS_STATUS_SUCCESS)
        status = cublasLtMatmulAlgoGetHeuristic(handle_, plan->desc.matmul, plan->desc.a, plan->desc.b, plan->desc.c_d,
                                                plan->desc.c_d, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (status != CUBLAS_STATUS_SUCCESS || found == 0) {
        int major = 0, minor = 0;
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, allocator_.device_index());
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, allocator_.device_index());
        (void)cudaGetLastError();
        FRUGAL_THROW("cuBLASLt has no algorithm for ", describe(spec), " on this GPU (compute capability ", major, ".",
                     minor, "): ", detail::status_text(status),
                     spec.format == GemmFormat::kFp8Blockwise
                         ? "; fp8-blockwise runs on compute capability 9.0 (Hopper) only: use fp8-tensorwise there"
                         : "");
    }
    plan->algo = result.algo;
    plan->workspace_bytes = result.workspaceSize;
    return plan;
}

void LtGemm::run(const GemmSpec& spec, void* out, const void* first, const float* first_scale, const void* second,
                 const float* second_scale) {
    const LtPlan& p = plan(spec);
    if (is_fp8(spec.format)) {
        FRUGAL_CHECK(first_scale != nullptr && second_scale != nullptr,
                     "FP8 GEMMs need both operand scales: ", describe(spec));
        // A is the second operand, B the first (gemm_lt.h).
        set_attr(p.desc.matmul, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, second_scale);
        set_attr(p.desc.matmul, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, first_scale);
    }
    const float alpha = 1.0f;
    const float beta = p.desc.dims.beta;
    FRUGAL_CUBLAS_CHECK(cublasLtMatmul(handle_, p.desc.matmul, &alpha, second, p.desc.a, first, p.desc.b, &beta, out,
                                       p.desc.c_d, out, p.desc.c_d, &p.algo, workspace_, p.workspace_bytes,
                                       allocator_.stream()));
}

}  // namespace frugal::cuda
