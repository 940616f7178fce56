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

// Elements encoded per pass through a stack buffer of codes: the bulk encoders of fp8.h vectorize, and no call
// allocates. The result is decode(encode(x * scale)) * inv_scale element by element, the same floats as the
// scalar encoder gives (fp8.h: the bulk encoders equal it on every input).
constexpr int64_t kChunk = 256;
// Below this many elements a quantization runs on the calling thread: the many small GEMM operands of the experts
// would otherwise pay a parallel region's fork and barrier (costly on a loaded machine) for microseconds of work.
// Elements are independent, so the result does not depend on the split.
constexpr int64_t kParallelMin = int64_t(1) << 15;

void encode(uint8_t* codes, const float* in, int64_t n, Fp8Format fmt, float scale) {
    if (fmt == Fp8Format::kE4M3)
        encode_e4m3(codes, in, n, scale);
    else
        encode_e5m2(codes, in, n, scale);
}

// out = deq(q(in * scale)) * inv for n contiguous elements (out may equal in).
void fake_quant_span(float* out, const float* in, int64_t n, Fp8Format fmt, float scale, float inv) {
    const std::array<float, 256>& table = fmt == Fp8Format::kE4M3 ? e4m3_table() : e5m2_table();
    uint8_t codes[kChunk];
    for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
        const int64_t m = std::min(kChunk, n - c0);
        encode(codes, in + c0, m, fmt, scale);
        for (int64_t i = 0; i < m; ++i) out[c0 + i] = table[codes[i]] * inv;
    }
}

// Columns [c0, c0 + m) of rows [r0, r1), m <= kChunk, each column with its own scale (one tile x 1 group each).
void fake_quant_col_group(float* out, const float* in, int64_t cols, int64_t r0, int64_t r1, int64_t c0, int64_t m,
                          Fp8Format fmt, bool power_of_2) {
    const std::array<float, 256>& table = fmt == Fp8Format::kE4M3 ? e4m3_table() : e5m2_table();
    float col_max[kChunk], col_scale[kChunk], col_inv[kChunk], scaled[kChunk];
    uint8_t codes[kChunk];
    std::fill_n(col_max, m, 0.0f);
    for (int64_t r = r0; r < r1; ++r) {
        const float* src = in + r * cols + c0;
        for (int64_t i = 0; i < m; ++i) col_max[i] = std::max(col_max[i], std::fabs(src[i]));
    }
    for (int64_t i = 0; i < m; ++i) {
        col_scale[i] = scale_for(col_max[i], fmt, power_of_2);
        col_inv[i] = 1.0f / col_scale[i];
    }
    for (int64_t r = r0; r < r1; ++r) {
        const float* src = in + r * cols + c0;
        float* dst = out + r * cols + c0;
        // x * s then an encode with scale 1 (an exact multiplication): the same codes as encoding x with scale s.
        for (int64_t i = 0; i < m; ++i) scaled[i] = src[i] * col_scale[i];
        encode(codes, scaled, m, fmt, 1.0f);
        for (int64_t i = 0; i < m; ++i) dst[i] = table[codes[i]] * col_inv[i];
    }
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
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = decode_bf16(encode_bf16(in[i]));
}

void quantize_row_tiles(uint8_t* codes, float* scales, const float* in, int64_t rows, int64_t cols, int64_t tile,
                        Fp8Format fmt, bool power_of_2) {
    const int64_t groups = (cols + tile - 1) / tile;
#pragma omp parallel for schedule(static)
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
#pragma omp parallel for schedule(static)
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
