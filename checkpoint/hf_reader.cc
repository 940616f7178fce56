#include "checkpoint/hf_reader.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <regex>
#include <set>

#include "core/error.h"
#include "core/input_file.h"
#include "precision/fp8.h"

namespace frugal::checkpoint {

namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_fp8_dtype(const std::string& dtype) { return dtype == "F8_E4M3" || dtype == "F8_E5M2"; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Rows [0, rows) of a block-quantized matrix with C columns: codes_RC and out_RC start at the same row r0 of the
// matrix, scale at the scale row of r0's block; r0_in_block = r0 % b0 places the first row inside its block.
void dequantize_rows(float* out_RC, const uint8_t* codes_RC, const float* scale, int64_t r0_in_block, int64_t rows,
                     int64_t C, int64_t b0, int64_t b1, int64_t scale_cols, const std::array<float, 256>& table) {
#pragma omp parallel for schedule(static) if (rows * C > (1 << 16))
    for (int64_t i = 0; i < rows; ++i) {
        const float* s_row = scale + ((r0_in_block + i) / b0) * scale_cols;
        const uint8_t* c_row = codes_RC + i * C;
        float* o_row = out_RC + i * C;
        for (int64_t c = 0; c < C; ++c) o_row[c] = table[c_row[c]] * s_row[c / b1];
    }
}

// "P.experts.E.{gate,up,down}_proj.weight": P.experts, E and the projection.
const std::regex& expert_name_re() {
    static const std::regex re(R"(^(.*\.experts)\.([0-9]+)\.(gate_proj|up_proj|down_proj)\.weight$)");
    return re;
}

}  // namespace

QuantizationConfig read_quantization_config(const std::string& path) {
    QuantizationConfig q;
    if (!fs::exists(path)) return q;
    const std::string text = input::read_file(path, "config.json", "give the model directory as downloaded");
    YAML::Node n;
    try {
        n = YAML::Load(text);
    } catch (const YAML::Exception& e) {
        FRUGAL_CONFIG_ERROR(input::at(path, e.mark), ": not valid JSON: ", e.msg);
    }
    if (!n.IsMap() || !n["quantization_config"] || n["quantization_config"].IsNull()) return q;
    const YAML::Node qc = n["quantization_config"];
    FRUGAL_CONFIG_CHECK(qc.IsMap(), input::at(path, qc.Mark()), ": quantization_config must be an object");
    const std::string method =
        qc["quant_method"] ? input::as_string(qc["quant_method"], path, "quantization_config.quant_method") : "";
    FRUGAL_CONFIG_CHECK(method == "fp8", path, ": quantization_config.quant_method is '", method,
                        "': only \"fp8\" (FP8 weights in blocks with a weight_scale_inv, DeepSeek-V3's layout) can be "
                        "imported; dequantize the checkpoint to BF16 first");
    if (qc["fmt"]) q.fmt = input::as_string(qc["fmt"], path, "quantization_config.fmt");
    FRUGAL_CONFIG_CHECK(q.fmt == "e4m3" || q.fmt == "e5m2", input::at(path, qc["fmt"].Mark()),
                        ": quantization_config.fmt is '", q.fmt, "': expected e4m3 or e5m2");
    if (qc["weight_block_size"]) {
        const YAML::Node b = qc["weight_block_size"];
        FRUGAL_CONFIG_CHECK(b.IsSequence() && b.size() == 2, input::at(path, b.Mark()),
                            ": quantization_config.weight_block_size must be [rows, cols] (DeepSeek-V3: [128, 128]); "
                            "per-tensor FP8 scales (null) cannot be imported");
        q.block_rows = input::as_int(b[0], path, "quantization_config.weight_block_size[0]", 1, int64_t(1) << 20);
        q.block_cols = input::as_int(b[1], path, "quantization_config.weight_block_size[1]", 1, int64_t(1) << 20);
    }
    q.present = true;
    return q;
}

std::string scale_name(const std::string& weight_name) { return weight_name + "_scale_inv"; }

bool is_fp8_block_quantized(const std::string& hf_name) {
    static const std::set<std::string> kProjections = {
        "q_proj",    "k_proj",    "v_proj",  "o_proj",   "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa",
        "kv_b_proj", "gate_proj", "up_proj", "down_proj"};
    if (hf_name.rfind("model.layers.", 0) != 0 || !ends_with(hf_name, ".weight")) return false;
    const std::string stem = hf_name.substr(0, hf_name.size() - 7);
    const size_t dot = stem.rfind('.');
    return kProjections.count(dot == std::string::npos ? stem : stem.substr(dot + 1)) > 0;
}

std::string fp8_block_quantization_config_json() {
    return R"({"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]})";
}

