// Frugal on imported Hugging Face models against transformers itself (tests/golden/make_hf_golden.py): tiny random
// qwen3_moe, qwen2_moe (QKV biases, gated shared expert), mixtral, olmoe (QK-norm over the whole projection),
// deepseek_v3 (MLA with query compression, YaRN, interleaved rope, group-limited sigmoid routing with a nonzero
// e_score_correction_bias, a dense first layer, a shared expert), deepseek_v2 (MLA without query compression,
// group_limited_greedy), glm4_moe (half-rotary heads, QKV biases, per-head QK-norm, groups) and dots1 models saved
// with save_pretrained; logits, loss and every gradient for a fixed batch match to 1e-4 relative to each tensor's
// largest magnitude (the loss to 1e-5), and the routers' biases are imported exactly. Importing each and exporting
// it in F32 gives back every tensor of the transformers file bit for bit, under the same name and shape (the rotary
// rows reordered back to interleaved pairs, the biases in FP32 also in a BF16 export). A model imported without
// its MTP layers exports them from the source files bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <tuple>

#include "checkpoint/hf.h"
#include "checkpoint/safetensors.h"
#include "model/hf_config.h"
#include "model/transformer.h"
#include "precision/fp8.h"
#include "tests/golden/tensor_file.h"
#include "tests/util.h"

