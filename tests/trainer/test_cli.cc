// The `frugal` command line as its users and scripts see it: every command that prints results prints, with
// --json, exactly one valid JSON document on stdout and nothing else there (logs go to stderr), also under
// `frugal launch -n 2 score`; an unknown flag or a flag without its value exits 2 naming it, the nearest valid
// flag and the valid ones; --help lists every flag; the JSON writer, the flag parser and the progress lines
// (rate and time left, on a fake clock) hold their rules.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <yaml-cpp/yaml.h>

#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/flags.h"
#include "core/json.h"
#include "core/progress.h"
#include "tests/util.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;

// A strict JSON checker (RFC 8259): YAML::Load accepts far more than JSON (a plain line of text is a YAML
// scalar), so the documents are first checked here, then read with yaml-cpp for their fields.
class JsonChecker {
  public:
    explicit JsonChecker(const std::string& s) : s_(s) {}
    // True when s is exactly one JSON value, surrounded by whitespace at most.
    bool one_document() {
        ws();
        if (!value()) return false;
        ws();
        return i_ == s_.size();
    }
    size_t where() const { return i_; }

  private:
    void ws() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
    }
    bool lit(const char* w) {
        const std::string t(w);
        if (s_.compare(i_, t.size(), t) != 0) return false;
        i_ += t.size();
        return true;
    }
    bool digits() {
        const size_t b = i_;
        while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
        return i_ > b;
    }
    bool number() {
        if (i_ < s_.size() && s_[i_] == '-') ++i_;
        if (i_ < s_.size() && s_[i_] == '0')
            ++i_;
        else if (!digits())
            return false;
        if (i_ < s_.size() && s_[i_] == '.' && (++i_, !digits())) return false;
        if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
            ++i_;
            if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
            if (!digits()) return false;
        }
        return true;
    }
    bool string() {
        if (s_[i_] != '"') return false;
        for (++i_; i_ < s_.size(); ++i_) {
            const unsigned char c = static_cast<unsigned char>(s_[i_]);
            if (c == '"') return ++i_, true;
            if (c < 0x20) return false;
            if (c == '\\') {
                if (++i_ >= s_.size()) return false;
                if (s_[i_] == 'u') {
                    for (int k = 0; k < 4; ++k)
                        if (++i_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_]))) return false;
                } else if (std::string("\"\\/bfnrt").find(s_[i_]) == std::string::npos) {
                    return false;
                }
            }
        }
        return false;
    }
    template <typename Item>
    bool sequence(char close, Item item) {
        ++i_;
        ws();
        if (i_ < s_.size() && s_[i_] == close) return ++i_, true;
        for (;;) {
            ws();
            if (!item()) return false;
            ws();
            if (i_ >= s_.size()) return false;
            if (s_[i_] == close) return ++i_, true;
            if (s_[i_++] != ',') return false;
        }
    }
    bool value() {
        if (i_ >= s_.size()) return false;
        const char c = s_[i_];
        if (c == '{')
            return sequence('}', [&] {
                if (i_ >= s_.size() || !string()) return false;
                ws();
                if (i_ >= s_.size() || s_[i_++] != ':') return false;
                ws();
                return value();
            });
        if (c == '[') return sequence(']', [&] { return value(); });
        if (c == '"') return string();
        if (c == 't') return lit("true");
        if (c == 'f') return lit("false");
        if (c == 'n') return lit("null");
        return number();
    }
    const std::string& s_;
    size_t i_ = 0;
};

// Fails unless text is one JSON document; returns it parsed.
YAML::Node json_document(const std::string& text, const std::string& what) {
    JsonChecker c(text);
    EXPECT_TRUE(c.one_document()) << what << ": stdout is not one JSON document (stops at byte " << c.where() << "):\n"
                                  << text;
    try {
        return YAML::Load(text);
    } catch (const YAML::Exception& e) {
        ADD_FAILURE() << what << ": yaml-cpp cannot read it back: " << e.what();
        return YAML::Node();
    }
}

struct Outcome {
    int code;
    std::string out, err;
};