Fp8BlockTensors quantize_fp8_block(const std::string& hf_name, const float* w_OI, int64_t O, int64_t I, int64_t block) {
    FRUGAL_CHECK(O > 0 && I > 0 && block > 0, "quantize_fp8_block(", hf_name, "): shape [", O, ", ", I, "] and block ",
                 block, " must be positive");
    const int64_t SO = ceil_div(O, block), SI = ceil_div(I, block);
    Fp8BlockTensors t;
    t.codes = {hf_name, "F8_E4M3", {O, I}, std::vector<uint8_t>(size_t(O * I)), nullptr};
    t.scale_inv = {scale_name(hf_name), "F32", {SO, SI}, std::vector<uint8_t>(size_t(SO * SI * 4)), nullptr};
    auto* scale = reinterpret_cast<float*>(t.scale_inv.bytes.data());
    uint8_t* codes = t.codes.bytes.data();
    int64_t bad_block = -1;
#pragma omp parallel for schedule(dynamic) if (O * I > (1 << 16))
    for (int64_t bo = 0; bo < SO; ++bo) {
        const int64_t o0 = bo * block, o1 = std::min(O, o0 + block);
        for (int64_t bi = 0; bi < SI; ++bi) {
            const int64_t i0 = bi * block, i1 = std::min(I, i0 + block);
            float amax = 0;
            bool finite = true;  // checked apart: std::max drops a NaN
            for (int64_t o = o0; o < o1; ++o)
                for (int64_t i = i0; i < i1; ++i) {
                    finite = finite && std::isfinite(w_OI[o * I + i]);
                    amax = std::max(amax, std::fabs(w_OI[o * I + i]));
                }
            if (!finite) {
#pragma omp critical
                bad_block = bad_block < 0 ? bo * SI + bi : std::min(bad_block, bo * SI + bi);
                continue;
            }
            // DeepSeek-V3's recipe: the block's largest magnitude maps to E4M3's largest finite value, 448.
            const float s = amax > 0 ? amax / precision::kE4M3Max : 1.0f;
            scale[bo * SI + bi] = s;
            for (int64_t o = o0; o < o1; ++o)
                for (int64_t i = i0; i < i1; ++i) codes[o * I + i] = precision::encode_e4m3(w_OI[o * I + i] / s);
        }
    }
    FRUGAL_CHECK(bad_block < 0, "cannot quantize ", hf_name, " to FP8: block [", bad_block / SI, ", ", bad_block % SI,
                 "] (rows from ", (bad_block / SI) * block, ", columns from ", (bad_block % SI) * block,
                 ") holds a NaN or an infinity");
    return t;
}

void dequantize_fp8_block(float* out_OI, const uint8_t* codes_OI, const float* scale_inv, int64_t O, int64_t I,
                          int64_t block_rows, int64_t block_cols, bool e5m2) {
    dequantize_rows(out_OI, codes_OI, scale_inv, 0, O, I, block_rows, block_cols, ceil_div(I, block_cols),
                    e5m2 ? precision::e5m2_table() : precision::e4m3_table());
}

HfTensorReader::HfTensorReader(const std::string& dir) : dir_(dir) {
    const fs::path index = fs::path(dir) / "model.safetensors.index.json";
    if (fs::exists(index)) {
        for (auto& [name, file] : hf_index_entries(index.string(), dir)) where_[name] = file;
    } else {
        FRUGAL_CONFIG_CHECK(fs::exists(fs::path(dir) / "model.safetensors"), dir,
                            " has neither model.safetensors nor model.safetensors.index.json");
        single_ = true;
    }
    quant_ = read_quantization_config((fs::path(dir) / "config.json").string());
}

const std::string& HfTensorReader::file_name_of(const std::string& name) const {
    static const std::string kSingle = "model.safetensors";
    if (single_) return kSingle;
    return where_.at(name);
}

