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
#include <set>
#include <sstream>

#include "checkpoint/hf_reader.h"
#include "core/bf16.h"
#include "core/checked.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/input_file.h"

namespace frugal::checkpoint {

size_t st_dtype_size(const std::string& dtype) {
    if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
    if (dtype == "BF16" || dtype == "F16" || dtype == "I16") return 2;
    if (dtype == "F64" || dtype == "I64") return 8;
    if (dtype == "U8" || dtype == "I8" || dtype == "F8_E4M3" || dtype == "F8_E5M2" || dtype == "BOOL") return 1;
    return 0;
}

namespace {

// The largest header accepted (the reference implementation's limit): a larger one is corruption.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;
// Dims and element counts past 2^48 cannot be real tensors.
constexpr int64_t kMaxElements = int64_t(1) << 48;

std::string entry_field(const std::string& name, const std::string& field) {
    return "tensor \"" + name + "\"." + field;
}

StTensorInfo parse_entry(const YAML::Node& e, const std::string& name, const std::string& path, uint64_t payload) {
    FRUGAL_CONFIG_CHECK(e.IsMap(), input::at(path, e.Mark()), ": tensor \"", name,
                        "\": expected an object {\"dtype\", \"shape\", \"data_offsets\"}");
    for (auto it = e.begin(); it != e.end(); ++it) {
        const std::string k = input::as_string(it->first, path, "a key of tensor \"" + name + "\"");
        FRUGAL_CONFIG_CHECK(k == "dtype" || k == "shape" || k == "data_offsets", input::at(path, it->first.Mark()),
                            ": tensor \"", name, "\" has an unknown field \"", k,
                            "\" (expected dtype, shape, data_offsets): not a safetensors header");
    }
    for (const char* k : {"dtype", "shape", "data_offsets"})
        FRUGAL_CONFIG_CHECK(e[k], input::at(path, e.Mark()), ": tensor \"", name, "\" has no \"", k,
                            "\": the file is corrupt");
    StTensorInfo t;
    t.dtype = input::as_string(e["dtype"], path, entry_field(name, "dtype"));
    const size_t es = st_dtype_size(t.dtype);
    FRUGAL_CONFIG_CHECK(es != 0, input::at(path, e["dtype"].Mark()), ": ", entry_field(name, "dtype"), " '", t.dtype,
                        "' is not a safetensors dtype (F32, BF16, F16, F64, I64, I32, I16, I8, U8, U32, F8_E4M3, "
                        "F8_E5M2, BOOL)");
    const YAML::Node shape = e["shape"];
    FRUGAL_CONFIG_CHECK(shape.IsSequence() && shape.size() <= 8, input::at(path, shape.Mark()), ": ",
                        entry_field(name, "shape"), ": expected a list of at most 8 dimensions");
    int64_t numel = 1;
    for (size_t i = 0; i < shape.size(); ++i) {
        const int64_t d =
            input::as_int(shape[i], path, entry_field(name, "shape[" + std::to_string(i) + "]"), 0, kMaxElements);
        t.shape.push_back(d);
        FRUGAL_CONFIG_CHECK(checked_mul(numel, d, &numel) && numel <= kMaxElements, input::at(path, shape.Mark()), ": ",
                            entry_field(name, "shape"), " ", shape_str(t.shape), "... has more than 2^48 elements");
    }
    const YAML::Node off = e["data_offsets"];
    FRUGAL_CONFIG_CHECK(off.IsSequence() && off.size() == 2, input::at(path, off.Mark()), ": ",
                        entry_field(name, "data_offsets"), ": expected [begin, end]");
    const int64_t max_off = payload > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(payload);
    const std::string where = input::at(path, off.Mark()) + ": " + entry_field(name, "data_offsets");
    const int64_t begin = input::as_int(off[0], path, entry_field(name, "data_offsets[0]"), 0, INT64_MAX);
    const int64_t end = input::as_int(off[1], path, entry_field(name, "data_offsets[1]"), 0, INT64_MAX);
    FRUGAL_CONFIG_CHECK(begin <= end, where, " [", begin, ", ", end, ") ends before it begins: the file is corrupt");
    FRUGAL_CONFIG_CHECK(end <= max_off, where, " [", begin, ", ", end, ") run past the file's ", payload,
                        " data bytes: the file is truncated or corrupt (download it again)");
    const int64_t want = numel * int64_t(es);  // numel <= 2^48, es <= 8: no overflow
    FRUGAL_CONFIG_CHECK(end - begin == want, where, " [", begin, ", ", end, ") hold ", end - begin,
                        " bytes, but shape ", shape_str(t.shape), " of ", t.dtype, " needs ", want,
                        ": the file is corrupt");
    t.begin = uint64_t(begin);
    t.end = uint64_t(end);
    return t;
}

}  // namespace

StHeader parse_safetensors_header(const uint8_t* p, size_t size, const std::string& path) {
    FRUGAL_CONFIG_CHECK(size >= 8, path, " is ", size, " bytes: too short for a safetensors file (truncated?)");
    uint64_t n = 0;
    std::memcpy(&n, p, 8);
    FRUGAL_CONFIG_CHECK(n <= size - 8, path, ": header length ", n, " exceeds the file's ", size - 8,
                        " bytes after the length field: truncated safetensors file, or not one");
    FRUGAL_CONFIG_CHECK(n >= 2 && n <= kMaxHeaderBytes, path, ": header length ", n,
                        " is outside [2, 100 MiB]: not a safetensors file");
    const std::string text(reinterpret_cast<const char*>(p + 8), size_t(n));
    const size_t first = text.find_first_not_of(" \t\r\n");
    FRUGAL_CONFIG_CHECK(first != std::string::npos && text[first] == '{', path,
                        ": the safetensors header is not a JSON object ({...})");
    YAML::Node h;
    try {
        h = YAML::Load(text);
    } catch (const YAML::Exception& e) {
        FRUGAL_CONFIG_ERROR(input::at(path + " (header)", e.mark),
                            ": the safetensors header is not valid JSON: ", e.msg);
    }
    FRUGAL_CONFIG_CHECK(h.IsMap(), path, ": the safetensors header is not a JSON object");
    StHeader out;
    out.data_offset = 8 + n;
    const uint64_t payload = size - 8 - n;
    const std::string hpath = path + " (header)";
    bool has_metadata = false;
    for (auto it = h.begin(); it != h.end(); ++it) {
        const std::string name = input::as_string(it->first, hpath, "a tensor name");
        if (name == "__metadata__") {
            FRUGAL_CONFIG_CHECK(it->second.IsMap() && !has_metadata, input::at(hpath, it->first.Mark()),
                                ": \"__metadata__\" must appear once, as an object of strings");
            has_metadata = true;
            for (auto m = it->second.begin(); m != it->second.end(); ++m) {
                const std::string k = input::as_string(m->first, hpath, "a __metadata__ key");
                FRUGAL_CONFIG_CHECK(!out.metadata.count(k), input::at(hpath, m->first.Mark()), ": __metadata__ key \"",
                                    k, "\" appears twice");
                out.metadata[k] = input::as_string(m->second, hpath, "__metadata__." + k);
            }
            continue;
        }
        FRUGAL_CONFIG_CHECK(!out.tensors.count(name), input::at(hpath, it->first.Mark()), ": tensor \"", name,
                            "\" appears twice in the header: the file is corrupt (which copy is meant?)");
        out.tensors[name] = parse_entry(it->second, name, hpath, payload);
    }
    // No two tensors may share bytes: sorted by begin, each starts at or after every earlier one's end.
    std::vector<std::pair<const std::string*, const StTensorInfo*>> order;
    for (const auto& [name, t] : out.tensors) order.push_back({&name, &t});
    std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
        return std::pair(a.second->begin, a.second->end) < std::pair(b.second->begin, b.second->end);
    });
    const std::string* last = nullptr;
    const StTensorInfo* last_t = nullptr;
    for (const auto& [name, t] : order) {
        if (t->begin == t->end) continue;  // empty tensors own no bytes
        FRUGAL_CONFIG_CHECK(last == nullptr || t->begin >= last_t->end, path, ": tensors \"", *last, "\" [",
                            last_t ? last_t->begin : 0, ", ", last_t ? last_t->end : 0, ") and \"", *name, "\" [",
                            t->begin, ", ", t->end, ") overlap in data_offsets: the file is corrupt");
        last = name;
        last_t = t;
    }
    return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
    input::require_file(path, "safetensors file", "give the model directory's *.safetensors file");
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
    try {
        StHeader h = parse_safetensors_header(p, size_, path);
        tensors_ = std::move(h.tensors);
        metadata_ = std::move(h.metadata);
        data_ = p + h.data_offset;
    } catch (...) {
        ::munmap(map_, size_);
        map_ = nullptr;
        throw;
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
    read_f32_range(name, 0, shape_numel(shape), out);
}

