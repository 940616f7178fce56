// The named-tensor file of the golden comparison, written by tests/golden/export_inputs.cc and
// tests/golden/make_golden.py:
//   "FRGLGOLD" | uint32 count | count x (uint32 name length | name | uint32 ndim | int64 dims[ndim] | f64 data)
// little-endian, data row-major.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"

namespace frugal::golden {

struct NamedTensor {
    std::vector<int64_t> shape;
    std::vector<double> data;
};
using TensorMap = std::map<std::string, NamedTensor>;

inline void write_tensor_file(const std::string& path, const TensorMap& tensors) {
    FILE* f = std::fopen(path.c_str(), "wb");
    FRUGAL_CHECK(f, "cannot write ", path);
    std::fwrite("FRGLGOLD", 1, 8, f);
    uint32_t count = uint32_t(tensors.size());
    std::fwrite(&count, 4, 1, f);
    for (const auto& [name, t] : tensors) {
        uint32_t len = uint32_t(name.size()), ndim = uint32_t(t.shape.size());
        std::fwrite(&len, 4, 1, f);
        std::fwrite(name.data(), 1, len, f);
        std::fwrite(&ndim, 4, 1, f);
        std::fwrite(t.shape.data(), 8, ndim, f);
        std::fwrite(t.data.data(), 8, t.data.size(), f);
    }
    std::fclose(f);
}

inline TensorMap read_tensor_file(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "rb");
    FRUGAL_CHECK(f, "cannot read ", path, ": regenerate it as tests/golden/make_golden.py describes");
    TensorMap out;
    char magic[8];
    uint32_t count = 0;
    FRUGAL_CHECK(std::fread(magic, 1, 8, f) == 8 && std::string(magic, 8) == "FRGLGOLD", path, ": bad magic");
    FRUGAL_CHECK(std::fread(&count, 4, 1, f) == 1, path, ": truncated");
    for (uint32_t i = 0; i < count; ++i) {
        uint32_t len = 0, ndim = 0;
        FRUGAL_CHECK(std::fread(&len, 4, 1, f) == 1, path, ": truncated");
        std::string name(len, '\0');
        FRUGAL_CHECK(std::fread(name.data(), 1, len, f) == len && std::fread(&ndim, 4, 1, f) == 1, path, ": truncated");
        NamedTensor t;
        t.shape.resize(ndim);
        FRUGAL_CHECK(std::fread(t.shape.data(), 8, ndim, f) == ndim, path, ": truncated");
        int64_t n = 1;
        for (int64_t s : t.shape) n *= s;
        t.data.resize(static_cast<size_t>(n));
        FRUGAL_CHECK(std::fread(t.data.data(), 8, size_t(n), f) == size_t(n), path, ": truncated");
        out[name] = std::move(t);
    }
    std::fclose(f);
    return out;
}

}  // namespace frugal::golden
