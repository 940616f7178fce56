// Hostile token shards, JSONL lines and tokenizer.json files: each is refused with a ConfigError (exit code 2 from
// the CLI) whose message names the file, the place (token index, line, JSON path) and the value.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "core/error.h"
#include "data/hf_tokenizer.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "tests/util.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;
using test::config_error;
using test::expect_has;

struct Header {
    uint32_t version = 1, dtype = 2, vocab = 257, flags = 0, eod = 0;
    uint64_t n = 0, docs = 0;
    std::string bytes() const {
        std::string h(64, '\0');
        std::memcpy(&h[0], "FRGLTOKS", 8);
        std::memcpy(&h[8], &version, 4);
        std::memcpy(&h[12], &dtype, 4);
        std::memcpy(&h[16], &n, 8);
        std::memcpy(&h[24], &docs, 8);
        std::memcpy(&h[32], &vocab, 4);
        std::memcpy(&h[36], &flags, 4);
        std::memcpy(&h[40], &eod, 4);
        return h;
    }
};

class HostileShard : public ::testing::Test {
  protected:
    void SetUp() override { dir_ = test::temp_dir("hostile_shard"); }
    void TearDown() override { fs::remove_all(dir_); }
    std::string write(const std::string& bytes) {
        const std::string path = (dir_ / "s.bin").string();
        std::ofstream(path, std::ios::binary) << bytes;
        return path;
    }
    std::string rejected(const Header& h, size_t payload) {
        const std::string path = write(h.bytes() + std::string(payload, '\0'));
        return config_error([&] { data::ShardReader r(path); });
    }
    fs::path dir_;
};

TEST_F(HostileShard, TokenCountThatWrapsIsRefused) {
    // n x 2 wraps to 8 (mod 2^64): the old size check passed and reads ran 2^63 tokens past the map.
    Header h;
    h.n = (uint64_t(1) << 63) + 4;
    expect_has(rejected(h, 8), {"s.bin", "header says 9223372036854775812 tokens", "truncated or corrupt"});
    h.n = (uint64_t(1) << 63) + 2;  // with a mask: n x 3 wraps too
    h.flags = 1;
    expect_has(rejected(h, 6), {"s.bin", "tokens of 2 bytes plus a loss mask"});
}

TEST_F(HostileShard, EveryHeaderFieldIsChecked) {
    Header h;
    h.n = 4;
    h.docs = 5;
    expect_has(rejected(h, 8), {"s.bin", "5 documents in 4 tokens"});
    h.docs = 1;
    h.flags = 4;
    expect_has(rejected(h, 8), {"flags 4 set unknown bits"});
    h.flags = 2;
    h.eod = 257;
    expect_has(rejected(h, 8), {"end-of-document id 257 is outside the vocabulary of 257"});
    h.flags = 0;
    h.eod = 3;
    expect_has(rejected(h, 8), {"end-of-document field is 3 but flag bit 1"});
    h.eod = 0;
    h.vocab = 0;
    expect_has(rejected(h, 8), {"vocabulary size 0"});
    h.vocab = 70000;
    expect_has(rejected(h, 8), {"vocabulary size 70000 does not fit 2-byte tokens"});
    h.vocab = 257;
    h.dtype = 3;
    expect_has(rejected(h, 8), {"token dtype 3"});
    h.dtype = 2;
    h.version = 9;
    expect_has(rejected(h, 8), {"shard format version 9"});
    h.version = 1;
    h.flags = 1;  // a mask of 4 bytes is missing
    expect_has(rejected(h, 8), {"plus a loss mask", "truncated or corrupt"});
    h.flags = 0;
    std::string bytes = h.bytes() + std::string(8, '\0');
    bytes[50] = 1;
    const std::string path = write(bytes);
    expect_has(config_error([&] { data::ShardReader r(path); }), {"reserved header byte 50"});
    expect_has(config_error([&] { data::ShardReader r(dir_.string()); }), {"is a directory"});
}

