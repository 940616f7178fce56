// Reading the weights of a Hugging Face model directory by tensor name, in the layouts released checkpoints use,
// and writing DeepSeek's FP8 block-quantized layout.
//
// Layouts read (each into an FP32 buffer of the shape the model needs):
//   plain          NAME as F32, BF16 or F16.
//   FP8 blocks     NAME as F8_E4M3 (or F8_E5M2) codes [.., O, I] with a companion F32 tensor scale_name(NAME)
//                  [.., ceil(O/b0), ceil(I/b1)], b = quantization_config.weight_block_size of config.json
//                  ([128, 128] for DeepSeek-V3, quant_method "fp8", fmt "e4m3"). Element (o, i) is
//                  decode(code[o][i]) * scale_inv[o / b0][i / b1] (the stored "inverse" scale is the multiplier);
//                  the last block row and column may be ragged. Only the blocks of the rows asked for are read.
//   fused experts  P.experts.E.{gate,up,down}_proj.weight absent, but P.experts.gate_up_proj [n_experts, 2F, D]
//                  (rows [0, F) gate, [F, 2F) up) and P.experts.down_proj [n_experts, D, F] present, as transformers 5
//                  holds them: the expert's rows are sliced out of the fused tensor, plain or FP8 with a scale
//                  [n_experts, ceil(2F/b0), ceil(D/b1)] named P.experts.gate_up_proj_scale_inv.
// A single model.safetensors or shards listed by model.safetensors.index.json; files are opened (mapped) when a
// tensor in them is first read, so a rank that reads only its experts touches only their pages.
//
// Writing (--dtype fp8-block, DeepSeek's recipe): per 128 x 128 block, scale = amax(|w|) / 448 and
// code = encode_e4m3(w / scale); an all-zero block gets scale 1 (as transformers' FP8 quantizer writes). Reading the
// written codes and scales gives decode(code) * scale exactly, and quantizing that again gives the same codes and
// scales, for every block whose amax is at least 2^-130 (checked over every float amax and every code): below about
// 3e-40, amax / 448 is a float subnormal with too few bits for decode(code) * scale / scale to round back to code.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"
#include "core/tensor.h"

namespace frugal::checkpoint {

// config.json's quantization_config, as far as reading weights needs it.
struct QuantizationConfig {
    bool present = false;  // false: no quantization_config; an FP8 tensor is then refused
    int64_t block_rows = 128, block_cols = 128;
    std::string fmt = "e4m3";
};
// Parses quantization_config of config_path (absent file or key: present = false). Refuses, naming the key and value,
// any quant_method but "fp8", an fmt but e4m3/e5m2, and a weight_block_size that is not two positive integers.
QuantizationConfig read_quantization_config(const std::string& config_path);

// The companion scale of a block-quantized weight: "x.weight" -> "x.weight_scale_inv", "x.experts.gate_up_proj" ->
// "x.experts.gate_up_proj_scale_inv".
std::string scale_name(const std::string& weight_name);

// Whether DeepSeek's FP8 checkpoints hold this tensor block-quantized: the weights of linear projections (attention
// q/k/v/o and the MLA q_a/q_b/kv_a/kv_b projections, dense, shared-expert and routed-expert gate/up/down). Norms,
// embeddings, the router gate and its correction bias, the shared-expert gate, lm_head and biases stay BF16.
bool is_fp8_block_quantized(const std::string& hf_name);

// The quantization_config an fp8-block export writes into config.json (a JSON object, no trailing newline).
std::string fp8_block_quantization_config_json();

// An FP32 weight [O, I] quantized to E4M3 codes [O, I] (dtype F8_E4M3) and its F32 weight_scale_inv
// [ceil(O/block), ceil(I/block)], named hf_name and scale_name(hf_name), ready for write_safetensors. Throws naming
// hf_name and the block when a block holds a NaN or an infinity.
struct Fp8BlockTensors {
    StTensorOut codes, scale_inv;
};
Fp8BlockTensors quantize_fp8_block(const std::string& hf_name, const float* w_OI, int64_t O, int64_t I,
                                   int64_t block = 128);

// The inverse: out_OI[o][i] = decode(codes_OI[o][i]) * scale_inv[o / block_rows][i / block_cols] for rows
// [0, O) of one [O, I] matrix; scale_inv holds ceil(O/block_rows) x ceil(I/block_cols) floats.
void dequantize_fp8_block(float* out_OI, const uint8_t* codes_OI, const float* scale_inv, int64_t O, int64_t I,
                          int64_t block_rows, int64_t block_cols, bool e5m2 = false);

// Reads tensors of one Hugging Face directory by name, in any layout above. Not thread-safe (opens files lazily).
class HfTensorReader {
  public:
    explicit HfTensorReader(const std::string& dir);

    // Fills out (numel(shape) floats) with the tensor the model calls name; its shape must be exactly shape. Throws
    // ConfigError naming the directory, the file and the tensor when it is missing, mis-shaped or of another dtype.
    void read(const std::string& name, float* out, const Shape& shape);

    // Every name read() serves: the stored tensors, less the scale companions of stored weights, with each fused
    // expert tensor replaced by the per-expert names it provides (sorted).
    std::vector<std::string> served_names();

    const QuantizationConfig& quantization() const { return quant_; }

  private:
    // The file (opened, mapped) of this directory named file.
    const SafetensorsFile& open(const std::string& file);
    // The file holding stored tensor name, opened now; nullptr when name is not stored.
    const SafetensorsFile* file_of(const std::string& name);
    bool stored(const std::string& name);
    const std::string& file_name_of(const std::string& name) const;
    // Rows [row0, row0 + rows) of matrix expert_idx of stored tensor name ([R, C], or [n, R, C] with expert_idx >= 0)
    // into out (rows x cols floats).
    void read_rows(const std::string& name, int64_t expert_idx, int64_t row0, int64_t rows, int64_t cols, float* out);
    void read_fp8_rows(const std::string& name, const SafetensorsFile& f, int64_t expert_idx, int64_t row0,
                       int64_t rows, float* out);
    [[noreturn]] void missing(const std::string& name) const;

    std::string dir_;
    bool single_ = false;
    QuantizationConfig quant_;
    std::map<std::string, std::string> where_;  // tensor -> shard file (index only)
    std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;
};

}  // namespace frugal::checkpoint
