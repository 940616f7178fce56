// TensorBoard event files: CRC-32C against the RFC 3720 vectors, TFRecord framing, scalars read back to the bit,
// the file_version record first, every flipped byte and every truncation reported with the record's byte offset,
// one file per writer, nothing written before flush, and a full disk reported with the file and the bytes.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>

#include "tests/util.h"
#include "trainer/tensorboard.h"

namespace frugal::trainer {
namespace {

namespace fs = std::filesystem;

std::string read_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const fs::path& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

uint64_t le(const std::string& bytes, size_t offset, int num_bytes) {
    uint64_t v = 0;
    for (int i = 0; i < num_bytes; ++i) v |= uint64_t(static_cast<unsigned char>(bytes[offset + i])) << (8 * i);
    return v;
}

// Byte offsets of the records of an event file, from the length fields alone.
std::vector<size_t> record_offsets(const std::string& bytes) {
    std::vector<size_t> offsets;
    for (size_t offset = 0; offset + 12 <= bytes.size(); offset += 12 + le(bytes, offset, 8) + 4)
        offsets.push_back(offset);
    return offsets;
}

// The message of the frugal::Error that reading path throws ("" and a test failure when it throws none).
std::string read_error(const fs::path& path) {
    try {
        read_tensorboard_events(path.string());
    } catch (const Error& e) {
        return e.what();
    }
    ADD_FAILURE() << "reading " << path << " threw no error";
    return "";
}

std::string bytes_of(std::initializer_list<int> values) {
    std::string s;
    for (int v : values) s.push_back(char(v));
    return s;
}

// Each test writes into a fresh directory of its own, removed afterwards.
class TensorBoard : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = test::temp_dir("tb_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }
    fs::path dir_;
};

TEST(Crc32c, MatchesTheRfc3720Vectors) {
    // RFC 3720 section B.4.
    EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8a9136aau);
    EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62a8ab43u);
    std::string ascending, descending;
    for (int i = 0; i < 32; ++i) {
        ascending.push_back(char(i));
        descending.push_back(char(31 - i));
    }
    EXPECT_EQ(crc32c(ascending), 0x46dd794eu);
    EXPECT_EQ(crc32c(descending), 0x113fdb5cu);
    const std::string iscsi_read_pdu =
        bytes_of({0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                  0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18,
                  0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00});
    EXPECT_EQ(crc32c(iscsi_read_pdu), 0xd9963a56u);
    // The check value of the CRC-32C catalogue entry (the nine ASCII digits).
    EXPECT_EQ(crc32c("123456789"), 0xe3069283u);
}

TEST(Crc32c, ContinuingFromAPrefixEqualsTheWholeString) {
    const std::string a = "brain.Event:2", b = std::string(100, '\x5a') + "tail";
    EXPECT_EQ(crc32c(b, crc32c(a)), crc32c(a + b));
    EXPECT_EQ(crc32c(""), 0u);
}

TEST(TfRecord, AFrameIsTheLengthItsMaskedCrcTheDataAndTheDataMaskedCrc) {
    const std::string data = "some record data";
    const std::string frame = tfrecord_frame(data);
    ASSERT_EQ(frame.size(), 8 + 4 + data.size() + 4);
    EXPECT_EQ(le(frame, 0, 8), data.size());
    const auto mask = [](uint32_t crc) { return uint32_t(((crc >> 15) | (crc << 17)) + 0xa282ead8u); };
    EXPECT_EQ(le(frame, 8, 4), mask(crc32c(frame.substr(0, 8))));
    EXPECT_EQ(frame.substr(12, data.size()), data);
    EXPECT_EQ(le(frame, 12 + data.size(), 4), mask(crc32c(data)));
    EXPECT_EQ(masked_crc32c(data), mask(crc32c(data)));
    EXPECT_NE(masked_crc32c(data), crc32c(data));
}