// build/frugal with args (shell-quoted by the caller), stdout and stderr apart.
Outcome frugal(const std::string& args, const fs::path& dir) {
    const fs::path err = dir / "stderr.txt";
    const std::string cmd = std::string(FRUGAL_BINARY) + " " + args + " 2>" + err.string();
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    std::array<char, 4096> buf{};
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
    const int status = pclose(p);
    std::ifstream e(err);
    std::stringstream es;
    es << e.rdbuf();
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out, es.str()};
}

// A two-step training run of a tiny MoE model (every layer MoE, so that it exports to qwen3_moe), made once and
// only read by the tests: its run directory (cost.json), its checkpoint, and a text to score.
class CommandLine : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
        ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
        fixture_ = new fs::path(test::temp_dir("cli_fixture"));
        if (test::test_corpus().empty()) return;
        const test::CliResult r = test::run_frugal(
            "train " + std::string(FRUGAL_SOURCE_DIR) + "/configs/demo.yaml --set data.dir=" +
            test::test_corpus().string() + " --set run.out_dir=" + (*fixture_ / "run").string() +
            " --set train.steps=2 --set checkpoint.every=2 --set train.seq_len=32 --set model.max_seq_len=32"
            " --set train.global_batch=4 --set train.micro_batch=4 --set model.n_layers=2 --set model.d_model=32"
            " --set model.n_heads=2 --set model.n_kv_heads=1 --set model.d_ff=64 --set model.dense_layers=0"
            " --set moe.n_experts=4 --set moe.d_expert=16 --set moe.n_shared_experts=0 --set parallel.ep=1"
            " --set train.eval_every=0");
        train_output_ = new std::string(r.output);
        std::ofstream(*fixture_ / "text.txt") << "A fortune a day keeps the doctor away.\n";
    }
    static void TearDownTestSuite() {
        fs::remove_all(*fixture_);
        delete fixture_;
        delete train_output_;
    }
    void SetUp() override {
        ASSERT_FALSE(test::test_corpus().empty()) << "the fortunes package is missing";
        ASSERT_TRUE(fs::exists(ckpt())) << "the fixture run failed:\n" << *train_output_;
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        dir_ = test::temp_dir(std::string("cli_") + info->name());
    }
    void TearDown() override { fs::remove_all(dir_); }

    static fs::path run_dir() { return *fixture_ / "run"; }
    static std::string ckpt() { return (*fixture_ / "run" / "checkpoints" / "step_00000002.h5").string(); }
    static std::string text() { return (*fixture_ / "text.txt").string(); }

    // Runs a --json command: exit 0, one JSON document on stdout; returns it.
    YAML::Node json(const std::string& args) {
        const Outcome r = frugal(args, dir_);
        EXPECT_EQ(r.code, 0) << args << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err;
        return json_document(r.out, args);
    }

    static fs::path* fixture_;
    static std::string* train_output_;
    fs::path dir_;
};
fs::path* CommandLine::fixture_ = nullptr;
std::string* CommandLine::train_output_ = nullptr;

TEST_F(CommandLine, ReportJsonUnderARunDirectoryIsTheCostDocument) {
    const YAML::Node d = json("report " + run_dir().string() + " --json");
    EXPECT_EQ(d["ranks"].as<int64_t>(), 1);
    EXPECT_GT(d["device_hours"].as<double>(), 0);
    EXPECT_GT(d["tokens"].as<double>(), 0);
    EXPECT_TRUE(d["phases"]["compute"]["device_hours"].IsDefined());
    // The text report is not what --json prints.
    const Outcome text = frugal("report " + run_dir().string(), dir_);
    EXPECT_EQ(text.code, 0);
    EXPECT_FALSE(JsonChecker(text.out).one_document());
}

TEST_F(CommandLine, ScoreJsonHasOneLogProbabilityPerTokenAfterTheFirst) {
    const YAML::Node d = json("score " + ckpt() + " --text-file " + text() + " --json");
    const size_t n = d["token_ids"].size();
    EXPECT_EQ(n, std::string("A fortune a day keeps the doctor away.\n").size());
    EXPECT_EQ(d["num_tokens"].as<size_t>(), n - 1);
    EXPECT_EQ(d["logprobs"].size(), n - 1);
    double sum = 0;
    for (const auto& lp : d["logprobs"]) sum -= lp.as<double>();
    EXPECT_NEAR(d["mean_nll"].as<double>(), sum / double(n - 1), 1e-9);
    EXPECT_NEAR(d["perplexity"].as<double>(), std::exp(d["mean_nll"].as<double>()), 1e-6);
}

