#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "core/error.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "tests/util.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;

TEST(Data, PrepareSplitsFortunesAndRoundTrips) {
    fs::path dir = test::temp_dir("prepare");
    {
        std::ofstream f(dir / "quotes");
        for (int i = 0; i < 200; ++i) f << "fortune number " << i << "\nsecond line\n%\n";
        std::ofstream g(dir / "plain.txt");
        g << "a plain document\n%not a separator\n";
        std::ofstream dat(dir / "quotes.dat");
        dat << std::string("\x01\x02\x03", 3);
    }
    fs::create_symlink(dir / "quotes", dir / "quotes.u8");
    data::PrepareOptions opt;
    opt.inputs = {dir.string()};
    opt.out_dir = (dir / "out").string();
    opt.val_fraction = 0.1;
    data::PrepareReport r = data::prepare_data(opt);
    EXPECT_EQ(r.files, 2);  // .dat skipped, symlink to a taken file skipped
    EXPECT_EQ(r.train_docs + r.val_docs, 201);
    EXPECT_GT(r.val_docs, 5);
    EXPECT_LT(r.val_docs, 40);
    data::ShardReader train((dir / "out" / "train.bin").string());
    EXPECT_EQ(train.num_tokens(), r.train_tokens);
    EXPECT_EQ(train.num_docs(), r.train_docs);
    EXPECT_EQ(train.vocab_size(), 257);
    EXPECT_EQ(train.end_of_document(), data::ByteTokenizer::kEndOfDocument) << "recorded for document masking";
    // Documents end with the end-of-document token, and decode to the original text.
    std::vector<int32_t> toks(static_cast<size_t>(train.num_tokens()));
    train.read(toks.data(), 0, train.num_tokens());
    int64_t eods = 0;
    for (int32_t t : toks) eods += t == data::ByteTokenizer::kEndOfDocument;
    EXPECT_EQ(eods, r.train_docs);
    std::string text = data::ByteTokenizer().decode(toks.data(), int64_t(toks.size()));
    EXPECT_NE(text.find("second line\n<|eod|>"), std::string::npos);
    EXPECT_EQ(text.find("%\n"), std::string::npos);  // separators are not data
    EXPECT_NE(text.find("a plain document\n%not a separator\n<|eod|>"), std::string::npos);
    fs::remove_all(dir);
}

TEST(Data, ShardRejectsCorruptFiles) {
    fs::path dir = test::temp_dir("shard");
    std::vector<int32_t> toks = {1, 2, 3, 256, 4, 5, 256};
    const std::string path = (dir / "s.bin").string();
    data::write_shard(path, toks, 2, 257);
    {
        data::ShardReader ok(path);
        EXPECT_EQ(ok.token(3), 256);
        EXPECT_EQ(ok.end_of_document(), -1) << "not recorded";
    }
    data::write_shard(path, toks, 2, 257, {}, 256);
    {
        data::ShardReader ok(path);
        EXPECT_EQ(ok.end_of_document(), 256);
        EXPECT_EQ(ok.num_tokens(), 7);
    }
    fs::resize_file(path, fs::file_size(path) - 2);  // truncated
    EXPECT_THROW(data::ShardReader bad(path), ConfigError);
    {
        std::ofstream f(path, std::ios::binary);
        f << "NOTASHARD" << std::string(80, 'x');
    }
    EXPECT_THROW(data::ShardReader bad(path), ConfigError);
    EXPECT_THROW(data::ShardReader missing((dir / "missing.bin").string()), ConfigError);
    fs::remove_all(dir);
}

TEST(Data, OrderDependsOnlyOnSeedAndGlobalSampleIndex) {
    fs::path dir = test::temp_dir("loader");
    std::vector<int32_t> toks(10001);
    for (size_t i = 0; i < toks.size(); ++i) toks[i] = int32_t(i % 251);
    const std::string path = (dir / "t.bin").string();
    data::write_shard(path, toks, 1, 257);
    const int64_t s = 16, micro = 2, global = 8;
    data::Loader a(path, s, 7, true), b(path, s, 7, true), c(path, s, 8, true);
    EXPECT_EQ(a.num_samples(), 10000 / 16);
    // World 1 with 4 micro-batches reads exactly what 4 ranks with 1 micro-batch each read.
    for (int64_t step : {0, 3, 200}) {
        std::vector<int32_t> t1(static_cast<size_t>(micro * s)), y1(t1.size()), t4(t1.size()), y4(t1.size());
        for (int64_t m = 0; m < 4; ++m) {
            a.micro_batch(t1.data(), y1.data(), step * global, m, micro, 0, 1);
            b.micro_batch(t4.data(), y4.data(), step * global, 0, micro, m, 4);
            EXPECT_EQ(t1, t4);
            EXPECT_EQ(y1, y4);
            for (int64_t i = 0; i + 1 < s; ++i)
                EXPECT_EQ(y1[static_cast<size_t>(i)], t1[static_cast<size_t>(i + 1)]);  // targets shifted by one
        }
    }
    // Each epoch is a permutation of all samples; another seed gives another order.
    std::set<int64_t> seen;
    int64_t differ = 0;
    for (int64_t g = 0; g < a.num_samples(); ++g) {
        seen.insert(a.sample_index(g));
        differ += a.sample_index(g) != c.sample_index(g);
    }
    EXPECT_EQ(int64_t(seen.size()), a.num_samples());
    EXPECT_GT(differ, a.num_samples() / 2);
    fs::remove_all(dir);
}

}  // namespace
}  // namespace frugal

namespace frugal {
namespace {

TEST(Data, PromptCompletionJsonlMasksThePromptTargets) {
    fs::path dir = test::temp_dir("jsonl");
    {
        std::ofstream f(dir / "chat.jsonl");
        f << "{\"prompt\": \"Q: 2+2? A:\", \"completion\": \" 4\"}\n";
        f << "\n";
        f << "{\"text\": \"plain text\"}\n";
    }
    data::PrepareOptions opt;
    opt.inputs = {(dir / "chat.jsonl").string()};
    opt.out_dir = (dir / "out").string();
    opt.val_fraction = 0;
    data::PrepareReport r = data::prepare_data(opt);
    EXPECT_EQ(r.train_docs, 2);
    data::ShardReader shard((dir / "out" / "train.bin").string());
    ASSERT_TRUE(shard.has_mask());
    const std::string prompt = "Q: 2+2? A:", completion = " 4";
    const int64_t n = shard.num_tokens();
    std::vector<int32_t> t(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    shard.read(t.data(), 0, n);
    shard.read_targets(y.data(), 0, n);
    for (int64_t i = 0; i < n; ++i) {
        const bool in_prompt = i < int64_t(prompt.size());
        EXPECT_EQ(y[size_t(i)], in_prompt ? data::kIgnoreTarget : t[size_t(i)]) << "token " << i;
    }
    EXPECT_EQ(t[prompt.size() + completion.size()], data::ByteTokenizer::kEndOfDocument);
    // Bad JSONL names the line.
    std::ofstream(dir / "bad.jsonl") << "{\"text\": \"ok\"}\n{\"question\": 1}\n";
    opt.inputs = {(dir / "bad.jsonl").string()};
    try {
        data::prepare_data(opt);
        ADD_FAILURE() << "no error";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("bad.jsonl:2"), std::string::npos) << e.what();
    }
    fs::remove_all(dir);
}

}  // namespace
}  // namespace frugal
