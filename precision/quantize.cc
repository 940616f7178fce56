#include "precision/quantize.h"

#include <algorithm>
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
inline float fq(float x, Fp8Format fmt, float scale, float inv) {
    return fmt == Fp8Format::kE4M3 ? decode_e4m3(encode_e4m3(x * scale)) * inv
                                   : decode_e5m2(encode_e5m2(x * scale)) * inv;
}
}  // namespace

void fake_quant(float* out, const float* in, int64_t n, Fp8Format fmt, float scale) {
    const float inv = 1.0f / scale;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = fq(in[i], fmt, scale, inv);
}

void fake_quant_row_tiles(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                          bool power_of_2) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c0 = 0; c0 < cols; c0 += tile) {
            const int64_t n = std::min(tile, cols - c0);
            const float* src = in + r * cols + c0;
            float* dst = out + r * cols + c0;
            const float s = scale_for(amax(src, n), fmt, power_of_2), inv = 1.0f / s;
            for (int64_t i = 0; i < n; ++i) dst[i] = fq(src[i], fmt, s, inv);
        }
}

void fake_quant_col_tiles(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                          bool power_of_2) {
    const int64_t groups = (rows + tile - 1) / tile;
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < groups; ++g) {
        const int64_t r0 = g * tile, r1 = std::min(rows, r0 + tile);
        for (int64_t c = 0; c < cols; ++c) {
            float m = 0;
            for (int64_t r = r0; r < r1; ++r) m = std::max(m, std::fabs(in[r * cols + c]));
            const float s = scale_for(m, fmt, power_of_2), inv = 1.0f / s;
            for (int64_t r = r0; r < r1; ++r) out[r * cols + c] = fq(in[r * cols + c], fmt, s, inv);
        }
    }
}

void fake_quant_blocks(float* out, const float* in, int64_t rows, int64_t cols, int64_t tile, Fp8Format fmt,
                       bool power_of_2) {
    const int64_t br = (rows + tile - 1) / tile, bc = (cols + tile - 1) / tile;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t i = 0; i < br; ++i)
        for (int64_t j = 0; j < bc; ++j) {
            const int64_t r0 = i * tile, r1 = std::min(rows, r0 + tile), c0 = j * tile, c1 = std::min(cols, c0 + tile);
            float m = 0;
            for (int64_t r = r0; r < r1; ++r)
                for (int64_t c = c0; c < c1; ++c) m = std::max(m, std::fabs(in[r * cols + c]));
            const float s = scale_for(m, fmt, power_of_2), inv = 1.0f / s;
            for (int64_t r = r0; r < r1; ++r)
                for (int64_t c = c0; c < c1; ++c) out[r * cols + c] = fq(in[r * cols + c], fmt, s, inv);
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
