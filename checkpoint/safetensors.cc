#include "checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "core/bf16.h"
#include "core/error.h"

namespace frugal::checkpoint {

size_t st_dtype_size(const std::string& dtype) {
    if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
    if (dtype == "BF16" || dtype == "F16" || dtype == "I16") return 2;
    if (dtype == "F64" || dtype == "I64") return 8;
    if (dtype == "U8" || dtype == "I8" || dtype == "F8_E4M3" || dtype == "F8_E5M2" || dtype == "BOOL") return 1;
    return 0;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) FRUGAL_CONFIG_ERROR("cannot open ", path, ": ", std::strerror(errno));
    struct stat st {};
    ::fstat(fd, &st);
    size_ = size_t(st.st_size);
    if (size_ < 8) {
        ::close(fd);
        FRUGAL_CONFIG_ERROR(path, " is ", size_, " bytes: too short for a safetensors file (truncated?)");
    }
    map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    FRUGAL_CHECK(map_ != MAP_FAILED, "mmap of ", path, " failed");
    const auto* p = static_cast<const uint8_t*>(map_);
    uint64_t n = 0;
    std::memcpy(&n, p, 8);
    auto fail = [&](const std::string& why) {
        ::munmap(map_, size_);
        map_ = nullptr;
        FRUGAL_CONFIG_ERROR(path, ": ", why);
    };
    if (n > size_ - 8) fail("header length " + std::to_string(n) + " exceeds the file: truncated safetensors header");
    data_ = p + 8 + n;
    YAML::Node h;
    try {
        h = YAML::Load(std::string(reinterpret_cast<const char*>(p + 8), size_t(n)));
    } catch (const YAML::Exception& e) {
        fail(std::string("the safetensors header is not valid JSON: ") + e.what());
    }
    if (!h.IsMap()) fail("the safetensors header is not a JSON object");
    const uint64_t payload = size_ - 8 - n;
    for (auto it = h.begin(); it != h.end(); ++it) {
        const std::string name = it->first.as<std::string>();
        if (name == "__metadata__") {
            for (auto m = it->second.begin(); m != it->second.end(); ++m)
                metadata_[m->first.as<std::string>()] = m->second.as<std::string>();
            continue;
        }
        StTensorInfo t;
        try {
            t.dtype = it->second["dtype"].as<std::string>();
            for (const auto& d : it->second["shape"]) t.shape.push_back(d.as<int64_t>());
            t.begin = it->second["data_offsets"][0].as<uint64_t>();
            t.end = it->second["data_offsets"][1].as<uint64_t>();
        } catch (const YAML::Exception&) {
            fail("tensor '" + name + "' has a malformed header entry");
        }
        const size_t es = st_dtype_size(t.dtype);
        if (es == 0) fail("tensor '" + name + "' has unknown dtype " + t.dtype);
        if (t.end < t.begin || t.end > payload || t.end - t.begin != uint64_t(shape_numel(t.shape)) * es)
            fail("tensor '" + name + "' has data offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                 ") that do not match its shape " + shape_str(t.shape) + " and dtype " + t.dtype +
                 " within the file's " + std::to_string(payload) + " data bytes (truncated or corrupt)");
        tensors_[name] = t;
    }
}

SafetensorsFile::~SafetensorsFile() {
    if (map_) ::munmap(map_, size_);
}

const StTensorInfo& SafetensorsFile::info(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) FRUGAL_CONFIG_ERROR(path_, " has no tensor '", name, "'");
    return it->second;
}

const uint8_t* SafetensorsFile::bytes(const std::string& name) const { return data_ + info(name).begin; }

