// HfTensorReader and the FP8 block format: FP8 block-quantized weights (ragged blocks) read as exactly
// decode(code) * scale_inv, computed here element by element; a missing or mis-shaped scale is named; the fp8-block
// export round-trips bit for bit; fused expert tensors give the per-expert slices of a per-expert file, reading one
// expert needs no other; a sharded index still works, an FP8 weight's scale may sit in another shard.
//
// Legend: E experts, F expert hidden dim, D model dim, O output rows, I input columns.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

#include "checkpoint/hf_reader.h"
#include "checkpoint/safetensors.h"
#include "precision/fp8.h"
#include "tests/util.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;
using checkpoint::HfTensorReader;
using checkpoint::StTensorOut;

constexpr const char* kFp8Config =
    R"({"model_type": "deepseek_v3", "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
        "quant_method": "fp8", "weight_block_size": [128, 128]}})";

StTensorOut f32_out(const std::string& name, const Shape& shape, const std::vector<float>& v) {
    StTensorOut t{name, "F32", shape, std::vector<uint8_t>(v.size() * 4), nullptr};
    std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
    return t;
}

StTensorOut f8_out(const std::string& name, const Shape& shape, const std::vector<uint8_t>& codes) {
    return StTensorOut{name, "F8_E4M3", shape, codes, nullptr};
}

void write_config(const fs::path& dir, const std::string& text) { std::ofstream(dir / "config.json") << text; }

// Random E4M3 codes, none a NaN (0x7F, 0xFF).
std::vector<uint8_t> random_codes(int64_t n, uint64_t seed) {
    std::vector<uint8_t> c(static_cast<size_t>(n));
    rng::Stream s(seed, "codes");
    for (int64_t i = 0; i < n; ++i) {
        c[size_t(i)] = uint8_t(s.below(256, uint64_t(i)));
        if ((c[size_t(i)] & 0x7F) == 0x7F) c[size_t(i)] = 0x01;
    }
    return c;
}

// The reference: element (o, i) of an [O, I] matrix in 128 x 128 blocks, written out directly.
std::vector<float> dequantized(const std::vector<uint8_t>& codes, const std::vector<float>& scale, int64_t O, int64_t I,
                               int64_t b0 = 128, int64_t b1 = 128) {
    const int64_t SI = (I + b1 - 1) / b1;
    std::vector<float> w(size_t(O * I));
    for (int64_t o = 0; o < O; ++o)
        for (int64_t i = 0; i < I; ++i)
            w[size_t(o * I + i)] =
                precision::decode_e4m3(codes[size_t(o * I + i)]) * scale[size_t((o / b0) * SI + i / b1)];
    return w;
}

// Number of elements whose bits differ (0: equal bit for bit); reports the first.
int64_t bit_differences(const float* got, const float* want, int64_t n, const std::string& what) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) {
        if (std::memcmp(&got[i], &want[i], 4) == 0) continue;
        if (bad++ == 0) ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i];
    }
    return bad;
}

class HfReader : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ =
            test::temp_dir(std::string("hf_reader_") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    }
    void TearDown() override { fs::remove_all(dir_); }
    fs::path dir_;
};

