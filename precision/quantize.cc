#include "precision/quantize.h"

#include <algorithm>
#include <array>
#include <cmath>

namespace frugal::precision {

float amax(const float* x, int64_t n) {
    float m = 0;
    for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
    return m;
}

float scale_for(float a, Fp8Format fmt, bool power_of_2) {
    if (!(a > 0) || !std::isfinite(a)) return 1.0f;
    float s = fp8_max(fmt) / a;
    if (power_of_2) s = std::exp2(std::floor(std::log2(s)));
    return s;
}

namespace {

// Columns per work item of a 128 x 1 tiling (their amaxes, scales and inverses live on the stack; no call allocates)
// and elements per work item of a tensorwise quantization.
constexpr int64_t kChunk = 256;
// Below this many elements a quantization runs on the calling thread: the many small GEMM operands of the experts
// would otherwise pay a parallel region's fork and barrier (costly on a loaded machine) for microseconds of work.
// Elements are independent, so the result does not depend on the split.
constexpr int64_t kParallelMin = int64_t(1) << 15;

// deq(q(y)) * inv, element by element, computed on the bits of y = x * scale without the 8-bit code in between:
// the same rounding as fp8.h's bulk encoder (nearest even on the M mantissa bits in the normal range, units of the
// smallest subnormal below it, saturation at the largest finite code, NaN to the canonical NaN), then the grid value
// the decode table would give. No table lookup, so the loop vectorizes; the result equals table[encode(y)] * inv on
// every input (FakeQuant tests, and exhaustively over all 2^32 floats when written).
// PerElement: scale and inv hold n values (one per column of a 128 x 1 tile group), else one.
template <int M, int kBias, uint32_t kMaxCode, bool PerElement>
void fake_quant_grid(float* out, const float* in, int64_t n, const float* scale, const float* inv, float nan_value) {
    constexpr int kShift = 23 - M;
    constexpr uint32_t kMinNormalBits = (127u + 1u - uint32_t(kBias)) << 23;
    constexpr uint32_t kRebias = (127u - uint32_t(kBias)) << M;
    constexpr uint32_t kMaxBits = (kMaxCode + kRebias) << kShift;  // the largest finite value's float bits
    constexpr uint32_t kLowMask = ~((1u << kShift) - 1u);
    const float sub_scale = std::ldexp(1.0f, kBias - 1 + M), sub_unit = std::ldexp(1.0f, 1 - kBias - M);
    const uint32_t nan_bits = detail::float_bits(nan_value);
    // Selects on integers only (and no early exit), so that every lane takes the same path and the loop vectorizes.
    for (int64_t i = 0; i < n; ++i) {
        const float s = PerElement ? scale[i] : scale[0], v_inv = PerElement ? inv[i] : inv[0];
        const uint32_t u = detail::float_bits(in[i] * s);
        const uint32_t sign = u & 0x80000000u;
        const uint32_t a = u & 0x7FFFFFFFu;
        const uint32_t ac = std::min(a, 0x7F000000u);
        const uint32_t normal =
            std::min((ac + ((1u << (kShift - 1)) - 1u) + ((ac >> kShift) & 1u)) & kLowMask, kMaxBits);
        const uint32_t is_sub = 0u - uint32_t(a < kMinNormalBits), is_nan = 0u - uint32_t(a > 0x7F800000u);
        const float units = (detail::bits_float(a & is_sub) * sub_scale + 8388608.0f) - 8388608.0f;
        const uint32_t sub = detail::float_bits(units * sub_unit);
        const uint32_t grid = sign | (sub & is_sub) | (normal & ~is_sub);
        out[i] = detail::bits_float((nan_bits & is_nan) | (grid & ~is_nan)) * v_inv;
    }
}

template <bool PerElement>
void fake_quant_n(float* out, const float* in, int64_t n, Fp8Format fmt, const float* scale, const float* inv) {
    if (fmt == Fp8Format::kE4M3)
        fake_quant_grid<3, 7, 0x7E, PerElement>(out, in, n, scale, inv, e4m3_table()[0x7F]);
    else
        fake_quant_grid<2, 15, 0x7B, PerElement>(out, in, n, scale, inv, e5m2_table()[0x7F]);
}

// out = deq(q(in * scale)) * inv for n contiguous elements (out may equal in).
void fake_quant_span(float* out, const float* in, int64_t n, Fp8Format fmt, float scale, float inv) {
    fake_quant_n<false>(out, in, n, fmt, &scale, &inv);
}

// Columns [c0, c0 + m) of rows [r0, r1), m <= kChunk, each column with its own scale (one tile x 1 group each).
void fake_quant_col_group(float* out, const float* in, int64_t cols, int64_t r0, int64_t r1, int64_t c0, int64_t m,
                          Fp8Format fmt, bool power_of_2) {
    float col_max[kChunk], col_scale[kChunk], col_inv[kChunk];
    std::fill_n(col_max, m, 0.0f);
    for (int64_t r = r0; r < r1; ++r) {
        const float* src = in + r * cols + c0;
        for (int64_t i = 0; i < m; ++i) col_max[i] = std::max(col_max[i], std::fabs(src[i]));
    }
    for (int64_t i = 0; i < m; ++i) {
        col_scale[i] = scale_for(col_max[i], fmt, power_of_2);
        col_inv[i] = 1.0f / col_scale[i];
    }
    for (int64_t r = r0; r < r1; ++r)
        fake_quant_n<true>(out + r * cols + c0, in + r * cols + c0, m, fmt, col_scale, col_inv);
}

}  // namespace

void fake_quant(float* out, const float* in, int64_t n, Fp8Format fmt, float scale) {
    const float inv = 1.0f / scale;
    const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t k = 0; k < chunks; ++k) {
        const int64_t c0 = k * kChunk;
        fake_quant_span(out + c0, in + c0, std::min(kChunk, n - c0), fmt, scale, inv);
    }
}

