// backend/cuda/native_matmul.h: BF16 and FP8 products through LtGemm. Operand storage per product is gemm_lt.h's
// table (FP8: x_NI and w_OI forward, dy_NO and w_IO backward data, dy_ON and x_IN backward weight); FP8 scales are in
// quantize.h's kCublasLt layout (dequantization factors 1 / s), which is what lt_scale_layout reads.
#include "backend/cuda/native_matmul.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <map>

#include "backend/cuda/check.h"
#include "backend/cuda/optim.h"
#include "backend/cuda/quantize.h"
#include "backend/cuda/transpose.h"
#include "core/error.h"
#include "core/tensor.h"

namespace frugal::cuda {
namespace {

constexpr int64_t kTile = 128;    // cuBLASLt's FP8 block-scaling tile and block edge
constexpr int64_t kFp8Rows = 16;  // FP8 GEMM dimensions: multiples of 16 (gemm_lt.h)

int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// A device buffer of the allocator that grows once and is reused.
class Scratch {
  public:
    template <typename U>
    U* get(CudaAllocator& alloc, int64_t n) {
        const size_t nbytes = std::max<size_t>(size_t(n) * sizeof(U), 1);
        if (!t_.defined() || t_.nbytes() < nbytes) t_ = Tensor::empty({int64_t(nbytes)}, DType::kU8, alloc);
        return static_cast<U*>(t_.raw_data());
    }

  private:
    Tensor t_;
};

// The operand scratch of one call, shared by every native product of one allocator (native_matmul.h).
struct CallScratch {
    Scratch x_pad, dy_pad, out_pad;       // zero-padded copies of x and dy, the padded output
    Scratch first, second, third;         // BF16 bits or FP8 codes of the operands
    Scratch first_scales, second_scales;  // FP8 scales (kCublasLt)
    Scratch amax_workspace;
};
CallScratch& call_scratch(CudaAllocator& alloc) {
    // Never destroyed, like the backend that owns the allocator: the CUDA runtime may be gone at static destruction.
    static auto* per_allocator = new std::map<CudaAllocator*, CallScratch>();
    return (*per_allocator)[&alloc];
}

// The fingerprint check of a cached quantized weight (precision/recipe.cc's WeightCache).
class WeightCache {
  public:
    // True when the cached form must be built for w (empty, invalidated, or another tensor); otherwise checks that w
    // still matches what was quantized.
    bool needs_quantize(CudaAllocator& alloc, const float* w, int64_t rows, int64_t cols) {
        const int64_t numel = rows * cols;
        if (!valid_ || w != source_ || rows != rows_ || cols != cols_) {
            source_ = w;
            rows_ = rows;
            cols_ = cols;
            fingerprint_ = fingerprint(alloc.stream(), w, numel, alloc);
            valid_ = true;
            return true;
        }
        FRUGAL_CHECK(fingerprint(alloc.stream(), w, numel, alloc) == fingerprint_, "a weight of ", numel,
                     " elements changed since it was quantized and its native product still holds the old quantized "
                     "copy: call model::Transformer::weights_updated() after every optimizer step and every load of "
                     "weights into a model that has run");
        return false;
    }
    void invalidate() { valid_ = false; }

  private:
    const float* source_ = nullptr;
    int64_t rows_ = 0, cols_ = 0;
    uint64_t fingerprint_ = 0;
    bool valid_ = false;
};

class NativeBase : public backend::NativeMatmul {
  public:
    NativeBase(CudaAllocator& alloc, LtGemm& gemm) : alloc_(alloc), gemm_(gemm), s_(call_scratch(alloc)) {}
    void weights_updated() override { cache_.invalidate(); }

  protected:
    cudaStream_t st() const { return alloc_.stream(); }

    // Where a GEMM writes an output of `numel` floats that it computes as `gemm_numel` (the padded rows included):
    // the output itself when the two agree and it is aligned to the allocator's granularity (LtGemm's plans assume
    // cuBLASLt's default of 256-byte aligned pointers, and model code passes slices at any float offset), otherwise
    // out_pad, holding a copy of the output when the GEMM adds into it. finish() copies the result back.
    float* target(float* out, int64_t numel, int64_t gemm_numel, bool accumulate) {
        if (numel == gemm_numel && reinterpret_cast<uintptr_t>(out) % CudaAllocator::kGranularity == 0) return out;
        float* t = s_.out_pad.get<float>(alloc_, gemm_numel);
        if (accumulate) alloc_.copy_within(t, out, size_t(numel) * sizeof(float));
        return t;
    }
    void finish(float* out, float* t, int64_t numel) {
        if (t != out) alloc_.copy_within(out, t, size_t(numel) * sizeof(float));
    }