namespace frugal {
namespace {

double rel_error(const float* got, const golden::NamedTensor& want) {
    double max_ref = 0, max_err = 0;
    for (size_t i = 0; i < want.data.size(); ++i) {
        max_ref = std::max(max_ref, std::fabs(want.data[i]));
        max_err = std::max(max_err, std::fabs(double(got[i]) - want.data[i]));
    }
    return max_err / std::max(max_ref, 1e-30);
}

void check_family(const std::string& family) {
    const std::string dir = std::string(FRUGAL_SOURCE_DIR) + "/tests/golden/hf/" + family;
    const golden::TensorMap g = golden::read_tensor_file(dir + ".golden");
    model::ModelConfig cfg = model::model_from_hf_config(dir + "/config.json");
    cfg.moe.aux_loss = "none";  // the golden loss is the cross-entropy alone
    cfg.moe.z_loss_coef = 0;
    model::Transformer<float> net(cfg);
    checkpoint::load_hf_weights(dir, net.params());
    const auto& tk = g.at("tokens");
    const int64_t b = tk.shape[0], s = tk.shape[1];
    std::vector<int32_t> tokens(tk.data.begin(), tk.data.end()),
        targets(g.at("targets").data.begin(), g.at("targets").data.end());
    model::ForwardResult r = net.forward(tokens.data(), targets.data(), b, s);
    const double logits_err = rel_error(net.logits(), g.at("logits"));
    EXPECT_LE(logits_err, 1e-4) << family << " logits";
    const double loss = r.ce_sum / double(r.num_valid);
    EXPECT_NEAR(loss, g.at("loss").data[0], 1e-5 * g.at("loss").data[0]) << family << " loss";
    net.params().zero_grad();
    net.backward(float(1.0 / double(r.num_valid)), 0.0f);
    int compared = 0;
    double worst = 0;
    std::string worst_name;
    for (model::Param* p : net.params().params()) {
        auto it = g.find("grad/" + p->name);
        ASSERT_NE(it, g.end()) << family << ": no golden gradient for " << p->name;
        ASSERT_EQ(int64_t(it->second.data.size()), p->grad.numel()) << p->name;
        const double err = rel_error(p->grad.data<float>(), it->second);
        EXPECT_LE(err, 1e-4) << family << " grad " << p->name;
        if (err > worst) std::tie(worst, worst_name) = std::make_pair(err, p->name);
        ++compared;
    }
    std::printf("%s: logits %.2e, worst gradient %.2e (%s), %d gradients\n", family.c_str(), logits_err, worst,
                worst_name.c_str(), compared);
    // The routers' biases hold the file's FP32 values exactly (they choose the experts).
    checkpoint::SafetensorsFile src(dir + "/model.safetensors");
    int biases = 0;
    for (const model::Buffer* buf : net.params().buffers()) {
        const std::string layer = buf->name.substr(7, buf->name.find('.', 7) - 7);
        const std::string hf = "model.layers." + layer + ".mlp.gate.e_score_correction_bias";
        if (!src.has(hf)) continue;
        ASSERT_EQ(src.info(hf).dtype, "F32") << hf;
        EXPECT_EQ(std::memcmp(buf->value.data<float>(), src.bytes(hf), size_t(buf->value.numel()) * 4), 0) << hf;
        ++biases;
    }
    const bool biased = family == "deepseek_v3" || family == "glm4_moe" || family == "dots1";
    EXPECT_EQ(biases, biased ? int(cfg.n_layers - cfg.dense_layers) : 0) << family;
    EXPECT_EQ(compared,
              int(std::count_if(g.begin(), g.end(), [](auto& kv) { return kv.first.rfind("grad/", 0) == 0; })));
}

void check_round_trip(const std::string& family) {
    namespace fs = std::filesystem;
    const std::string dir = std::string(FRUGAL_SOURCE_DIR) + "/tests/golden/hf/" + family;
    model::ModelConfig cfg = model::model_from_hf_config(dir + "/config.json");
    model::Transformer<float> net(cfg);
    checkpoint::load_hf_weights(dir, net.params());
    EXPECT_EQ(checkpoint::hf_model_type(cfg), family);
    const fs::path out = test::temp_dir("hf_round_" + family);
    checkpoint::export_hf(out.string(), net.params(), cfg, family, "f32", "");
    checkpoint::SafetensorsFile src(dir + "/model.safetensors");
    std::map<std::string, std::vector<uint8_t>> back;
    for (const auto& e : fs::directory_iterator(out)) {
        if (e.path().extension() != ".safetensors") continue;
        checkpoint::SafetensorsFile f(e.path().string());
        for (const auto& [name, info] : f.tensors()) {
            EXPECT_EQ(info.shape, src.info(name).shape) << name;
            const uint8_t* b = f.bytes(name);
            back[name].assign(b, b + (info.end - info.begin));
        }
    }
    EXPECT_EQ(back.size(), src.tensors().size()) << family;
    for (const auto& [name, info] : src.tensors()) {
        ASSERT_TRUE(back.count(name)) << family << ": " << name << " not exported";
        const uint8_t* b = src.bytes(name);
        EXPECT_TRUE(back[name] == std::vector<uint8_t>(b, b + (info.end - info.begin))) << family << ": " << name;
    }
    // The generated config.json (no source given) reads back as the same model.
    model::ModelConfig again = model::model_from_hf_config((out / "config.json").string());
    EXPECT_EQ(checkpoint::hf_model_type(again), family);
    EXPECT_EQ(again.moe.n_shared_experts, cfg.moe.n_shared_experts);
    EXPECT_EQ(again.moe.norm_topk_prob, cfg.moe.norm_topk_prob);
    EXPECT_EQ(again.norm_eps, cfg.norm_eps);
    fs::remove_all(out);
}

TEST(HfGolden, ImportThenExportGivesBackEveryTensorBitForBit) {
    for (const char* family : {"qwen3_moe", "qwen2_moe", "mixtral", "olmoe"}) check_round_trip(family);
}

TEST(HfGolden, DeepseekGlmAndDotsImportThenExportGiveBackEveryTensorBitForBit) {
    for (const char* family : {"deepseek_v3", "deepseek_v2", "glm4_moe", "dots1"}) check_round_trip(family);
}

TEST(HfGolden, DeepseekV3MatchesTransformers) { check_family("deepseek_v3"); }
TEST(HfGolden, DeepseekV2MatchesTransformers) { check_family("deepseek_v2"); }
TEST(HfGolden, Glm4MoeMatchesTransformers) { check_family("glm4_moe"); }
TEST(HfGolden, Dots1MatchesTransformers) { check_family("dots1"); }

std::string golden_dir(const std::string& family) {
    return std::string(FRUGAL_SOURCE_DIR) + "/tests/golden/hf/" + family;
}

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

TEST(HfGolden, ImportPermutesTheInterleavedRotaryRowsToEvensThenOdds) {
    const std::string dir = golden_dir("deepseek_v3");
    model::ModelConfig cfg = model::model_from_hf_config(dir + "/config.json");
    model::Transformer<float> net(cfg);
    checkpoint::load_hf_weights(dir, net.params());
    checkpoint::SafetensorsFile src(dir + "/model.safetensors");
    const int64_t nope = cfg.qk_nope_head_dim, rope = cfg.qk_rope_head_dim, dqk = nope + rope, rkv = cfg.kv_lora_rank;
    ASSERT_EQ(rope, 4);
    std::vector<float> hf(size_t(src.info("model.layers.0.self_attn.kv_a_proj_with_mqa.weight").end -
                                 src.info("model.layers.0.self_attn.kv_a_proj_with_mqa.weight").begin) /
                          4);
    const model::Param* kva = net.params().find("layers.0.attn.wkv_a.weight");
    ASSERT_NE(kva, nullptr);
    src.read_f32("model.layers.0.self_attn.kv_a_proj_with_mqa.weight", hf.data(), kva->shape);
    const int64_t d = kva->shape[1];
    const int64_t order[] = {0, 2, 1, 3};  // Frugal row i holds file row order[i] of the rope block
    for (int64_t i = 0; i < rope; ++i)
        EXPECT_EQ(std::memcmp(kva->value.data<float>() + (rkv + i) * d, hf.data() + (rkv + order[i]) * d, d * 4), 0)
            << "wkv_a rope row " << i;
    EXPECT_EQ(std::memcmp(kva->value.data<float>(), hf.data(), size_t(rkv * d) * 4), 0) << "latent rows unchanged";
    const model::Param* qb = net.params().find("layers.0.attn.wq_b.weight");
    ASSERT_NE(qb, nullptr);
    std::vector<float> q(size_t(qb->value.numel()));
    src.read_f32("model.layers.0.self_attn.q_b_proj.weight", q.data(), qb->shape);
    const int64_t r = qb->shape[1];
    for (int64_t h = 0; h < cfg.n_heads; ++h)
        for (int64_t i = 0; i < rope; ++i)
            EXPECT_EQ(std::memcmp(qb->value.data<float>() + (h * dqk + nope + i) * r,
                                  q.data() + (h * dqk + nope + order[i]) * r, r * 4),
                      0)
                << "head " << h << " rope row " << i;
}

TEST(HfGolden, ABf16ExportKeepsTheRouterBiasInFp32) {
    const std::string dir = golden_dir("glm4_moe");
    model::ModelConfig cfg = model::model_from_hf_config(dir + "/config.json");
    model::Transformer<float> net(cfg);
    checkpoint::load_hf_weights(dir, net.params());
    const std::filesystem::path out = test::temp_dir("hf_bias_bf16");
    checkpoint::export_hf((out / "hf").string(), net.params(), cfg, "glm4_moe", "bf16", "");
    checkpoint::SafetensorsFile src(dir + "/model.safetensors");
    int seen = 0;
    for (const auto& e : std::filesystem::directory_iterator(out / "hf")) {
        if (e.path().extension() != ".safetensors") continue;
        checkpoint::SafetensorsFile f(e.path().string());
        for (const auto& [name, info] : f.tensors()) {
            const bool bias = name.find("e_score_correction_bias") != std::string::npos;
            EXPECT_EQ(info.dtype, bias ? "F32" : "BF16") << name;
            if (!bias) continue;
            ++seen;
            EXPECT_EQ(std::memcmp(f.bytes(name), src.bytes(name), info.end - info.begin), 0) << name;
        }
    }
    EXPECT_EQ(seen, 1);
    std::filesystem::remove_all(out);
}

// A copy of the deepseek_v3 golden model with one MTP layer (block 2) added in a second shard: the MoE block of
// layer 1 under the new index, enorm, hnorm, eh_proj, shared_head and copies of the embeddings and head.
std::filesystem::path with_mtp_layer(const std::filesystem::path& root) {
    namespace fs = std::filesystem;
    const std::string dir = golden_dir("deepseek_v3");
    const fs::path out = root / "ds3_mtp";
    fs::create_directories(out);
    fs::copy_file(dir + "/model.safetensors", out / "model-00001-of-00002.safetensors");
    checkpoint::SafetensorsFile src(dir + "/model.safetensors");
    std::vector<checkpoint::StTensorOut> mtp;
    auto add = [&](const std::string& name, const std::string& from) {
        const checkpoint::StTensorInfo& info = src.info(from);
        const uint8_t* b = src.bytes(from);
        std::vector<uint8_t> bytes(b, b + (info.end - info.begin));
        for (size_t i = 0; i < bytes.size(); i += 4) bytes[i] ^= 0x5a;  // other values than the source tensor
        mtp.push_back({name, info.dtype, info.shape, std::move(bytes)});
    };
    for (const auto& [name, info] : src.tensors())
        if (name.rfind("model.layers.1.", 0) == 0) add("model.layers.2." + name.substr(15), name);
    add("model.layers.2.enorm.weight", "model.norm.weight");
    add("model.layers.2.hnorm.weight", "model.norm.weight");
    add("model.layers.2.shared_head.norm.weight", "model.norm.weight");
    add("model.layers.2.embed_tokens.weight", "model.embed_tokens.weight");
    add("model.layers.2.shared_head.head.weight", "lm_head.weight");
    {
        const int64_t d = src.info("model.norm.weight").shape[0];
        std::vector<float> eh(size_t(2 * d * d));
        for (size_t i = 0; i < eh.size(); ++i) eh[i] = 0.01f * float(int(i % 17) - 8);
        std::vector<uint8_t> bytes(eh.size() * 4);
        std::memcpy(bytes.data(), eh.data(), bytes.size());
        mtp.push_back({"model.layers.2.eh_proj.weight", "F32", {d, 2 * d}, std::move(bytes)});
    }
    checkpoint::write_safetensors((out / "model-00002-of-00002.safetensors").string(), mtp, {{"format", "pt"}});
    std::ostringstream index;
    index << "{\"metadata\": {}, \"weight_map\": {";
    bool first = true;
    for (const auto& [name, info] : src.tensors()) {
        index << (first ? "" : ", ") << "\"" << name << "\": \"model-00001-of-00002.safetensors\"";
        first = false;
    }
    for (const auto& t : mtp) index << ", \"" << t.name << "\": \"model-00002-of-00002.safetensors\"";
    index << "}}";
    std::ofstream(out / "model.safetensors.index.json") << index.str();
    std::ofstream(out / "config.json") << std::regex_replace(read_text(dir + "/config.json"),
                                                             std::regex("\"num_nextn_predict_layers\": 0"),
                                                             "\"num_nextn_predict_layers\": 1");
    return out;
}

TEST(HfGolden, MtpLayersSkippedAtImportArePassedThroughToTheExportBitForBit) {
    namespace fs = std::filesystem;
    const fs::path root = test::temp_dir("hf_mtp");
    const fs::path src_dir = with_mtp_layer(root);
    model::ModelConfig cfg = model::model_from_hf_config((src_dir / "config.json").string());
    ASSERT_EQ(cfg.mtp_modules, 1);
    cfg.mtp_modules = 0;  // the user's choice: train without the MTP module
    model::Transformer<float> net(cfg);
    checkpoint::load_hf_weights(src_dir.string(), net.params());
    for (const model::Param* p : net.params().params()) EXPECT_NE(p->name.rfind("mtp.", 0), 0u) << p->name;
    checkpoint::export_hf((root / "out").string(), net.params(), cfg, "deepseek_v3", "bf16",
                          (src_dir / "config.json").string());
    std::map<std::string, std::pair<std::string, std::vector<uint8_t>>> out;
    for (const auto& e : fs::directory_iterator(root / "out")) {
        if (e.path().extension() != ".safetensors") continue;
        checkpoint::SafetensorsFile f(e.path().string());
        for (const auto& [name, info] : f.tensors())
            out[name] = {info.dtype, std::vector<uint8_t>(f.bytes(name), f.bytes(name) + (info.end - info.begin))};
    }
    checkpoint::SafetensorsFile mtp((src_dir / "model-00002-of-00002.safetensors").string());
    ASSERT_GT(mtp.tensors().size(), 20u);
    for (const auto& [name, info] : mtp.tensors()) {
        ASSERT_TRUE(out.count(name)) << name << " not passed through";
        EXPECT_EQ(out[name].first, info.dtype) << name;  // F32 as in the source, though the export is BF16
        EXPECT_TRUE(out[name].second ==
                    std::vector<uint8_t>(mtp.bytes(name), mtp.bytes(name) + (info.end - info.begin)))
            << name;
    }
    // The export reads back: its config.json (the source's) accounts for every tensor.
    model::Transformer<float> again(cfg);
    checkpoint::load_hf_weights((root / "out").string(), again.params());
    fs::remove_all(root);
}

TEST(HfGolden, AnMtpModuleImportsFromTheLayerAfterTheLastAndExportsBitForBit) {
    namespace fs = std::filesystem;
    const fs::path root = test::temp_dir("hf_mtp_in");
    const fs::path src_dir = with_mtp_layer(root);
    model::ModelConfig cfg = model::model_from_hf_config((src_dir / "config.json").string());
    model::Transformer<float> net(cfg);
    checkpoint::load_hf_weights(src_dir.string(), net.params());
    const model::Param* eh = net.params().find("mtp.0.eh_proj.weight");
    ASSERT_NE(eh, nullptr) << "the model builds no MTP module";
    checkpoint::SafetensorsFile mtp((src_dir / "model-00002-of-00002.safetensors").string());
    EXPECT_EQ(std::memcmp(eh->value.data<float>(), mtp.bytes("model.layers.2.eh_proj.weight"), eh->value.numel() * 4),
              0);
    ASSERT_NE(net.params().find_buffer("mtp.0.moe.router.bias"), nullptr);
    checkpoint::export_hf((root / "out").string(), net.params(), cfg, "deepseek_v3", "f32", "");
    std::map<std::string, std::vector<uint8_t>> out;
    for (const auto& e : fs::directory_iterator(root / "out")) {
        if (e.path().extension() != ".safetensors") continue;
        checkpoint::SafetensorsFile f(e.path().string());
        for (const auto& [name, info] : f.tensors())
            out[name].assign(f.bytes(name), f.bytes(name) + (info.end - info.begin));
    }
    for (const auto& [name, info] : mtp.tensors()) {
        if (name.find("embed_tokens") != std::string::npos || name.find("shared_head.head") != std::string::npos)
            continue;  // the export writes the main model's embeddings and head there (shared in transformers)
        ASSERT_TRUE(out.count(name)) << name;
        EXPECT_TRUE(out[name] == std::vector<uint8_t>(mtp.bytes(name), mtp.bytes(name) + (info.end - info.begin)))
            << name;
    }
    checkpoint::SafetensorsFile main_file((src_dir / "model-00001-of-00002.safetensors").string());
    const auto& embed = main_file.info("model.embed_tokens.weight");
    EXPECT_TRUE(out["model.layers.2.embed_tokens.weight"] ==
                std::vector<uint8_t>(main_file.bytes("model.embed_tokens.weight"),
                                     main_file.bytes("model.embed_tokens.weight") + (embed.end - embed.begin)));
    fs::remove_all(root);
}

// Every tensor of an export directory, by name: dtype, shape and bytes.
std::map<std::string, std::tuple<std::string, Shape, std::vector<uint8_t>>> export_tensors(
    const std::filesystem::path& dir) {
    std::map<std::string, std::tuple<std::string, Shape, std::vector<uint8_t>>> out;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
        if (e.path().extension() != ".safetensors") continue;
        checkpoint::SafetensorsFile f(e.path().string());
        for (const auto& [name, info] : f.tensors()) {
            const uint8_t* b = f.bytes(name);
            out[name] = {info.dtype, info.shape, std::vector<uint8_t>(b, b + (info.end - info.begin))};
        }
    }
    return out;
}

// --dtype fp8-block writes DeepSeek's released layout: linear weights as F8_E4M3 codes with an F32
// weight_scale_inv of [ceil(O/128), ceil(I/128)] (ragged here: every dimension of the tiny model is below 128),
// the rest BF16 (the router bias F32), and quantization_config in config.json. Importing that export gives each
// weight decode(code) * scale exactly, and exporting it again reproduces every code, scale and BF16 value bit for bit.
TEST(HfGolden, AnFp8BlockExportImportsToItsDequantizedValuesAndRoundTripsBitForBit) {
    namespace fs = std::filesystem;
    const std::string dir = golden_dir("deepseek_v3");
    model::ModelConfig cfg = model::model_from_hf_config(dir + "/config.json");
    model::Transformer<float> net(cfg);
    checkpoint::load_hf_weights(dir, net.params());
    const fs::path root = test::temp_dir("hf_fp8_block");
    checkpoint::export_hf((root / "a").string(), net.params(), cfg, "deepseek_v3", "fp8-block", "");
    EXPECT_NE(read_text((root / "a" / "config.json").string()).find("\"quantization_config\""), std::string::npos);
    const auto a = export_tensors(root / "a");
    const std::string o = "model.layers.1.self_attn.o_proj.weight";  // no rotary rows: file order = Frugal order
    ASSERT_TRUE(a.count(o) && a.count(o + "_scale_inv"));
    EXPECT_EQ(std::get<0>(a.at(o)), "F8_E4M3");
    EXPECT_EQ(std::get<0>(a.at(o + "_scale_inv")), "F32");
    const Shape w_shape = std::get<1>(a.at(o));
    EXPECT_EQ(std::get<1>(a.at(o + "_scale_inv")), (Shape{(w_shape[0] + 127) / 128, (w_shape[1] + 127) / 128}));
    EXPECT_EQ(std::get<0>(a.at("model.layers.1.input_layernorm.weight")), "BF16");
    EXPECT_EQ(std::get<0>(a.at("model.layers.1.mlp.gate.e_score_correction_bias")), "F32");
    EXPECT_EQ(std::get<0>(a.at("model.layers.1.mlp.experts.2.down_proj.weight")), "F8_E4M3");
    // Import: the dequantized values exactly.
    model::ModelConfig cfg_b = model::model_from_hf_config((root / "a" / "config.json").string());
    model::Transformer<float> back(cfg_b);
    checkpoint::load_hf_weights((root / "a").string(), back.params());
    const model::Param* wo = back.params().find("layers.1.attn.wo.weight");
    ASSERT_NE(wo, nullptr);
    const auto& codes = std::get<2>(a.at(o));
    const auto& scale_bytes = std::get<2>(a.at(o + "_scale_inv"));
    std::vector<float> scales(scale_bytes.size() / 4);
    std::memcpy(scales.data(), scale_bytes.data(), scale_bytes.size());
    const int64_t cols = w_shape[1], scale_cols = (cols + 127) / 128;
    for (int64_t r = 0; r < w_shape[0]; ++r)
        for (int64_t c = 0; c < cols; ++c) {
            const float want = precision::decode_e4m3(codes[size_t(r * cols + c)]) *
                               scales[size_t((r / 128) * scale_cols + c / 128)];
            ASSERT_EQ(wo->value.data<float>()[r * cols + c], want) << "o_proj [" << r << ", " << c << "]";
        }
    // The quantization error is that of E4M3: every weight within 1/16 of its block's amax... here one block.
    const float* orig = net.params().find("layers.1.attn.wo.weight")->value.data<float>();
    float amax = 0, worst = 0;
    for (int64_t i = 0; i < wo->value.numel(); ++i) {
        amax = std::max(amax, std::fabs(orig[i]));
        worst = std::max(worst, std::fabs(orig[i] - wo->value.data<float>()[i]));
    }
    EXPECT_GT(worst, 0.0f);
    EXPECT_LE(worst, amax / 16);
    // Export again: every tensor bit for bit.
    checkpoint::export_hf((root / "b").string(), back.params(), cfg_b, "deepseek_v3", "fp8-block", "");
    const auto b = export_tensors(root / "b");
    ASSERT_EQ(a.size(), b.size());
    for (const auto& [name, t] : a) {
        ASSERT_TRUE(b.count(name)) << name;
        EXPECT_TRUE(t == b.at(name)) << name;
    }
    fs::remove_all(root);
}

TEST(HfGolden, Qwen3MoeMatchesTransformers) { check_family("qwen3_moe"); }
TEST(HfGolden, MixtralMatchesTransformers) { check_family("mixtral"); }
TEST(HfGolden, Qwen2MoeMatchesTransformers) { check_family("qwen2_moe"); }
TEST(HfGolden, OlmoeMatchesTransformers) { check_family("olmoe"); }

}  // namespace
}  // namespace frugal