TEST_F(HostileShard, AnIdPastTheVocabularyIsRefusedAsATargetToo) {
    // The last token is only ever a target: the old loader range-checked inputs only.
    std::vector<int32_t> toks(33, 5);
    toks.back() = 300;
    const std::string path = (dir_ / "t.bin").string();
    data::write_shard(path, toks, 1, 257);
    data::Loader loader(path, 32, 1, false);
    std::vector<int32_t> x(32), y(32);
    expect_has(config_error([&] { loader.read_samples(x.data(), y.data(), 0, 1); }),
               {"t.bin", "token 32 has id 300", "vocabulary of 257 tokens"});
    data::ShardReader r(path);
    expect_has(config_error([&] { r.token(32); }), {"token 32 has id 300"});
    EXPECT_EQ(r.token(31), 5);
}

TEST_F(HostileShard, TrainingOnAShardWithABadTargetExitsTwo) {
    std::vector<int32_t> toks(300, 7);
    toks.back() = 1000;
    data::write_shard((dir_ / "train.bin").string(), toks, 1, 257);
    data::write_shard((dir_ / "val.bin").string(), std::vector<int32_t>(300, 7), 1, 257);
    const auto r = test::run_frugal(
        "train " + std::string(FRUGAL_SOURCE_DIR) + "/configs/demo.yaml --set data.dir=" + dir_.string() +
        " --set run.out_dir=" + (dir_ / "run").string() +
        " --set train.steps=2 --set train.seq_len=299 --set train.global_batch=1 "
        "--set train.micro_batch=1 --set model.max_seq_len=299 --set model.n_layers=1 "
        "--set model.d_model=32 --set model.n_heads=2 --set model.n_kv_heads=2 --set parallel.ep=1 "
        "--set model.dense_layers=0 --set moe.n_experts=2 --set moe.d_expert=16 --set model.d_ff=16 "
        "--set train.eval_every=0");
    EXPECT_EQ(r.code, 2) << r.output;
    expect_has(r.output, {"train.bin", "token 299 has id 1000", "vocabulary of 257"});
}

TEST(HostileJsonl, EveryBadLineIsNamedByFileAndLine) {
    auto err = [](const std::string& text) { return config_error([&] { data::parse_jsonl(text, "in.jsonl"); }); };
    expect_has(err("{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n"), {"in.jsonl:2", "not valid JSON"});
    expect_has(err("{\"text\": \"ok\"}\n\n{\"body\": \"x\"}\n"), {"in.jsonl:3", "no \"text\""});
    expect_has(err("{\"prompt\": \"only a prompt\"}\n"), {"in.jsonl:1", "\"completion\""});
    expect_has(err("[\"a\", \"b\"]\n"), {"in.jsonl:1", "not a JSON object"});
    expect_has(err("plain text line\n"), {"in.jsonl:1", "not a JSON object"});
    expect_has(err("{\"text\": 5}\n"), {"in.jsonl:1", "\"text\" must be a JSON string", "'5'"});
    expect_has(err("{\"text\": [\"a\"]}\n"), {"in.jsonl:1", "a list"});
    expect_has(err("{\"text\": {\"a\": 1}}\n"), {"in.jsonl:1", "an object"});
    expect_has(err("{\"prompt\": \"p\", \"completion\": null}\n"), {"\"completion\" must be a JSON string", "null"});
    const auto docs =
        data::parse_jsonl("{\"text\": \"a\", \"id\": 1}\n\n{\"prompt\": \"p\", \"completion\": \"c\"}\n", "in.jsonl");
    ASSERT_EQ(docs.size(), 2u);
    EXPECT_EQ(docs[0].text, "a");
    EXPECT_EQ(docs[1].prompt, "p");
    EXPECT_EQ(docs[1].text, "c");
}

