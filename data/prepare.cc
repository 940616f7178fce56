#include "data/prepare.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/progress.h"
#include "core/rng.h"
#include "data/hf_tokenizer.h"
#include "data/shard.h"
#include "data/tokenizer.h"

namespace frugal::data {

namespace fs = std::filesystem;

namespace {

void collect(const fs::path& p, std::vector<fs::path>& files, std::set<fs::path>& seen) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
        std::vector<fs::path> entries;
        for (const auto& e : fs::directory_iterator(p, ec)) entries.push_back(e.path());
        if (ec) FRUGAL_CONFIG_ERROR("cannot list input directory ", p.string(), ": ", ec.message());
        std::sort(entries.begin(), entries.end());
        for (const auto& e : entries) collect(e, files, seen);
        return;
    }
    if (!fs::exists(p, ec)) FRUGAL_CONFIG_ERROR("input ", p.string(), " does not exist");
    if (p.extension() == ".dat") return;  // strfile index of a fortune file: binary
    fs::path canonical = fs::canonical(p);
    if (!seen.insert(canonical).second) return;
    files.push_back(p);
}

bool is_fortune(const std::string& text) {
    return text.rfind("%\n", 0) == 0 || text.find("\n%\n") != std::string::npos;
}

std::string jsonl_string(const YAML::Node& obj, const char* key, const std::string& where) {
    const YAML::Node v = obj[key];
    FRUGAL_CONFIG_CHECK(v.IsScalar() && v.Tag() == "!", where, ": \"", key, "\" must be a JSON string, got ",
                        v.IsNull()       ? std::string("null")
                        : v.IsSequence() ? std::string("a list")
                        : v.IsMap()      ? std::string("an object")
                                         : "'" + v.Scalar() + "'",
                        ": quote the text");
    return v.Scalar();
}

}  // namespace

std::vector<Document> parse_jsonl(const std::string& text, const std::string& path) {
    std::vector<Document> docs;
    std::istringstream in(text);
    std::string line;
    int64_t lineno = 0;
    while (std::getline(in, line)) {
        ++lineno;
        const size_t first = line.find_first_not_of(" \t\r");
        if (first == std::string::npos) continue;
        const std::string where = path + ":" + std::to_string(lineno);
        const std::string expected =
            "expected one JSON object per line, {\"text\": \"...\"} or {\"prompt\": \"...\", \"completion\": "
            "\"...\"}";
        FRUGAL_CONFIG_CHECK(line[first] == '{', where, ": not a JSON object (the line starts with '",
                            line.substr(first, 20), "'): ", expected);
        YAML::Node n;
        try {
            n = YAML::Load(line);
        } catch (const YAML::Exception& e) {
            FRUGAL_CONFIG_ERROR(where, ":", e.mark.column + 1, ": not valid JSON: ", e.msg, "; ", expected);
        }
        FRUGAL_CONFIG_CHECK(n.IsMap(), where, ": not a JSON object: ", expected);
        if (n["text"]) {
            docs.push_back({"", jsonl_string(n, "text", where)});
        } else if (n["prompt"] && n["completion"]) {
            docs.push_back({jsonl_string(n, "prompt", where), jsonl_string(n, "completion", where)});
        } else {
            FRUGAL_CONFIG_ERROR(where,
                                ": the object has no \"text\" (nor both \"prompt\" and \"completion\"): ", expected);
        }
    }
    return docs;
}

namespace {

void split_documents(const std::string& text, bool fortune, std::vector<std::string>& docs) {
    if (!fortune) {
        if (!text.empty()) docs.push_back(text);
        return;
    }
    std::istringstream in(text);
    std::string line, cur;
    while (std::getline(in, line)) {
        if (line == "%") {
            if (!cur.empty()) docs.push_back(cur);
            cur.clear();
        } else {
            cur += line;
            cur += '\n';
        }
    }
    if (!cur.empty()) docs.push_back(cur);
}

}  // namespace