TEST_F(CommandLine, LaunchedScoreJsonPrintsOneDocumentFromOneRankAndTheLauncherPrintsNothingThere) {
    const Outcome r = frugal("launch -n 2 score " + ckpt() + " --text-file " + text() + " --json", dir_);
    ASSERT_EQ(r.code, 0) << r.out << "\n" << r.err;
    const YAML::Node d = json_document(r.out, "launch -n 2 score --json");
    const YAML::Node one = json("score " + ckpt() + " --text-file " + text() + " --json");
    EXPECT_EQ(d["num_tokens"].as<int64_t>(), one["num_tokens"].as<int64_t>());
    EXPECT_NEAR(d["mean_nll"].as<double>(), one["mean_nll"].as<double>(), 1e-5);
    test::expect_has(r.err, {"launch: mpirun", "score:"});
}

TEST_F(CommandLine, CkptInspectAndVerifyJsonDescribeTheCheckpoint) {
    const YAML::Node in = json("ckpt inspect " + ckpt() + " --json");
    EXPECT_EQ(in["step"].as<int64_t>(), 2);
    EXPECT_GT(in["parameters"].as<int64_t>(), 0);
    EXPECT_NE(in["model_config"].as<std::string>().find("d_model: 32"), std::string::npos);
    const YAML::Node v = json("ckpt verify " + ckpt() + " --json");
    EXPECT_TRUE(v["ok"].as<bool>());
    EXPECT_EQ(v["datasets"].as<int64_t>(), in["datasets"].as<int64_t>());
    EXPECT_EQ(v["bytes"].as<int64_t>(), in["bytes_with_optimizer"].as<int64_t>());
}

TEST_F(CommandLine, CkptVerifyJsonOfADamagedFileSaysNotOkAndExitsOne) {
    const fs::path bad = dir_ / "bad.h5";
    fs::copy_file(ckpt(), bad);
    fs::resize_file(bad, fs::file_size(bad) / 2);
    const Outcome r = frugal("ckpt verify " + bad.string() + " --json", dir_);
    EXPECT_EQ(r.code, 1) << r.err;
    const YAML::Node d = json_document(r.out, "ckpt verify --json of a damaged file");
    EXPECT_FALSE(d["ok"].as<bool>());
    EXPECT_FALSE(d["error"].as<std::string>().empty());
}

TEST_F(CommandLine, EstimateJsonIsOneDocument) {
    const YAML::Node d = json("estimate " + std::string(FRUGAL_SOURCE_DIR) +
                              "/configs/models/qwen3-30b-a3b.yaml --tokens 1T --gpu "
                              "h800 --gpus 64 --mfu 0.4 --json");
    EXPECT_GT(d["gpu_hours"].as<double>(), 0);
    EXPECT_GT(d["total_params"].as<double>(), d["active_params"].as<double>());
}

TEST_F(CommandLine, ConfigDocsAndPrintJsonAreTyped) {
    const YAML::Node docs = json("config --docs --json");
    ASSERT_GT(docs["keys"].size(), 10u);
    bool has_lr = false;
    for (const auto& k : docs["keys"]) has_lr |= k["key"].as<std::string>() == "optim.lr";
    EXPECT_TRUE(has_lr);
    const Outcome r = frugal("config --print " + std::string(FRUGAL_SOURCE_DIR) +
                                 "/configs/demo.yaml --set parallel.ep=1 --set train.steps=7 --json",
                             dir_);
    ASSERT_EQ(r.code, 0) << r.err;
    const YAML::Node d = json_document(r.out, "config --print --json");
    // Typed, not strings: the checker saw a number, yaml-cpp reads it back.
    EXPECT_NE(r.out.find("\"steps\": 7"), std::string::npos) << r.out;
    EXPECT_EQ(d["train"]["steps"].as<int64_t>(), 7);
    EXPECT_TRUE(d["train"]["freeze"].IsSequence());
}