TEST(HostileJsonl, PrepareDataNamesTheLineAndRefusesAFileAsOutDir) {
    const fs::path dir = test::temp_dir("hostile_jsonl");
    std::ofstream(dir / "d.jsonl") << "{\"text\": \"fine\"}\n{\"text\": 3.5}\n";
    std::ofstream(dir / "file") << "x";
    auto r = test::run_frugal("prepare-data " + (dir / "d.jsonl").string() + " --out " + (dir / "out").string());
    EXPECT_EQ(r.code, 2) << r.output;
    expect_has(r.output, {"d.jsonl:2", "\"text\" must be a JSON string"});
    data::PrepareOptions opt;
    std::ofstream(dir / "ok.txt") << "text";
    opt.inputs = {(dir / "ok.txt").string()};
    opt.out_dir = (dir / "file").string();
    expect_has(config_error([&] { data::prepare_data(opt); }), {"is a file, not a directory"});
    opt.out_dir = (dir / "out").string();
    opt.tokenizer = dir.string();
    expect_has(config_error([&] { data::prepare_data(opt); }), {"is a directory, not a file", "tokenizer.json"});
    fs::remove_all(dir);
}

TEST(HostileTokenizer, MalformedFieldsAreNamedByJsonPath) {
    auto err = [](const std::string& json) { return config_error([&] { data::HfTokenizer t(json, "tok.json"); }); };
    const std::string model = R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]})";
    expect_has(err(R"({"model": {"type": "BPE", "vocab": {"a": -1}}})"),
               {"tok.json:1:", "model.vocab[\"a\"]", "-1", "out of range"});
    expect_has(err(R"({"model": {"type": "BPE", "vocab": {"a": "zero"}}})"), {"model.vocab[\"a\"]", "the string"});
    expect_has(err(R"({"model": {"type": "BPE", "vocab": {"a": 99999999999}}})"), {"out of range"});
    expect_has(err(R"({"model": {"type": "BPE", "vocab": {"a": 0, "a": 1}}})"), {"\"a\" appears twice"});
    expect_has(err(R"({"model": {"type": "BPE", "vocab": {}}})"), {"model.vocab", "non-empty"});
    expect_has(err(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": "a b"}})"), {"model.merges", "a list"});
    expect_has(err(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a"]]}})"), {"model.merges[0]"});
    expect_has(err(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [5, "ab"]}})"),
               {"model.merges[0]", "malformed merge '5'"});
    expect_has(err("{" + model + R"(, "added_tokens": [{"content": "x"}]})"), {"added_tokens[0]", "\"id\""});
    expect_has(err("{" + model + R"(, "added_tokens": [{"content": ["x"], "id": 3}]})"),
               {"added_tokens[0].content", "a list"});
    expect_has(err("{" + model + R"(, "normalizer": {"type": "Lowercase"}})"), {"normalizer", "'Lowercase'"});
    expect_has(err("{" + model + R"(, "normalizer": {"type": "Sequence", "normalizers": [{"no": 1}]}})"),
               {"normalizer.normalizers[0]", "\"type\""});
    expect_has(err("{" + model +
                   R"(, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated"}})"),
               {"pre_tokenizer.pattern", "regex does not compile"});
    expect_has(err("{" + model + R"(, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": "yes"}})"),
               {"pre_tokenizer.add_prefix_space", "the string"});
    expect_has(err("{\"model\": "), {"tok.json:", "not valid JSON"});
    // What --tokenizer does not expect: a config.json, a WordPiece tokenizer, a JSON list.
    expect_has(err(R"({"model_type": "mixtral", "vocab_size": 32000})"), {"not a Hugging Face tokenizer.json"});
    expect_has(err(R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})"), {"only BPE", "WordPiece"});
    expect_has(err("[1, 2]"), {"not a Hugging Face tokenizer.json"});
    // A tokenizer that cannot encode a character names it instead of failing an internal check.
    data::HfTokenizer t("{" + model + "}", "tok.json");
    std::vector<int32_t> ids;
    expect_has(config_error([&] { t.encode("ca", ids); }), {"tok.json", "cannot encode 'c'"});
}

}  // namespace
}  // namespace frugal
