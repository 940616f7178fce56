// cuBLASLt linear-layer GEMMs (backend/cuda/gemm_lt.h).
//
// Without a GPU: the descriptors of every product and format, read back from cuBLASLt (types, transposes, scale
// modes, shapes, leading dimensions) against a table written out here; the spec checks; and the column-major
// mapping itself, by running the GEMM it describes through a naive column-major emulator of cuBLAS's definition
// (op(A) op(B) with leading dimensions, block scales read as the cuBLAS documentation lays them out) and comparing
// with the row-major linear products computed directly.
// With a GPU: every product in every format against a CPU reference, the FP32 GEMM of the dequantized operands in
// double, and the plan cache.
//
// Legend: N rows, I in features, O out features; R x K is an operand's stored form (K along the contraction).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/allocator.h"
#include "backend/cuda/check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/gemm_lt.h"
#include "core/error.h"
#include "precision/fp8.h"
#include "precision/quantize.h"
#include "tests/util.h"

namespace frugal::cuda {
namespace {

using precision::Fp8Format;

constexpr LinearProduct kProducts[] = {LinearProduct::kForward, LinearProduct::kBackwardData,
                                       LinearProduct::kBackwardWeight};
constexpr GemmFormat kFormats[] = {GemmFormat::kF32, GemmFormat::kBF16, GemmFormat::kFp8Tensorwise,
                                   GemmFormat::kFp8Blockwise};

bool is_fp8(GemmFormat f) { return f == GemmFormat::kFp8Tensorwise || f == GemmFormat::kFp8Blockwise; }

GemmSpec spec_of(LinearProduct p, GemmFormat f, int64_t n, int64_t in, int64_t out, DType out_dtype = DType::kF32) {
    GemmSpec s;
    s.product = p;
    s.format = f;
    s.n = n;
    s.in = in;
    s.out = out;
    // E5M2 for the gradient (the first operand of both backwards), E4M3 otherwise.
    s.first_fp8 = p == LinearProduct::kForward ? Fp8Format::kE4M3 : Fp8Format::kE5M2;
    s.second_fp8 = Fp8Format::kE4M3;
    s.out_dtype = out_dtype;
    return s;
}

template <typename T>
T desc_attr(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr) {
    T v{};
    size_t written = 0;
    FRUGAL_CUBLAS_CHECK(cublasLtMatmulDescGetAttribute(d, attr, &v, sizeof(v), &written));
    EXPECT_EQ(written, sizeof(v));
    return v;
}

template <typename T>
T layout_attr(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr) {
    T v{};
    size_t written = 0;
    FRUGAL_CUBLAS_CHECK(cublasLtMatrixLayoutGetAttribute(l, attr, &v, sizeof(v), &written));
    EXPECT_EQ(written, sizeof(v));
    return v;
}

struct Layout {
    uint64_t rows, cols;
    int64_t ld;
};

void expect_layout(cublasLtMatrixLayout_t l, cudaDataType_t type, Layout want, const std::string& what) {
    EXPECT_EQ(layout_attr<uint32_t>(l, CUBLASLT_MATRIX_LAYOUT_TYPE), uint32_t(type)) << what;
    EXPECT_EQ(layout_attr<uint64_t>(l, CUBLASLT_MATRIX_LAYOUT_ROWS), want.rows) << what;
    EXPECT_EQ(layout_attr<uint64_t>(l, CUBLASLT_MATRIX_LAYOUT_COLS), want.cols) << what;
    EXPECT_EQ(layout_attr<int64_t>(l, CUBLASLT_MATRIX_LAYOUT_LD), want.ld) << what;
}

// ---- Descriptors, no GPU --------------------------------------------------------------------------------------

// N=32, I=64, O=48, written out by hand: cuBLAS sees row-major [R, C] as column-major C x R with ld C.
TEST(LtDescriptors, Fp32ProductsHaveTheTransposesShapesAndLeadingDimensionsOfTheRowMajorBuffers) {
    struct Want {
        LinearProduct product;
        cublasOperation_t op_a, op_b;
        Layout a, b, d;
    };
    const Want table[] = {
        // y^T (48 x 32) = (w_OI: 64 x 48)^T (x_NI: 64 x 32)
        {LinearProduct::kForward, CUBLAS_OP_T, CUBLAS_OP_N, {64, 48, 64}, {64, 32, 64}, {48, 32, 48}},
        // dx^T (64 x 32) = (w_OI: 64 x 48) (dy_NO: 48 x 32)
        {LinearProduct::kBackwardData, CUBLAS_OP_N, CUBLAS_OP_N, {64, 48, 64}, {48, 32, 48}, {64, 32, 64}},
        // dw^T (64 x 48) = (x_NI: 64 x 32) (dy_NO: 48 x 32)^T
        {LinearProduct::kBackwardWeight, CUBLAS_OP_N, CUBLAS_OP_T, {64, 32, 64}, {48, 32, 48}, {64, 48, 64}},
    };
    for (const Want& w : table) {
        const GemmSpec s = spec_of(w.product, GemmFormat::kF32, 32, 64, 48);
        const LtDescriptors d = make_descriptors(s);
        const std::string what = describe(s);
        EXPECT_EQ(desc_attr<int32_t>(d.matmul, CUBLASLT_MATMUL_DESC_COMPUTE_TYPE), int32_t(CUBLAS_COMPUTE_32F)) << what;
        EXPECT_EQ(desc_attr<int32_t>(d.matmul, CUBLASLT_MATMUL_DESC_SCALE_TYPE), int32_t(CUDA_R_32F)) << what;
        EXPECT_EQ(desc_attr<int32_t>(d.matmul, CUBLASLT_MATMUL_DESC_TRANSA), int32_t(w.op_a)) << what;
        EXPECT_EQ(desc_attr<int32_t>(d.matmul, CUBLASLT_MATMUL_DESC_TRANSB), int32_t(w.op_b)) << what;
        expect_layout(d.a, CUDA_R_32F, w.a, what + " A");
        expect_layout(d.b, CUDA_R_32F, w.b, what + " B");
        expect_layout(d.c_d, CUDA_R_32F, w.d, what + " C/D");
        EXPECT_EQ(d.dims.beta, w.product == LinearProduct::kForward ? 0.0f : 1.0f) << what;
    }
}

// FP8 is TN only: the backwards read the transposed copies w_IO, dy_ON and x_IN.
TEST(LtDescriptors, Fp8ProductsAreTransposedNormalOverTheTransposedCopies) {
    struct Want {
        LinearProduct product;
        Layout a, b, d;
    };
    const Want table[] = {
        {LinearProduct::kForward, {64, 48, 64}, {64, 32, 64}, {48, 32, 48}},         // w_OI, x_NI
        {LinearProduct::kBackwardData, {48, 64, 48}, {48, 32, 48}, {64, 32, 64}},    // w_IO, dy_NO
        {LinearProduct::kBackwardWeight, {32, 64, 32}, {32, 48, 32}, {64, 48, 64}},  // x_IN, dy_ON
    };
    for (GemmFormat f : {GemmFormat::kFp8Tensorwise, GemmFormat::kFp8Blockwise}) {
        for (const Want& w : table) {
            const GemmSpec s = spec_of(w.product, f, 32, 64, 48, DType::kBF16);
            const LtDescriptors d = make_descriptors(s);
            const std::string what = describe(s);
            EXPECT_EQ(desc_attr<int32_t>(d.matmul, CUBLASLT_MATMUL_DESC_TRANSA), int32_t(CUBLAS_OP_T)) << what;
            EXPECT_EQ(desc_attr<int32_t>(d.matmul, CUBLASLT_MATMUL_DESC_TRANSB), int32_t(CUBLAS_OP_N)) << what;
            const cudaDataType_t first = w.product == LinearProduct::kForward ? CUDA_R_8F_E4M3 : CUDA_R_8F_E5M2;
            expect_layout(d.a, CUDA_R_8F_E4M3, w.a, what + " A");
            expect_layout(d.b, first, w.b, what + " B");
            expect_layout(d.c_d, CUDA_R_16BF, w.d, what + " C/D");
        }
    }
}

TEST(LtDescriptors, BlockwiseScalesAre128x128ForWeightsAnd1x128ForActivationsAndGradients) {
    const int32_t vec = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    const int32_t blk = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    struct Want {
        LinearProduct product;
        int32_t a_mode, b_mode;  // A = the second operand, B = the first
    };
    for (const Want& w : {Want{LinearProduct::kForward, blk, vec}, Want{LinearProduct::kBackwardData, blk, vec},
                          Want{LinearProduct::kBackwardWeight, vec, vec}}) {
        const GemmSpec s = spec_of(w.product, GemmFormat::kFp8Blockwise, 256, 384, 512);
        const LtDescriptors d = make_descriptors(s);
        EXPECT_EQ(desc_attr<int32_t>(d.matmul, CUBLASLT_MATMUL_DESC_A_SCALE_MODE), w.a_mode) << describe(s);
        EXPECT_EQ(desc_attr<int32_t>(d.matmul, CUBLASLT_MATMUL_DESC_B_SCALE_MODE), w.b_mode) << describe(s);
    }
    // Tensorwise keeps cuBLASLt's default, one FP32 scalar per operand.
    const LtDescriptors t = make_descriptors(spec_of(LinearProduct::kForward, GemmFormat::kFp8Tensorwise, 32, 64, 48));
    EXPECT_EQ(desc_attr<int32_t>(t.matmul, CUBLASLT_MATMUL_DESC_A_SCALE_MODE),
              int32_t(CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F));
}

TEST(LtDescriptors, Bf16OperandsAccumulateInFp32AndMayWriteEitherType) {
    for (DType out : {DType::kF32, DType::kBF16}) {
        const GemmSpec s = spec_of(LinearProduct::kBackwardWeight, GemmFormat::kBF16, 8, 24, 40, out);
        const LtDescriptors d = make_descriptors(s);
        EXPECT_EQ(desc_attr<int32_t>(d.matmul, CUBLASLT_MATMUL_DESC_COMPUTE_TYPE), int32_t(CUBLAS_COMPUTE_32F));
        expect_layout(d.a, CUDA_R_16BF, {24, 8, 24}, describe(s));
        expect_layout(d.c_d, out == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF, {24, 40, 24}, describe(s));
    }
}

TEST(LtDescriptors, BlockwiseScaleBuffersFollowTheCublasLayouts) {
    // Forward, N=32 I=384 O=256: x tiles [3, 32]; w blocks [2, 4] (3 tiles along I, stride padded to 4).
    const GemmSpec s = spec_of(LinearProduct::kForward, GemmFormat::kFp8Blockwise, 32, 384, 256);
    const LtScaleLayout x = lt_scale_layout(s, 0), w = lt_scale_layout(s, 1);
    EXPECT_EQ(x.mode, CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F);
    EXPECT_EQ(x.numel, 96);
    EXPECT_EQ(x.index(5, 130), 1 * 32 + 5);
    EXPECT_EQ(x.index(31, 383), 2 * 32 + 31);
    EXPECT_EQ(w.mode, CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F);
    EXPECT_EQ(w.numel, 8);
    EXPECT_EQ(w.index(200, 300), 1 * 4 + 2);
    EXPECT_EQ(w.index(127, 127), 0);
    // Backward weight, N=256: both operands tiled along N, dy_ON with O rows and x_IN with I rows.
    const GemmSpec b = spec_of(LinearProduct::kBackwardWeight, GemmFormat::kFp8Blockwise, 256, 384, 512);
    EXPECT_EQ(lt_scale_layout(b, 0).numel, 512 * 2);
    EXPECT_EQ(lt_scale_layout(b, 1).numel, 384 * 2);
    EXPECT_EQ(lt_scale_layout(b, 1).index(7, 129), 384 + 7);
    // Other formats: one scalar.
    EXPECT_EQ(lt_scale_layout(spec_of(LinearProduct::kForward, GemmFormat::kFp8Tensorwise, 32, 64, 48), 1).numel, 1);
}

void expect_refused(const GemmSpec& s, const std::string& words) {
    try {
        make_descriptors(s);
        ADD_FAILURE() << describe(s) << " was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
}

TEST(LtDescriptors, SpecsCublasLtCannotRunAreRefusedWithTheReason) {
    expect_refused(spec_of(LinearProduct::kForward, GemmFormat::kFp8Tensorwise, 24, 64, 48), "multiple of 16");
    expect_refused(spec_of(LinearProduct::kForward, GemmFormat::kFp8Blockwise, 32, 64, 40), "multiple of 16");
    GemmSpec both_e5m2 = spec_of(LinearProduct::kBackwardData, GemmFormat::kFp8Tensorwise, 32, 64, 48);
    both_e5m2.second_fp8 = Fp8Format::kE5M2;
    expect_refused(both_e5m2, "E5M2 x E5M2");
    expect_refused(spec_of(LinearProduct::kForward, GemmFormat::kF32, 32, 64, 48, DType::kBF16), "writes f32");
    expect_refused(spec_of(LinearProduct::kForward, GemmFormat::kBF16, 32, 64, 48, DType::kE4M3), "f32 or bf16");
    expect_refused(spec_of(LinearProduct::kForward, GemmFormat::kF32, 0, 64, 48), "positive");
}

TEST(LtDescriptors, TheDescriptionNamesProductOperandsFormatsAndShape) {
    const std::string d = describe(spec_of(LinearProduct::kBackwardData, GemmFormat::kFp8Blockwise, 32, 64, 48));
    for (const char* part : {"backward data", "dy_NO", "w_IO", "E5M2", "E4M3", "fp8-blockwise", "N=32", "I=64", "O=48"})
        EXPECT_NE(d.find(part), std::string::npos) << part << " not in " << d;
}

// ---- The mapping, run on a column-major emulator ----------------------------------------------------------------

// Host data of one product in the storage gemm_lt.h's table names, with its reference.
struct HostProblem {
    GemmSpec spec;
    std::vector<float> first_RK, second_RK;        // stored forms, as values (FP8: the codes' values before scaling)
    std::vector<float> first_scale, second_scale;  // dequantization scales (FP8), in the LtScaleLayout order
    std::vector<float> out_init;                   // the output before the product (backwards accumulate)
    std::vector<double> want;                      // the reference output
    std::vector<double> abs_sum;                   // sum over k of |a||b| per output element, for tolerances
};

std::vector<float> transpose(const std::vector<float>& m_RC, int64_t r, int64_t c) {
    std::vector<float> t_CR(m_RC.size());
    for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < c; ++j) t_CR[size_t(j * r + i)] = m_RC[size_t(i * c + j)];
    return t_CR;
}

// Quantizes a stored operand [R, K] in the spec's format: FP8 in groups of its LtScaleLayout (power-of-2 scales, so
// the dequantization scale is exact); BF16 rounds; FP32 keeps it. Returns the values the GPU multiplies (codes'
// values for FP8) and writes the dequantization scales; *dequant gets the values they stand for.
std::vector<float> quantize_stored(const std::vector<float>& v_RK, int64_t r, int64_t k, GemmFormat format,
                                   Fp8Format fmt, const LtScaleLayout& layout, std::vector<float>* dequant_scale,
                                   std::vector<float>* dequant) {
    std::vector<float> held(v_RK.size());
    dequant->assign(v_RK.size(), 0.0f);
    if (!is_fp8(format)) {
        for (size_t i = 0; i < v_RK.size(); ++i)
            held[i] = format == GemmFormat::kBF16 ? precision::decode_bf16(precision::encode_bf16(v_RK[i])) : v_RK[i];
        *dequant = held;
        return held;
    }
    std::vector<float> amax(size_t(layout.numel), 0.0f);
    for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < k; ++j) {
            float& a = amax[size_t(layout.index(i, j))];
            a = std::max(a, std::fabs(v_RK[size_t(i * k + j)]));
        }
    dequant_scale->assign(size_t(layout.numel), 1.0f);
    for (size_t g = 0; g < amax.size(); ++g) (*dequant_scale)[g] = 1.0f / precision::scale_for(amax[g], fmt, true);
    for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < k; ++j) {
            const size_t e = size_t(i * k + j);
            const float ds = (*dequant_scale)[size_t(layout.index(i, j))];
            const float x = v_RK[e] / ds;
            held[e] = fmt == Fp8Format::kE4M3 ? precision::decode_e4m3(precision::encode_e4m3(x))
                                              : precision::decode_e5m2(precision::encode_e5m2(x));
            (*dequant)[e] = held[e] * ds;
        }
    return held;
}

