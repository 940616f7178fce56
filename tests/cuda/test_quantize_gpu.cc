// The CUDA quantization kernels (backend/cuda/quantize.h) against the CPU reference (precision/quantize.h), bit for
// bit, on random inputs of ragged shapes (last tiles and blocks cut short) whose magnitudes span many decades, with
// groups that hold zeros only, an infinity or NaNs, and FP32 subnormals. Every output is compared element by element;
// a mismatch prints its index, both values and the seed. Without a GPU the tests skip with the CUDA runtime's reason,
// except the argument checks, which run before any launch.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/quantize.h"
#include "core/error.h"
#include "precision/quantize.h"
#include "tests/cuda/gpu_test_util.h"

namespace frugal {
namespace {

using cuda_test::bits;
using cuda_test::DeviceBuffer;

using cuda::ScaleLayout;
using precision::Fp8Format;

constexpr uint64_t kSeed = 20261202;
constexpr int64_t kTile = 128;

struct Shape {
    int64_t rows, cols;
};
// Ragged in both dimensions, one group only, one row, and exact multiples of the tile.
const Shape kShapes[] = {{1, 1}, {3, 130}, {129, 257}, {300, 260}, {256, 384}, {1, 1000}};

std::string show(float x) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%a (0x%08X)", double(x), bits(x));
    return buf;
}
std::string show(uint32_t x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "0x%X", x);
    return buf;
}
std::string show(uint8_t x) { return show(uint32_t(x)); }
std::string show(uint16_t x) { return show(uint32_t(x)); }

// Bitwise equality of every element; the first mismatches are printed with their index and both values.
template <typename T>
void expect_bits_equal(const std::vector<T>& gpu, const std::vector<T>& cpu, const std::string& what) {
    ASSERT_EQ(gpu.size(), cpu.size()) << what;
    int64_t mismatches = 0;
    for (size_t i = 0; i < cpu.size(); ++i)
        if (bits(gpu[i]) != bits(cpu[i]) && mismatches++ < 5)
            ADD_FAILURE() << what << ": element " << i << " gpu " << show(gpu[i]) << ", cpu " << show(cpu[i])
                          << " (seed " << kSeed << ")";
    EXPECT_EQ(mismatches, 0) << what << ": " << mismatches << " of " << cpu.size() << " elements differ";
}