const SafetensorsFile& HfTensorReader::open(const std::string& file) {
    auto& f = files_[file];
    if (!f) {
        const fs::path path = fs::path(dir_) / file;
        FRUGAL_CONFIG_CHECK(single_ || fs::exists(path), "shard ", path.string(), " named by the index is missing");
        f = std::make_unique<SafetensorsFile>(path.string());
    }
    return *f;
}

const SafetensorsFile* HfTensorReader::file_of(const std::string& name) {
    if (!single_ && !where_.count(name)) return nullptr;
    const std::string& file = file_name_of(name);
    const SafetensorsFile& f = open(file);
    if (single_) return f.has(name) ? &f : nullptr;
    FRUGAL_CONFIG_CHECK(f.has(name), dir_, "/", file, ": tensor '", name,
                        "' is missing (model.safetensors.index.json places it there)");
    return &f;
}

bool HfTensorReader::stored(const std::string& name) { return file_of(name) != nullptr; }

void HfTensorReader::missing(const std::string& name) const {
    std::smatch m;
    std::string fused;
    if (std::regex_match(name, m, expert_name_re()))
        fused = std::string(" (nor is the fused ") + m[1].str() +
                (m[3] == "down_proj" ? ".down_proj" : ".gate_up_proj") + ")";
    if (single_) FRUGAL_CONFIG_ERROR(dir_, "/model.safetensors: tensor '", name, "' is missing", fused);
    FRUGAL_CONFIG_ERROR(dir_, ": tensor '", name, "' is not in model.safetensors.index.json", fused,
                        " (missing from the checkpoint)");
}

void HfTensorReader::read(const std::string& name, float* out, const Shape& shape) {
    if (const SafetensorsFile* f = file_of(name)) {
        const StTensorInfo& t = f->info(name);
        FRUGAL_CONFIG_CHECK(t.shape == shape, f->path(), ": tensor '", name, "' has shape ", shape_str(t.shape),
                            ", the model (config.json) needs ", shape_str(shape));
        if (!is_fp8_dtype(t.dtype)) return f->read_f32(name, out, shape);
        FRUGAL_CONFIG_CHECK(shape.size() == 2 || shape.size() == 3, f->path(), ": tensor '", name, "' is ", t.dtype,
                            " of shape ", shape_str(shape),
                            ": block-quantized weights are matrices [O, I] or [E, O, I]");
        const int64_t n = shape.size() == 3 ? shape[0] : 1, R = shape[shape.size() - 2], C = shape.back();
        for (int64_t e = 0; e < n; ++e) read_fp8_rows(name, *f, shape.size() == 3 ? e : -1, 0, R, out + e * R * C);
        return;
    }
    std::smatch m;
    if (!std::regex_match(name, m, expert_name_re())) missing(name);
    const bool down = m[3] == "down_proj";
    const std::string fused = m[1].str() + (down ? ".down_proj" : ".gate_up_proj");
    if (!stored(fused)) missing(name);
    const SafetensorsFile& f = *file_of(fused);
    const Shape& fused_shape = f.info(fused).shape;
    const int64_t expert_idx = std::stoll(m[2].str());
    FRUGAL_CONFIG_CHECK(shape.size() == 2, "tensor '", name, "' read from fused ", fused, " must be a matrix, not ",
                        shape_str(shape));
    const Shape want = {fused_shape.empty() ? 0 : fused_shape[0], down ? shape[0] : 2 * shape[0], shape[1]};
    FRUGAL_CONFIG_CHECK(fused_shape == want, f.path(), ": fused expert tensor '", fused, "' has shape ",
                        shape_str(fused_shape), "; for '", name, "' ", shape_str(shape), " it must be [n_experts, ",
                        down ? "D, F" : "2F, D", "] = ", shape_str(want));
    FRUGAL_CONFIG_CHECK(expert_idx < fused_shape[0], f.path(), ": fused expert tensor '", fused, "' ",
                        shape_str(fused_shape), " holds ", fused_shape[0], " experts; the model needs expert ",
                        expert_idx,
                        " (check n_routed_experts / num_experts "
                        "in config.json)");
    const int64_t row0 = m[3] == "up_proj" ? shape[0] : 0;
    read_rows(fused, expert_idx, row0, shape[0], shape[1], out);
}