PrepareReport prepare_data(const PrepareOptions& opt) {
    FRUGAL_CONFIG_CHECK(!opt.inputs.empty(), "prepare-data: no input files given");
    FRUGAL_CONFIG_CHECK(!opt.out_dir.empty(), "prepare-data: --out DIR is required");
    FRUGAL_CONFIG_CHECK(opt.val_fraction >= 0 && opt.val_fraction < 1, "--val-fraction ", opt.val_fraction,
                        " must be in [0, 1)");
    FRUGAL_CONFIG_CHECK(opt.format == "auto" || opt.format == "fortune" || opt.format == "text", "--format '",
                        opt.format, "' is not one of auto, fortune, text");
    std::vector<fs::path> files;
    std::set<fs::path> seen;
    for (const auto& in : opt.inputs) collect(in, files, seen);
    FRUGAL_CONFIG_CHECK(!files.empty(), "prepare-data: the inputs hold no text files");

    ByteTokenizer bytes;
    std::unique_ptr<HfTokenizer> hf;
    if (!opt.tokenizer.empty()) hf = std::make_unique<HfTokenizer>(opt.tokenizer);
    const int32_t eod = hf ? hf->end_of_document() : ByteTokenizer::kEndOfDocument;
    const int64_t vocab = hf ? hf->vocab_size() : ByteTokenizer::kVocabSize;
    rng::Stream split(opt.seed, "data.split");
    std::vector<int32_t> train, val;
    std::vector<uint8_t> train_mask, val_mask;  // loss masks, kept only when some document has a prompt
    bool any_prompt = false;
    PrepareReport report;
    int64_t doc_index = 0;
    std::vector<std::string> docs;
    double input_bytes = 0;
    for (const auto& f : files) {
        std::error_code size_ec;
        const auto size = fs::file_size(f, size_ec);
        if (!size_ec) input_bytes += double(size);
    }
    Progress progress("tokenizing", input_bytes, "B");
    for (const auto& f : files) {
        std::ifstream in(f, std::ios::binary);
        FRUGAL_CHECK(in.good(), "cannot read ", f.string());
        std::stringstream buf;
        buf << in.rdbuf();
        std::string text = buf.str();
        bool fortune = opt.format == "fortune" || (opt.format == "auto" && is_fortune(text));
        std::vector<Document> batch;
        if (f.extension() == ".jsonl") {
            batch = parse_jsonl(text, f.string());
        } else {
            docs.clear();
            split_documents(text, fortune, docs);
            for (auto& d : docs) batch.push_back({"", std::move(d)});
        }
        for (const Document& d : batch) {
            const bool to_val = split.uniform(uint64_t(doc_index++)) < opt.val_fraction;
            auto& dst = to_val ? val : train;
            auto& mask = to_val ? val_mask : train_mask;
            auto encode = [&](const std::string& t) {
                if (hf)
                    hf->encode(t, dst);
                else
                    bytes.encode(t, dst);
            };
            encode(d.prompt);
            mask.resize(dst.size(), 0);  // prompt tokens are never targets
            encode(d.text);
            dst.push_back(eod);
            mask.resize(dst.size(), 1);
            any_prompt |= !d.prompt.empty();
            (to_val ? report.val_docs : report.train_docs)++;
        }
        report.files++;
        progress.advance(double(text.size()));
    }
    progress.finish();
    if (!any_prompt) {
        train_mask.clear();
        val_mask.clear();
    }
    std::error_code ec;
    FRUGAL_CONFIG_CHECK(!fs::exists(opt.out_dir, ec) || fs::is_directory(opt.out_dir, ec), "prepare-data: --out ",
                        opt.out_dir, " is a file, not a directory: give a directory for train.bin and val.bin");
    fs::create_directories(opt.out_dir);
    write_shard((fs::path(opt.out_dir) / "train.bin").string(), train, report.train_docs, vocab, train_mask, eod);
    write_shard((fs::path(opt.out_dir) / "val.bin").string(), val, report.val_docs, vocab, val_mask, eod);
    report.train_tokens = int64_t(train.size());
    report.val_tokens = int64_t(val.size());
    return report;
}

}  // namespace frugal::data