TEST_F(HfReader, AnFp8WeightInRaggedBlocksReadsAsDecodeTimesItsBlockScaleExactly) {
    const int64_t O = 300, I = 200;  // blocks [3, 2]: the last block row holds 44 rows, the last column block 72
    const std::vector<uint8_t> codes = random_codes(O * I, 3);
    const std::vector<float> scale = {1.5e-3f, 2.0f, 7.25e-2f, 3.0e-5f, 0.3f, 11.0f};
    const std::vector<float> norm = test::random_vec<float>(I, 4);
    const std::string name = "model.layers.0.mlp.down_proj.weight";
    checkpoint::write_safetensors((dir_ / "model.safetensors").string(),
                                  {f8_out(name, {O, I}, codes), f32_out(name + "_scale_inv", {3, 2}, scale),
                                   f32_out("model.norm.weight", {I}, norm)},
                                  {});
    write_config(dir_, kFp8Config);
    HfTensorReader reader(dir_.string());
    std::vector<float> got(size_t(O * I));
    reader.read(name, got.data(), {O, I});
    const std::vector<float> want = dequantized(codes, scale, O, I);
    EXPECT_EQ(bit_differences(got.data(), want.data(), O * I, name), 0);
    // The corner elements of each ragged block use their own block's scale.
    EXPECT_EQ(got[size_t(299 * I + 199)], precision::decode_e4m3(codes[size_t(299 * I + 199)]) * scale[5]);
    EXPECT_EQ(got[size_t(255 * I + 128)], precision::decode_e4m3(codes[size_t(255 * I + 128)]) * scale[3]);
    std::vector<float> norm_got(static_cast<size_t>(I));
    reader.read("model.norm.weight", norm_got.data(), {I});
    EXPECT_EQ(bit_differences(norm_got.data(), norm.data(), I, "model.norm.weight"), 0);
    // The scale belongs to its weight: it is not a tensor the importer must account for.
    EXPECT_EQ(reader.served_names(), (std::vector<std::string>{name, "model.norm.weight"}));
    EXPECT_NO_THROW(checkpoint::check_hf_tensors_expected(dir_.string(), {name, "model.norm.weight"}));
}

TEST_F(HfReader, AMissingOrMisShapedScaleIsRefusedNamingTheTensorAndTheExpectedShape) {
    const std::string name = "model.layers.1.self_attn.o_proj.weight";
    const std::vector<uint8_t> codes = random_codes(300 * 200, 5);
    std::vector<float> out(300 * 200);
    checkpoint::write_safetensors((dir_ / "model.safetensors").string(), {f8_out(name, {300, 200}, codes)}, {});
    write_config(dir_, kFp8Config);
    test::expect_has(test::config_error([&] {
                         HfTensorReader(dir_.string()).read(name, out.data(), {300, 200});
                     }),
                     {name + "_scale_inv", "F32 [3, 2]", "is missing", name});
    checkpoint::write_safetensors(
        (dir_ / "model.safetensors").string(),
        {f8_out(name, {300, 200}, codes), f32_out(name + "_scale_inv", {2, 2}, std::vector<float>(4, 1.0f))}, {});
    test::expect_has(test::config_error([&] {
                         HfTensorReader(dir_.string()).read(name, out.data(), {300, 200});
                     }),
                     {name + "_scale_inv", "has shape [2, 2], expected [3, 2]", "[128, 128]"});
    // Without quantization_config the block size is unknown.
    write_config(dir_, R"({"model_type": "deepseek_v3"})");
    test::expect_has(test::config_error([&] {
                         HfTensorReader(dir_.string()).read(name, out.data(), {300, 200});
                     }),
                     {name, "F8_E4M3", "no quantization_config"});
}

TEST_F(HfReader, AnE5m2WeightDecodesThroughTheE5m2Format) {
    const std::vector<uint8_t> codes = {0x3C, 0x40, 0xC4, 0x01, 0x7B, 0x00};  // 1, 2, -4, 2^-16, 57344, 0 in E5M2
    StTensorOut w = f8_out("model.layers.0.mlp.up_proj.weight", {2, 3}, codes);
    w.dtype = "F8_E5M2";
    checkpoint::write_safetensors((dir_ / "model.safetensors").string(),
                                  {w, f32_out("model.layers.0.mlp.up_proj.weight_scale_inv", {1, 1}, {0.5f})}, {});
    write_config(dir_, R"({"quantization_config": {"quant_method": "fp8", "fmt": "e5m2"}})");
    std::vector<float> got(6);
    HfTensorReader(dir_.string()).read("model.layers.0.mlp.up_proj.weight", got.data(), {2, 3});
    EXPECT_EQ(got, (std::vector<float>{0.5f, 1.0f, -2.0f, std::ldexp(1.0f, -17), 28672.0f, 0.0f}));
}