void SafetensorsFile::read_f32(const std::string& name, float* out, const Shape& shape) const {
    const StTensorInfo& t = info(name);
    FRUGAL_CONFIG_CHECK(t.shape == shape, path_, ": tensor '", name, "' has shape ", shape_str(t.shape),
                        ", the model (config.json) needs ", shape_str(shape));
    const int64_t n = shape_numel(shape);
    const uint8_t* src = data_ + t.begin;
    if (t.dtype == "F32") {
        std::memcpy(out, src, size_t(n) * 4);
    } else if (t.dtype == "BF16") {
#pragma omp parallel for schedule(static) if (n > (1 << 16))
        for (int64_t i = 0; i < n; ++i) {
            uint16_t b;
            std::memcpy(&b, src + 2 * i, 2);
            out[i] = bf16_bits_to_float(b);
        }
    } else if (t.dtype == "F16") {
#pragma omp parallel for schedule(static) if (n > (1 << 16))
        for (int64_t i = 0; i < n; ++i) {
            uint16_t b;
            std::memcpy(&b, src + 2 * i, 2);
            out[i] = half_bits_to_float(b);
        }
    } else {
        FRUGAL_CONFIG_ERROR(path_, ": tensor '", name, "' is ", t.dtype, "; F32, BF16 and F16 are supported");
    }
}

int64_t StTensorOut::num_bytes() const {
    if (!f32) return int64_t(bytes.size());
    FRUGAL_CHECK(dtype == "F32" || dtype == "BF16" || dtype == "F16", "cannot convert FP32 to ", dtype);
    return shape_numel(shape) * int64_t(st_dtype_size(dtype));
}

namespace {
// Converts and writes FP32 values as dtype, a chunk at a time through a small reused buffer.
bool write_converted(FILE* f, const float* src, int64_t n, const std::string& dtype, std::vector<uint8_t>& buf) {
    if (dtype == "F32") return std::fwrite(src, 4, size_t(n), f) == size_t(n);
    const bool bf16 = dtype == "BF16";
    constexpr int64_t kChunk = int64_t(1) << 20;
    buf.resize(size_t(kChunk) * 2);
    auto* out = reinterpret_cast<uint16_t*>(buf.data());
    for (int64_t begin = 0; begin < n; begin += kChunk) {
        const int64_t m = std::min(kChunk, n - begin);
        if (bf16) {
#pragma omp parallel for schedule(static) if (m > (1 << 16))
            for (int64_t i = 0; i < m; ++i) out[i] = float_to_bf16_bits(src[begin + i]);
        } else {
#pragma omp parallel for schedule(static) if (m > (1 << 16))
            for (int64_t i = 0; i < m; ++i) out[i] = float_to_half_bits(src[begin + i]);
        }
        if (std::fwrite(out, 2, size_t(m), f) != size_t(m)) return false;
    }
    return true;
}
}  // namespace

void write_safetensors(const std::string& path, const std::vector<StTensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata) {
    std::ostringstream h;
    h << "{";
    bool first = true;
    if (!metadata.empty()) {
        h << "\"__metadata__\":{";
        bool f2 = true;
        for (const auto& [k, v] : metadata) {
            h << (f2 ? "" : ",") << "\"" << k << "\":\"" << v << "\"";
            f2 = false;
        }
        h << "}";
        first = false;
    }
    uint64_t off = 0;
    for (const auto& t : tensors) {
        h << (first ? "" : ",") << "\"" << t.name << "\":{\"dtype\":\"" << t.dtype << "\",\"shape\":[";
        for (size_t i = 0; i < t.shape.size(); ++i) h << (i ? "," : "") << t.shape[i];
        h << "],\"data_offsets\":[" << off << "," << off + uint64_t(t.num_bytes()) << "]}";
        off += uint64_t(t.num_bytes());
        first = false;
    }
    h << "}";
    std::string header = h.str();
    header.append((8 - header.size() % 8) % 8, ' ');  // 8-byte alignment of the data, as the reference writer
    const std::string tmp = path + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "wb");
    FRUGAL_CHECK(f, "cannot create ", tmp);
    const uint64_t n = header.size();
    bool ok = std::fwrite(&n, 8, 1, f) == 1 && std::fwrite(header.data(), 1, header.size(), f) == header.size();
    std::vector<uint8_t> buf;
    for (const auto& t : tensors)
        ok = ok && (t.f32 ? write_converted(f, t.f32, shape_numel(t.shape), t.dtype, buf)
                          : std::fwrite(t.bytes.data(), 1, t.bytes.size(), f) == t.bytes.size());
    ok = ok && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
    ok = (std::fclose(f) == 0) && ok;
    FRUGAL_CHECK(ok, "writing ", tmp, " failed (disk full?)");
    std::filesystem::rename(tmp, path);
}

}  // namespace frugal::checkpoint
