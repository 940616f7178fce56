// TensorBoard event files: TFRecord framing with CRC-32C, Event records from trainer/tensorboard_event.proto.
// See tensorboard.h for the format. Debian 12 packages no maintained CRC-32C library (no libcrc32c-dev; crcutil's
// upstream is gone), so the CRC is the byte-wise table method of RFC 3720 section B.4, checked against its vectors
// in tests/trainer/test_tensorboard.cc.
#include "trainer/tensorboard.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/log.h"
#include "trainer/tensorboard_event.pb.h"

namespace frugal::trainer {

namespace fs = std::filesystem;

namespace {

constexpr uint32_t kCrc32cPolyReflected = 0x82F63B78u;  // 0x1EDC6F41 bit-reversed
constexpr uint32_t kCrcMaskDelta = 0xa282ead8u;
constexpr size_t kHeaderBytes = 12;  // uint64 length + uint32 masked CRC of it
constexpr size_t kFooterBytes = 4;   // uint32 masked CRC of the data

constexpr std::array<uint32_t, 256> make_crc32c_table() {
    std::array<uint32_t, 256> table{};
    for (uint32_t b = 0; b < 256; ++b) {
        uint32_t crc = b;
        for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? kCrc32cPolyReflected : 0u);
        table[b] = crc;
    }
    return table;
}

constexpr std::array<uint32_t, 256> kCrc32cTable = make_crc32c_table();

void put_le(std::string& out, uint64_t v, int num_bytes) {
    for (int i = 0; i < num_bytes; ++i) out.push_back(char((v >> (8 * i)) & 0xffu));
}

uint64_t get_le(const char* p, int num_bytes) {
    uint64_t v = 0;
    for (int i = 0; i < num_bytes; ++i) v |= uint64_t(static_cast<unsigned char>(p[i])) << (8 * i);
    return v;
}

std::string host_name() {
    char buf[HOST_NAME_MAX + 1] = {};
    if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
    return buf;
}

// events.out.tfevents.<unix seconds>.<hostname>.<pid>.<counter>, the first such name not yet in dir.
std::string new_event_file_path(const std::string& dir) {
    static std::atomic<uint64_t> num_writers{0};
    const std::string prefix = "events.out.tfevents." + std::to_string(int64_t(std::time(nullptr))) + "." +
                               host_name() + "." + std::to_string(int64_t(::getpid())) + ".";
    std::error_code ec;
    for (;;) {
        const fs::path p = fs::path(dir) / (prefix + std::to_string(num_writers.fetch_add(1)));
        if (!fs::exists(p, ec)) return p.string();
    }
}

std::string hex32(uint32_t v) {
    char buf[11];
    std::snprintf(buf, sizeof(buf), "0x%08x", v);
    return buf;
}

std::string serialize(const tbproto::Event& event) {
    std::string data;
    FRUGAL_CHECK(event.SerializeToString(&data), "serializing a TensorBoard Event failed");
    return data;
}

std::string read_whole_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) FRUGAL_THROW("cannot open TensorBoard event file ", path, ": ", std::strerror(errno));
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) FRUGAL_THROW("reading TensorBoard event file ", path, " failed: ", std::strerror(errno));
    return bytes;
}

TensorBoardEvent to_event(const tbproto::Event& proto) {
    TensorBoardEvent event;
    event.wall_time = proto.wall_time();
    event.step = proto.step();
    if (proto.what_case() == tbproto::Event::kFileVersion) event.file_version = proto.file_version();
    if (proto.what_case() == tbproto::Event::kSummary) {
        for (const auto& value : proto.summary().value())
            if (value.value_case() == tbproto::Summary::Value::kSimpleValue)
                event.scalars.emplace_back(value.tag(), value.simple_value());
    }
    event.session_start =
        proto.what_case() == tbproto::Event::kSessionLog && proto.session_log().status() == tbproto::SessionLog::START;
    return event;
}

// The data of the record at offset, after checking its framing and both CRCs; offset moves past the record.
std::string_view next_record(const std::string& path, std::string_view bytes, size_t& offset) {
    const size_t start = offset;
    const size_t left = bytes.size() - start;
    if (left < kHeaderBytes)
        FRUGAL_THROW("TensorBoard event file ", path, " is truncated: the record at byte offset ", start, " has ", left,
                     " of its ", kHeaderBytes, " header bytes");
    const std::string_view length_bytes = bytes.substr(start, 8);
    const uint64_t length = get_le(length_bytes.data(), 8);
    const uint32_t length_crc = uint32_t(get_le(bytes.data() + start + 8, 4));
    if (length_crc != masked_crc32c(length_bytes))
        FRUGAL_THROW("TensorBoard event file ", path, " is corrupt: the length of the record at byte offset ", start,
                     " fails its CRC-32C (stored ", hex32(length_crc), ", computed ",
                     hex32(masked_crc32c(length_bytes)), ")");
    if (length > left - kHeaderBytes || left - kHeaderBytes - length < kFooterBytes)
        FRUGAL_THROW("TensorBoard event file ", path, " is truncated: the record at byte offset ", start, " needs ",
                     kHeaderBytes, " + ", length, " + ", kFooterBytes, " bytes but the file has ", left, " left");
    const std::string_view data = bytes.substr(start + kHeaderBytes, size_t(length));
    const uint32_t data_crc = uint32_t(get_le(bytes.data() + start + kHeaderBytes + length, 4));
    if (data_crc != masked_crc32c(data))
        FRUGAL_THROW("TensorBoard event file ", path, " is corrupt: the data of the record at byte offset ", start,
                     " (", length, " bytes) fails its CRC-32C (stored ", hex32(data_crc), ", computed ",
                     hex32(masked_crc32c(data)), ")");
    offset = start + kHeaderBytes + size_t(length) + kFooterBytes;
    return data;
}

}  // namespace