TEST_F(HfReader, OtherQuantizationMethodsAndFormatsAreRefusedByName) {
    checkpoint::write_safetensors((dir_ / "model.safetensors").string(), {f32_out("a", {1}, {1.0f})}, {});
    write_config(dir_, R"({"quantization_config": {"quant_method": "awq", "bits": 4}})");
    test::expect_has(test::config_error([&] { HfTensorReader r(dir_.string()); }),
                     {"config.json", "quant_method is 'awq'", "only \"fp8\""});
    write_config(dir_, R"({"quantization_config": {"quant_method": "fp8", "fmt": "e2m1"}})");
    test::expect_has(test::config_error([&] { HfTensorReader r(dir_.string()); }),
                     {"quantization_config.fmt is 'e2m1'", "e4m3 or e5m2"});
    write_config(dir_, R"({"quantization_config": {"quant_method": "fp8", "weight_block_size": [128]}})");
    test::expect_has(test::config_error([&] { HfTensorReader r(dir_.string()); }), {"weight_block_size must be"});
}

TEST_F(HfReader, TheFp8BlockExportRoundTripsBitForBit) {
    const int64_t O = 300, I = 200;
    std::vector<float> w = test::random_vec<float>(O * I, 11, 0.02);
    for (int64_t o = 0; o < O; ++o)
        for (int64_t i = 0; i < I; ++i) {
            float& x = w[size_t(o * I + i)];
            if (o >= 128 && o < 256 && i < 128) x = 0.0f;  // an all-zero block: scale 1
            if (o >= 256) x *= 3000.0f;                    // magnitudes beyond E4M3's range: the scale absorbs them
            if (i >= 128 && o < 128) x *= 1e-6f;           // and far below
        }
    const std::string name = "model.layers.0.mlp.experts.3.up_proj.weight";
    const checkpoint::Fp8BlockTensors q = checkpoint::quantize_fp8_block(name, w.data(), O, I);
    ASSERT_EQ(q.codes.dtype, "F8_E4M3");
    ASSERT_EQ(q.codes.shape, (Shape{O, I}));
    ASSERT_EQ(q.scale_inv.name, name + "_scale_inv");
    ASSERT_EQ(q.scale_inv.shape, (Shape{3, 2}));
    std::vector<float> scale(6);
    std::memcpy(scale.data(), q.scale_inv.bytes.data(), 24);
    // DeepSeek's recipe, block by block: scale = amax / 448, code = encode(w / scale).
    for (int64_t b = 0; b < 6; ++b) {
        float amax = 0;
        for (int64_t o = (b / 2) * 128; o < std::min<int64_t>(O, (b / 2 + 1) * 128); ++o)
            for (int64_t i = (b % 2) * 128; i < std::min<int64_t>(I, (b % 2 + 1) * 128); ++i)
                amax = std::max(amax, std::fabs(w[size_t(o * I + i)]));
        EXPECT_EQ(scale[size_t(b)], amax > 0 ? amax / 448.0f : 1.0f) << "block " << b;
    }
    EXPECT_EQ(scale[2], 1.0f);
    for (int64_t k : {int64_t(0), int64_t(129 * I + 5), O * I - 1})
        EXPECT_EQ(q.codes.bytes[size_t(k)],
                  precision::encode_e4m3(w[size_t(k)] / scale[size_t(((k / I) / 128) * 2 + (k % I) / 128)]));

    checkpoint::write_safetensors((dir_ / "model.safetensors").string(), {q.codes, q.scale_inv}, {});
    write_config(dir_, std::string(R"({"model_type": "deepseek_v3", "quantization_config": )") +
                           checkpoint::fp8_block_quantization_config_json() + "}");
    std::vector<float> back(size_t(O * I));
    HfTensorReader(dir_.string()).read(name, back.data(), {O, I});
    const std::vector<float> want = dequantized(q.codes.bytes, scale, O, I);
    EXPECT_EQ(bit_differences(back.data(), want.data(), O * I, "read after export"), 0);
    std::vector<float> via_inverse(size_t(O * I));
    checkpoint::dequantize_fp8_block(via_inverse.data(), q.codes.bytes.data(), scale.data(), O, I, 128, 128);
    EXPECT_EQ(bit_differences(via_inverse.data(), want.data(), O * I, "dequantize_fp8_block"), 0);
    // Quantizing the dequantized weight again reproduces the codes and the scales.
    const checkpoint::Fp8BlockTensors again = checkpoint::quantize_fp8_block(name, back.data(), O, I);
    EXPECT_EQ(again.codes.bytes, q.codes.bytes);
    EXPECT_EQ(again.scale_inv.bytes, q.scale_inv.bytes);
    // The quantization was not the identity: the weights did move onto the FP8 grid.
    EXPECT_GT(test::compare(back.data(), w.data(), O * I).max_abs, 0.0);
}