TEST_F(TensorBoard, ScalarsReadBackExactlyToTheFloatBit) {
    const fs::path& dir = dir_;
    struct Written {
        std::string tag;
        int64_t step;
        double value;
        double wall_time;
    };
    const std::vector<Written> written = {
        {"train/loss", 0, 10.25, 1.7e9 + 0.125},
        {"train/loss", 10, 3.14159265358979, 1.7e9 + 1.5},
        {"train/lr", 10, 3e-4, 1.7e9 + 1.5},
        {"val/loss", 1099511627776, 0.0, 1.7e9 + 2.75},
        {"train/grad_norm", 11, -0.0, 1.7e9 + 3},
        {"moe/layer_3/imbalance", 12, double(std::numeric_limits<float>::denorm_min()), 1.7e9 + 4},
        {"perf/tokens_per_s", 13, double(std::numeric_limits<float>::max()), 1.7e9 + 5},
        {"train/skipped_steps", 14, std::numeric_limits<double>::infinity(), 1.7e9 + 6},
        {"cost/usd_so_far", 15, -std::numeric_limits<double>::infinity(), 1.7e9 + 7},
        {"train/aux_loss", 16, std::numeric_limits<double>::quiet_NaN(), 1.7e9 + 8},
        {"", -3, 1.0, 0.0},
    };
    {
        TensorBoardWriter writer(dir.string());
        for (const auto& w : written) writer.add_scalar(w.tag, w.step, w.value, w.wall_time);
        writer.flush();
    }
    const std::vector<ScalarEvent> got = read_tensorboard_scalars(dir.string());
    ASSERT_EQ(got.size(), written.size());
    for (size_t i = 0; i < written.size(); ++i) {
        SCOPED_TRACE("scalar " + std::to_string(i) + " (" + written[i].tag + ")");
        EXPECT_EQ(got[i].tag, written[i].tag);
        EXPECT_EQ(got[i].step, written[i].step);
        EXPECT_EQ(std::bit_cast<uint32_t>(got[i].value), std::bit_cast<uint32_t>(float(written[i].value)));
        EXPECT_EQ(std::bit_cast<uint64_t>(got[i].wall_time), std::bit_cast<uint64_t>(written[i].wall_time));
    }
    EXPECT_TRUE(std::isnan(got[9].value));
}

TEST_F(TensorBoard, TheFileVersionRecordComesFirstAndTheFileIsNamedAsTensorBoardExpects) {
    const fs::path& dir = dir_;
    std::string path;
    {
        TensorBoardWriter writer((dir / "tb").string());
        path = writer.path();
        writer.add_scalar("train/loss", 1, 2.5);
        writer.add_scalar("train/loss", 2, 2.0);
    }
    const std::string name = fs::path(path).filename().string();
    const std::string prefix = "events.out.tfevents.";
    ASSERT_EQ(name.rfind(prefix, 0), 0u) << name;
    char host[256] = {};
    ASSERT_EQ(::gethostname(host, sizeof(host) - 1), 0);
    const std::string suffix = "." + std::string(host) + "." + std::to_string(::getpid()) + ".";
    EXPECT_NE(name.find(suffix), std::string::npos) << name << " lacks " << suffix;
    const int64_t seconds = std::stoll(name.substr(prefix.size()));
    EXPECT_NEAR(double(seconds), unix_seconds_now(), 60.0) << name;

    const std::vector<TensorBoardEvent> events = read_tensorboard_events(path);
    ASSERT_EQ(events.size(), 3u);
    EXPECT_EQ(events[0].file_version, "brain.Event:2");
    EXPECT_TRUE(events[0].scalars.empty());
    EXPECT_NEAR(events[0].wall_time, unix_seconds_now(), 60.0);
    for (size_t i = 1; i < events.size(); ++i) {
        EXPECT_EQ(events[i].file_version, "") << "record " << i;
        ASSERT_EQ(events[i].scalars.size(), 1u) << "record " << i;
        EXPECT_EQ(events[i].scalars[0].first, "train/loss");
        EXPECT_EQ(events[i].step, int64_t(i));
    }
}

