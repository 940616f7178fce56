// cuBLASLt GEMMs for the three products of a linear layer, in Frugal's row-major convention (backend/cpu/ops.h):
//
//   forward          y_NO   = x_NI w_OI^T          operands (first, second) = (x, w)
//   backward data    dx_NI += dy_NO w_OI           operands (first, second) = (dy, w)
//   backward weight  dw_OI += dy_NO^T x_NI         operands (first, second) = (dy, x)
//
// Legend: N rows (tokens), I in features, O out features. The forward writes its output, the backwards ADD into
// theirs (beta = 1), as on the CPU.
//
// Formats: FP32 (CUBLAS_COMPUTE_32F, no TF32); BF16 operands with FP32 accumulation; FP8 tensorwise (E4M3 or E5M2
// operands, one FP32 scale each); FP8 blockwise in DeepSeek-V3's layout (section 3.3: 1x128 tiles for activations
// and gradients, 128x128 blocks for weights), which cuBLASLt runs on Hopper (compute capability 9.0) only. Outputs
// are FP32 or BF16; FP32 operands give FP32.
//
// cuBLAS is column-major: a row-major R x C buffer is, to it, a C x R matrix with leading dimension C, so every
// product is computed as its transpose, y^T = w x^T and so on, with A = the second operand and B = the first.
// FP8 needs the "TN" form (both operands contiguous along the contraction), so the FP8 backwards take transposed
// copies, which the FP8 quantizers write next to the row-major codes (as DeepSeek-V3 and Transformer Engine do):
//
//   format      forward            backward data            backward weight
//   FP32/BF16   x_NI, w_OI         dy_NO, w_OI              dy_NO, x_NI
//   FP8         x_NI, w_OI         dy_NO, w_IO (w^T)        dy_ON (dy^T), x_IN (x^T)
//
// FP8 operand scales multiply the codes back to values (a "dequantization" scale, 1 / the quantizer's scale) and
// are device pointers. Tensorwise: one float each. Blockwise, with K the contraction (I forward, O backward data, N
// backward weight) and L = ceil(K / 128) tiles along it (cuBLAS docs, 3.1.4.5.1 "Scaling factors layouts"):
//   1x128 tiles (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F) of an operand with R rows (the rows of its stored form:
//     N for x_NI and dy_NO, I for x_IN, O for dy_ON): scale of (row r, tile t) at t * R + r, i.e. stored [L, R]
//     (row-major), the transpose of the natural per-row layout;
//   128x128 blocks (CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F) of a weight with R rows (O for w_OI, I for w_IO):
//     scale of (row block p, tile t) at p * L4 + t with L4 = L rounded up to a multiple of 4, i.e. stored
//     [ceil(R / 128), L4] with the row stride padded.
// The weights carry the blocks and the activations and gradients the tiles: forward (x tiles, w blocks), backward
// data (dy tiles, w blocks), backward weight (dy tiles over N, x tiles over N).
//
// Structure: make_descriptors(spec) creates the matmul descriptor and the matrix layouts of a spec and needs no GPU
// (it is unit-tested without one); LtGemm keeps, per spec, an LtPlan of those descriptors and the algorithm the
// heuristic chose, built on the spec's first use, so a step only sets the operand scale pointers and calls
// cublasLtMatmul. The workspace comes from the allocator once.
//
// Invariants: every dimension is positive; FP8 dimensions are multiples of 16 (cuBLASLt's 16-byte alignment of FP8
// rows and leading dimensions); E5M2 x E5M2 is refused (cuBLASLt has no such kernel); an LtGemm is used from one
// host thread (the one that owns the backend's stream), since a plan's scale pointers are set per call.
#pragma once

#include <cublasLt.h>

#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "backend/cuda/allocator.h"
#include "core/dtype.h"
#include "precision/fp8.h"