TEST_F(HfReader, AWeightHoldingANanIsNotQuantizedAndTheBlockIsNamed) {
    std::vector<float> w(300 * 200, 1.0f);
    w[size_t(200 * 200 + 150)] = std::numeric_limits<float>::quiet_NaN();
    try {
        checkpoint::quantize_fp8_block("model.layers.0.mlp.gate_proj.weight", w.data(), 300, 200);
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        test::expect_has(e.what(), {"model.layers.0.mlp.gate_proj.weight", "block [1, 1]", "NaN"});
    }
}

TEST(HfReaderNames, DeepSeeksBf16TensorsAreNotBlockQuantized) {
    for (const char* name :
         {"model.layers.3.self_attn.q_a_proj.weight", "model.layers.3.self_attn.kv_a_proj_with_mqa.weight",
          "model.layers.3.self_attn.kv_b_proj.weight", "model.layers.3.self_attn.o_proj.weight",
          "model.layers.0.mlp.down_proj.weight", "model.layers.3.mlp.shared_experts.up_proj.weight",
          "model.layers.3.mlp.experts.17.gate_proj.weight", "model.layers.3.self_attn.q_proj.weight"})
        EXPECT_TRUE(checkpoint::is_fp8_block_quantized(name)) << name;
    for (const char* name :
         {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.layers.3.input_layernorm.weight",
          "model.layers.3.self_attn.kv_a_layernorm.weight", "model.layers.3.self_attn.q_a_layernorm.weight",
          "model.layers.3.mlp.gate.weight", "model.layers.3.mlp.gate.e_score_correction_bias",
          "model.layers.3.mlp.shared_expert_gate.weight", "model.layers.3.self_attn.q_proj.bias"})
        EXPECT_FALSE(checkpoint::is_fp8_block_quantized(name)) << name;
}

// Per-expert weights of E experts: gate and up [F, D], down [D, F], in F32, with a marker per expert.
struct Experts {
    int64_t E = 4, F = 24, D = 16;
    std::vector<std::vector<float>> gate, up, down;
    Experts() {
        for (int64_t e = 0; e < E; ++e) {
            gate.push_back(test::random_vec<float>(F * D, 100 + uint64_t(e)));
            up.push_back(test::random_vec<float>(F * D, 200 + uint64_t(e)));
            down.push_back(test::random_vec<float>(D * F, 300 + uint64_t(e)));
        }
    }
    std::string name(int64_t e, const std::string& proj) const {
        return "model.layers.1.mlp.experts." + std::to_string(e) + "." + proj + ".weight";
    }
    std::vector<StTensorOut> per_expert() const {
        std::vector<StTensorOut> t;
        for (int64_t e = 0; e < E; ++e) {
            t.push_back(f32_out(name(e, "gate_proj"), {F, D}, gate[size_t(e)]));
            t.push_back(f32_out(name(e, "up_proj"), {F, D}, up[size_t(e)]));
            t.push_back(f32_out(name(e, "down_proj"), {D, F}, down[size_t(e)]));
        }
        return t;
    }
    // gate_up [E, 2F, D] (rows [0, F) gate, [F, 2F) up), down [E, D, F]; experts in poisoned are NaN.
    std::vector<StTensorOut> fused(const std::set<int64_t>& poisoned = {}) const {
        std::vector<float> gate_up, dn;
        const float nan = std::numeric_limits<float>::quiet_NaN();
        for (int64_t e = 0; e < E; ++e) {
            const bool p = poisoned.count(e) > 0;
            for (float x : gate[size_t(e)]) gate_up.push_back(p ? nan : x);
            for (float x : up[size_t(e)]) gate_up.push_back(p ? nan : x);
            for (float x : down[size_t(e)]) dn.push_back(p ? nan : x);
        }
        return {f32_out("model.layers.1.mlp.experts.gate_up_proj", {E, 2 * F, D}, gate_up),
                f32_out("model.layers.1.mlp.experts.down_proj", {E, D, F}, dn)};
    }
};

