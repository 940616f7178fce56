#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
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
        ok = ok && (buf.empty() || std::fwrite(buf.data(), 2, buf.size(), f) == buf.size());
    } else {
        std::vector<uint32_t> buf(tokens.begin(), tokens.end());
        ok = ok && (buf.empty() || std::fwrite(buf.data(), 4, buf.size(), f) == buf.size());
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

ShardHeader parse_shard_header(const unsigned char* h, size_t size, const std::string& path) {
    auto fail = [&](const std::string& why) -> void {
        FRUGAL_CONFIG_ERROR(path, ": ", why, "; re-run `frugal prepare-data` to rewrite it");
    };
    if (size < size_t(kShardHeaderBytes))
        FRUGAL_CONFIG_ERROR(path, " is ", size, " bytes, shorter than a shard header (", kShardHeaderBytes,
                            "): not a Frugal token shard; run `frugal prepare-data` or fix data.dir");
    uint32_t version = 0, dtype = 0, vocab = 0, flags = 0, eod = 0;
    uint64_t n = 0, docs = 0;
    std::memcpy(&version, h + 8, 4);
    std::memcpy(&dtype, h + 12, 4);
    std::memcpy(&n, h + 16, 8);
    std::memcpy(&docs, h + 24, 8);
    std::memcpy(&vocab, h + 32, 4);
    std::memcpy(&flags, h + 36, 4);
    std::memcpy(&eod, h + 40, 4);
    if (std::memcmp(h, kShardMagic, 8) != 0) fail("bad magic (bytes 0-7): not a Frugal token shard");
    if (version != kShardVersion)
        fail("shard format version " + std::to_string(version) + ", this build reads version " +
             std::to_string(kShardVersion));
    if (dtype != 2 && dtype != 4) fail("token dtype " + std::to_string(dtype) + " is neither 2 nor 4 bytes");
    if (flags & ~3u) fail("flags " + std::to_string(flags) + " set unknown bits (this build knows bits 0 and 1)");
    for (int64_t i = 44; i < kShardHeaderBytes; ++i)
        if (h[i] != 0) fail("reserved header byte " + std::to_string(i) + " is not zero");
    if (vocab == 0 || vocab > uint32_t(INT32_MAX))
        fail("vocabulary size " + std::to_string(vocab) + " is outside [1, 2^31 - 1]");
    if (dtype == 2 && vocab > 65536)
        fail("vocabulary size " + std::to_string(vocab) + " does not fit 2-byte tokens (at most 65536)");
    if (flags & 2u) {
        if (eod >= vocab)
            fail("end-of-document id " + std::to_string(eod) + " is outside the vocabulary of " +
                 std::to_string(vocab) + " tokens");
    } else if (eod != 0) {
        fail("end-of-document field is " + std::to_string(eod) + " but flag bit 1 (recorded) is not set");
    }
    // tokens x (dtype + mask byte) must be exactly the payload; dividing first keeps the product from wrapping.
    const uint64_t payload = uint64_t(size) - uint64_t(kShardHeaderBytes);
    const uint64_t per_token = dtype + ((flags & 1u) ? 1u : 0u);
    if (n > payload / per_token || n * per_token != payload)
        fail("file is " + std::to_string(size) + " bytes, header says " + std::to_string(n) + " tokens of " +
             std::to_string(dtype) + " bytes" + ((flags & 1u) ? " plus a loss mask" : "") + " (" +
             std::to_string(kShardHeaderBytes) + " + " + std::to_string(n) + " x " + std::to_string(per_token) +
             " bytes): the shard is truncated or corrupt");
    if (docs > n)
        fail("header says " + std::to_string(docs) + " documents in " + std::to_string(n) +
             " tokens (each document ends with a token)");
    ShardHeader r;
    r.dtype_bytes = int(dtype);
    r.num_tokens = int64_t(n);
    r.num_docs = int64_t(docs);
    r.vocab_size = int64_t(vocab);
    r.has_mask = (flags & 1u) != 0;
    r.end_of_document = (flags & 2u) ? int32_t(eod) : -1;
    return r;
}

ShardReader::ShardReader(const std::string& path) : path_(path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
        FRUGAL_CONFIG_ERROR("token shard ", path,
                            " is a directory, not a file: data.dir names the directory that "
                            "holds train.bin and val.bin");
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0)
        FRUGAL_CONFIG_ERROR("cannot open token shard ", path, ": ", std::strerror(errno),
                            "; run `frugal prepare-data` first or fix data.dir");
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        FRUGAL_CONFIG_ERROR("token shard ", path, " is not a regular file: run `frugal prepare-data` or fix data.dir");
    }
    map_bytes_ = size_t(st.st_size);
    if (map_bytes_ < size_t(kShardHeaderBytes)) {
        ::close(fd);
        parse_shard_header(nullptr, map_bytes_, path);  // throws: too short
    }
    map_ = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    FRUGAL_CHECK(map_ != MAP_FAILED, "mmap of ", path, " failed: ", std::strerror(errno));
    const auto* h = static_cast<const unsigned char*>(map_);
    ShardHeader hdr;
    try {
        hdr = parse_shard_header(h, map_bytes_, path);
    } catch (...) {
        ::munmap(map_, map_bytes_);
        map_ = nullptr;
        throw;
    }
    dtype_bytes_ = hdr.dtype_bytes;
    num_tokens_ = hdr.num_tokens;
    num_docs_ = hdr.num_docs;
    vocab_size_ = hdr.vocab_size;
    end_of_document_ = hdr.end_of_document;
    tokens_ = h + kShardHeaderBytes;
    if (hdr.has_mask) mask_ = h + kShardHeaderBytes + size_t(num_tokens_) * size_t(dtype_bytes_);
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
    FRUGAL_CHECK(n >= 0 && begin >= 0 && begin <= num_tokens_ && n <= num_tokens_ - begin, "read [", begin, ", ",
                 begin + n, ") past the end of ", path_, " (", num_tokens_, " tokens)");
    // One unsigned compare per token: an id past the vocabulary would index the embedding or the logits out of
    // bounds, as an input or as a target.
    uint32_t bad = 0;
    if (dtype_bytes_ == 2) {
        const uint16_t* src = static_cast<const uint16_t*>(tokens_) + begin;
        for (int64_t i = 0; i < n; ++i) {
            out[i] = int32_t(src[i]);
            bad |= uint32_t(src[i] >= vocab_size_);
        }
    } else {
        const uint32_t* src = static_cast<const uint32_t*>(tokens_) + begin;
        for (int64_t i = 0; i < n; ++i) {
            out[i] = int32_t(src[i]);
            bad |= uint32_t(src[i] >= vocab_size_);
        }
    }
    if (bad) [[unlikely]]
        for (int64_t i = 0; i < n; ++i) check_id(begin + i, token_raw(begin + i));
}

uint32_t ShardReader::token_raw(int64_t i) const {
    return dtype_bytes_ == 2 ? static_cast<const uint16_t*>(tokens_)[i] : static_cast<const uint32_t*>(tokens_)[i];
}

void ShardReader::check_id(int64_t i, uint32_t id) const {
    if (int64_t(id) >= vocab_size_)
        FRUGAL_CONFIG_ERROR(path_, ": token ", i, " has id ", id, ", outside the shard's vocabulary of ", vocab_size_,
                            " tokens (ids 0 to ", vocab_size_ - 1,
                            "): the shard is corrupt or was written with another tokenizer; re-run `frugal "
                            "prepare-data`");
}

int32_t ShardReader::token(int64_t i) const {
    FRUGAL_CHECK(i >= 0 && i < num_tokens_, "token ", i, " past the end of ", path_, " (", num_tokens_, " tokens)");
    check_id(i, token_raw(i));
    return int32_t(token_raw(i));
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