TEST_F(TensorBoard, NothingIsWrittenBeforeFlushAndEverythingAfter) {
    const fs::path& dir = dir_;
    TensorBoardWriter writer(dir.string());
    const auto size_after_header = fs::file_size(writer.path());
    EXPECT_GT(size_after_header, 12u);
    for (int step = 0; step < 100; ++step) writer.add_scalar("train/loss", step, 1.0 / (step + 1));
    EXPECT_EQ(fs::file_size(writer.path()), size_after_header);
    const size_t num_buffered = writer.num_buffered_bytes();
    EXPECT_GT(num_buffered, 100u * 16);
    writer.flush();
    EXPECT_EQ(writer.num_buffered_bytes(), 0u);
    EXPECT_EQ(fs::file_size(writer.path()), size_after_header + num_buffered);
    EXPECT_EQ(read_tensorboard_scalars(writer.path()).size(), 100u);
    writer.flush();
    EXPECT_EQ(fs::file_size(writer.path()), size_after_header + num_buffered);
}

TEST_F(TensorBoard, AFlippedByteAnywhereInARecordIsReportedWithTheRecordOffset) {
    const fs::path& dir = dir_;
    std::string path;
    {
        TensorBoardWriter writer(dir.string());
        path = writer.path();
        writer.add_scalar("train/loss", 1, 2.5);
        writer.add_scalar("moe/layer_0/dropped_tokens", 1, 7);
        writer.add_scalar("train/lr", 1, 1e-3);
    }
    const std::string good = read_bytes(path);
    const std::vector<size_t> offsets = record_offsets(good);
    ASSERT_EQ(offsets.size(), 4u);
    const fs::path bad = dir / "events.out.tfevents.flipped";
    for (size_t r = 0; r < offsets.size(); ++r) {
        const size_t end = r + 1 < offsets.size() ? offsets[r + 1] : good.size();
        for (size_t i = offsets[r]; i < end; ++i) {
            std::string bytes = good;
            bytes[i] = char(bytes[i] ^ 0xff);
            write_bytes(bad, bytes);
            SCOPED_TRACE("record " + std::to_string(r) + ", byte " + std::to_string(i));
            test::expect_has(read_error(bad), {bad.string(), "at byte offset " + std::to_string(offsets[r]) + " "});
        }
    }
}

TEST_F(TensorBoard, ATruncatedFileIsReportedWithTheOffsetOfTheCutRecord) {
    const fs::path& dir = dir_;
    std::string path;
    {
        TensorBoardWriter writer(dir.string());
        path = writer.path();
        writer.add_scalar("train/loss", 1, 2.5);
        writer.add_scalar("train/loss", 2, 2.25);
    }
    const std::string good = read_bytes(path);
    const size_t last = record_offsets(good).back();
    const fs::path cut = dir / "events.out.tfevents.cut";
    for (size_t size = last + 1; size < good.size(); ++size) {
        write_bytes(cut, good.substr(0, size));
        SCOPED_TRACE("cut to " + std::to_string(size) + " of " + std::to_string(good.size()) + " bytes");
        test::expect_has(read_error(cut), {cut.string(), "is truncated", "at byte offset " + std::to_string(last)});
    }
    write_bytes(cut, good.substr(0, last));
    EXPECT_EQ(read_tensorboard_scalars(cut.string()).size(), 1u);
}

TEST_F(TensorBoard, ARecordWithGoodCrcsThatIsNotAnEventIsRefused) {
    const fs::path& dir = dir_;
    const fs::path path = dir / "events.out.tfevents.garbage";
    write_bytes(path, tfrecord_frame(std::string(1, '\x09')) + tfrecord_frame(std::string("\xff\xff\xff", 3)));
    test::expect_has(read_error(path), {path.string(), "byte offset 0 ", "not an Event"});
}

