// tokenizer.json reader against the `tokenizers` library (tests/golden/make_tokenizers.py): the ids of a text with
// English, code, Chinese, emoji, whitespace runs and special tokens, for a byte-level BPE (Qwen style) and a
// byte-fallback Metaspace BPE (Llama/Mixtral style).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "data/hf_tokenizer.h"

namespace frugal {
namespace {

const std::string kDir = std::string(FRUGAL_SOURCE_DIR) + "/tests/golden/tokenizers/";

std::string read(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::vector<int32_t> ids(const std::string& path) {
    std::ifstream f(path);
    std::vector<int32_t> out;
    int32_t x;
    while (f >> x) out.push_back(x);
    return out;
}

void expect_same(const char* kind) {
    data::HfTokenizer tok(kDir + kind + ".json");
    std::vector<int32_t> got;
    tok.encode(read(kDir + "sample.txt"), got);
    const auto want = ids(kDir + kind + ".ids");
    ASSERT_FALSE(want.empty());
    size_t i = 0;
    while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
    EXPECT_EQ(got.size(), want.size()) << kind;
    EXPECT_EQ(i, want.size()) << kind << ": first difference at id " << i << " (frugal "
                              << (i < got.size() ? got[i] : -1) << ", tokenizers " << (i < want.size() ? want[i] : -1)
                              << ")";
}

TEST(HfTokenizer, ByteLevelBpeMatchesTheTokenizersLibrary) { expect_same("bytelevel"); }
TEST(HfTokenizer, MetaspaceByteFallbackBpeMatchesTheTokenizersLibrary) { expect_same("metaspace"); }

TEST(HfTokenizer, SpecialTokensEncodeAsOneIdEachAndAMissingFileIsAConfigError) {
    data::HfTokenizer tok(kDir + "bytelevel.json");
    EXPECT_EQ(tok.end_of_document(), tok.token_id("<|endoftext|>"));
    std::vector<int32_t> out;
    tok.encode("<|im_start|><|endoftext|>", out);
    EXPECT_EQ(out, (std::vector<int32_t>{tok.token_id("<|im_start|>"), tok.token_id("<|endoftext|>")}));
    EXPECT_GT(tok.vocab_size(), 256);
    EXPECT_THROW(data::HfTokenizer(kDir + "missing.json"), ConfigError);
}

}  // namespace
}  // namespace frugal

#include <filesystem>

#include "data/prepare.h"
#include "data/shard.h"
#include "tests/util.h"

namespace frugal {
namespace {

TEST(HfTokenizer, PrepareDataUsesIt) {
    auto dir = test::temp_dir("tokprep");
    std::ofstream(dir / "a.txt") << "Hello, world!\n%\nSecond document.\n";
    data::PrepareOptions opt;
    opt.inputs = {(dir / "a.txt").string()};
    opt.out_dir = (dir / "out").string();
    opt.val_fraction = 0;
    opt.tokenizer = kDir + "bytelevel.json";
    data::prepare_data(opt);
    data::HfTokenizer tok(opt.tokenizer);
    data::ShardReader shard((dir / "out" / "train.bin").string());
    EXPECT_EQ(shard.vocab_size(), tok.vocab_size());
    EXPECT_EQ(shard.num_docs(), 2);
    std::vector<int32_t> want;
    tok.encode("Hello, world!\n", want);
    want.push_back(tok.end_of_document());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(shard.token(int64_t(i)), want[i]) << i;
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace frugal