uint32_t crc32c(std::string_view data, uint32_t crc) {
    crc = ~crc;
    for (const char c : data) crc = kCrc32cTable[(crc ^ static_cast<unsigned char>(c)) & 0xffu] ^ (crc >> 8);
    return ~crc;
}

uint32_t masked_crc32c(std::string_view data) {
    const uint32_t crc = crc32c(data);
    return ((crc >> 15) | (crc << 17)) + kCrcMaskDelta;
}

std::string tfrecord_frame(std::string_view data) {
    std::string out;
    out.reserve(kHeaderBytes + data.size() + kFooterBytes);
    put_le(out, data.size(), 8);
    put_le(out, masked_crc32c(out), 4);
    out.append(data);
    put_le(out, masked_crc32c(data), 4);
    return out;
}

double unix_seconds_now() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
        throw IoError(detail::where(__FILE__, __LINE__), "creating the TensorBoard directory " + dir + " failed: " +
                                                             ec.message() + "; choose a writable run.out_dir");
    path_ = new_event_file_path(dir);
    file_ = AppendFile(path_, /*truncate=*/true);
    tbproto::Event event;
    event.set_wall_time(unix_seconds_now());
    event.set_file_version(kTensorBoardFileVersion);
    file_.append(tfrecord_frame(serialize(event)));
}

TensorBoardWriter::~TensorBoardWriter() {
    try {
        close();
    } catch (const std::exception& e) {
        log::warn("closing TensorBoard event file ", path_, " failed: ", e.what());
    }
}

void TensorBoardWriter::add_scalar(const std::string& tag, int64_t step, double value, double wall_time) {
    FRUGAL_CHECK(!is_closed_, "add_scalar(", tag, ") on the closed TensorBoard event file ", path_);
    tbproto::Event event;
    event.set_wall_time(wall_time);
    event.set_step(step);
    tbproto::Summary::Value* summary_value = event.mutable_summary()->add_value();
    summary_value->set_tag(tag);
    summary_value->set_simple_value(float(value));
    buffer_ += tfrecord_frame(serialize(event));
}

void TensorBoardWriter::add_session_start(int64_t step, double wall_time) {
    FRUGAL_CHECK(!is_closed_, "add_session_start on the closed TensorBoard event file ", path_);
    tbproto::Event event;
    event.set_wall_time(wall_time);
    event.set_step(step);
    event.mutable_session_log()->set_status(tbproto::SessionLog::START);
    buffer_ += tfrecord_frame(serialize(event));
}

void TensorBoardWriter::flush() {
    FRUGAL_CHECK(!is_closed_, "flush of the closed TensorBoard event file ", path_);
    if (buffer_.empty()) return;
    // Cleared before the write: a failed write must not be retried, or the file would hold a partial record and
    // then the same records again.
    const std::string records = std::move(buffer_);
    buffer_.clear();
    file_.append(records);
}

void TensorBoardWriter::close() {
    if (is_closed_) return;
    flush();
    is_closed_ = true;
    file_.close();
}

std::vector<TensorBoardEvent> read_tensorboard_events(const std::string& path) {
    const std::string bytes = read_whole_file(path);
    std::vector<TensorBoardEvent> events;
    size_t offset = 0;
    while (offset < bytes.size()) {
        const size_t start = offset;
        const std::string_view data = next_record(path, bytes, offset);
        tbproto::Event proto;
        if (!proto.ParseFromArray(data.data(), int(data.size())))
            FRUGAL_THROW("TensorBoard event file ", path, ": the record at byte offset ", start,
                         " passes its CRCs but is not an Event (", data.size(), " bytes)");
        events.push_back(to_event(proto));
    }
    return events;
}

std::vector<ScalarEvent> read_tensorboard_scalars(const std::string& path_or_dir) {
    std::vector<std::string> files;
    std::error_code ec;
    if (fs::is_directory(path_or_dir, ec)) {
        for (const auto& entry : fs::directory_iterator(path_or_dir, ec))
            if (entry.is_regular_file() && entry.path().filename().string().starts_with("events.out.tfevents."))
                files.push_back(entry.path().string());
        if (ec) FRUGAL_THROW("listing TensorBoard directory ", path_or_dir, " failed: ", ec.message());
        std::sort(files.begin(), files.end());
    } else {
        files.push_back(path_or_dir);
    }
    std::vector<ScalarEvent> scalars;
    for (const auto& file : files)
        for (const auto& event : read_tensorboard_events(file)) {
            if (event.session_start) std::erase_if(scalars, [&](const ScalarEvent& e) { return e.step >= event.step; });
            for (const auto& [tag, value] : event.scalars) scalars.push_back({tag, event.step, value, event.wall_time});
        }
    return scalars;
}

}  // namespace frugal::trainer
