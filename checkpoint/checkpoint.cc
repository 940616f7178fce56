#include "checkpoint/checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "core/error.h"
#include "core/file_io.h"
#include "core/log.h"
#include "core/progress.h"

namespace frugal::checkpoint {

namespace fs = std::filesystem;

void CheckpointConfig::register_fields(ConfigFields& f, const std::string& p) {
    f.add(p + "every", &every, "steps between checkpoints (and one after the last step); 0 = none", 0);
    f.add(p + "resume", &resume,
          "none: start fresh; auto: continue from the newest checkpoint in checkpoint.dir that verifies (start fresh "
          "when there is none)",
          {"none", "auto"});
    f.add(p + "dir", &dir, "where checkpoints live; empty = run.out_dir/checkpoints");
    f.add(p + "keep_last", &keep_last, "checkpoints kept (older ones are deleted after a successful save)", 1);
    f.add(p + "keep_every", &keep_every, "also keep every checkpoint whose step is a multiple of this; 0 = off", 0);
    f.add(p + "export_hf", &export_hf,
          "after the last step, write the model in Hugging Face format to this directory, each rank its own experts "
          "(the family that holds the architecture: qwen3_moe, qwen2_moe, mixtral or olmoe; with model.init_from the "
          "source config.json and tokenizer files are copied); empty = off");
    f.add(p + "export_hf_dtype", &export_hf_dtype,
          "dtype of the exported safetensors (fp8-block: linear weights as E4M3 in 128 x 128 blocks with "
          "weight_scale_inv, as DeepSeek releases them)",
          {"bf16", "f16", "f32", "fp8-block"});
}

namespace {

// RAII for HDF5 identifiers.
struct H5Id {
    hid_t id = H5I_INVALID_HID;
    herr_t (*close)(hid_t) = nullptr;
    H5Id() = default;
    H5Id(hid_t i, herr_t (*c)(hid_t)) : id(i), close(c) {}
    H5Id(const H5Id&) = delete;
    H5Id& operator=(const H5Id&) = delete;
    H5Id(H5Id&& o) noexcept : id(o.id), close(o.close) { o.id = H5I_INVALID_HID; }
    ~H5Id() {
        if (id >= 0 && close) close(id);
    }
    operator hid_t() const { return id; }
};

#define FRUGAL_H5_CHECK(expr, ...)                                                                \
    do {                                                                                          \
        if ((expr) < 0) FRUGAL_THROW("HDF5: " #expr " failed: ", __VA_ARGS__, h5_error_detail()); \
    } while (0)

void quiet_hdf5() {
    // A file whose close failed (a full disk) is left open, and HDF5's exit handler crashes closing it again:
    // every file is closed explicitly instead. Takes effect only before the library's first use.
    static const bool no_atexit = [] { return H5dont_atexit() >= 0; }();
    (void)no_atexit;
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

// The innermost reasons on HDF5's error stack, and the system errno it reports (0 when none).
herr_t collect_h5_error(unsigned, const H5E_error2_t* e, void* out) {
    auto* detail = static_cast<std::pair<std::string, int>*>(out);
    const std::string desc = e->desc ? e->desc : "";
    if (const size_t at = desc.find("errno = "); at != std::string::npos && detail->second == 0)
        detail->second = std::atoi(desc.c_str() + at + 8);
    if (detail->first.empty()) detail->first = desc.substr(0, desc.find(", time ="));
    return 0;
}
std::pair<std::string, int> h5_error() {
    std::pair<std::string, int> detail{"", 0};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_h5_error, &detail);
    return detail;
}
std::string h5_error_detail() {
    const auto [text, err] = h5_error();
    if (err != 0) return std::string(" (") + std::strerror(err) + ")";
    return text.empty() ? "" : " (" + text + ")";
}

}  // namespace

std::string step_file_name(int64_t step) {
    std::ostringstream os;
    os << "step_" << std::setw(8) << std::setfill('0') << step << ".h5";
    return os.str();
}

namespace {

int64_t step_of(const std::string& filename) {
    if (filename.rfind("step_", 0) != 0 || filename.size() < 9 || filename.substr(filename.size() - 3) != ".h5")
        return -1;
    try {
        return std::stoll(filename.substr(5, filename.size() - 8));
    } catch (...) {
        return -1;
    }
}

void fsync_path(const std::string& path, bool directory) {
    int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) throw IoError(detail::where(__FILE__, __LINE__), io_failure("opening", path, errno, 0));
    const int rc = ::fsync(fd) == 0 ? 0 : errno;
    ::close(fd);
    if (rc != 0) throw IoError(detail::where(__FILE__, __LINE__), io_failure("syncing", path, rc, 0));
}

std::vector<hsize_t> dims_of(const Shape& s) { return std::vector<hsize_t>(s.begin(), s.end()); }

// Chunks: one dim-0 row (one expert) per chunk for 3-D tensors, so no chunk is shared by two writers; about
// 4 MiB otherwise.
std::vector<hsize_t> chunk_of(const Shape& s) {
    std::vector<hsize_t> c = dims_of(s);
    if (c.empty()) return c;
    int64_t row = 1;
    for (size_t i = 1; i < s.size(); ++i) row *= s[i];
    if (s.size() >= 3) {
        c[0] = 1;
    } else {
        const int64_t rows = std::max<int64_t>(1, (int64_t(1) << 20) / std::max<int64_t>(row, 1));
        c[0] = hsize_t(std::max<int64_t>(1, std::min<int64_t>(s[0], rows)));
    }
    for (auto& x : c) x = std::max<hsize_t>(x, 1);
    return c;
}

void write_attr_i64(hid_t obj, const char* name, int64_t v) {
    H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
    H5Id a(H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    FRUGAL_H5_CHECK(a.id, "attribute ", name);
    FRUGAL_H5_CHECK(H5Awrite(a, H5T_NATIVE_INT64, &v), "attribute ", name);
}
void write_attr_f64(hid_t obj, const char* name, double v) {
    H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
    H5Id a(H5Acreate2(obj, name, H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    FRUGAL_H5_CHECK(a.id, "attribute ", name);
    FRUGAL_H5_CHECK(H5Awrite(a, H5T_NATIVE_DOUBLE, &v), "attribute ", name);
}
int64_t read_attr_i64(hid_t obj, const char* name) {
    H5Id a(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
    if (a.id < 0)
        FRUGAL_CONFIG_ERROR("checkpoint attribute '", name, "' is missing: not a Frugal checkpoint, or corrupt");
    int64_t v = 0;
    FRUGAL_H5_CHECK(H5Aread(a, H5T_NATIVE_INT64, &v), "attribute ", name);
    return v;
}
double read_attr_f64(hid_t obj, const char* name) {
    H5Id a(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
    if (a.id < 0) FRUGAL_CONFIG_ERROR("checkpoint attribute '", name, "' is missing");
    double v = 0;
    FRUGAL_H5_CHECK(H5Aread(a, H5T_NATIVE_DOUBLE, &v), "attribute ", name);
    return v;
}

// A scalar string dataset (readable as text by h5dump and h5py); written by rank 0 of a collective write.
void write_string(hid_t file, const char* name, const std::string& text, bool writer, hid_t dxpl) {
    H5Id type(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(type, std::max<size_t>(1, text.size()));
    H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
    H5Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    H5Pset_create_intermediate_group(lcpl, 1);
    H5Id d(H5Dcreate2(file, name, type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
    FRUGAL_H5_CHECK(d.id, "dataset ", name);
    H5Id fspace(H5Dget_space(d), H5Sclose);
    H5Id mspace(H5Screate(H5S_SCALAR), H5Sclose);
    if (!writer) {
        H5Sselect_none(fspace);
        H5Sselect_none(mspace);
    }
    std::string buf = text.empty() ? std::string(1, '\0') : text;
    FRUGAL_H5_CHECK(H5Dwrite(d, type, mspace, fspace, dxpl, buf.data()), "dataset ", name);
}

std::string read_string(hid_t file, const char* name) {
    H5Id d(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
    if (d.id < 0) FRUGAL_CONFIG_ERROR("checkpoint dataset '", name, "' is missing");
    H5Id type(H5Dget_type(d), H5Tclose);
    const size_t n = H5Tget_size(type);
    std::string s(n, '\0');
    H5Id mtype(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mtype, n);
    if (H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, s.data()) < 0)
        FRUGAL_CONFIG_ERROR("checkpoint dataset '", name, "' does not read back (corrupt file)");
    while (!s.empty() && s.back() == '\0') s.pop_back();
    return s;
}

// A chunk index that lost entries reads the missing chunks as zeros: every chunk must be stored. Each stored chunk
// takes its full chunk size (edge chunks included) plus the 4 bytes of its Fletcher32 checksum.
void check_allocated(hid_t d, const std::string& path, const std::string& name) {
    H5Id space(H5Dget_space(d), H5Sclose);
    H5Id dcpl(H5Dget_create_plist(d), H5Pclose);
    const int nd = H5Sget_simple_extent_ndims(space);
    bool ok = nd >= 0 && space.id >= 0 && dcpl.id >= 0;
    if (!ok || H5Pget_layout(dcpl) != H5D_CHUNKED) return;
    std::vector<hsize_t> dims(static_cast<size_t>(nd)), chunk(static_cast<size_t>(nd));
    ok = H5Sget_simple_extent_dims(space, dims.data(), nullptr) == nd && H5Pget_chunk(dcpl, nd, chunk.data()) == nd;
    hsize_t chunks = 1, chunk_bytes = 4;
    for (int i = 0; ok && i < nd; ++i) {
        ok = chunk[size_t(i)] > 0;
        if (ok) chunks *= (dims[size_t(i)] + chunk[size_t(i)] - 1) / chunk[size_t(i)];
        chunk_bytes *= chunk[size_t(i)];
    }
    const hsize_t stored = H5Dget_storage_size(d), expected = chunks * (chunk_bytes + 4);
    if (!ok || stored != expected)
        FRUGAL_CONFIG_ERROR("checkpoint ", path, ": dataset '", name, "' stores ", stored, " bytes where its ", chunks,
                            " chunks take ", expected, " (corrupt chunk index); use an older checkpoint");
}

std::string shape_text(const Shape& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) out += (i ? "x" : "") + std::to_string(s[i]);
    return out.empty() ? "scalar" : out;
}

}  // namespace

std::vector<TensorSlot> param_slots(model::ParamStore& store, bool write_replicated, bool write_experts) {
    std::vector<TensorSlot> slots;
    for (model::Param* p : store.params()) {
        int64_t row = 1;
        for (size_t i = 1; i < p->global_shape.size(); ++i) row *= p->global_shape[i];
        slots.push_back({"params/" + p->name, p->global_shape, p->global_offset / std::max<int64_t>(row, 1), p->shape,
                         p->is_expert ? write_experts : write_replicated, p->value.data<float>()});
    }
    return slots;
}

namespace {

// CRC-32 (zlib) of every attribute and string of a checkpoint, in a fixed order: HDF5's own checksums cover its
// metadata structures and Fletcher32 the tensor chunks, this covers the values the state is made of.
uint32_t meta_crc32(const TrainingState& st, int64_t version, const std::string& manifest) {
    std::ostringstream os;
    os << version << '\n'
       << st.step << '\n'
       << st.tokens_seen << '\n'
       << st.data_position << '\n'
       << st.optimizer_steps << '\n'
       << st.seed << '\n'
       << st.world_size << '\n'
       << st.ep << '\n'
       << std::hexfloat << st.accounting_seconds << '\n';
    const std::string head = os.str();
    uLong crc = crc32(0L, Z_NULL, 0);
    for (const std::string* part :
         {&head, &st.config_yaml, &st.frugal_version, &st.accounting_json, &st.run_id, &manifest}) {
        const uint64_t n = part->size();
        crc = crc32(crc, reinterpret_cast<const Bytef*>(&n), sizeof(n));
        crc = crc32(crc, reinterpret_cast<const Bytef*>(part->data()), uInt(part->size()));
    }
    return uint32_t(crc);
}

// Adds to space's selection the elements [a, b) of the sub-tensor dims[k..] whose leading coordinates are prefix:
// the partial first index, the whole ones, the partial last one, recursively (at most 2 * rank - 1 boxes).
void select_flat_range(hid_t space, const std::vector<hsize_t>& dims, size_t k, std::vector<hsize_t>& prefix, int64_t a,
                       int64_t b, bool& first, const std::string& name) {
    if (a >= b) return;
    auto box = [&](hsize_t begin, hsize_t count) {
        std::vector<hsize_t> start = prefix, extent(prefix.size(), 1);
        start.push_back(begin);
        extent.push_back(count);
        for (size_t j = k + 1; j < dims.size(); ++j) {
            start.push_back(0);
            extent.push_back(dims[j]);
        }
        FRUGAL_H5_CHECK(H5Sselect_hyperslab(space, first ? H5S_SELECT_SET : H5S_SELECT_OR, start.data(), nullptr,
                                            extent.data(), nullptr),
                        name);
        first = false;
    };
    int64_t stride = 1;
    for (size_t j = k + 1; j < dims.size(); ++j) stride *= int64_t(dims[j]);
    const int64_t i0 = a / stride, last = (b - 1) / stride;
    auto recurse = [&](int64_t index, int64_t lo, int64_t hi) {
        prefix.push_back(hsize_t(index));
        select_flat_range(space, dims, k + 1, prefix, lo, hi, first, name);
        prefix.pop_back();
    };
    if (k + 1 == dims.size()) return box(hsize_t(a), hsize_t(b - a));
    if (i0 == last) return recurse(i0, a - i0 * stride, b - i0 * stride);
    const int64_t whole_begin = a % stride == 0 ? i0 : i0 + 1, whole_end = b / stride;
    if (a % stride != 0) recurse(i0, a % stride, stride);
    if (whole_end > whole_begin) box(hsize_t(whole_begin), hsize_t(whole_end - whole_begin));
    if (b % stride != 0) recurse(whole_end, 0, b % stride);
}

// Selects this rank's part of slot s in the dataset's space fspace and returns the matching memory space (none
// selected in either when select is false or the part is empty).
H5Id select_part(hid_t fspace, const TensorSlot& s, bool select) {
    const auto gdims = dims_of(s.global_shape);
    if (s.flat_begin >= 0) {
        const hsize_t n = hsize_t(std::max<int64_t>(s.flat_count, 1));
        H5Id mspace(H5Screate_simple(1, &n, nullptr), H5Sclose);
        if (!select || s.flat_count == 0) {
            H5Sselect_none(fspace);
            H5Sselect_none(mspace);
        } else if (gdims.empty()) {
            H5Sselect_all(fspace);
        } else {
            std::vector<hsize_t> prefix;
            bool first = true;
            select_flat_range(fspace, gdims, 0, prefix, s.flat_begin, s.flat_begin + s.flat_count, first, s.name);
        }
        return mspace;
    }
    auto ldims = dims_of(s.local_shape);
    H5Id mspace(H5Screate_simple(int(ldims.size()), ldims.data(), nullptr), H5Sclose);
    if (select && !ldims.empty() && ldims[0] > 0) {
        std::vector<hsize_t> start(gdims.size(), 0);
        start[0] = hsize_t(s.row_begin);
        FRUGAL_H5_CHECK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, ldims.data(), nullptr),
                        s.name);
    } else {
        H5Sselect_none(fspace);
        H5Sselect_none(mspace);
    }
    return mspace;
}

void write_tensor(hid_t file, hid_t lcpl, hid_t dxpl, const TensorSlot& s) {
    const auto gdims = dims_of(s.global_shape);
    const auto chunk = chunk_of(s.global_shape);
    H5Id space(H5Screate_simple(int(gdims.size()), gdims.data(), nullptr), H5Sclose);
    H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    FRUGAL_H5_CHECK(H5Pset_chunk(dcpl, int(chunk.size()), chunk.data()), s.name);
    FRUGAL_H5_CHECK(H5Pset_fletcher32(dcpl), s.name);
    H5Id d(H5Dcreate2(file, s.name.c_str(), H5T_IEEE_F32LE, space, lcpl, dcpl, H5P_DEFAULT), H5Dclose);
    FRUGAL_H5_CHECK(d.id, s.name);
    H5Id fspace(H5Dget_space(d), H5Sclose);
    H5Id mspace = select_part(fspace, s, s.writer);
    FRUGAL_H5_CHECK(H5Dwrite(d, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, s.data), s.name);
}

// Writes the whole file (collective). On failure the file is left open: closing it is a collective that the other
// ranks may never reach, and the caller stops the job.
void write_file(const std::string& path, const std::vector<TensorSlot>& slots, const TrainingState& state,
                parallel::Communicator& world) {
    const bool root = world.rank() == 0;
    H5Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    H5Id dxpl(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
    // The 1.10 file format checksums every metadata structure (superblock, object headers, chunk indexes), so a
    // flipped bit in them is an error, not different data.
    FRUGAL_H5_CHECK(H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110), path);
    if (void* native = world.native_handle()) {
        FRUGAL_H5_CHECK(H5Pset_fapl_mpio(fapl, *static_cast<MPI_Comm*>(native), MPI_INFO_NULL), path);
        // Filtered (checksummed) datasets need collective writes in parallel HDF5.
        FRUGAL_H5_CHECK(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE), path);
    }
    const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    FRUGAL_H5_CHECK(file, "cannot create checkpoint ", path, ": check checkpoint.dir");
    write_attr_i64(file, "format_version", kFormatVersion);
    write_attr_i64(file, "step", state.step);
    write_attr_i64(file, "tokens_seen", state.tokens_seen);
    write_attr_i64(file, "data_position", state.data_position);
    write_attr_i64(file, "optimizer_steps", state.optimizer_steps);
    write_attr_i64(file, "seed", state.seed);
    write_attr_i64(file, "world_size", state.world_size);
    write_attr_i64(file, "ep", state.ep);
    write_attr_f64(file, "accounting_seconds", state.accounting_seconds);
    write_string(file, "meta/config_yaml", state.config_yaml, root, dxpl);
    write_string(file, "meta/frugal_version", state.frugal_version, root, dxpl);
    write_string(file, "meta/accounting_json", state.accounting_json, root, dxpl);
    write_string(file, "meta/run_id", state.run_id, root, dxpl);

    std::string manifest;
    H5Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    H5Pset_create_intermediate_group(lcpl, 1);
    for (const TensorSlot& s : slots) {
        write_tensor(file, lcpl, dxpl, s);
        manifest += s.name + " f32 " + shape_text(s.global_shape) + "\n";
    }
    write_string(file, "manifest", manifest, root, dxpl);
    write_attr_i64(file, "meta_crc32", int64_t(meta_crc32(state, kFormatVersion, manifest)));
    FRUGAL_H5_CHECK(H5Fflush(file, H5F_SCOPE_GLOBAL), path);
    FRUGAL_H5_CHECK(H5Fclose(file), path);  // collective
}

// The reason a checkpoint write failed, in words a user can act on.
std::string write_failure(const std::string& path, const Error& e, int64_t bytes) {
    const int err = h5_error().second;
    if (err != 0) return io_failure("writing checkpoint", path, err, bytes);
    const int64_t avail = free_bytes(path);
    if (avail >= 0 && avail < (int64_t(1) << 20)) return io_failure("writing checkpoint", path, ENOSPC, bytes);
    return std::string("writing checkpoint ") + path + " failed: " + e.what();
}

// The run that wrote a checkpoint ("" when the file does not tell: written by format version 1, or unreadable).
std::string run_id_of(const std::string& path) {
    try {
        return read_state(path).run_id;
    } catch (const Error&) {
        return "";
    }
}

// Removes the oldest checkpoints of this run beyond keep_last (keeping every keep_every-th step) and temporaries
// a crash left. Other runs' checkpoints and files whose run cannot be read stay.
void apply_retention(const std::string& dir, const std::string& run_id, int64_t keep_last, int64_t keep_every) {
    std::vector<int64_t> ours;
    for (const std::string& p : list_checkpoints(dir))
        if (!run_id.empty() && run_id_of(p) == run_id) ours.push_back(step_of(fs::path(p).filename().string()));
    for (size_t i = size_t(std::max<int64_t>(keep_last, 1)); i < ours.size(); ++i) {
        if (keep_every > 0 && ours[i] % keep_every == 0) continue;
        std::error_code ec;
        fs::remove(fs::path(dir) / step_file_name(ours[i]), ec);
        if (ec)
            log::warn("retention: cannot remove ", (fs::path(dir) / step_file_name(ours[i])).string(), ": ",
                      ec.message());
    }
    for (const auto& e : fs::directory_iterator(dir)) {
        const std::string n = e.path().filename().string();
        if (n.size() > 7 && n.rfind("step_", 0) == 0 && n.substr(n.size() - 7) == ".h5.tmp") {
            std::error_code ec;
            fs::remove(e.path(), ec);
        }
    }
}

// Rank 0: the file is complete; rename it into place and point `latest` at it.
void commit(const std::string& dir, const std::string& tmp_path, const std::string& final_path, int64_t step,
            const std::function<void()>& before_commit) {
    fsync_path(tmp_path, false);
    if (before_commit) before_commit();
    std::error_code ec;
    fs::rename(tmp_path, final_path, ec);
    if (ec) {
        fs::remove(tmp_path);
        throw IoError(detail::where(__FILE__, __LINE__),
                      "cannot rename " + tmp_path + " to " + final_path + ": " + ec.message());
    }
    fsync_path(dir, true);
    write_file_atomic((fs::path(dir) / "latest").string(), step_file_name(step) + "\n");
}

}  // namespace

int64_t file_bytes(const std::vector<TensorSlot>& slots, const TrainingState& state) {
    int64_t bytes = int64_t(state.config_yaml.size() + state.accounting_json.size()) + (int64_t(256) << 10);
    for (const TensorSlot& s : slots) {
        const int64_t numel = shape_numel(s.global_shape);
        const int64_t chunks = int64_t(dims_of(s.global_shape).empty() ? 1 : s.global_shape[0]);
        bytes += 4 * numel + 8 * chunks + 4096;  // data, a checksum and an index entry per chunk, the header
    }
    return bytes + bytes / 64;
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
    std::vector<std::pair<int64_t, std::string>> all;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return {};
    for (const auto& e : fs::directory_iterator(dir, ec))
        if (int64_t st = step_of(e.path().filename().string()); st >= 0) all.push_back({st, e.path().string()});
    std::sort(all.rbegin(), all.rend());
    std::vector<std::string> out;
    for (auto& [st, p] : all) out.push_back(p);
    return out;
}

std::string save(const std::string& dir, const std::vector<TensorSlot>& slots, const TrainingState& state,
                 parallel::Communicator& world, int64_t keep_last, int64_t keep_every,
                 const std::function<void()>& before_commit) {
    quiet_hdf5();
    const bool root = world.rank() == 0;
    const std::string final_path = (fs::path(dir) / step_file_name(state.step)).string();
    const std::string tmp_path = final_path + ".tmp";
    const int64_t bytes = file_bytes(slots, state);
    // Space first: when the disk cannot hold the file, nothing is written and every rank says so.
    int64_t refused = 0;
    std::string why;
    if (root) {
        try {
            fs::create_directories(dir);
            require_free_space(dir, bytes, "checkpoint");
        } catch (const std::exception& e) {
            refused = 1;
            why = e.what();
        }
    }
    world.set_layer("checkpoint");
    world.broadcast(&refused, 1, DType::kI64, 0);
    if (refused)
        throw IoError(detail::where(__FILE__, __LINE__),
                      root ? why : "checkpoint " + final_path + " not written: rank 0 found no room for it");
    try {
        write_file(tmp_path, slots, state, world);
    } catch (const Error& e) {
        const std::string msg = write_failure(tmp_path, e, bytes);
        std::error_code ec;
        fs::remove(tmp_path, ec);
        throw IoError(e.where(), msg + "; the previous checkpoint stays the latest");
    }
    world.barrier();
    if (root) {
        commit(dir, tmp_path, final_path, state.step, before_commit);
        apply_retention(dir, state.run_id, keep_last, keep_every);
    }
    world.barrier();
    return final_path;
}

TrainingState read_state(const std::string& path) {
    quiet_hdf5();
    if (!fs::exists(path)) FRUGAL_CONFIG_ERROR("checkpoint ", path, " does not exist");
    H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (file.id < 0) FRUGAL_CONFIG_ERROR(path, " does not open as HDF5: truncated or not a checkpoint");
    TrainingState st;
    const int64_t version = read_attr_i64(file, "format_version");
    if (version != kFormatVersion && version != 1)
        FRUGAL_CONFIG_ERROR(path, " has checkpoint format version ", version, "; this build reads versions 1 and ",
                            kFormatVersion);
    st.step = read_attr_i64(file, "step");
    st.tokens_seen = read_attr_i64(file, "tokens_seen");
    st.data_position = read_attr_i64(file, "data_position");
    st.optimizer_steps = read_attr_i64(file, "optimizer_steps");
    st.seed = read_attr_i64(file, "seed");
    st.world_size = read_attr_i64(file, "world_size");
    st.ep = read_attr_i64(file, "ep");
    st.accounting_seconds = read_attr_f64(file, "accounting_seconds");
    st.config_yaml = read_string(file, "meta/config_yaml");
    st.frugal_version = read_string(file, "meta/frugal_version");
    st.accounting_json = read_string(file, "meta/accounting_json");
    if (version >= 2) {
        st.run_id = read_string(file, "meta/run_id");
        const uint32_t want = uint32_t(read_attr_i64(file, "meta_crc32"));
        if (meta_crc32(st, version, read_string(file, "manifest")) != want)
            FRUGAL_CONFIG_ERROR(path,
                                ": the checksum of its attributes and metadata strings does not match (corrupt "
                                "file); use an older checkpoint");
    }
    return st;
}

std::vector<ManifestEntry> read_manifest(const std::string& path) {
    quiet_hdf5();
    H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (file.id < 0) FRUGAL_CONFIG_ERROR(path, " does not open as HDF5: truncated or not a checkpoint");
    std::istringstream in(read_string(file, "manifest"));
    std::vector<ManifestEntry> out;
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        ManifestEntry e;
        std::string shape;
        ls >> e.name >> e.dtype >> shape;
        if (shape != "scalar") {
            std::stringstream ss(shape);
            std::string part;
            while (std::getline(ss, part, 'x')) e.shape.push_back(std::stoll(part));
        }
        out.push_back(e);
    }
    return out;
}

void load(const std::string& path, std::vector<TensorSlot>& slots, TrainingState& state) {
    state = read_state(path);
    H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    for (TensorSlot& s : slots) {
        H5Id d(H5Dopen2(file, s.name.c_str(), H5P_DEFAULT), H5Dclose);
        if (d.id < 0)
            FRUGAL_CONFIG_ERROR("checkpoint ", path, " has no dataset '", s.name,
                                "': it was written by a different model (compare its meta/config_yaml with this "
                                "config)");
        H5Id fspace(H5Dget_space(d), H5Sclose);
        const int nd = H5Sget_simple_extent_ndims(fspace);
        std::vector<hsize_t> dims(size_t(std::max(nd, 0)));
        H5Sget_simple_extent_dims(fspace, dims.data(), nullptr);
        if (Shape(dims.begin(), dims.end()) != s.global_shape)
            FRUGAL_CONFIG_ERROR("checkpoint ", path, ": dataset '", s.name, "' has shape ",
                                shape_str(Shape(dims.begin(), dims.end())), " but this model needs ",
                                shape_str(s.global_shape), ": the checkpoint is of a different model configuration");
        check_allocated(d, path, s.name);
        H5Id mspace = select_part(fspace, s, true);
        if (H5Dread(d, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, s.data) < 0)
            FRUGAL_CONFIG_ERROR("checkpoint ", path, ": dataset '", s.name,
                                "' does not read back (checksum mismatch: the file is corrupt)");
    }
}

VerifyReport verify(const std::string& path) {
    VerifyReport r;
    try {
        read_state(path);
        auto manifest = read_manifest(path);
        H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
        std::vector<float> buf;
        double total_bytes = 0;
        for (const ManifestEntry& e : manifest) total_bytes += double(shape_numel(e.shape)) * sizeof(float);
        Progress progress("verifying", total_bytes, "B");
        for (const ManifestEntry& e : manifest) {
            H5Id d(H5Dopen2(file, e.name.c_str(), H5P_DEFAULT), H5Dclose);
            if (d.id < 0) throw ConfigError("verify", "dataset '" + e.name + "' listed in the manifest is missing");
            H5Id fspace(H5Dget_space(d), H5Sclose);
            const int nd = H5Sget_simple_extent_ndims(fspace);
            std::vector<hsize_t> dims(size_t(std::max(nd, 0)));
            H5Sget_simple_extent_dims(fspace, dims.data(), nullptr);
            if (Shape(dims.begin(), dims.end()) != e.shape)
                throw ConfigError("verify", "dataset '" + e.name + "' has shape " +
                                                shape_str(Shape(dims.begin(), dims.end())) + ", the manifest says " +
                                                shape_str(e.shape));
            H5Id type(H5Dget_type(d), H5Tclose);
            if (H5Tget_class(type) != H5T_FLOAT || H5Tget_size(type) != 4)
                throw ConfigError("verify", "dataset '" + e.name + "' is not f32 as the manifest says");
            check_allocated(d, path, e.name);
            buf.resize(size_t(shape_numel(e.shape)));
            if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0)
                throw ConfigError("verify", "dataset '" + e.name + "' fails its checksum (corrupt data)");
            r.datasets++;
            r.bytes += int64_t(buf.size() * sizeof(float));
            progress.advance(double(buf.size() * sizeof(float)));
        }
        progress.finish();
        r.ok = true;
    } catch (const std::exception& e) {
        r.error = e.what();
    }
    return r;
}

std::string find_resumable(const std::string& dir) {
    if (!fs::is_directory(dir)) return "";
    std::vector<std::string> candidates;
    std::ifstream latest(fs::path(dir) / "latest");
    std::string name;
    if (latest >> name && step_of(name) >= 0) candidates.push_back((fs::path(dir) / name).string());
    for (const std::string& p : list_checkpoints(dir))
        if (std::find(candidates.begin(), candidates.end(), p) == candidates.end()) candidates.push_back(p);
    for (const std::string& p : candidates) {
        if (!fs::exists(p)) {
            log::warn("checkpoint ", p, " named by ", (fs::path(dir) / "latest").string(),
                      " is missing; looking further");
            continue;
        }
        VerifyReport v = verify(p);
        if (v.ok) return p;
        log::warn("checkpoint ", p, " does not verify (", v.error, "); trying an older one");
    }
    return "";
}

}  // namespace frugal::checkpoint