    CudaAllocator& alloc_;
    LtGemm& gemm_;
    CallScratch& s_;
    WeightCache cache_;
};

class Bf16Native final : public NativeBase {
  public:
    using NativeBase::NativeBase;

    void forward(float* y_NO, const float* x_NI, const float* w_OI, int64_t n, int64_t in, int64_t out) override {
        if (n == 0) return;
        uint16_t* x = bf16(s_.first, x_NI, n * in);
        const uint16_t* w = weight(w_OI, in, out);
        float* y = target(y_NO, n * out, n * out, false);
        gemm_.run(spec(LinearProduct::kForward, n, in, out), y, x, nullptr, w, nullptr);
        finish(y_NO, y, n * out);
    }

    void backward(float* dx_NI, float* dw_OI, const float* dy_NO, const float* x_NI, const float* w_OI, int64_t n,
                  int64_t in, int64_t out) override {
        if (n == 0) return;
        uint16_t* dy = bf16(s_.first, dy_NO, n * out);
        if (dx_NI) {
            const uint16_t* w = weight(w_OI, in, out);
            float* dx = target(dx_NI, n * in, n * in, true);
            gemm_.run(spec(LinearProduct::kBackwardData, n, in, out), dx, dy, nullptr, w, nullptr);
            finish(dx_NI, dx, n * in);
        }
        if (dw_OI) {
            uint16_t* x = bf16(s_.second, x_NI, n * in);
            float* dw = target(dw_OI, out * in, out * in, true);
            gemm_.run(spec(LinearProduct::kBackwardWeight, n, in, out), dw, dy, nullptr, x, nullptr);
            finish(dw_OI, dw, out * in);
        }
    }

  private:
    static GemmSpec spec(LinearProduct p, int64_t n, int64_t in, int64_t out) {
        return GemmSpec{p, GemmFormat::kBF16, n, in, out};
    }
    uint16_t* bf16(Scratch& buf, const float* src, int64_t numel) {
        uint16_t* bits = buf.get<uint16_t>(alloc_, numel);
        encode_bf16(bits, src, numel, st());
        return bits;
    }
    const uint16_t* weight(const float* w_OI, int64_t in, int64_t out) {
        if (cache_.needs_quantize(alloc_, w_OI, out, in)) bf16(w_, w_OI, out * in);
        return w_.get<uint16_t>(alloc_, out * in);
    }

    Scratch w_;
};

enum class Fp8Mode { kTensorwise, kBlockwise };

class Fp8Native final : public NativeBase {
  public:
    Fp8Native(Fp8Mode mode, bool power_of_2, CudaAllocator& alloc, LtGemm& gemm)
        : NativeBase(alloc, gemm), mode_(mode), power_of_2_(power_of_2) {}

    void forward(float* y_NO, const float* x_NI, const float* w_OI, int64_t n, int64_t in, int64_t out) override {
        if (n == 0) return;
        const int64_t np = round_up(n, kFp8Rows);
        const float* x = padded(s_.x_pad, x_NI, n, in);
        quantize_weight(w_OI, in, out);
        float* y = target(y_NO, n * out, np * out, false);
        const GemmSpec sp = spec(LinearProduct::kForward, np, in, out, Fp8Format::kE4M3);
        if (mode_ == Fp8Mode::kTensorwise) {
            // Kept for backward (its x^T operand), as the CPU recipe keeps its E4M3 activation.
            uint8_t* codes = x_codes_.get<uint8_t>(alloc_, np * in);
            float* scale = x_scale_.get<float>(alloc_, 1);
            quantize_tensor(codes, scale, x, np * in, Fp8Format::kE4M3, false, ScaleLayout::kCublasLt,
                            amax_workspace(np * in), st());
            x_rows_ = np;
            x_cols_ = in;
            gemm_.run(sp, y, codes, scale, w_codes_.get<uint8_t>(alloc_, out * in), w_scales_.get<float>(alloc_, 1));
        } else {
            uint8_t* codes = s_.first.get<uint8_t>(alloc_, np * in);
            float* scales = s_.first_scales.get<float>(alloc_, num_row_tile_scales(np, in, kTile));
            quantize_row_tiles(codes, scales, x, np, in, kTile, Fp8Format::kE4M3, power_of_2_, ScaleLayout::kCublasLt,
                               st());
            gemm_.run(sp, y, codes, scales, w_codes_.get<uint8_t>(alloc_, out * in),
                      w_scales_.get<float>(alloc_, num_block_scales(out, in, kTile, ScaleLayout::kCublasLt)));
        }
        finish(y_NO, y, n * out);
    }

