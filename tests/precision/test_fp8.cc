// FP8 and BF16 formats: decoding against ml_dtypes' tables (tests/golden/fp8_tables.txt), encoding properties.
// The exhaustive comparison with CUDA's own conversions is in test_fp8_cuda.cc.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "precision/fp8.h"

namespace frugal {
namespace {

using namespace precision;

std::vector<std::pair<int, double>> table(const std::string& format) {
    std::ifstream f(std::string(FRUGAL_SOURCE_DIR) + "/tests/golden/fp8_tables.txt");
    EXPECT_TRUE(f.good()) << "tests/golden/fp8_tables.txt missing (tests/golden/make_fp8_tables.py makes it)";
    std::vector<std::pair<int, double>> out;
    std::string name, text;
    int code;
    while (f >> name >> code >> text) {
        if (name != format) continue;
        double v = text == "nan"    ? NAN
                   : text == "inf"  ? INFINITY
                   : text == "-inf" ? -INFINITY
                                    : std::strtod(text.c_str(), nullptr);
        out.emplace_back(code, v);
    }
    return out;
}

void expect_table(const std::string& format, float (*decode)(uint8_t)) {
    auto t = table(format);
    ASSERT_EQ(t.size(), 256u) << format;
    for (auto [code, want] : t) {
        float got = decode(uint8_t(code));
        if (std::isnan(want)) {
            EXPECT_TRUE(std::isnan(got)) << format << " code " << code;
        } else {
            EXPECT_EQ(double(got), want) << format << " code " << code;
            EXPECT_EQ(std::signbit(got), std::signbit(want)) << format << " code " << code << " sign of zero";
        }
    }
}

TEST(Fp8, DecodeMatchesMlDtypes) {
    expect_table("e4m3", decode_e4m3);
    expect_table("e5m2", decode_e5m2);
}

TEST(Fp8, EncodeInvertsDecodeOnEveryCode) {
    for (int c = 0; c < 256; ++c) {
        if (!std::isnan(decode_e4m3(uint8_t(c)))) {
            EXPECT_EQ(encode_e4m3(decode_e4m3(uint8_t(c))), c) << "e4m3 " << c;
        }
        float v = decode_e5m2(uint8_t(c));
        if (std::isfinite(v)) {
            EXPECT_EQ(encode_e5m2(v), c) << "e5m2 " << c;
        }
    }
}

TEST(Fp8, EncodingSaturatesKeepsNaNAndRoundsTiesToEven) {
    EXPECT_EQ(encode_e4m3(448.0f), 0x7E);
    EXPECT_EQ(encode_e4m3(464.0f), 0x7E);  // midpoint 448 / (480): ties to even, and 480 does not exist
    EXPECT_EQ(encode_e4m3(1e30f), 0x7E);
    EXPECT_EQ(encode_e4m3(-INFINITY), 0xFE);
    EXPECT_EQ(encode_e4m3(NAN), 0x7F);
    EXPECT_EQ(encode_e4m3(-NAN), 0x7F);
    EXPECT_EQ(encode_e5m2(INFINITY), 0x7B);  // saturating: no infinity out of a finite conversion
    EXPECT_EQ(encode_e5m2(-1e9f), 0xFB);
    EXPECT_EQ(encode_e5m2(NAN), 0x7F);
    // Ties to even: 1 + 1/16 is halfway between 1 (0x38) and 1.125 (0x39) in E4M3 -> 0x38; 1 + 3/16 -> 1.25.
    EXPECT_EQ(encode_e4m3(1.0625f), 0x38);
    EXPECT_EQ(encode_e4m3(1.1875f), 0x3A);
    // Subnormals: 2^-10 is half the smallest E4M3 subnormal: ties to even, zero; a hair above rounds up.
    EXPECT_EQ(encode_e4m3(std::ldexp(1.0f, -10)), 0x00);
    EXPECT_EQ(encode_e4m3(std::nextafter(std::ldexp(1.0f, -10), 1.0f)), 0x01);
    EXPECT_EQ(encode_e4m3(-std::ldexp(3.0f, -10)), 0x82);  // 1.5 units: ties to even, 2 units
    EXPECT_EQ(encode_e4m3(-0.0f), 0x80);
    // The largest subnormal rounds up into the smallest normal.
    EXPECT_EQ(encode_e4m3(std::ldexp(7.5f, -9)), 0x08);
}

TEST(Bf16, EncodingRoundsTiesToEvenKeepsNaNAndInvertsDecodeOnEveryPattern) {
    EXPECT_EQ(encode_bf16(1.0f), 0x3F80);
    EXPECT_EQ(decode_bf16(0x3F80), 1.0f);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: even (1). 1 + 3 * 2^-8: up to 1 + 2^-6.
    EXPECT_EQ(encode_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
    EXPECT_EQ(encode_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
    EXPECT_EQ(encode_bf16(NAN), 0x7FFF);
    EXPECT_EQ(encode_bf16(INFINITY), 0x7F80);
    EXPECT_EQ(encode_bf16(3.4028235e38f), 0x7F80);  // rounds past the largest BF16 to infinity
    for (uint32_t b = 0; b < 65536; ++b) {
        float v = decode_bf16(uint16_t(b));
        if (!std::isnan(v)) {
            ASSERT_EQ(encode_bf16(v), b);
        }
    }
}

TEST(Fp8, BulkEncodersMatchScalarOnEveryBf16PatternAndNaN) {
    std::vector<float> x;
    for (uint32_t b = 0; b < 65536; ++b) x.push_back(decode_bf16(uint16_t(b)));
    for (uint32_t u : {0x7F800001u, 0xFFC00000u, 0x00000001u, 0x807FFFFFu, 0x3A800000u, 0x3A7FFFFFu}) {
        float f;
        std::memcpy(&f, &u, 4);
        x.push_back(f);
    }
    std::vector<uint8_t> q4(x.size()), q5(x.size());
    encode_e4m3(q4.data(), x.data(), int64_t(x.size()));
    encode_e5m2(q5.data(), x.data(), int64_t(x.size()));
    for (size_t i = 0; i < x.size(); ++i) {
        ASSERT_EQ(q4[i], encode_e4m3(x[i])) << std::hexfloat << x[i];
        ASSERT_EQ(q5[i], encode_e5m2(x[i])) << std::hexfloat << x[i];
    }
}

TEST(Fp8, BulkMatchesScalarWithScale) {
    std::vector<float> x(1000);
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i)) * 30.0f;
    std::vector<uint8_t> q(x.size());
    std::vector<float> back(x.size());
    encode_e4m3(q.data(), x.data(), int64_t(x.size()), 8.0f);
    decode_e4m3(back.data(), q.data(), int64_t(x.size()), 0.125f);
    for (size_t i = 0; i < x.size(); ++i) {
        ASSERT_EQ(q[i], encode_e4m3(x[i] * 8.0f));
        ASSERT_EQ(back[i], decode_e4m3(q[i]) * 0.125f);
    }
}

}  // namespace
}  // namespace frugal