TEST_F(TensorBoard, TwoWritersInOneDirectoryWriteTwoFilesThatTheDirectoryReaderJoins) {
    const fs::path& dir = dir_;
    TensorBoardWriter first(dir.string());
    TensorBoardWriter second(dir.string());
    EXPECT_NE(first.path(), second.path());
    first.add_scalar("train/loss", 1, 1.5);
    second.add_scalar("val/loss", 1, 2.5);
    first.close();
    second.close();
    write_bytes(dir / "notes.txt", "not an event file");
    int num_files = 0;
    for (const auto& entry : fs::directory_iterator(dir))
        num_files += entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
    EXPECT_EQ(num_files, 2);
    EXPECT_EQ(read_tensorboard_events(first.path()).at(0).file_version, "brain.Event:2");
    EXPECT_EQ(read_tensorboard_events(second.path()).at(0).file_version, "brain.Event:2");
    const std::vector<ScalarEvent> got = read_tensorboard_scalars(dir.string());
    ASSERT_EQ(got.size(), 2u);
    std::vector<std::string> tags = {got[0].tag, got[1].tag};
    std::sort(tags.begin(), tags.end());
    EXPECT_EQ(tags, (std::vector<std::string>{"train/loss", "val/loss"}));
}

// A resumed run's file starts with a session start at its first step: what the earlier attempt logged from that step
// on is dropped (the steps after the checkpoint are computed again), what it logged before stays.
TEST_F(TensorBoard, ASessionStartDropsTheEarlierAttemptsStepsFromThatStepOn) {
    {
        TensorBoardWriter first(dir_.string());
        for (int64_t step = 1; step <= 6; ++step) first.add_scalar("train/loss", step, 10.0 + double(step));
        first.close();
    }
    TensorBoardWriter resumed(dir_.string());
    resumed.add_session_start(5);
    for (int64_t step = 5; step <= 7; ++step) resumed.add_scalar("train/loss", step, 20.0 + double(step));
    resumed.close();
    ASSERT_TRUE(read_tensorboard_events(resumed.path()).at(1).session_start);
    std::vector<std::pair<int64_t, float>> got;
    for (const ScalarEvent& e : read_tensorboard_scalars(dir_.string())) got.push_back({e.step, e.value});
    EXPECT_EQ(got, (std::vector<std::pair<int64_t, float>>{{1, 11}, {2, 12}, {3, 13}, {4, 14}, {5, 25}, {6, 26},
                                                           {7, 27}}));
}

TEST_F(TensorBoard, AddingAfterCloseIsRefused) {
    const fs::path& dir = dir_;
    TensorBoardWriter writer(dir.string());
    writer.close();
    EXPECT_THROW(writer.add_scalar("train/loss", 1, 1.0), Error);
    EXPECT_THROW(writer.flush(), Error);
}

TEST_F(TensorBoard, AFullDiskIsAnErrorNamingTheFileAndTheBytes) {
    if (::geteuid() != 0) GTEST_SKIP() << "mounting a small tmpfs needs root";
    const fs::path& dir = dir_;
    const fs::path disk = dir / "disk";
    fs::create_directories(disk);
    if (::mount("tmpfs", disk.c_str(), "tmpfs", 0, "size=64k") != 0) GTEST_SKIP() << "cannot mount a tmpfs here";
    std::string message;
    {
        TensorBoardWriter writer((disk / "tb").string());
        for (int step = 0; step < 10000; ++step) writer.add_scalar("train/loss", step, 1.0);
        try {
            writer.flush();
        } catch (const IoError& e) {
            message = e.what();
        }
        writer.add_scalar("train/loss", 1, 1.0);
        EXPECT_THROW(writer.close(), IoError);
        test::expect_has(message, {writer.path(), "the disk is full", "needed"});
    }
    ::umount2(disk.c_str(), MNT_DETACH);
}

}  // namespace
}  // namespace frugal::trainer