    void backward(float* dx_NI, float* dw_OI, const float* dy_NO, const float* x_NI, const float* w_OI, int64_t n,
                  int64_t in, int64_t out) override {
        if (n == 0 || (!dx_NI && !dw_OI)) return;
        const int64_t np = round_up(n, kFp8Rows);
        const float* dy = padded(s_.dy_pad, dy_NO, n, out);
        if (mode_ == Fp8Mode::kTensorwise)
            tensorwise_backward(dx_NI, dw_OI, dy, w_OI, n, np, in, out);
        else
            blockwise_backward(dx_NI, dw_OI, dy, x_NI, w_OI, n, np, in, out);
    }

  private:
    GemmSpec spec(LinearProduct p, int64_t n, int64_t in, int64_t out, Fp8Format first) const {
        GemmSpec s{p, GemmFormat::kFp8Tensorwise, n, in, out, first, Fp8Format::kE4M3, DType::kF32};
        if (mode_ == Fp8Mode::kBlockwise) s.format = GemmFormat::kFp8Blockwise;
        return s;
    }

    float* amax_workspace(int64_t numel) { return s_.amax_workspace.get<float>(alloc_, amax_workspace_floats(numel)); }

    // src (n x cols) itself when n is a multiple of 16, otherwise a copy with zero rows up to the next one.
    const float* padded(Scratch& buf, const float* src, int64_t n, int64_t cols) {
        const int64_t np = round_up(n, kFp8Rows);
        if (np == n) return src;
        float* p = buf.get<float>(alloc_, np * cols);
        alloc_.copy_within(p, src, size_t(n * cols) * sizeof(float));
        alloc_.fill_zero(p + n * cols, size_t((np - n) * cols) * sizeof(float));
        return p;
    }

    // The E4M3 weight w_OI and its transpose w_IO with their scales, once per optimizer step.
    void quantize_weight(const float* w_OI, int64_t in, int64_t out) {
        if (!cache_.needs_quantize(alloc_, w_OI, out, in)) return;
        uint8_t* codes = w_codes_.get<uint8_t>(alloc_, out * in);
        uint8_t* codes_t = w_codes_t_.get<uint8_t>(alloc_, out * in);
        if (mode_ == Fp8Mode::kTensorwise) {
            quantize_tensor(codes, w_scales_.get<float>(alloc_, 1), w_OI, out * in, Fp8Format::kE4M3, false,
                            ScaleLayout::kCublasLt, amax_workspace(out * in), st());
            transpose_u8(codes_t, codes, out, in, st());
        } else {
            // quantize_blocks writes the transpose's scales in the layout of an I x O matrix, which is the
            // BLK128x128_32F layout of w_IO as the backward-data GEMM's A operand (assumed from cuBLAS's "scaling
            // factors layouts"; not yet run on a GPU).
            float* scales = w_scales_.get<float>(alloc_, num_block_scales(out, in, kTile, ScaleLayout::kCublasLt));
            float* scales_t = w_scales_t_.get<float>(alloc_, num_block_scales(in, out, kTile, ScaleLayout::kCublasLt));
            quantize_blocks(codes, scales, codes_t, scales_t, w_OI, out, in, kTile, Fp8Format::kE4M3, power_of_2_,
                            ScaleLayout::kCublasLt, st());
        }
    }
    const uint8_t* w_codes_t(int64_t in, int64_t out) { return w_codes_t_.get<uint8_t>(alloc_, out * in); }

    void tensorwise_backward(float* dx_NI, float* dw_OI, const float* dy, const float* w_OI, int64_t n, int64_t np,
                             int64_t in, int64_t out) {
        uint8_t* g = s_.first.get<uint8_t>(alloc_, np * out);
        float* g_scale = s_.first_scales.get<float>(alloc_, 1);
        quantize_tensor(g, g_scale, dy, np * out, Fp8Format::kE5M2, false, ScaleLayout::kCublasLt,
                        amax_workspace(np * out), st());
        if (dx_NI) {
            quantize_weight(w_OI, in, out);
            float* dx = target(dx_NI, n * in, np * in, true);
            gemm_.run(spec(LinearProduct::kBackwardData, np, in, out, Fp8Format::kE5M2), dx, g, g_scale,
                      w_codes_t(in, out), w_scales_.get<float>(alloc_, 1));
            finish(dx_NI, dx, n * in);
        }
        if (dw_OI) {
            FRUGAL_CHECK(x_rows_ == np && x_cols_ == in, "fp8-tensorwise's weight gradient of ", n, " x ", in,
                         " inputs uses the E4M3 activation of their forward: run forward on the same inputs first");
            uint8_t* g_t = s_.second.get<uint8_t>(alloc_, np * out);
            transpose_u8(g_t, g, np, out, st());
            uint8_t* x_t = s_.third.get<uint8_t>(alloc_, np * in);
            transpose_u8(x_t, x_codes_.get<uint8_t>(alloc_, np * in), np, in, st());
            float* dw = target(dw_OI, out * in, out * in, true);
            gemm_.run(spec(LinearProduct::kBackwardWeight, np, in, out, Fp8Format::kE5M2), dw, g_t, g_scale, x_t,
                      x_scale_.get<float>(alloc_, 1));
            finish(dw_OI, dw, out * in);
        }
    }