// Builds one problem from random logical operands x_NI, w_OI, dy_NO; the reference is computed row-major from the
// dequantized operands, in double.
HostProblem make_problem(const GemmSpec& s, uint64_t seed) {
    HostProblem p;
    p.spec = s;
    const int64_t n = s.n, in = s.in, out = s.out;
    const bool fp8 = is_fp8(s.format);
    const std::vector<float> x = test::random_vec<float>(n * in, seed);
    const std::vector<float> w = test::random_vec<float>(out * in, seed + 1, 0.05);
    const std::vector<float> dy = test::random_vec<float>(n * out, seed + 2, 0.01);
    std::vector<float> first, second;
    int64_t first_r = 0, second_r = 0, k = 0, out_elems = 0;
    switch (s.product) {
        case LinearProduct::kForward:
            first = x, first_r = n, second = w, second_r = out, k = in, out_elems = n * out;
            break;
        case LinearProduct::kBackwardData:
            first = dy, first_r = n, k = out, out_elems = n * in;
            second = fp8 ? transpose(w, out, in) : w, second_r = fp8 ? in : out;
            break;
        default:
            first = fp8 ? transpose(dy, n, out) : dy, first_r = fp8 ? out : n;
            second = fp8 ? transpose(x, n, in) : x, second_r = fp8 ? in : n;
            k = n, out_elems = out * in;
            break;
    }
    // FP32/BF16 stored forms are not all [R, K]; only FP8 groups depend on the shape, and FP8 forms are [R, K].
    std::vector<float> first_deq, second_deq;
    p.first_RK = quantize_stored(first, first_r, fp8 ? k : int64_t(first.size()) / first_r, s.format, s.first_fp8,
                                 lt_scale_layout(s, 0), &p.first_scale, &first_deq);
    p.second_RK = quantize_stored(second, second_r, fp8 ? k : int64_t(second.size()) / second_r, s.format, s.second_fp8,
                                  lt_scale_layout(s, 1), &p.second_scale, &second_deq);
    p.out_init = s.product == LinearProduct::kForward ? std::vector<float>(size_t(out_elems), 0.0f)
                                                      : test::random_vec<float>(out_elems, seed + 3, 0.1);
    if (s.out_dtype == DType::kBF16)
        for (float& v : p.out_init) v = precision::decode_bf16(precision::encode_bf16(v));

    // Back to the logical operands, then the products as backend/cpu/ops.h states them.
    std::vector<float> xd, wd, dyd;
    switch (s.product) {
        case LinearProduct::kForward:
            xd = first_deq, wd = second_deq;
            break;
        case LinearProduct::kBackwardData:
            dyd = first_deq, wd = fp8 ? transpose(second_deq, in, out) : second_deq;
            break;
        default:
            dyd = fp8 ? transpose(first_deq, out, n) : first_deq;
            xd = fp8 ? transpose(second_deq, in, n) : second_deq;
            break;
    }
    p.want.assign(size_t(out_elems), 0.0);
    p.abs_sum.assign(size_t(out_elems), 0.0);
    auto acc = [&](size_t e, double a, double b) {
        p.want[e] += a * b;
        p.abs_sum[e] += std::fabs(a * b);
    };
    for (size_t e = 0; e < p.want.size(); ++e) p.want[e] = p.out_init[e];
    if (s.product == LinearProduct::kForward) {
        for (int64_t t = 0; t < n; ++t)
            for (int64_t o = 0; o < out; ++o)
                for (int64_t i = 0; i < in; ++i)
                    acc(size_t(t * out + o), xd[size_t(t * in + i)], wd[size_t(o * in + i)]);
    } else if (s.product == LinearProduct::kBackwardData) {
        for (int64_t t = 0; t < n; ++t)
            for (int64_t i = 0; i < in; ++i)
                for (int64_t o = 0; o < out; ++o)
                    acc(size_t(t * in + i), dyd[size_t(t * out + o)], wd[size_t(o * in + i)]);
    } else {
        for (int64_t o = 0; o < out; ++o)
            for (int64_t i = 0; i < in; ++i)
                for (int64_t t = 0; t < n; ++t)
                    acc(size_t(o * in + i), dyd[size_t(t * out + o)], xd[size_t(t * in + i)]);
    }
    return p;
}

