#include "data/tokenizer.h"

namespace frugal::data {

void ByteTokenizer::encode(std::string_view text, std::vector<int32_t>& out) const {
    for (unsigned char c : text) out.push_back(int32_t(c));
}

std::string ByteTokenizer::decode(const int32_t* tokens, int64_t n) const {
    std::string s;
    for (int64_t i = 0; i < n; ++i) {
        if (tokens[i] >= 0 && tokens[i] < 256)
            s.push_back(char(tokens[i]));
        else if (tokens[i] == kEndOfDocument)
            s += "<|eod|>";
    }
    return s;
}

}  // namespace frugal::data