    void blockwise_backward(float* dx_NI, float* dw_OI, const float* dy, const float* x_NI, const float* w_OI,
                            int64_t n, int64_t np, int64_t in, int64_t out) {
        if (dx_NI) {
            // dgrad reduces over O: dy in 1 x 128 tiles along it, against the cached blocks of w^T.
            quantize_weight(w_OI, in, out);
            uint8_t* g = s_.first.get<uint8_t>(alloc_, np * out);
            float* g_scales = s_.first_scales.get<float>(alloc_, num_row_tile_scales(np, out, kTile));
            quantize_row_tiles(g, g_scales, dy, np, out, kTile, Fp8Format::kE4M3, power_of_2_, ScaleLayout::kCublasLt,
                               st());
            float* dx = target(dx_NI, n * in, np * in, true);
            gemm_.run(spec(LinearProduct::kBackwardData, np, in, out, Fp8Format::kE4M3), dx, g, g_scales,
                      w_codes_t(in, out),
                      w_scales_t_.get<float>(alloc_, num_block_scales(in, out, kTile, ScaleLayout::kCublasLt)));
            finish(dx_NI, dx, n * in);
        }
        if (dw_OI) {
            // wgrad reduces over the tokens: 128 x 1 tiles of dy and x, quantized straight into the K-major dy_ON and
            // x_IN with VEC128_32F scales of the transposed operands (quantize.h).
            const float* x = padded(s_.x_pad, x_NI, n, in);
            uint8_t* g_t = s_.first.get<uint8_t>(alloc_, np * out);
            float* g_scales = s_.first_scales.get<float>(alloc_, num_col_tile_scales(np, out, kTile));
            quantize_col_tiles(g_t, g_scales, dy, np, out, kTile, Fp8Format::kE4M3, power_of_2_, ScaleLayout::kCublasLt,
                               true, st());
            uint8_t* x_t = s_.second.get<uint8_t>(alloc_, np * in);
            float* x_scales = s_.second_scales.get<float>(alloc_, num_col_tile_scales(np, in, kTile));
            quantize_col_tiles(x_t, x_scales, x, np, in, kTile, Fp8Format::kE4M3, power_of_2_, ScaleLayout::kCublasLt,
                               true, st());
            float* dw = target(dw_OI, out * in, out * in, true);
            gemm_.run(spec(LinearProduct::kBackwardWeight, np, in, out, Fp8Format::kE4M3), dw, g_t, g_scales, x_t,
                      x_scales);
            finish(dw_OI, dw, out * in);
        }
    }

    Fp8Mode mode_;
    bool power_of_2_;
    Scratch w_codes_, w_codes_t_, w_scales_, w_scales_t_;
    Scratch x_codes_, x_scale_;  // fp8-tensorwise: the forward's E4M3 activation
    int64_t x_rows_ = 0, x_cols_ = 0;
};

}  // namespace

bool has_native_matmul(const backend::NativeMatmulSpec& spec) {
    if (spec.recipe == "bf16" || spec.recipe == "fp8-tensorwise") return true;
    return spec.recipe == "fp8-blockwise" && spec.block_size == kTile;
}

std::unique_ptr<backend::NativeMatmul> make_cuda_native_matmul(const backend::NativeMatmulSpec& spec,
                                                               CudaAllocator& allocator, LtGemm& gemm) {
    if (!has_native_matmul(spec)) return nullptr;
    if (spec.recipe == "bf16") return std::make_unique<Bf16Native>(allocator, gemm);
    const Fp8Mode mode = spec.recipe == "fp8-tensorwise" ? Fp8Mode::kTensorwise : Fp8Mode::kBlockwise;
    return std::make_unique<Fp8Native>(mode, spec.power_of_2_scales, allocator, gemm);
}

}  // namespace frugal::cuda