// cuBLAS's D = alpha op(A) op(B) + beta C, column-major, with the block scales read as the cuBLAS documentation
// (3.1.4.5.1) lays them out in terms of op(A)'s row i / op(B)'s column j and the contraction index l — written here
// independently of LtScaleLayout, which speaks of the stored operands.
double scale_of(int32_t mode, const std::vector<float>& s, int64_t outer, int64_t outer_dim, int64_t l, int64_t k) {
    const int64_t tiles = (k + 127) / 128;
    switch (mode) {
        case CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F:
            return s[size_t((l / 128) * outer_dim + outer)];  // outer-major
        case CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F:
            return s[size_t((outer / 128) * ((tiles + 3) / 4 * 4) + l / 128)];  // K-major, stride L4
        default:
            return s.empty() ? 1.0 : s[0];
    }
}

std::vector<double> emulate_cublas(const HostProblem& p) {
    const LtGemmDims d = lt_dims(p.spec);
    const bool scaled = is_fp8(p.spec.format);
    const int32_t mode_a = lt_scale_layout(p.spec, 1).mode, mode_b = lt_scale_layout(p.spec, 0).mode;
    const std::vector<float>& a = p.second_RK;
    const std::vector<float>& b = p.first_RK;
    std::vector<double> out(p.out_init.begin(), p.out_init.end());
    for (int64_t j = 0; j < d.n; ++j)
        for (int64_t i = 0; i < d.m; ++i) {
            double sum = 0;
            for (int64_t l = 0; l < d.k; ++l) {
                const double av = d.trans_a ? a[size_t(i * d.lda + l)] : a[size_t(l * d.lda + i)];
                const double bv = d.trans_b ? b[size_t(l * d.ldb + j)] : b[size_t(j * d.ldb + l)];
                const double sa = scaled ? scale_of(mode_a, p.second_scale, i, d.m, l, d.k) : 1.0;
                const double sb = scaled ? scale_of(mode_b, p.first_scale, j, d.n, l, d.k) : 1.0;
                sum += sa * av * sb * bv;
            }
            double& o = out[size_t(j * d.ldd + i)];
            o = sum + double(d.beta) * o;
        }
    return out;
}