TEST_F(CommandLine, PrepareDataJsonSummarizesTheShards) {
    std::ofstream(dir_ / "in.txt") << "one document\n";
    const YAML::Node d = json("prepare-data " + (dir_ / "in.txt").string() + " --out " + (dir_ / "out").string() +
                              " --val-fraction 0 --json");
    EXPECT_EQ(d["files"].as<int64_t>(), 1);
    EXPECT_EQ(d["train_documents"].as<int64_t>(), 1);
    EXPECT_EQ(d["train_tokens"].as<int64_t>(), int64_t(std::string("one document\n").size()) + 1);
    EXPECT_TRUE(fs::exists(d["train_file"].as<std::string>()));
}

TEST_F(CommandLine, ExportAndImportJsonSummarizeWhatWasWritten) {
    const fs::path hf = dir_ / "hf", back = dir_ / "back.h5";
    const YAML::Node e = json("export-hf " + ckpt() + " --out " + hf.string() + " --dtype f32 --json");
    EXPECT_EQ(e["model_type"].as<std::string>(), "qwen3_moe");
    int64_t sum = 0;
    for (const auto& f : e["files"]) {
        EXPECT_EQ(f["bytes"].as<int64_t>(), int64_t(fs::file_size(hf / f["name"].as<std::string>())));
        sum += f["bytes"].as<int64_t>();
    }
    EXPECT_EQ(e["bytes"].as<int64_t>(), sum);
    const YAML::Node i = json("import-hf " + hf.string() + " --out " + back.string() + " --json");
    EXPECT_EQ(i["bytes"].as<int64_t>(), int64_t(fs::file_size(back)));
    const YAML::Node orig = json("ckpt inspect " + ckpt() + " --json");
    EXPECT_EQ(i["parameters"].as<int64_t>(), orig["parameters"].as<int64_t>());
}

TEST_F(CommandLine, AnUnknownFlagIsRefusedWithExitTwoInEveryCommand) {
    const std::vector<std::string> commands = {"train " + std::string(FRUGAL_SOURCE_DIR) + "/configs/demo.yaml",
                                               "prepare-data in.txt --out o",
                                               "config --docs",
                                               "ckpt inspect " + ckpt(),
                                               "report " + run_dir().string(),
                                               "estimate m --tokens 1T",
                                               "import-hf d --out o.h5",
                                               "export-hf c.h5 --out o",
                                               "score m --text-file t",
                                               "launch -n 2 cfg.yaml"};
    for (const std::string& c : commands) {
        const Outcome r = frugal(c + " --jsno", dir_);
        EXPECT_EQ(r.code, 2) << c << "\n" << r.err;
        EXPECT_TRUE(r.out.empty()) << c << ": " << r.out;
        test::expect_has(r.err, {"unknown option '--jsno'", "Valid options:"});
    }
    // The nearest flag is suggested where there is a near one.
    test::expect_has(frugal("score m --text-file t --jsno", dir_).err, {"did you mean '--json'?"});
    test::expect_has(frugal("train cfg.yaml --sett a=b", dir_).err, {"did you mean '--set'?"});
}

TEST_F(CommandLine, AFlagWithoutItsValueIsRefusedWithExitTwo) {
    for (const std::string c :
         {"prepare-data in.txt --out", "score m --text-file", "export-hf c.h5 --out", "import-hf d --out",
          "estimate m --tokens", "config --print", "launch -n", "train cfg.yaml --set", "score m --text-file --json"}) {
        const Outcome r = frugal(c, dir_);
        EXPECT_EQ(r.code, 2) << c << "\n" << r.err;
        test::expect_has(r.err, {"needs a value", "Valid options:"});
    }
}