void SafetensorsFile::read_f32_range(const std::string& name, int64_t first, int64_t count, float* out) const {
    const StTensorInfo& t = info(name);
    FRUGAL_CHECK(first >= 0 && count >= 0 && first + count <= shape_numel(t.shape), "elements [", first, ", ",
                 first + count, ") of tensor '", name, "' ", shape_str(t.shape), " are out of range");
    const int64_t n = count;
    if (t.dtype == "F32") {
        std::memcpy(out, data_ + t.begin + 4 * first, size_t(n) * 4);
    } else if (t.dtype == "BF16") {
        const uint8_t* src = data_ + t.begin + 2 * first;
#pragma omp parallel for schedule(static) if (n > (1 << 16))
        for (int64_t i = 0; i < n; ++i) {
            uint16_t b;
            std::memcpy(&b, src + 2 * i, 2);
            out[i] = bf16_bits_to_float(b);
        }
    } else if (t.dtype == "F16") {
        const uint8_t* src = data_ + t.begin + 2 * first;
#pragma omp parallel for schedule(static) if (n > (1 << 16))
        for (int64_t i = 0; i < n; ++i) {
            uint16_t b;
            std::memcpy(&b, src + 2 * i, 2);
            out[i] = half_bits_to_float(b);
        }
    } else if (t.dtype == "F8_E4M3" || t.dtype == "F8_E5M2") {
        FRUGAL_CONFIG_ERROR(path_, ": tensor '", name, "' is ", t.dtype,
                            ", a block-quantized weight: it is read with its weight_scale_inv (HfTensorReader)");
    } else {
        FRUGAL_CONFIG_ERROR(path_, ": tensor '", name, "' is ", t.dtype,
                            "; F32, BF16 and F16 are supported (and F8_E4M3/F8_E5M2 with a weight_scale_inv)");
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
    const int64_t total = int64_t(8 + header.size() + off);
    require_free_space(tmp, total, "safetensors file");
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw IoError(detail::where(__FILE__, __LINE__), io_failure("creating", tmp, errno, total));
    const uint64_t n = header.size();
    bool ok = std::fwrite(&n, 8, 1, f) == 1 && std::fwrite(header.data(), 1, header.size(), f) == header.size();
    std::vector<uint8_t> buf;
    for (const auto& t : tensors)
        ok = ok && (t.f32 ? write_converted(f, t.f32, shape_numel(t.shape), t.dtype, buf)
                          : std::fwrite(t.bytes.data(), 1, t.bytes.size(), f) == t.bytes.size());
    ok = ok && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
    int err = ok ? 0 : errno;
    if (std::fclose(f) != 0 && ok) {
        ok = false;
        err = errno;
    }
    std::error_code ec;
    if (ok) std::filesystem::rename(tmp, path, ec);
    if (!ok || ec) {
        std::filesystem::remove(tmp, ec);
        throw IoError(detail::where(__FILE__, __LINE__), io_failure("writing", path, err ? err : EIO, total));
    }
}

std::vector<std::pair<std::string, std::string>> hf_index_entries(const std::string& path, const std::string& dir) {
    const std::string text = input::read_file(path, "safetensors index", "give the model directory as downloaded");
    YAML::Node n;
    try {
        n = YAML::Load(text);
    } catch (const YAML::Exception& e) {
        FRUGAL_CONFIG_ERROR(input::at(path, e.mark), ": not valid JSON: ", e.msg);
    }
    FRUGAL_CONFIG_CHECK(n.IsMap() && n["weight_map"] && n["weight_map"].IsMap(), path,
                        ": no \"weight_map\" object: not a safetensors index");
    std::set<std::string> seen;
    std::vector<std::pair<std::string, std::string>> entries;
    for (auto it = n["weight_map"].begin(); it != n["weight_map"].end(); ++it) {
        const std::string name = input::as_string(it->first, path, "a weight_map key");
        const std::string file = input::as_string(it->second, path, "weight_map.\"" + name + "\"");
        FRUGAL_CONFIG_CHECK(seen.insert(name).second, input::at(path, it->first.Mark()), ": weight_map names tensor \"",
                            name, "\" twice");
        FRUGAL_CONFIG_CHECK(!file.empty() && file.find('/') == std::string::npos && file != "." && file != "..",
                            input::at(path, it->second.Mark()), ": weight_map.\"", name, "\" is '", file,
                            "': expected a file name inside ", dir);
        entries.emplace_back(name, file);
    }
    return entries;
}

std::vector<std::string> hf_dir_tensor_names(const std::string& dir) {
    namespace fs = std::filesystem;
    const fs::path index = fs::path(dir) / "model.safetensors.index.json";
    std::vector<std::string> names;
    if (!fs::exists(index)) {
        SafetensorsFile f((fs::path(dir) / "model.safetensors").string());
        for (const auto& [name, t] : f.tensors()) names.push_back(name);
        return names;
    }
    for (const auto& [name, file] : hf_index_entries(index.string(), dir)) names.push_back(name);
    return names;
}

void check_hf_tensors_expected(const std::string& dir, const std::set<std::string>& expected) {
    std::vector<std::string> extra;
    for (const std::string& name : HfTensorReader(dir).served_names())
        if (!expected.count(name) && name.find("rotary_emb.inv_freq") == std::string::npos) extra.push_back(name);
    if (extra.empty()) return;
    std::string list;
    for (size_t i = 0; i < extra.size() && i < 5; ++i) list += (i ? ", " : "") + extra[i];
    if (extra.size() > 5) list += ", ... (" + std::to_string(extra.size()) + " in all)";
    FRUGAL_CONFIG_ERROR(dir, " holds tensors its config.json does not account for: ", list,
                        ": the import would drop them; check that config.json belongs to these weights (layer and "
                        "expert counts, shared experts, biases, QK-norm)");
}

}  // namespace frugal::checkpoint