TEST(LtMapping, TheColumnMajorGemmOfEverySpecComputesItsRowMajorLinearProduct) {
    for (GemmFormat f : kFormats) {
        for (LinearProduct p : kProducts) {
            // Blockwise with partial tiles along every dimension (K = 160, 144 or 272).
            const GemmSpec s = spec_of(p, f, 144, 160, 272);
            const HostProblem prob = make_problem(s, 11);
            const std::vector<double> got = emulate_cublas(prob);
            test::expect_close(got.data(), prob.want.data(), int64_t(got.size()), 1e-9, 1e-9, describe(s), 11);
        }
    }
}

// ---- On a GPU -----------------------------------------------------------------------------------------------------

class LtGemmOnGpu : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string why;
        if (cuda_device_count(&why) == 0) GTEST_SKIP() << "needs a GPU: " << why;
        device_ = select_device(0);
        FRUGAL_CUDA_CHECK(cudaDeviceGetAttribute(&cc_major_, cudaDevAttrComputeCapabilityMajor, device_));
        FRUGAL_CUDA_CHECK(cudaDeviceGetAttribute(&cc_minor_, cudaDevAttrComputeCapabilityMinor, device_));
        FRUGAL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
        allocator_ = std::make_unique<CudaAllocator>(device_, stream_);
        gemm_ = std::make_unique<LtGemm>(*allocator_);
    }
    void TearDown() override {
        gemm_.reset();
        allocator_.reset();
        if (stream_) cudaStreamDestroy(stream_);
    }

    // Why this GPU cannot run the format, or empty.
    std::string unsupported(GemmFormat f) const {
        const int cc = cc_major_ * 10 + cc_minor_;
        if (is_fp8(f) && cc < 89) return "FP8 GEMMs need compute capability 8.9 or newer";
        if (f == GemmFormat::kFp8Blockwise && cc != 90) return "cuBLASLt runs 128-element block scaling on 9.0 only";
        return "";
    }

    void* upload(const void* host, size_t bytes) {
        void* p = allocator_->allocate(bytes);
        FRUGAL_CUDA_CHECK(cudaMemcpyAsync(p, host, bytes, cudaMemcpyHostToDevice, stream_));
        held_.push_back({p, bytes});
        return p;
    }
    // Values in the operand's device type: f32, bf16 bits or FP8 codes (exact: the values are on the grids).
    void* upload_operand(const std::vector<float>& v, GemmFormat f, Fp8Format fmt) {
        if (f == GemmFormat::kF32) return upload(v.data(), v.size() * 4);
        if (f == GemmFormat::kBF16) {
            std::vector<uint16_t> b(v.size());
            precision::encode_bf16(b.data(), v.data(), int64_t(v.size()));
            return upload(b.data(), b.size() * 2);
        }
        std::vector<uint8_t> c(v.size());
        for (size_t i = 0; i < v.size(); ++i)
            c[i] = fmt == Fp8Format::kE4M3 ? precision::encode_e4m3(v[i]) : precision::encode_e5m2(v[i]);
        return upload(c.data(), c.size());
    }

    std::vector<double> run(const HostProblem& p) {
        const GemmSpec& s = p.spec;
        void* first = upload_operand(p.first_RK, s.format, s.first_fp8);
        void* second = upload_operand(p.second_RK, s.format, s.second_fp8);
        const float* first_scale = nullptr;
        const float* second_scale = nullptr;
        if (is_fp8(s.format)) {
            first_scale = static_cast<const float*>(upload(p.first_scale.data(), p.first_scale.size() * 4));
            second_scale = static_cast<const float*>(upload(p.second_scale.data(), p.second_scale.size() * 4));
        }
        const size_t count = p.out_init.size();
        std::vector<double> got(count);
        if (s.out_dtype == DType::kF32) {
            void* out = upload(p.out_init.data(), count * 4);
            gemm_->run(s, out, first, first_scale, second, second_scale);
            std::vector<float> host(count);
            FRUGAL_CUDA_CHECK(cudaMemcpyAsync(host.data(), out, count * 4, cudaMemcpyDeviceToHost, stream_));
            FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream_));
            for (size_t i = 0; i < count; ++i) got[i] = host[i];
        } else {
            std::vector<uint16_t> init(count);
            precision::encode_bf16(init.data(), p.out_init.data(), int64_t(count));
            void* out = upload(init.data(), count * 2);
            gemm_->run(s, out, first, first_scale, second, second_scale);
            FRUGAL_CUDA_CHECK(cudaMemcpyAsync(init.data(), out, count * 2, cudaMemcpyDeviceToHost, stream_));
            FRUGAL_CUDA_CHECK(cudaStreamSynchronize(stream_));
            for (size_t i = 0; i < count; ++i) got[i] = precision::decode_bf16(init[i]);
        }
        for (const auto& [ptr, bytes] : held_) allocator_->deallocate(ptr, bytes);
        held_.clear();
        return got;
    }

    // |got - want| <= rel * sum_k |a b| + bf16 rounding of the output.
    void expect_within(const std::vector<double>& got, const HostProblem& p, double rel) {
        const bool bf16_out = p.spec.out_dtype == DType::kBF16;
        int64_t worst = -1;
        double worst_excess = 0;
        for (size_t e = 0; e < got.size(); ++e) {
            const double bound = rel * p.abs_sum[e] + (bf16_out ? std::ldexp(std::fabs(p.want[e]), -8) : 0.0) + 1e-30;
            const double excess = std::fabs(got[e] - p.want[e]) / bound;
            if (!(excess <= 1.0) && (worst < 0 || !(excess <= worst_excess))) worst = int64_t(e), worst_excess = excess;
        }
        if (worst >= 0) {
            const test::Comparison c = test::compare(got.data(), p.want.data(), int64_t(got.size()));
            ADD_FAILURE() << describe(p.spec) << ": element " << worst << " got " << got[size_t(worst)] << " want "
                          << p.want[size_t(worst)] << " (" << worst_excess << " x the bound, rel " << rel
                          << "); largest abs error " << c.max_abs << " at " << c.where << ", largest rel " << c.max_rel;
        }
    }

    int device_ = 0, cc_major_ = 0, cc_minor_ = 0;
    cudaStream_t stream_ = nullptr;
    std::unique_ptr<CudaAllocator> allocator_;
    std::unique_ptr<LtGemm> gemm_;
    std::vector<std::pair<void*, size_t>> held_;
};