void HfTensorReader::read_rows(const std::string& name, int64_t expert_idx, int64_t row0, int64_t rows, int64_t cols,
                               float* out) {
    const SafetensorsFile& f = *file_of(name);
    const StTensorInfo& t = f.info(name);
    if (is_fp8_dtype(t.dtype)) return read_fp8_rows(name, f, expert_idx, row0, rows, out);
    const int64_t R = t.shape[t.shape.size() - 2];
    f.read_f32_range(name, (std::max<int64_t>(expert_idx, 0) * R + row0) * cols, rows * cols, out);
}

void HfTensorReader::read_fp8_rows(const std::string& name, const SafetensorsFile& f, int64_t expert_idx, int64_t row0,
                                   int64_t rows, float* out) {
    const StTensorInfo& t = f.info(name);
    FRUGAL_CONFIG_CHECK(quant_.present, f.path(), ": tensor '", name, "' is ", t.dtype, " (block-quantized), but ",
                        dir_, "/config.json has no quantization_config: its weight_block_size is needed to read it");
    const int64_t R = t.shape[t.shape.size() - 2], C = t.shape.back();
    const int64_t b0 = quant_.block_rows, b1 = quant_.block_cols;
    Shape want(t.shape.begin(), t.shape.end() - 2);
    want.push_back(ceil_div(R, b0));
    want.push_back(ceil_div(C, b1));
    const std::string sname = scale_name(name);
    const SafetensorsFile* sf = file_of(sname);
    FRUGAL_CONFIG_CHECK(sf, f.path(), ": tensor '", name, "' is ", t.dtype, " but its scale '", sname, "' (F32 ",
                        shape_str(want), ") is missing from ", dir_, ": the checkpoint is incomplete");
    const Shape& got = sf->info(sname).shape;
    FRUGAL_CONFIG_CHECK(got == want, sf->path(), ": scale '", sname, "' has shape ", shape_str(got), ", expected ",
                        shape_str(want), " (", shape_str(t.shape),
                        " in blocks of quantization_config.weight_block_size [", b0, ", ", b1, "])");
    const int64_t SR = want[want.size() - 2], SC = want.back(), e = std::max<int64_t>(expert_idx, 0);
    // Only the scale rows of the blocks these rows fall in.
    const int64_t br0 = row0 / b0, br1 = (row0 + rows - 1) / b0;
    std::vector<float> scale(size_t((br1 - br0 + 1) * SC));
    sf->read_f32_range(sname, (e * SR + br0) * SC, int64_t(scale.size()), scale.data());
    const uint8_t* codes = f.bytes(name) + (e * R + row0) * C;
    dequantize_rows(out, codes, scale.data(), row0 % b0, rows, C, b0, b1, SC,
                    t.dtype == "F8_E5M2" ? precision::e5m2_table() : precision::e4m3_table());
}

std::vector<std::string> HfTensorReader::served_names() {
    std::vector<std::string> all;
    if (single_) {
        for (const auto& [name, t] : open("model.safetensors").tensors()) all.push_back(name);
    } else {
        for (const auto& [name, file] : where_) all.push_back(name);
    }
    const std::set<std::string> have(all.begin(), all.end());
    std::vector<std::string> served;
    for (const std::string& n : all) {
        if (ends_with(n, "_scale_inv") && have.count(n.substr(0, n.size() - 10))) continue;
        if (ends_with(n, ".activation_scale") && have.count(n.substr(0, n.size() - 17) + ".weight")) continue;
        const bool gate_up = ends_with(n, ".experts.gate_up_proj"), down = ends_with(n, ".experts.down_proj");
        const Shape shape = gate_up || down ? file_of(n)->info(n).shape : Shape{};
        if (shape.size() != 3) {
            served.push_back(n);
            continue;
        }
        const std::string p = n.substr(0, n.rfind('.') + 1);
        for (int64_t e = 0; e < shape[0]; ++e) {
            const std::string x = p + std::to_string(e) + ".";
            if (down) served.push_back(x + "down_proj.weight");
            if (gate_up) {
                served.push_back(x + "gate_proj.weight");
                served.push_back(x + "up_proj.weight");
            }
        }
    }
    std::sort(served.begin(), served.end());
    return served;
}

}  // namespace frugal::checkpoint
