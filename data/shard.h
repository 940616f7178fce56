// Token shard files (format documented in docs/data-format.md):
//   offset  size  field
//   0       8     magic "FRGLTOKS"
//   8       4     format version (uint32, little-endian) = 1
//   12      4     token dtype: 2 = uint16, 4 = uint32
//   16      8     number of tokens (uint64)
//   24      8     number of documents (uint64)
//   32      4     vocabulary size (uint32)
//   36      4     flags (uint32): bit 0 = a loss mask follows the tokens; bit 1 = the next field is set
//   40      4     end-of-document token id (uint32), with flag bit 1
//   44      20    zero
//   64      ...   tokens, little-endian, each document followed by the end-of-document token
//   ...     n     with flag bit 0: one byte per token, 1 = the token is a training target, 0 = not (prompt tokens of
//                 prompt/completion data)
// Readers memory-map the file and check every header field against the file size before trusting it (magic,
// version, dtype, no unknown flag bits, reserved bytes zero, end-of-document id below the vocabulary, at most one
// document per token, and tokens x dtype + mask bytes == the file's payload, computed without overflow); every
// token id read is checked against the header's vocabulary.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace frugal::data {

inline constexpr char kShardMagic[8] = {'F', 'R', 'G', 'L', 'T', 'O', 'K', 'S'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr int64_t kShardHeaderBytes = 64;

// Writes atomically: to PATH.tmp, then rename.
// mask: empty, or one entry per token (1 = train on it as a target). end_of_document: the token that ends each
// document (-1: not recorded).
void write_shard(const std::string& path, const std::vector<int32_t>& tokens, int64_t num_docs, int64_t vocab_size,
                 const std::vector<uint8_t>& mask = {}, int32_t end_of_document = -1);

// A shard header checked against the size of the whole file (data: its first size bytes, at least the header).
struct ShardHeader {
    int dtype_bytes = 2;
    int64_t num_tokens = 0, num_docs = 0, vocab_size = 0;
    bool has_mask = false;
    int32_t end_of_document = -1;
};
// Throws ConfigError naming path, the field and its value when the header is not one this build reads or does not
// match the file size.
ShardHeader parse_shard_header(const unsigned char* data, size_t size, const std::string& path);

// Targets that carry no loss (the value model::kIgnoreIndex has).
inline constexpr int32_t kIgnoreTarget = -100;

class ShardReader {
  public:
    explicit ShardReader(const std::string& path);
    ~ShardReader();
    ShardReader(const ShardReader&) = delete;
    ShardReader& operator=(const ShardReader&) = delete;

    int64_t num_tokens() const { return num_tokens_; }
    int64_t num_docs() const { return num_docs_; }
    int64_t vocab_size() const { return vocab_size_; }
    // Token i (checked: inside the shard, below the vocabulary).
    int32_t token(int64_t i) const;
    // Copies tokens [begin, begin + n) into out; throws ConfigError naming the shard, the token index and its id when
    // an id is outside [0, vocab_size).
    void read(int32_t* out, int64_t begin, int64_t n) const;
    // Like read, with kIgnoreTarget where the loss mask says the token is not a target.
    void read_targets(int32_t* out, int64_t begin, int64_t n) const;
    bool has_mask() const { return mask_ != nullptr; }
    // The token that ends each document, or -1 when the shard does not record it (written before it did).
    int32_t end_of_document() const { return end_of_document_; }

  private:
    uint32_t token_raw(int64_t i) const;
    void check_id(int64_t i, uint32_t id) const;

    std::string path_;
    void* map_ = nullptr;
    size_t map_bytes_ = 0;
    const void* tokens_ = nullptr;
    const uint8_t* mask_ = nullptr;
    int64_t num_tokens_ = 0, num_docs_ = 0, vocab_size_ = 0;
    int dtype_bytes_ = 2;
    int32_t end_of_document_ = -1;
};

// Document-masked attention over packed windows: start_BS[i] = the position in its window where token i's document
// begins (0 for the first document of a window; a document begins after each end-of-document token). Attention
// then stays inside a document and positions restart at each document.
void document_starts(int32_t* start_BS, const int32_t* tokens_BS, int64_t b, int64_t s, int32_t end_of_document);

}  // namespace frugal::data