// Tolerances relative to sum_k |a b|: FP32 and BF16 operands differ from the double reference only by FP32
// accumulation order (K <= 512: well under 1e-5); FP8 products are exact in FP32, and Hopper's FP8 tensor cores
// accumulate with about 14 bits before cuBLASLt promotes partial sums to FP32, hence 2^-10.
double tolerance(GemmFormat f) { return is_fp8(f) ? 1.0 / 1024 : 1e-5; }

TEST_F(LtGemmOnGpu, EveryProductInEveryFormatEqualsTheFp32GemmOfItsDequantizedOperands) {
    for (GemmFormat f : kFormats) {
        const std::string why = unsupported(f);
        if (!why.empty()) {
            std::cout << "[ skipped  ] " << format_name(f) << ": " << why << "\n";
            continue;
        }
        for (LinearProduct p : kProducts) {
            for (DType out : {DType::kF32, DType::kBF16}) {
                if (f == GemmFormat::kF32 && out == DType::kBF16) continue;
                const GemmSpec s = spec_of(p, f, 256, 384, 512, out);
                const HostProblem prob = make_problem(s, 42);
                expect_within(run(prob), prob, tolerance(f));
            }
        }
    }
}

TEST_F(LtGemmOnGpu, APlanIsBuiltOncePerSpecAndTheWorkspaceIsTakenOnce) {
    const GemmSpec a = spec_of(LinearProduct::kForward, GemmFormat::kF32, 64, 128, 96);
    GemmSpec b = a;
    b.product = LinearProduct::kBackwardData;
    const LtPlan* first = &gemm_->plan(a);
    EXPECT_EQ(gemm_->num_plans(), 1u);
    EXPECT_EQ(&gemm_->plan(a), first);
    const size_t with_workspace = allocator_->bytes_in_use();
    EXPECT_GE(with_workspace, LtGemm::kWorkspaceBytes);
    EXPECT_LE(first->workspace_bytes, LtGemm::kWorkspaceBytes);
    const HostProblem prob = make_problem(a, 5);
    expect_within(run(prob), prob, tolerance(a.format));
    EXPECT_EQ(gemm_->num_plans(), 1u);
    gemm_->plan(b);
    EXPECT_EQ(gemm_->num_plans(), 2u);
    EXPECT_EQ(allocator_->bytes_in_use(), with_workspace);
}

}  // namespace
}  // namespace frugal::cuda
