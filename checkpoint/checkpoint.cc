#include "checkpoint/checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "core/error.h"
#include "core/log.h"

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
    f.add(p + "export_hf_dtype", &export_hf_dtype, "dtype of the exported safetensors", {"bf16", "f16", "f32"});
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

#define FRUGAL_H5_CHECK(expr, ...)                                             \
    do {                                                                       \
        if ((expr) < 0) FRUGAL_THROW("HDF5: " #expr " failed: ", __VA_ARGS__); \
    } while (0)

void quiet_hdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

std::string step_name(int64_t step) {
    std::ostringstream os;
    os << "step_" << std::setw(8) << std::setfill('0') << step << ".h5";
    return os.str();
}

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
    FRUGAL_CHECK(fd >= 0, "cannot open ", path, " to sync it");
    int rc = ::fsync(fd);
    ::close(fd);
    FRUGAL_CHECK(rc == 0, "fsync of ", path, " failed (disk full or failing?)");
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

std::string save(const std::string& dir, const std::vector<TensorSlot>& slots, const TrainingState& state,
                 parallel::Communicator& world, int64_t keep_last, int64_t keep_every,
                 const std::function<void()>& before_commit) {
    quiet_hdf5();
    const bool root = world.rank() == 0;
    if (root) fs::create_directories(dir);
    world.barrier();
    const std::string final_path = (fs::path(dir) / step_name(state.step)).string();
    const std::string tmp_path = final_path + ".tmp";

    H5Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    H5Id dxpl(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
    if (void* native = world.native_handle()) {
        FRUGAL_H5_CHECK(H5Pset_fapl_mpio(fapl, *static_cast<MPI_Comm*>(native), MPI_INFO_NULL), tmp_path);
        // Filtered (checksummed) datasets need collective writes in parallel HDF5.
        FRUGAL_H5_CHECK(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE), tmp_path);
    }
    {
        H5Id file(H5Fcreate(tmp_path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), H5Fclose);
        if (file.id < 0) FRUGAL_THROW("cannot create checkpoint ", tmp_path, ": check checkpoint.dir and free space");
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

        std::string manifest;
        H5Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
        H5Pset_create_intermediate_group(lcpl, 1);
        for (const TensorSlot& s : slots) {
            const auto gdims = dims_of(s.global_shape);
            const auto chunk = chunk_of(s.global_shape);
            H5Id space(H5Screate_simple(int(gdims.size()), gdims.data(), nullptr), H5Sclose);
            H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
            FRUGAL_H5_CHECK(H5Pset_chunk(dcpl, int(chunk.size()), chunk.data()), s.name);
            FRUGAL_H5_CHECK(H5Pset_fletcher32(dcpl), s.name);
            H5Id d(H5Dcreate2(file, s.name.c_str(), H5T_IEEE_F32LE, space, lcpl, dcpl, H5P_DEFAULT), H5Dclose);
            FRUGAL_H5_CHECK(d.id, s.name);
            H5Id fspace(H5Dget_space(d), H5Sclose);
            auto ldims = dims_of(s.local_shape);
            H5Id mspace(H5Screate_simple(int(ldims.size()), ldims.data(), nullptr), H5Sclose);
            if (s.writer && !ldims.empty() && ldims[0] > 0) {
                std::vector<hsize_t> start(gdims.size(), 0);
                start[0] = hsize_t(s.row_begin);
                FRUGAL_H5_CHECK(
                    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, ldims.data(), nullptr), s.name);
            } else {
                H5Sselect_none(fspace);
                H5Sselect_none(mspace);
            }
            FRUGAL_H5_CHECK(H5Dwrite(d, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, s.data), s.name);
            manifest += s.name + " f32 " + shape_text(s.global_shape) + "\n";
        }
        write_string(file, "manifest", manifest, root, dxpl);
        FRUGAL_H5_CHECK(H5Fflush(file, H5F_SCOPE_GLOBAL), tmp_path);
    }  // collective close
    world.barrier();
    if (root) {
        fsync_path(tmp_path, false);
        if (before_commit) before_commit();
        fs::rename(tmp_path, final_path);
        fsync_path(dir, true);
        const std::string latest_tmp = (fs::path(dir) / "latest.tmp").string();
        {
            std::ofstream out(latest_tmp);
            out << step_name(state.step) << "\n";
            out.flush();
            FRUGAL_CHECK(out.good(), "cannot write ", latest_tmp);
        }
        fsync_path(latest_tmp, false);
        fs::rename(latest_tmp, fs::path(dir) / "latest");
        fsync_path(dir, true);
        // Retention, only after the new checkpoint is committed.
        std::vector<int64_t> steps;
        for (const auto& e : fs::directory_iterator(dir)) {
            const std::string n = e.path().filename().string();
            if (int64_t st = step_of(n); st >= 0)
                steps.push_back(st);
            else if (n.size() > 4 && n.substr(n.size() - 4) == ".tmp" && n != "latest.tmp")
                fs::remove(e.path());
        }
        std::sort(steps.rbegin(), steps.rend());
        for (size_t i = size_t(keep_last); i < steps.size(); ++i) {
            if (keep_every > 0 && steps[i] % keep_every == 0) continue;
            fs::remove(fs::path(dir) / step_name(steps[i]));
        }
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
    if (version != kFormatVersion)
        FRUGAL_CONFIG_ERROR(path, " has checkpoint format version ", version, "; this build reads version ",
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
        auto ldims = dims_of(s.local_shape);
        std::vector<hsize_t> start(dims.size(), 0);
        start[0] = hsize_t(s.row_begin);
        H5Id mspace(H5Screate_simple(int(ldims.size()), ldims.data(), nullptr), H5Sclose);
        FRUGAL_H5_CHECK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, ldims.data(), nullptr),
                        s.name);
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
            buf.resize(size_t(shape_numel(e.shape)));
            if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0)
                throw ConfigError("verify", "dataset '" + e.name + "' fails its checksum (corrupt data)");
            r.datasets++;
            r.bytes += int64_t(buf.size() * sizeof(float));
        }
        r.ok = true;
    } catch (const Error& e) {
        r.error = e.what();
    }
    return r;
}

std::string find_resumable(const std::string& dir) {
    if (!fs::is_directory(dir)) return "";
    std::vector<std::string> candidates;
    std::ifstream latest(fs::path(dir) / "latest");
    std::string name;
    if (latest >> name) candidates.push_back((fs::path(dir) / name).string());
    std::vector<std::pair<int64_t, std::string>> all;
    for (const auto& e : fs::directory_iterator(dir))
        if (int64_t st = step_of(e.path().filename().string()); st >= 0) all.push_back({st, e.path().string()});
    std::sort(all.rbegin(), all.rend());
    for (const auto& [st, p] : all)
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