void fake_quant_row_tiles(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                          bool power_of_2) {
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c0 = 0; c0 < cols; c0 += tile) {
            const int64_t n = std::min(tile, cols - c0);
            const float* src = in + r * cols + c0;
            const float s = scale_for(amax(src, n), fmt, power_of_2);
            fake_quant_span(out + r * cols + c0, src, n, fmt, s, 1.0f / s);
        }
}

void fake_quant_col_tiles(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                          bool power_of_2) {
    // Work items: a group of `tile` rows times kChunk consecutive columns, read and written row by row.
    const int64_t groups = (rows + tile - 1) / tile, chunks = (cols + kChunk - 1) / kChunk;
#pragma omp parallel for collapse(2) schedule(static) if (rows * cols >= kParallelMin)
    for (int64_t g = 0; g < groups; ++g)
        for (int64_t k = 0; k < chunks; ++k) {
            const int64_t r0 = g * tile, c0 = k * kChunk;
            fake_quant_col_group(out, in, cols, r0, std::min(rows, r0 + tile), c0, std::min(kChunk, cols - c0), fmt,
                                 power_of_2);
        }
}

void fake_quant_blocks(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                       bool power_of_2) {
    const int64_t br = (rows + tile - 1) / tile, bc = (cols + tile - 1) / tile;
#pragma omp parallel for collapse(2) schedule(static) if (rows * cols >= kParallelMin)
    for (int64_t i = 0; i < br; ++i)
        for (int64_t j = 0; j < bc; ++j) {
            const int64_t r0 = i * tile, r1 = std::min(rows, r0 + tile), c0 = j * tile, c1 = std::min(cols, c0 + tile);
            float m = 0;
            for (int64_t r = r0; r < r1; ++r) m = std::max(m, amax(in + r * cols + c0, c1 - c0));
            const float s = scale_for(m, fmt, power_of_2), inv = 1.0f / s;
            for (int64_t r = r0; r < r1; ++r)
                fake_quant_span(out + r * cols + c0, in + r * cols + c0, c1 - c0, fmt, s, inv);
        }
}

void round_bf16(float* out, const float* in, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) out[i] = decode_bf16(encode_bf16(in[i]));
}

void quantize_row_tiles(uint8_t* codes, float* scales, const float* in, int64_t rows, int64_t cols, int64_t tile,
                        Fp8Format fmt, bool power_of_2) {
    const int64_t groups = (cols + tile - 1) / tile;
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = 0; g < groups; ++g) {
            const int64_t c0 = g * tile, n = std::min(tile, cols - c0);
            const float* src = in + r * cols + c0;
            const float s = scale_for(amax(src, n), fmt, power_of_2);
            scales[r * groups + g] = s;
            uint8_t* dst = codes + r * cols + c0;
            if (fmt == Fp8Format::kE4M3)
                encode_e4m3(dst, src, n, s);
            else
                encode_e5m2(dst, src, n, s);
        }
}

void dequantize_row_tiles(float* out, const uint8_t* codes, const float* scales, int64_t rows, int64_t cols,
                          int64_t tile, Fp8Format fmt) {
    const int64_t groups = (cols + tile - 1) / tile;
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = 0; g < groups; ++g) {
            const int64_t c0 = g * tile, n = std::min(tile, cols - c0);
            const float inv = 1.0f / scales[r * groups + g];
            if (fmt == Fp8Format::kE4M3)
                decode_e4m3(out + r * cols + c0, codes + r * cols + c0, n, inv);
            else
                decode_e5m2(out + r * cols + c0, codes + r * cols + c0, n, inv);
        }
}

}  // namespace frugal::precision
