// A reader of Hugging Face tokenizer.json for the BPE tokenizers of the model families Frugal imports:
//   - byte-level BPE (GPT-2, Qwen, OLMoE): optional Split pre-tokenizer with the model's regex, then ByteLevel
//     (bytes mapped to printable code points as in GPT-2); merges by rank;
//   - BPE with byte fallback and the Metaspace convention (Llama, Mixtral): the normalizer prepends and substitutes
//     U+2581 for spaces; unknown symbols fall back to <0xXX> byte tokens.
// Added and special tokens are matched on the raw text first (longest first); the pieces between them are
// normalized, pre-tokenized and encoded. The regexes run on PCRE2 with Unicode properties (UTF + UCP).
// Normalizers: NFC (by utf8proc), Prepend, Replace (string patterns) and Sequence; others are refused by name, as
// are WordPiece / Unigram models.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace YAML {
class Node;
}

namespace frugal::data {

class HfTokenizer {
  public:
    // Reads a tokenizer.json file; throws ConfigError naming the file, line and JSON path of what is wrong.
    explicit HfTokenizer(const std::string& tokenizer_json);
    // The same from the file's text; path is only quoted in messages.
    HfTokenizer(const std::string& json_text, const std::string& path);
    ~HfTokenizer();
    HfTokenizer(const HfTokenizer&) = delete;
    HfTokenizer& operator=(const HfTokenizer&) = delete;

    void encode(std::string_view text, std::vector<int32_t>& out) const;
    int64_t vocab_size() const { return vocab_size_; }
    // Id of a token (vocabulary or added), -1 when absent.
    int32_t token_id(const std::string& token) const;
    // The end-of-document token of the tokenizer: the first of <|endoftext|>, </s>, <|end_of_text|>, <eos> present.
    int32_t end_of_document() const;

  private:
    struct Step;  // one normalizer or pre-tokenizer step
    void load(const std::string& json_text);
    void load_model(const YAML::Node& root);
    void load_steps(const YAML::Node& root);
    void encode_piece(const std::string& normalized, std::vector<int32_t>& out) const;
    void bpe(const std::string& word, std::vector<int32_t>& out) const;

    std::unordered_map<std::string, int32_t> vocab_;
    std::map<std::pair<std::string, std::string>, int32_t> merges_;
    std::vector<std::pair<std::string, int32_t>> added_;  // longest first
    std::vector<std::unique_ptr<Step>> normalizers_, pre_tokenizers_;
    bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false, byte_level_ = false;
    int32_t unk_id_ = -1;
    int64_t vocab_size_ = 0;
    std::string path_;
};

}  // namespace frugal::data
