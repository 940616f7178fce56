// The quantized-weight cache of the recipes (precision/recipe.h) and the bulk fake quantization under it.
//
// - Every granularity of fake quantization equals, bit for bit, the element-by-element definition
//   decode(encode(x * s)) / s with the scalar encoder and the group's scale (ragged edges, tiles longer than the
//   bulk path's chunk, both formats, both scale roundings).
// - A model that took an optimizer step and was told weights_updated() computes, bit for bit, the same loss, logits
//   and gradients as a freshly built model holding the same weights: the cache never serves old weights.
// - Weights changed without weights_updated() are an error naming it, not a silent use of old quantized weights.
//
// Model: 2 layers (dense then MoE, 4 experts, top-2, one shared expert), d_model 64, block_size 32 so that every
// weight has several 32 x 32 blocks; 2 x 16 tokens.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "model/transformer.h"
#include "optim/adamw.h"
#include "precision/fp8.h"
#include "precision/quantize.h"
#include "precision/recipe.h"
#include "tests/util.h"

namespace frugal {
namespace {

using namespace precision;

float reference_fq(float x, float s, Fp8Format f) {
    const float inv = 1.0f / s;
    return f == Fp8Format::kE4M3 ? decode_e4m3(encode_e4m3(x * s)) * inv : decode_e5m2(encode_e5m2(x * s)) * inv;
}

// Element by element: out_i = reference_fq(in_i, scale of group_of(i)), the scale from the group's amax.
template <typename GroupOf>
std::vector<float> reference_groups(const std::vector<float>& in, int64_t groups, GroupOf group_of, Fp8Format f,
                                    bool pow2) {
    std::vector<float> gmax(static_cast<size_t>(groups), 0.0f), out(in.size());
    for (size_t i = 0; i < in.size(); ++i) {
        float& m = gmax[static_cast<size_t>(group_of(int64_t(i)))];
        m = std::max(m, std::fabs(in[i]));
    }
    for (size_t i = 0; i < in.size(); ++i)
        out[i] = reference_fq(in[i], scale_for(gmax[static_cast<size_t>(group_of(int64_t(i)))], f, pow2), f);
    return out;
}

void expect_bitwise(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i)
        ASSERT_EQ(std::memcmp(&got[i], &want[i], 4), 0)
            << what << " element " << i << ": " << got[i] << " vs " << want[i];
}

// The rounding straight to the FP8 grid equals encoding and decoding through the 8-bit code on every kind of float:
// a stride through all 2^32 bit patterns (both signs, zeros, subnormals, normals, saturating magnitudes,
// infinities, NaNs), at several scales. (Written against all 2^32 patterns once; this sample keeps the test fast.)
TEST(FakeQuant, RoundingToTheGridEqualsEncodeThenDecodeOnEveryKindOfFloat) {
    constexpr uint64_t kStride = 4099;  // prime: every exponent and low mantissa bit pattern is visited
    std::vector<float> in, got;
    for (uint64_t u = 0; u < (uint64_t(1) << 32); u += kStride) {
        const uint32_t bits = uint32_t(u);
        float f;
        std::memcpy(&f, &bits, 4);
        in.push_back(f);
    }
    for (float f : {0.0f, -0.0f, 448.0f, 464.0f, 57344.0f, 61440.0f, INFINITY, -INFINITY, NAN})
        in.push_back(f);
    got.resize(in.size());
    std::vector<uint8_t> codes(in.size());
    int64_t mismatches = 0;
    for (precision::Fp8Format fmt : {precision::Fp8Format::kE4M3, precision::Fp8Format::kE5M2})
        for (float scale : {1.0f, 0.375f, 1024.0f, std::ldexp(1.0f, -20)}) {
            precision::fake_quant(got.data(), in.data(), int64_t(in.size()), fmt, scale);
            const bool e4m3 = fmt == precision::Fp8Format::kE4M3;
            if (e4m3)
                precision::encode_e4m3(codes.data(), in.data(), int64_t(in.size()), scale);
            else
                precision::encode_e5m2(codes.data(), in.data(), int64_t(in.size()), scale);
            const auto& table = e4m3 ? precision::e4m3_table() : precision::e5m2_table();
            for (size_t i = 0; i < in.size(); ++i) {
                const float want = table[codes[i]] * (1.0f / scale);
                if (std::memcmp(&want, &got[i], 4) != 0 && mismatches++ < 5)
                    ADD_FAILURE() << (e4m3 ? "E4M3" : "E5M2") << " scale " << scale << " input " << in[i] << " ("
                                  << std::hexfloat << in[i] << "): got " << got[i] << ", want " << want
                                  << std::defaultfloat;
            }
        }
    EXPECT_EQ(mismatches, 0);
}

TEST(FakeQuant, EveryGranularityEqualsTheElementwiseDefinitionBitwise) {
    const int64_t rows = 300, cols = 700;  // ragged against both tile sizes and the 256-element chunk
    auto x = test::random_vec<float>(rows * cols, 3);
    for (int64_t i = 0; i < rows * cols; ++i) x[size_t(i)] *= std::ldexp(1.0f, int(i % 29) - 14);  // subnormals too
    std::vector<float> out(x.size());
    for (int64_t tile : {128, 300})
        for (Fp8Format f : {Fp8Format::kE4M3, Fp8Format::kE5M2})
            for (bool pow2 : {false, true}) {
                const std::string tag = "tile " + std::to_string(tile) + (f == Fp8Format::kE4M3 ? " e4m3" : " e5m2") +
                                        (pow2 ? " pow2" : "");
                const int64_t ct = (cols + tile - 1) / tile, rt = (rows + tile - 1) / tile;
                const float s = scale_for(amax(x.data(), rows * cols), f, pow2);
                fake_quant(out.data(), x.data(), rows * cols, f, s);
                expect_bitwise(out,
                               reference_groups(
                                   x, 1, [](int64_t) { return 0; }, f, pow2),
                               "tensor " + tag);
                fake_quant_row_tiles(out.data(), x.data(), rows, cols, tile, f, pow2);
                expect_bitwise(
                    out,
                    reference_groups(
                        x, rows * ct, [&](int64_t i) { return (i / cols) * ct + (i % cols) / tile; }, f, pow2),
                    "row tiles " + tag);
                fake_quant_col_tiles(out.data(), x.data(), rows, cols, tile, f, pow2);
                expect_bitwise(
                    out,
                    reference_groups(
                        x, rt * cols, [&](int64_t i) { return ((i / cols) / tile) * cols + i % cols; }, f, pow2),
                    "col tiles " + tag);
                fake_quant_blocks(out.data(), x.data(), rows, cols, tile, f, pow2);
                expect_bitwise(
                    out,
                    reference_groups(
                        x, rt * ct, [&](int64_t i) { return ((i / cols) / tile) * ct + (i % cols) / tile; }, f, pow2),
                    "blocks " + tag);
            }
}

model::ModelConfig small_moe() {
    model::ModelConfig m;
    m.vocab_size = 40;
    m.d_model = 64;
    m.n_layers = 2;
    m.n_heads = 2;
    m.n_kv_heads = 1;
    m.d_ff = 96;
    m.dense_layers = 1;
    m.max_seq_len = 16;
    m.moe.n_experts = 4;
    m.moe.top_k = 2;
    m.moe.d_expert = 48;
    m.moe.n_shared_experts = 1;
    return m;
}

PrecisionConfig recipe(const std::string& name) {
    PrecisionConfig p;
    p.recipe = name;
    p.block_size = 32;
    return p;
}

struct Batch {
    std::vector<int32_t> tokens, targets;
    int64_t b = 2, s = 16;
    explicit Batch(uint64_t seed) {
        for (int64_t i = 0; i < b * s; ++i) {
            tokens.push_back(int32_t((uint64_t(i) * 7 + seed * 13) % 40));
            targets.push_back(int32_t((uint64_t(i) * 11 + seed * 5 + 1) % 40));
        }
    }
};

// One training step: forward and backward on two micro-batches, then AdamW.
void train_step(model::Transformer<float>& net, optim::AdamW& opt) {
    net.params().zero_grad();
    for (uint64_t m = 0; m < 2; ++m) {
        Batch batch(m + 1);
        net.forward(batch.tokens.data(), batch.targets.data(), batch.b, batch.s);
        net.backward(1.0f / 64.0f, 0.5f);
    }
    opt.step(1e-2);
}

std::vector<optim::OptimParam> optim_params(model::Transformer<float>& net) {
    std::vector<optim::OptimParam> out;
    for (auto* p : net.params().params())
        out.push_back({p->value.data<float>(), p->grad.data<float>(), p->value.numel(), true});
    return out;
}

std::vector<float> copy_of(const Tensor& t) {
    const float* p = t.data<float>();
    return std::vector<float>(p, p + t.numel());
}

class WeightCache : public testing::TestWithParam<std::string> {};

TEST_P(WeightCache, AfterAStepAndWeightsUpdatedTheModelEqualsAFreshOneWithTheSameWeightsBitwise) {
    model::Transformer<float> net(small_moe());
    net.init(5);
    net.set_precision(recipe(GetParam()));
    optim::AdamW opt(optim::OptimConfig{}, optim_params(net));
    train_step(net, opt);
    net.weights_updated();
    train_step(net, opt);  // the second step's forwards must see the weights of the first
    net.weights_updated();

    model::Transformer<float> fresh(small_moe());
    fresh.set_precision(recipe(GetParam()));
    ASSERT_EQ(fresh.params().flat_values().numel(), net.params().flat_values().numel());
    std::memcpy(fresh.params().flat_values().data<float>(), net.params().flat_values().data<float>(),
                size_t(net.params().flat_values().numel()) * 4);

    Batch batch(7);
    net.params().zero_grad();
    fresh.params().zero_grad();
    const model::ForwardResult a = net.forward(batch.tokens.data(), batch.targets.data(), batch.b, batch.s);
    const model::ForwardResult b = fresh.forward(batch.tokens.data(), batch.targets.data(), batch.b, batch.s);
    EXPECT_EQ(std::memcmp(&a.ce_sum, &b.ce_sum, sizeof(double)), 0) << a.ce_sum << " vs " << b.ce_sum;
    const int64_t nv = batch.b * batch.s * 40;
    expect_bitwise(std::vector<float>(net.logits(), net.logits() + nv),
                   std::vector<float>(fresh.logits(), fresh.logits() + nv), "logits");
    net.backward(1.0f / 32.0f, 1.0f);
    fresh.backward(1.0f / 32.0f, 1.0f);
    expect_bitwise(copy_of(net.params().flat_grads()), copy_of(fresh.params().flat_grads()), "gradients");
}

TEST_P(WeightCache, WeightsChangedWithoutWeightsUpdatedAreAnErrorNamingIt) {
    model::Transformer<float> net(small_moe());
    net.init(5);
    net.set_precision(recipe(GetParam()));
    optim::AdamW opt(optim::OptimConfig{}, optim_params(net));
    train_step(net, opt);
    Batch batch(3);
    try {
        net.forward(batch.tokens.data(), batch.targets.data(), batch.b, batch.s);
        FAIL() << "a forward over changed weights without weights_updated() ran on old quantized weights";
    } catch (const Error& e) {
        test::expect_has(e.what(), {"weights_updated()", "changed since it was quantized"});
    }
    net.weights_updated();
    EXPECT_NO_THROW(net.forward(batch.tokens.data(), batch.targets.data(), batch.b, batch.s));
}

INSTANTIATE_TEST_SUITE_P(CachingRecipes, WeightCache, testing::Values("fp8-blockwise", "fp8-tensorwise", "bf16"),
                         [](const testing::TestParamInfo<std::string>& info) {
                             std::string name = info.param;
                             for (char& c : name)
                                 if (c == '-') c = '_';
                             return name;
                         });

}  // namespace
}  // namespace frugal
