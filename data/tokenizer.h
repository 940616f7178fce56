// Byte-level tokenizer: token i < 256 is byte i, token 256 ends a document. Lossless on any input, no vocabulary
// file; the Hugging Face tokenizer.json reader joins it later behind the same two calls.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace frugal::data {

class ByteTokenizer {
  public:
    static constexpr int32_t kEndOfDocument = 256;
    static constexpr int64_t kVocabSize = 257;
    void encode(std::string_view text, std::vector<int32_t>& out) const;
    std::string decode(const int32_t* tokens, int64_t n) const;
};

}  // namespace frugal::data