TEST_F(CommandLine, HelpOfEveryCommandDescribesEveryFlagItAccepts) {
    const std::map<std::string, std::vector<std::string>> flags = {
        {"train", {"--set"}},
        {"prepare-data", {"--out", "--val-fraction", "--seed", "--format", "--tokenizer", "--json"}},
        {"config", {"--docs", "--print", "--set", "--json"}},
        {"ckpt", {"inspect", "verify", "--json"}},
        {"report", {"--json"}},
        {"estimate",
         {"--tokens", "--gpu", "--gpus", "--mfu", "--gpu-hours-per-trillion-tokens", "--tokens-per-gpu-second",
          "--from-run", "--seq-len", "--ep", "--pp", "--tp", "--zero", "--fp8", "--no-flash-attention", "--price",
          "--hardware", "--json"}},
        {"import-hf", {"--out", "--force", "--json"}},
        {"export-hf", {"--out", "--dtype", "--model-type", "--config", "--force", "--json"}},
        {"score", {"--text-file", "--tokenizer", "--seq-len", "--stride", "--ep", "--timeout", "--json"}},
        {"launch",
         {"-n", "--set", "--hostfile", "--max-restarts", "--dry-run", "--slurm-script", "--nodes", "--gpus-per-node",
          "--time"}}};
    for (const auto& [cmd, names] : flags) {
        const Outcome r = frugal(cmd + " --help", dir_);
        EXPECT_EQ(r.code, 0) << cmd;
        // Each flag starts a line of the options list: "  --out DIR   meaning", "  -n,--ranks N   ...".
        for (const std::string& n : names) {
            const bool listed =
                r.out.find("\n  " + n + " ") != std::string::npos || r.out.find("\n  " + n + ",") != std::string::npos;
            EXPECT_TRUE(listed) << cmd << " --help lacks " << n << ":\n" << r.out;
        }
    }
}

TEST(JsonWriter, EscapesStringsAndWritesNonFiniteNumbersAsNull) {
    JsonWriter w;
    w.begin_object()
        .field("text", std::string("a \"quote\", a \\ and a\nnewline\x01"))
        .field("nan", std::numeric_limits<double>::quiet_NaN())
        .field("inf", -std::numeric_limits<double>::infinity())
        .field("x", 0.1)
        .field("n", int64_t(-3))
        .array("v", std::vector<double>{1.5, std::numeric_limits<double>::infinity()})
        .end_object();
    const std::string s = w.str();
    EXPECT_EQ(s,
              "{\"text\": \"a \\\"quote\\\", a \\\\ and a\\nnewline\\u0001\", \"nan\": null, \"inf\": null, "
              "\"x\": 0.1, \"n\": -3, \"v\": [1.5, null]}\n");
    const YAML::Node d = json_document(s, "JsonWriter");
    EXPECT_EQ(d["text"].as<std::string>(), "a \"quote\", a \\ and a\nnewline\x01");
    EXPECT_TRUE(d["nan"].IsNull());
}

TEST(JsonWriter, RefusesAnIncompleteOrMalformedDocument) {
    JsonWriter open;
    open.begin_object().field("a", 1);
    EXPECT_THROW(open.str(), Error);
    JsonWriter no_key;
    no_key.begin_object();
    EXPECT_THROW(no_key.value(1), Error);
    JsonWriter two;
    two.value(1);
    EXPECT_THROW(two.value(2), Error);
}

TEST(Flags, ParsesValuesSwitchesRepeatsAndEqualsForms) {
    const std::vector<Flag> flags = {{"--out", "DIR", "output"},
                                     {"--set", "k=v", "override", true},
                                     {"--json", "", "json"},
                                     {"-n,--ranks", "N", "ranks"}};
    const ParsedFlags p = parse_flags(
        "frugal x", flags, {"in1", "--out=o", "--set", "a=1", "--set", "b=2", "--json", "--ranks", "4", "in2", "-"});
    EXPECT_EQ(p.positional, (std::vector<std::string>{"in1", "in2", "-"}));
    EXPECT_EQ(p.get("--out"), "o");
    EXPECT_EQ(p.all("--set"), (std::vector<std::string>{"a=1", "b=2"}));
    EXPECT_TRUE(p.has("--json"));
    EXPECT_EQ(p.get("-n"), "4");
    test::expect_has(test::config_error([&] {
                         parse_flags("frugal x", flags, {"--out", "a", "--out", "b"});
                     }),
                     {"--out given twice"});
    test::expect_has(test::config_error([&] { parse_flags("frugal x", flags, {"--json=1"}); }), {"takes no value"});
    test::expect_has(test::config_error([&] {
                         parse_flags("frugal x", flags, {"--rnaks", "2"});
                     }),
                     {"unknown option '--rnaks'", "did you mean '-n'?", "-n|--ranks"});
    // A far miss gets the list without a guess.
    const std::string far = test::config_error([&] { parse_flags("frugal x", flags, {"--completely-different"}); });
    EXPECT_EQ(far.find("did you mean"), std::string::npos) << far;
}