namespace frugal::cuda {

using precision::Fp8Format;

enum class LinearProduct : uint8_t { kForward, kBackwardData, kBackwardWeight };
enum class GemmFormat : uint8_t { kF32, kBF16, kFp8Tensorwise, kFp8Blockwise };

const char* product_name(LinearProduct product);
const char* format_name(GemmFormat format);

struct GemmSpec {
    LinearProduct product = LinearProduct::kForward;
    GemmFormat format = GemmFormat::kF32;
    int64_t n = 0;    // rows (tokens)
    int64_t in = 0;   // in features (I)
    int64_t out = 0;  // out features (O)
    // FP8 element types of the first and second operand (see the table above); ignored by FP32 and BF16.
    Fp8Format first_fp8 = Fp8Format::kE4M3;
    Fp8Format second_fp8 = Fp8Format::kE4M3;
    DType out_dtype = DType::kF32;  // kF32 or kBF16

    auto operator<=>(const GemmSpec&) const = default;
};

// "backward data dx_NI += dy_NO w_IO^T (N=256 I=512 O=1024), fp8-blockwise dy E5M2 w E4M3 -> f32"
std::string describe(const GemmSpec& spec);

// The column-major GEMM D[m,n] = op(A)[m,k] op(B)[k,n] (+ D) that computes a spec, and its operands' stored shapes.
struct LtGemmDims {
    int64_t m = 0, n = 0, k = 0;
    bool trans_a = false, trans_b = false;
    int64_t a_rows = 0, a_cols = 0, lda = 0;  // column-major rows and columns of A as stored
    int64_t b_rows = 0, b_cols = 0, ldb = 0;
    int64_t ldd = 0;  // D is m x n
    float beta = 0;   // 0 forward, 1 backward
};
LtGemmDims lt_dims(const GemmSpec& spec);

// Where the blockwise scales of one operand live (see the header comment); mode is a cublasLtMatmulMatrixScale_t.
struct LtScaleLayout {
    int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
    int64_t rows = 1;     // rows of the operand's stored form
    int64_t k_tiles = 1;  // L = ceil(K / 128)
    int64_t numel = 1;    // floats the scale buffer holds
    // Offset of the scale of element (row, k) of the stored operand, k along the contraction.
    int64_t index(int64_t row, int64_t k) const;
};
// operand 0 = first, 1 = second.
LtScaleLayout lt_scale_layout(const GemmSpec& spec, int operand);

// The descriptors of one spec (owned; move-only). c_d is the layout of C and D (the same buffer).
struct LtDescriptors {
    cublasLtMatmulDesc_t matmul = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c_d = nullptr;
    LtGemmDims dims;

    LtDescriptors() = default;
    ~LtDescriptors();
    LtDescriptors(LtDescriptors&& other) noexcept;
    LtDescriptors& operator=(LtDescriptors&& other) noexcept;
    LtDescriptors(const LtDescriptors&) = delete;
    LtDescriptors& operator=(const LtDescriptors&) = delete;
};

// Validates the spec (an Error naming what is wrong) and creates its descriptors; no GPU needed.
LtDescriptors make_descriptors(const GemmSpec& spec);

struct LtPlan {
    GemmSpec spec;
    LtDescriptors desc;
    cublasLtMatmulAlgo_t algo = {};
    size_t workspace_bytes = 0;  // what the chosen algorithm needs, at most LtGemm::kWorkspaceBytes
};

class LtGemm {
  public:
    // cuBLAS recommends 32 MiB of workspace on Hopper and Blackwell.
    static constexpr size_t kWorkspaceBytes = size_t(32) << 20;

    explicit LtGemm(CudaAllocator& allocator);
    ~LtGemm();
    LtGemm(const LtGemm&) = delete;
    LtGemm& operator=(const LtGemm&) = delete;

    // out: y_NO, dx_NI or dw_OI (out_dtype); first, second: the product's operands in the storage of the table
    // above; the scales: device pointers for FP8 (null otherwise). Queued on the allocator's stream.
    void run(const GemmSpec& spec, void* out, const void* first, const float* first_scale, const void* second,
             const float* second_scale);

    // The plan of a spec, built (descriptors + heuristic) on first use.
    const LtPlan& plan(const GemmSpec& spec);
    size_t num_plans() const { return plans_.size(); }

  private:
    std::unique_ptr<LtPlan> build_plan(const GemmSpec& spec);

    CudaAllocator& allocator_;
    cublasLtHandle_t handle_ = nullptr;
    void* workspace_ = nullptr;
    std::map<GemmSpec, std::unique_ptr<LtPlan>> plans_;
};

}  // namespace frugal::cuda