TEST_F(HfReader, AFusedExpertFileGivesTheSlicesOfAPerExpertFile) {
    const Experts x;
    fs::create_directories(dir_ / "per");
    fs::create_directories(dir_ / "fused");
    checkpoint::write_safetensors((dir_ / "per" / "model.safetensors").string(), x.per_expert(), {});
    checkpoint::write_safetensors((dir_ / "fused" / "model.safetensors").string(), x.fused(), {});
    HfTensorReader per((dir_ / "per").string()), fused((dir_ / "fused").string());
    for (int64_t e = 0; e < x.E; ++e)
        for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) {
            const Shape shape = std::string(proj) == "down_proj" ? Shape{x.D, x.F} : Shape{x.F, x.D};
            std::vector<float> a(size_t(x.F * x.D)), b(size_t(x.F * x.D), -1.0f);
            per.read(x.name(e, proj), a.data(), shape);
            fused.read(x.name(e, proj), b.data(), shape);
            EXPECT_EQ(bit_differences(b.data(), a.data(), x.F * x.D, x.name(e, proj)), 0);
        }
    // The fused directory serves exactly the per-expert names, so the importer's check accepts it.
    EXPECT_EQ(fused.served_names(), per.served_names());
    const std::vector<std::string> names = per.served_names();
    EXPECT_NO_THROW(checkpoint::check_hf_tensors_expected((dir_ / "fused").string(), {names.begin(), names.end()}));
    // A model with fewer experts than the fused tensor is told which ones it would drop.
    std::set<std::string> three;
    for (const auto& n : names)
        if (n.find(".experts.3.") == std::string::npos) three.insert(n);
    test::expect_has(
        test::config_error([&] { checkpoint::check_hf_tensors_expected((dir_ / "fused").string(), three); }),
        {"does not account for", x.name(3, "down_proj")});
    // A shape that does not fit the fused tensor is named with the shape it needs.
    std::vector<float> buf(size_t(x.F * x.D));
    test::expect_has(test::config_error([&] {
                         fused.read(x.name(0, "gate_proj"), buf.data(), {x.F / 2, x.D});
                     }),
                     {"model.layers.1.mlp.experts.gate_up_proj", "[4, 48, 16]", "[4, 24, 16]"});
    test::expect_has(test::config_error([&] {
                         fused.read(x.name(4, "up_proj"), buf.data(), {x.F, x.D});
                     }),
                     {"holds 4 experts", "expert 4"});
}

TEST_F(HfReader, ReadingOneFusedExpertDoesNotNeedTheOthersToBeValid) {
    const Experts x;
    checkpoint::write_safetensors((dir_ / "model.safetensors").string(), x.fused({0, 1, 2}), {});
    HfTensorReader reader(dir_.string());
    std::vector<float> got(size_t(x.F * x.D));
    reader.read(x.name(3, "up_proj"), got.data(), {x.F, x.D});
    EXPECT_EQ(bit_differences(got.data(), x.up[3].data(), x.F * x.D, "expert 3 up_proj"), 0);
    reader.read(x.name(3, "down_proj"), got.data(), {x.D, x.F});
    EXPECT_EQ(bit_differences(got.data(), x.down[3].data(), x.F * x.D, "expert 3 down_proj"), 0);
    reader.read(x.name(2, "gate_proj"), got.data(), {x.F, x.D});
    EXPECT_TRUE(std::isnan(got[0]));  // the poison is where it was put: the slices are not all expert 3's
}