// Normal samples times 2^(i % 23 - 11), so groups cover both the normal and the subnormal FP8 range; then rows 0
// and 1 get specials: row 0 is all zeros up to column 200 (a zero-amax group), row 1 holds an infinity, NaNs of both
// signs, FP32 subnormals and -0. The last element of a long input is the largest float.
std::vector<float> make_input(int64_t rows, int64_t cols, uint64_t seed) {
    std::mt19937_64 gen(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> x(size_t(rows * cols));
    for (int64_t i = 0; i < rows * cols; ++i) x[size_t(i)] = normal(gen) * std::ldexp(1.0f, int(i % 23) - 11);
    if (rows >= 3) {
        for (int64_t c = 0; c < std::min<int64_t>(cols, 200); ++c) x[size_t(c)] = 0.0f;
        const float specials[] = {
            INFINITY, NAN, -NAN, std::numeric_limits<float>::denorm_min(), -0.0f, -std::numeric_limits<float>::min()};
        for (int64_t k = 0; k < 6 && k * 37 < cols; ++k) x[size_t(cols + k * 37)] = specials[k];
        x.back() = std::numeric_limits<float>::max();
    }
    return x;
}

const char* name(Fp8Format f) { return f == Fp8Format::kE4M3 ? "e4m3" : "e5m2"; }

std::string tag(const char* op, Fp8Format f, bool pow2, Shape s) {
    return std::string(op) + " " + name(f) + (pow2 ? " pow2 " : " ") + std::to_string(s.rows) + "x" +
           std::to_string(s.cols);
}

std::vector<uint8_t> cpu_encode(const float* x, int64_t n, Fp8Format f, float s) {
    std::vector<uint8_t> codes(static_cast<size_t>(n));
    if (f == Fp8Format::kE4M3)
        precision::encode_e4m3(codes.data(), x, n, s);
    else
        precision::encode_e5m2(codes.data(), x, n, s);
    return codes;
}

TEST(QuantizeGpu, FakeQuantizationOfEveryGranularityEqualsTheCpuBitForBit) {
    FRUGAL_REQUIRE_GPU();
    for (const Shape s : kShapes)
        for (Fp8Format f : {Fp8Format::kE4M3, Fp8Format::kE5M2})
            for (bool pow2 : {false, true}) {
                const int64_t n = s.rows * s.cols;
                const auto x = make_input(s.rows, s.cols, kSeed + uint64_t(n));
                DeviceBuffer<float> in(x), out(n);
                std::vector<float> want(x.size());

                precision::fake_quant_row_tiles(want.data(), x.data(), s.rows, s.cols, kTile, f, pow2);
                cuda::fake_quant_row_tiles(out.get(), in.get(), s.rows, s.cols, kTile, f, pow2, nullptr);
                expect_bits_equal(out.download(), want, tag("row tiles", f, pow2, s));

                precision::fake_quant_col_tiles(want.data(), x.data(), s.rows, s.cols, kTile, f, pow2);
                cuda::fake_quant_col_tiles(out.get(), in.get(), s.rows, s.cols, kTile, f, pow2, nullptr);
                expect_bits_equal(out.download(), want, tag("col tiles", f, pow2, s));

                precision::fake_quant_blocks(want.data(), x.data(), s.rows, s.cols, kTile, f, pow2);
                cuda::fake_quant_blocks(out.get(), in.get(), s.rows, s.cols, kTile, f, pow2, nullptr);
                expect_bits_equal(out.download(), want, tag("blocks", f, pow2, s));

                // Other tile sizes take the same kernels (the recipes' precision.block_size is free on the CPU).
                precision::fake_quant_blocks(want.data(), x.data(), s.rows, s.cols, 48, f, pow2);
                cuda::fake_quant_blocks(out.get(), in.get(), s.rows, s.cols, 48, f, pow2, nullptr);
                expect_bits_equal(out.download(), want, tag("48x48 blocks", f, pow2, s));
                precision::fake_quant_row_tiles(want.data(), x.data(), s.rows, s.cols, 48, f, pow2);
                cuda::fake_quant_row_tiles(out.get(), in.get(), s.rows, s.cols, 48, f, pow2, nullptr);
                expect_bits_equal(out.download(), want, tag("1x48 row tiles", f, pow2, s));
            }
}

TEST(QuantizeGpu, TensorwiseFakeQuantizationEqualsTheCpuWithHostAndDeviceScales) {
    FRUGAL_REQUIRE_GPU();
    for (const Shape s : kShapes)
        for (Fp8Format f : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
            const int64_t n = s.rows * s.cols;
            const auto x = make_input(s.rows, s.cols, kSeed + 7 * uint64_t(n));
            DeviceBuffer<float> in(x), out(n), scale_1(1), workspace(cuda::amax_workspace_floats(n));
            DeviceBuffer<uint8_t> codes(n);
            std::vector<float> want(x.size());
            for (float scale : {1.0f, 0.375f, 1024.0f, 0x1p-9f, 0.0f, INFINITY}) {
                precision::fake_quant(want.data(), x.data(), n, f, scale);
                cuda::fake_quant(out.get(), in.get(), n, f, scale, nullptr);
                expect_bits_equal(out.download(), want, tag("tensor", f, false, s) + " scale " + show(scale));
            }
            // The scale the recipes compute (scale_for of the amax), found on the device.
            const float s_cpu = precision::scale_for(precision::amax(x.data(), n), f, false);
            cuda::quantize_tensor(codes.get(), scale_1.get(), in.get(), n, f, false, ScaleLayout::kFrugal,
                                  workspace.get(), nullptr);
            cuda::fake_quant_device_scale(out.get(), in.get(), n, f, scale_1.get(), nullptr);
            precision::fake_quant(want.data(), x.data(), n, f, s_cpu);
            expect_bits_equal(out.download(), want, tag("tensor, device scale", f, false, s));
        }
}

TEST(QuantizeGpu, RowTileCodesAndScalesEqualTheCpuInBothScaleLayouts) {
    FRUGAL_REQUIRE_GPU();
    for (const Shape s : kShapes)
        for (Fp8Format f : {Fp8Format::kE4M3, Fp8Format::kE5M2})
            for (bool pow2 : {false, true}) {
                const int64_t n = s.rows * s.cols, groups = (s.cols + kTile - 1) / kTile;
                const auto x = make_input(s.rows, s.cols, kSeed + 3 * uint64_t(n));
                DeviceBuffer<float> in(x), scales(cuda::num_row_tile_scales(s.rows, s.cols, kTile)), deq(n);
                DeviceBuffer<uint8_t> codes(n);
                std::vector<uint8_t> want_codes(x.size());
                std::vector<float> want_scales(size_t(s.rows * groups)), want_deq(x.size());
                precision::quantize_row_tiles(want_codes.data(), want_scales.data(), x.data(), s.rows, s.cols, kTile, f,
                                              pow2);
                precision::dequantize_row_tiles(want_deq.data(), want_codes.data(), want_scales.data(), s.rows, s.cols,
                                                kTile, f);

                cuda::quantize_row_tiles(codes.get(), scales.get(), in.get(), s.rows, s.cols, kTile, f, pow2,
                                         ScaleLayout::kFrugal, nullptr);
                expect_bits_equal(codes.download(), want_codes, tag("row tile codes", f, pow2, s));
                expect_bits_equal(scales.download(), want_scales, tag("row tile scales", f, pow2, s));
                cuda::dequantize_row_tiles(deq.get(), codes.get(), scales.get(), s.rows, s.cols, kTile, f, nullptr);
                expect_bits_equal(deq.download(), want_deq, tag("row tile dequantization", f, pow2, s));

                // cuBLASLt VEC128_32F: 1 / s at [g * rows + r].
                std::vector<float> want_lt(want_scales.size());
                for (int64_t r = 0; r < s.rows; ++r)
                    for (int64_t g = 0; g < groups; ++g)
                        want_lt[size_t(g * s.rows + r)] = 1.0f / want_scales[size_t(r * groups + g)];
                cuda::quantize_row_tiles(codes.get(), scales.get(), in.get(), s.rows, s.cols, kTile, f, pow2,
                                         ScaleLayout::kCublasLt, nullptr);
                expect_bits_equal(codes.download(), want_codes, tag("row tile codes (cuBLASLt)", f, pow2, s));
                expect_bits_equal(scales.download(), want_lt, tag("row tile scales (cuBLASLt)", f, pow2, s));
            }
}

// The CPU's column-tile and block scales (computed as its fake quantizers compute them) and its bulk encoder.
struct CpuGroups {
    std::vector<uint8_t> codes;
    std::vector<float> scales;  // kFrugal layout
};

CpuGroups cpu_col_tiles(const std::vector<float>& x, Shape s, Fp8Format f, bool pow2) {
    const int64_t groups = (s.rows + kTile - 1) / kTile;
    CpuGroups out{std::vector<uint8_t>(x.size()), std::vector<float>(size_t(groups * s.cols))};
    std::vector<float> column;
    for (int64_t g = 0; g < groups; ++g)
        for (int64_t c = 0; c < s.cols; ++c) {
            column.clear();
            for (int64_t r = g * kTile; r < std::min(s.rows, (g + 1) * kTile); ++r)
                column.push_back(x[size_t(r * s.cols + c)]);
            const float scale = precision::scale_for(precision::amax(column.data(), int64_t(column.size())), f, pow2);
            out.scales[size_t(g * s.cols + c)] = scale;
            const auto codes = cpu_encode(column.data(), int64_t(column.size()), f, scale);
            for (size_t k = 0; k < codes.size(); ++k)
                out.codes[size_t((g * kTile + int64_t(k)) * s.cols + c)] = codes[k];
        }
    return out;
}

CpuGroups cpu_blocks(const std::vector<float>& x, Shape s, Fp8Format f, bool pow2) {
    const int64_t br = (s.rows + kTile - 1) / kTile, bc = (s.cols + kTile - 1) / kTile;
    CpuGroups out{std::vector<uint8_t>(x.size()), std::vector<float>(size_t(br * bc))};
    for (int64_t i = 0; i < br; ++i)
        for (int64_t j = 0; j < bc; ++j) {
            const int64_t r0 = i * kTile, r1 = std::min(s.rows, r0 + kTile), c0 = j * kTile,
                          c1 = std::min(s.cols, c0 + kTile);
            float m = 0.0f;
            for (int64_t r = r0; r < r1; ++r) m = std::max(m, precision::amax(x.data() + r * s.cols + c0, c1 - c0));
            const float scale = precision::scale_for(m, f, pow2);
            out.scales[size_t(i * bc + j)] = scale;
            for (int64_t r = r0; r < r1; ++r) {
                const auto codes = cpu_encode(x.data() + r * s.cols + c0, c1 - c0, f, scale);
                std::copy(codes.begin(), codes.end(), out.codes.begin() + r * s.cols + c0);
            }
        }
    return out;
}

TEST(QuantizeGpu, ColumnTileAndBlockCodesAndScalesEqualTheCpuInBothScaleLayouts) {
    FRUGAL_REQUIRE_GPU();
    for (const Shape s : kShapes)
        for (Fp8Format f : {Fp8Format::kE4M3, Fp8Format::kE5M2})
            for (bool pow2 : {false, true}) {
                const int64_t n = s.rows * s.cols;
                const auto x = make_input(s.rows, s.cols, kSeed + 5 * uint64_t(n));
                DeviceBuffer<float> in(x);
                DeviceBuffer<uint8_t> codes(n);

                const CpuGroups col = cpu_col_tiles(x, s, f, pow2);
                DeviceBuffer<float> col_scales(cuda::num_col_tile_scales(s.rows, s.cols, kTile));
                cuda::quantize_col_tiles(codes.get(), col_scales.get(), in.get(), s.rows, s.cols, kTile, f, pow2,
                                         ScaleLayout::kFrugal, false, nullptr);
                expect_bits_equal(codes.download(), col.codes, tag("col tile codes", f, pow2, s));
                expect_bits_equal(col_scales.download(), col.scales, tag("col tile scales", f, pow2, s));
                std::vector<uint8_t> transposed(x.size());
                for (int64_t r = 0; r < s.rows; ++r)
                    for (int64_t c = 0; c < s.cols; ++c)
                        transposed[size_t(c * s.rows + r)] = col.codes[size_t(r * s.cols + c)];
                std::vector<float> col_lt(col.scales.size());
                for (size_t k = 0; k < col_lt.size(); ++k) col_lt[k] = 1.0f / col.scales[k];
                cuda::quantize_col_tiles(codes.get(), col_scales.get(), in.get(), s.rows, s.cols, kTile, f, pow2,
                                         ScaleLayout::kCublasLt, true, nullptr);
                expect_bits_equal(codes.download(), transposed, tag("col tile codes, transposed", f, pow2, s));
                expect_bits_equal(col_scales.download(), col_lt, tag("col tile scales (cuBLASLt)", f, pow2, s));

                const CpuGroups blk = cpu_blocks(x, s, f, pow2);
                DeviceBuffer<float> blk_scales(cuda::num_block_scales(s.rows, s.cols, kTile, ScaleLayout::kFrugal));
                cuda::quantize_blocks(codes.get(), blk_scales.get(), nullptr, nullptr, in.get(), s.rows, s.cols, kTile,
                                      f, pow2, ScaleLayout::kFrugal, nullptr);
                expect_bits_equal(codes.download(), blk.codes, tag("block codes", f, pow2, s));
                expect_bits_equal(blk_scales.download(), blk.scales, tag("block scales", f, pow2, s));

                // cuBLASLt BLK128x128_32F: 1 / s at [i * Gc4 + j], pad entries 0; the transpose's at [j * Gr4 + i].
                const int64_t br = (s.rows + kTile - 1) / kTile, bc = (s.cols + kTile - 1) / kTile,
                              bc4 = (bc + 3) / 4 * 4, br4 = (br + 3) / 4 * 4;
                ASSERT_EQ(cuda::num_block_scales(s.rows, s.cols, kTile, ScaleLayout::kCublasLt), br * bc4);
                ASSERT_EQ(cuda::num_block_scales(s.cols, s.rows, kTile, ScaleLayout::kCublasLt), bc * br4);
                std::vector<float> blk_lt(size_t(br * bc4), 0.0f), blk_lt_t(size_t(bc * br4), 0.0f);
                for (int64_t i = 0; i < br; ++i)
                    for (int64_t j = 0; j < bc; ++j) {
                        blk_lt[size_t(i * bc4 + j)] = 1.0f / blk.scales[size_t(i * bc + j)];
                        blk_lt_t[size_t(j * br4 + i)] = 1.0f / blk.scales[size_t(i * bc + j)];
                    }
                std::vector<uint8_t> blk_codes_t(x.size());
                for (int64_t r = 0; r < s.rows; ++r)
                    for (int64_t c = 0; c < s.cols; ++c)
                        blk_codes_t[size_t(c * s.rows + r)] = blk.codes[size_t(r * s.cols + c)];
                DeviceBuffer<float> lt_scales(br * bc4), lt_scales_t(bc * br4);
                DeviceBuffer<uint8_t> codes_t(n);
                cuda::quantize_blocks(codes.get(), lt_scales.get(), codes_t.get(), lt_scales_t.get(), in.get(), s.rows,
                                      s.cols, kTile, f, pow2, ScaleLayout::kCublasLt, nullptr);
                expect_bits_equal(codes.download(), blk.codes, tag("block codes (cuBLASLt)", f, pow2, s));
                expect_bits_equal(lt_scales.download(), blk_lt, tag("block scales (cuBLASLt)", f, pow2, s));
                expect_bits_equal(codes_t.download(), blk_codes_t, tag("transposed block codes", f, pow2, s));
                expect_bits_equal(lt_scales_t.download(), blk_lt_t, tag("transposed block scales", f, pow2, s));
            }
}

TEST(QuantizeGpu, TensorAmaxAndTensorwiseCodesEqualTheCpu) {
    FRUGAL_REQUIRE_GPU();
    for (int64_t n : {int64_t(0), int64_t(1), int64_t(1000), (int64_t(1) << 21) + 3, int64_t(3) << 22}) {
        auto x = make_input(1, n, kSeed + uint64_t(n));
        if (n > 10) {
            x[size_t(n / 3)] = NAN;  // ignored, as the CPU ignores it
            x[size_t(n / 2)] = -1e30f;
        }
        DeviceBuffer<float> in(x), amax_1(1), scale_1(1), workspace(cuda::amax_workspace_floats(n));
        DeviceBuffer<uint8_t> codes(n);
        cuda::amax_tensor(amax_1.get(), in.get(), n, workspace.get(), nullptr);
        const float want_amax = precision::amax(x.data(), n);
        expect_bits_equal(amax_1.download(), std::vector<float>{want_amax}, "amax of " + std::to_string(n));
        for (Fp8Format f : {Fp8Format::kE4M3, Fp8Format::kE5M2})
            for (ScaleLayout layout : {ScaleLayout::kFrugal, ScaleLayout::kCublasLt}) {
                const float s = precision::scale_for(want_amax, f, true);
                cuda::quantize_tensor(codes.get(), scale_1.get(), in.get(), n, f, true, layout, workspace.get(),
                                      nullptr);
                const std::string what = std::string("tensorwise ") + name(f) + " n " + std::to_string(n);
                expect_bits_equal(codes.download(), cpu_encode(x.data(), n, f, s), what + " codes");
                expect_bits_equal(scale_1.download(), std::vector<float>{layout == ScaleLayout::kFrugal ? s : 1.0f / s},
                                  what + " scale");
            }
    }
}

TEST(QuantizeGpu, Bf16RoundingAndEncodingEqualTheCpu) {
    FRUGAL_REQUIRE_GPU();
    // Every BF16 pattern and its neighbours (ties and NaN payloads), then a random wide-range input.
    std::vector<float> x;
    for (uint32_t b = 0; b < 65536; ++b)
        for (uint32_t low : {0x0000u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu}) {
            const uint32_t u = (b << 16) | low;
            float v;
            std::memcpy(&v, &u, 4);
            x.push_back(v);
        }
    const auto r = make_input(300, 260, kSeed);
    x.insert(x.end(), r.begin(), r.end());
    const int64_t n = int64_t(x.size());
    DeviceBuffer<float> in(x), out(n);
    DeviceBuffer<uint16_t> bf16(n);
    std::vector<float> want(x.size());
    std::vector<uint16_t> want_bits(x.size());
    precision::round_bf16(want.data(), x.data(), n);
    precision::encode_bf16(want_bits.data(), x.data(), n);
    cuda::round_bf16(out.get(), in.get(), n, nullptr);
    cuda::encode_bf16(bf16.get(), in.get(), n, nullptr);
    expect_bits_equal(out.download(), want, "round_bf16");
    expect_bits_equal(bf16.download(), want_bits, "encode_bf16");
}

TEST(QuantizeGpu, CublasLtLayoutsRefuseTilesOtherThan128BeforeAnyLaunch) {
    try {
        cuda::quantize_row_tiles(nullptr, nullptr, nullptr, 4, 256, 64, Fp8Format::kE4M3, false, ScaleLayout::kCublasLt,
                                 nullptr);
        ADD_FAILURE() << "a 1 x 64 tiling in cuBLASLt's layout was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("precision.block_size to 128"), std::string::npos) << e.what();
    }
    EXPECT_THROW(cuda::fake_quant_blocks(nullptr, nullptr, 4, 4, 0, Fp8Format::kE4M3, false, nullptr), Error);
}

}  // namespace
}  // namespace frugal
