// The safetensors format (Hugging Face): an 8-byte little-endian header length N, N bytes of JSON
// {"NAME": {"dtype": "F32"|"BF16"|"F16"|..., "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the raw little-endian tensor bytes, offsets relative to the end of the header. Files are memory-mapped:
// reading a tensor touches only its pages.
//
// The header is checked before anything is trusted: a JSON object with each name once; each entry exactly dtype,
// shape and data_offsets; non-negative integer dims whose product (times the dtype size, overflow-checked) is
// end - begin; offsets inside the file's data; and no two tensors' bytes overlapping.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace frugal::checkpoint {

struct StTensorInfo {
    std::string dtype;  // "F32", "BF16", "F16", ...
    Shape shape;
    uint64_t begin = 0, end = 0;  // byte offsets after the header
};

// A parsed and checked safetensors header.
struct StHeader {
    std::map<std::string, StTensorInfo> tensors;
    std::map<std::string, std::string> metadata;
    uint64_t data_offset = 0;  // 8 + header length: where the tensor bytes start
};
// Parses the header of a safetensors file held in data[0, size); path is only quoted in messages. Throws
// ConfigError naming path, the tensor and the field.
StHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& path);

class SafetensorsFile {
  public:
    explicit SafetensorsFile(const std::string& path);
    ~SafetensorsFile();
    SafetensorsFile(const SafetensorsFile&) = delete;
    SafetensorsFile& operator=(const SafetensorsFile&) = delete;

    const std::map<std::string, StTensorInfo>& tensors() const { return tensors_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    bool has(const std::string& name) const { return tensors_.count(name) > 0; }
    const StTensorInfo& info(const std::string& name) const;
    const uint8_t* bytes(const std::string& name) const;
    // Converts to FP32 (F32, BF16 and F16 are exact); the tensor must have exactly the given shape. F8_E4M3 and
    // F8_E5M2 tensors are block-quantized weights: their raw codes are bytes(name), read with their scales through
    // HfTensorReader (checkpoint/hf_reader.h).
    void read_f32(const std::string& name, float* out, const Shape& shape) const;
    // Converts elements [first, first + count) of the tensor (row-major) to FP32: a slice of a fused tensor.
    void read_f32_range(const std::string& name, int64_t first, int64_t count, float* out) const;
    const std::string& path() const { return path_; }

  private:
    std::string path_;
    void* map_ = nullptr;
    size_t size_ = 0;
    const uint8_t* data_ = nullptr;
    std::map<std::string, StTensorInfo> tensors_;
    std::map<std::string, std::string> metadata_;
};

// One tensor to write: its bytes as they are, or (f32 set, bytes empty) FP32 values the writer converts to dtype
// ("F32", "BF16" or "F16", rounding to nearest even) in small chunks as it writes, so no copy of the tensor is held.
struct StTensorOut {
    std::string name, dtype;
    Shape shape;
    std::vector<uint8_t> bytes;
    const float* f32 = nullptr;
    int64_t num_bytes() const;
};
// Writes one safetensors file atomically (tmp + fsync + rename), tensors in the given order.
void write_safetensors(const std::string& path, const std::vector<StTensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata);

size_t st_dtype_size(const std::string& dtype);

// The (tensor, file) entries of a Hugging Face index (model.safetensors.index.json of dir), in the index's order.
// Checks that each tensor is named once and each file is a plain file name inside dir.
std::vector<std::pair<std::string, std::string>> hf_index_entries(const std::string& index_path,
                                                                  const std::string& dir);
// The tensor names a Hugging Face model directory holds: the keys of model.safetensors.index.json's weight_map, or
// the tensors of model.safetensors. Checks that the index names only plain file names inside dir.
std::vector<std::string> hf_dir_tensor_names(const std::string& dir);
// Throws ConfigError naming the tensors of dir that `expected` (the names its config.json accounts for, e.g.
// model::hf_tensor_names) does not hold: weights an import would silently drop. The names checked are those
// HfTensorReader serves: an FP8 weight's scale belongs to the weight, a fused expert tensor stands for the
// per-expert names it provides.
void check_hf_tensors_expected(const std::string& dir, const std::set<std::string>& expected);

}  // namespace frugal::checkpoint
