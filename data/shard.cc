#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"

namespace frugal::data {

void write_shard(const std::string& path, const std::vector<int32_t>& tokens, int64_t num_docs, int64_t vocab_size,
                 const std::vector<uint8_t>& mask, int32_t end_of_document) {
    FRUGAL_CHECK(mask.empty() || mask.size() == tokens.size(), "loss mask of ", mask.size(), " entries for ",
                 tokens.size(), " tokens");
    const uint32_t dtype = vocab_size <= 65536 ? 2 : 4;
    unsigned char header[kShardHeaderBytes] = {};
    std::memcpy(header, kShardMagic, 8);
    const uint32_t version = kShardVersion;
    const uint64_t n = tokens.size(), docs = uint64_t(num_docs);
    const uint32_t vocab = uint32_t(vocab_size);
    std::memcpy(header + 8, &version, 4);
    std::memcpy(header + 12, &dtype, 4);
    std::memcpy(header + 16, &n, 8);
    std::memcpy(header + 24, &docs, 8);
    std::memcpy(header + 32, &vocab, 4);
    const uint32_t flags = (mask.empty() ? 0u : 1u) | (end_of_document >= 0 ? 2u : 0u);
    std::memcpy(header + 36, &flags, 4);
    if (end_of_document >= 0) {
        const uint32_t eod = uint32_t(end_of_document);
        std::memcpy(header + 40, &eod, 4);
    }

    const std::string tmp = path + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "wb");
    FRUGAL_CHECK(f != nullptr, "cannot create ", tmp, ": ", std::strerror(errno));
    bool ok = std::fwrite(header, 1, sizeof(header), f) == sizeof(header);
    if (dtype == 2) {
        std::vector<uint16_t> buf(tokens.begin(), tokens.end());
        ok = ok && std::fwrite(buf.data(), 2, buf.size(), f) == buf.size();
    } else {
        std::vector<uint32_t> buf(tokens.begin(), tokens.end());
        ok = ok && std::fwrite(buf.data(), 4, buf.size(), f) == buf.size();
    }
    if (!mask.empty()) ok = ok && std::fwrite(mask.data(), 1, mask.size(), f) == mask.size();
    ok = ok && std::fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (std::fclose(f) == 0) && ok;
    if (!ok) {
        std::remove(tmp.c_str());
        FRUGAL_THROW("writing ", path, " failed: ", std::strerror(errno), " (is the disk full?)");
    }
    FRUGAL_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename ", tmp, " to ", path, ": ",
                 std::strerror(errno));
}

ShardReader::ShardReader(const std::string& path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0)
        FRUGAL_CONFIG_ERROR("cannot open token shard ", path, ": ", std::strerror(errno),
                            "; run `frugal prepare-data` first or fix data.dir");
    struct stat st {};
    ::fstat(fd, &st);
    map_bytes_ = size_t(st.st_size);
    if (map_bytes_ < size_t(kShardHeaderBytes)) {
        ::close(fd);
        FRUGAL_CONFIG_ERROR(path, " is ", map_bytes_, " bytes, shorter than a shard header: not a Frugal token shard");
    }
    map_ = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    FRUGAL_CHECK(map_ != MAP_FAILED, "mmap of ", path, " failed: ", std::strerror(errno));
    const auto* h = static_cast<const unsigned char*>(map_);
    uint32_t version = 0, dtype = 0, vocab = 0, flags = 0;
    uint64_t n = 0, docs = 0;
    std::memcpy(&version, h + 8, 4);
    std::memcpy(&dtype, h + 12, 4);
    std::memcpy(&n, h + 16, 8);
    std::memcpy(&docs, h + 24, 8);
    std::memcpy(&vocab, h + 32, 4);
    std::memcpy(&flags, h + 36, 4);
    auto fail = [&](const std::string& why) {
        ::munmap(map_, map_bytes_);
        map_ = nullptr;
        FRUGAL_CONFIG_ERROR(path, ": ", why);
    };
    if (std::memcmp(h, kShardMagic, 8) != 0) fail("bad magic: not a Frugal token shard");
    if (version != kShardVersion)
        fail("shard format version " + std::to_string(version) + ", this build reads version " +
             std::to_string(kShardVersion) + ": re-run `frugal prepare-data`");
    if (dtype != 2 && dtype != 4) fail("token dtype " + std::to_string(dtype) + " is neither 2 nor 4 bytes");
    const size_t mask_bytes = (flags & 1u) ? n : 0;
    if (map_bytes_ != size_t(kShardHeaderBytes) + n * dtype + mask_bytes)
        fail("file is " + std::to_string(map_bytes_) + " bytes, header says " + std::to_string(n) +
             " tokens: the shard is truncated or corrupt; re-run `frugal prepare-data`");
    dtype_bytes_ = int(dtype);
    num_tokens_ = int64_t(n);
    num_docs_ = int64_t(docs);
    vocab_size_ = int64_t(vocab);
    tokens_ = h + kShardHeaderBytes;
    if (flags & 1u) mask_ = h + kShardHeaderBytes + n * dtype;
    if (flags & 2u) {
        uint32_t eod = 0;
        std::memcpy(&eod, h + 40, 4);
        end_of_document_ = int32_t(eod);
    }
}

ShardReader::~ShardReader() {
    if (map_) ::munmap(map_, map_bytes_);
}

void ShardReader::read_targets(int32_t* out, int64_t begin, int64_t n) const {
    read(out, begin, n);
    if (mask_)
        for (int64_t i = 0; i < n; ++i)
            if (!mask_[begin + i]) out[i] = kIgnoreTarget;
}

void ShardReader::read(int32_t* out, int64_t begin, int64_t n) const {
    FRUGAL_CHECK(begin >= 0 && begin + n <= num_tokens_, "read [", begin, ", ", begin + n, ") past the end of ", path_,
                 " (", num_tokens_, " tokens)");
    if (dtype_bytes_ == 2) {
        const uint16_t* src = static_cast<const uint16_t*>(tokens_) + begin;
        for (int64_t i = 0; i < n; ++i) out[i] = int32_t(src[i]);
    } else {
        const uint32_t* src = static_cast<const uint32_t*>(tokens_) + begin;
        for (int64_t i = 0; i < n; ++i) out[i] = int32_t(src[i]);
    }
}

void document_starts(int32_t* start_BS, const int32_t* tokens_BS, int64_t b, int64_t s, int32_t end_of_document) {
    for (int64_t r = 0; r < b; ++r) {
        int32_t start = 0;
        for (int64_t i = 0; i < s; ++i) {
            if (i > 0 && tokens_BS[r * s + i - 1] == end_of_document) start = int32_t(i);
            start_BS[r * s + i] = start;
        }
    }
}

}  // namespace frugal::data