TEST_F(HfReader, AnFp8FusedGateUpIsSlicedWithTheBlocksThatStraddleGateAndUp) {
    // Blocks of 16 rows over 2F = 48 rows: rows [16, 32) of each expert hold gate rows 16..23 and up rows 0..7.
    const int64_t E = 3, F = 24, D = 40, b = 16, SR = 3, SC = 3;
    const std::vector<uint8_t> codes = random_codes(E * 2 * F * D, 21);
    std::vector<float> scale = test::random_vec<float>(E * SR * SC, 22);
    for (float& s : scale) s = std::fabs(s) + 0.01f;
    checkpoint::write_safetensors((dir_ / "model.safetensors").string(),
                                  {f8_out("model.layers.1.mlp.experts.gate_up_proj", {E, 2 * F, D}, codes),
                                   f32_out("model.layers.1.mlp.experts.gate_up_proj_scale_inv", {E, SR, SC}, scale)},
                                  {});
    write_config(dir_, R"({"quantization_config": {"quant_method": "fp8", "weight_block_size": [16, 16]}})");
    HfTensorReader reader(dir_.string());
    for (int64_t e = 0; e < E; ++e) {
        const std::vector<uint8_t> codes_e(codes.begin() + e * 2 * F * D, codes.begin() + (e + 1) * 2 * F * D);
        const std::vector<float> scale_e(scale.begin() + e * SR * SC, scale.begin() + (e + 1) * SR * SC);
        const std::vector<float> want = dequantized(codes_e, scale_e, 2 * F, D, b, b);
        std::vector<float> gate(size_t(F * D)), up(size_t(F * D));
        reader.read("model.layers.1.mlp.experts." + std::to_string(e) + ".gate_proj.weight", gate.data(), {F, D});
        reader.read("model.layers.1.mlp.experts." + std::to_string(e) + ".up_proj.weight", up.data(), {F, D});
        EXPECT_EQ(bit_differences(gate.data(), want.data(), F * D, "gate of expert " + std::to_string(e)), 0);
        EXPECT_EQ(bit_differences(up.data(), want.data() + F * D, F * D, "up of expert " + std::to_string(e)), 0);
    }
    EXPECT_EQ(reader.served_names().size(), size_t(2 * E));
}

TEST_F(HfReader, AShardedIndexIsReadAndAScaleMayLiveInAnotherShard) {
    const std::vector<uint8_t> codes = random_codes(130 * 129, 31);
    const std::vector<float> scale = {0.5f, 0.25f, 2.0f, 4.0f};
    const std::vector<float> norm = test::random_vec<float>(129, 32);
    const std::string w = "model.layers.0.self_attn.q_proj.weight";
    checkpoint::write_safetensors((dir_ / "model-00001-of-00002.safetensors").string(),
                                  {f8_out(w, {130, 129}, codes), f32_out("model.norm.weight", {129}, norm)}, {});
    checkpoint::write_safetensors((dir_ / "model-00002-of-00002.safetensors").string(),
                                  {f32_out(w + "_scale_inv", {2, 2}, scale)}, {});
    std::ofstream(dir_ / "model.safetensors.index.json")
        << R"({"metadata": {}, "weight_map": {")" << w << R"(": "model-00001-of-00002.safetensors", ")" << w
        << R"(_scale_inv": "model-00002-of-00002.safetensors", )"
        << R"("model.norm.weight": "model-00001-of-00002.safetensors"}})";
    write_config(dir_, kFp8Config);
    HfTensorReader reader(dir_.string());
    std::vector<float> got(130 * 129), n(129);
    reader.read(w, got.data(), {130, 129});
    EXPECT_EQ(bit_differences(got.data(), dequantized(codes, scale, 130, 129).data(), 130 * 129, w), 0);
    reader.read("model.norm.weight", n.data(), {129});
    EXPECT_EQ(bit_differences(n.data(), norm.data(), 129, "model.norm.weight"), 0);
    test::expect_has(test::config_error([&] { reader.read("lm_head.weight", n.data(), {129}); }),
                     {dir_.string(), "'lm_head.weight' is not in model.safetensors.index.json"});
    test::expect_has(test::config_error([&] { reader.read("model.norm.weight", n.data(), {128}); }),
                     {"model-00001-of-00002.safetensors", "'model.norm.weight' has shape [129]", "needs [128]"});
    fs::remove(dir_ / "model-00002-of-00002.safetensors");
    test::expect_has(test::config_error([&] {
                         HfTensorReader(dir_.string()).read(w, got.data(), {130, 129});
                     }),
                     {"model-00002-of-00002.safetensors", "named by the index is missing"});
}

}  // namespace
}  // namespace frugal
