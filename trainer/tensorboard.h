// TensorBoard event files: a writer of scalar summaries and a reader that verifies every record.
//
// File format (what TensorBoard's event_accumulator reads): a sequence of TFRecords, each
//   uint64 length (little endian) | uint32 masked_crc32c(length bytes) | length bytes of data |
//   uint32 masked_crc32c(data)
// with masked_crc32c(x) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (crc = CRC-32C of x), both uint32 little endian.
// Each record's data is a serialized Event (trainer/tensorboard_event.proto, a subset of TensorFlow's). The first
// record of a file is an Event with file_version "brain.Event:2"; every later one holds a Summary of scalars.
// Files are named events.out.tfevents.<unix seconds>.<hostname>.<pid>.<counter>; the counter numbers the writers
// of one process, so two writers in one directory never share a file.
//
// Invariants: the writer only appends whole records to memory and writes them on flush(); a failed write throws
// IoError naming the file and the bytes (a full disk is never silent), and leaves at most one partial record at the
// end of the file, which the reader reports as truncated. Values are stored as float (TensorBoard's simple_value);
// non-finite values are written as they are.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/file_io.h"

namespace frugal::trainer {

// CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected), continuing from crc (0 to start): RFC 3720 section B.4.
uint32_t crc32c(std::string_view data, uint32_t crc = 0);

// The checksum TFRecord stores: the CRC rotated right by 15 bits plus 0xa282ead8, so that a CRC of data that itself
// holds CRCs does not degenerate.
uint32_t masked_crc32c(std::string_view data);

// One TFRecord: length, masked CRC of the length, data, masked CRC of the data.
std::string tfrecord_frame(std::string_view data);

// Seconds since the Unix epoch, with sub-second resolution (the wall_time of an Event).
double unix_seconds_now();

inline constexpr const char* kTensorBoardFileVersion = "brain.Event:2";

class TensorBoardWriter {
  public:
    // Creates dir (and its parents) and a new event file in it holding the file_version record; throws IoError when
    // either cannot be written.
    explicit TensorBoardWriter(const std::string& dir);
    // Flushes and closes; a failure there is logged as a warning (a destructor cannot throw): call close() to see it.
    ~TensorBoardWriter();
    TensorBoardWriter(const TensorBoardWriter&) = delete;
    TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

    // Buffers one scalar (value stored as float); nothing is written until flush().
    void add_scalar(const std::string& tag, int64_t step, double value, double wall_time = unix_seconds_now());
    // Buffers a SessionLog START at step: a restart (a resumed run) whose earlier events at steps >= step are out of
    // date. TensorBoard discards them; so does read_tensorboard_scalars.
    void add_session_start(int64_t step, double wall_time = unix_seconds_now());
    // Writes the buffered records to the file (no fsync: cheap enough for every log line); throws IoError.
    void flush();
    // Flushes, fsyncs and closes the file; throws IoError. Later add_scalar or flush calls are refused.
    void close();

    const std::string& path() const { return path_; }
    // Bytes of records added but not yet flushed.
    size_t num_buffered_bytes() const { return buffer_.size(); }

  private:
    std::string path_;
    AppendFile file_;
    std::string buffer_;  // whole TFRecords, in the order added
    bool is_closed_ = false;
};

// One record of an event file, as read back.
struct TensorBoardEvent {
    double wall_time = 0;
    int64_t step = 0;
    std::string file_version;                            // "" unless this is a file_version record
    std::vector<std::pair<std::string, float>> scalars;  // (tag, simple_value) of the Summary, if any
    bool session_start = false;                          // a SessionLog START (a restart at this step)
};

struct ScalarEvent {
    std::string tag;
    int64_t step = 0;
    float value = 0;
    double wall_time = 0;
};

// Every record of one event file, in order. Throws frugal::Error naming the file and the byte offset of the record
// when a record is truncated, either CRC does not match or the data is not an Event.
std::vector<TensorBoardEvent> read_tensorboard_events(const std::string& path);

// The scalars of an event file, or of every events.out.tfevents.* file in a directory (files in name order, records
// in file order), as TensorBoard shows them: a session start at step N drops the scalars read before it at steps
// >= N. Verifies every record as read_tensorboard_events does.
std::vector<ScalarEvent> read_tensorboard_scalars(const std::string& path_or_dir);

}  // namespace frugal::trainer