// A clock the test moves by hand, and the lines a Progress prints.
struct FakeClock {
    double t = 100;
    std::vector<std::string> lines;
    Progress::Options options(bool terminal) {
        Progress::Options o;
        o.clock = [this] { return t; };
        o.print = [this](const std::string& l) { lines.push_back(l); };
        o.terminal = terminal ? 1 : 0;
        return o;
    }
};

TEST(Progress, ALineGivesTheAmountTheRateAndTheTimeLeft) {
    FakeClock c;
    Progress p("importing", 1.2e9, "B", c.options(true));
    c.t += 2;
    p.advance(400e6);
    ASSERT_EQ(c.lines.size(), 1u);
    EXPECT_EQ(c.lines[0], "importing: 400.0 MB of 1.20 GB (33%), 200.0 MB/s, 4.0 s left");
    c.t += 4;
    p.advance(800e6);
    p.finish();
    ASSERT_EQ(c.lines.size(), 3u);
    EXPECT_EQ(c.lines[2], "importing: 1.20 GB in 6.0 s, 200.0 MB/s");
    p.finish();
    EXPECT_EQ(c.lines.size(), 3u) << "the final line comes once";
}

TEST(Progress, AShortOperationPrintsNothing) {
    FakeClock c;
    {
        Progress p("verifying", 100, "B", c.options(true));
        for (int i = 0; i < 10; ++i) {
            c.t += 0.15;
            p.advance(10);
        }
    }
    EXPECT_TRUE(c.lines.empty()) << c.lines[0];
}

TEST(Progress, OnATerminalLinesComeAtMostOncePerSecond) {
    FakeClock c;
    Progress p("tokenizing", 1000, "files", c.options(true));
    c.t += 2;
    for (int i = 0; i < 100; ++i) {
        c.t += 0.05;  // 5 s in all
        p.advance(1);
    }
    EXPECT_GE(c.lines.size(), 4u);
    EXPECT_LE(c.lines.size(), 6u);
    EXPECT_EQ(c.lines[0], "tokenizing: 1 of 1000 files (0%), 0.5 files/s, 34 min 8 s left");
}

TEST(Progress, WithoutATerminalOnlyALongOperationPrintsAndThenOncePerTenth) {
    FakeClock c;
    Progress p("exporting", 100, "B", c.options(false));
    for (int i = 0; i < 100; ++i) {
        c.t += 0.5;  // 50 s in all
        p.advance(1);
    }
    p.finish();
    // Silent for the first 10 s (20%), then at 30%, 40%, ... 100%, and the final line.
    ASSERT_EQ(c.lines.size(), 10u);
    EXPECT_EQ(c.lines[0].rfind("exporting: 20 B of 100 B (20%)", 0), 0u) << c.lines[0];
    EXPECT_EQ(c.lines[1].rfind("exporting: 30 B of 100 B (30%)", 0), 0u) << c.lines[1];
    EXPECT_EQ(c.lines.back(), "exporting: 100 B in 50 s, 2 B/s");
}

TEST(Progress, DurationsAndAmountsReadNaturally) {
    EXPECT_EQ(Progress::duration(4.04), "4.0 s");
    EXPECT_EQ(Progress::duration(59.6), "1 min 0 s");
    EXPECT_EQ(Progress::duration(200), "3 min 20 s");
    EXPECT_EQ(Progress::duration(7500), "2 h 05 min");
    EXPECT_EQ(Progress::amount(512, "B"), "512 B");
    EXPECT_EQ(Progress::amount(412.3e6, "B"), "412.3 MB");
    EXPECT_EQ(Progress::amount(1.2e9, "B"), "1.20 GB");
    EXPECT_EQ(Progress::amount(1234, "files"), "1234 files");
}

}  // namespace
}  // namespace frugal
