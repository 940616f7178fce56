// `frugal prepare-data`: text files to token shards with a train/validation split.
//
// Documents: a file in fortune format (documents separated by lines holding a single '%') is split on those
// lines; any other file is one document. Directories are walked recursively in name order; fortune index files
// (*.dat) and symbolic links to files already taken are skipped. A document goes to validation when
// uniform(seed, document index) < val_fraction, so the split does not depend on how the files are ordered on disk
// beyond their sorted names.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace frugal::data {

struct PrepareOptions {
    std::vector<std::string> inputs;
    std::string out_dir;
    double val_fraction = 0.02;
    uint64_t seed = 1234;
    std::string format = "auto";  // auto | fortune | text
    std::string tokenizer;        // tokenizer.json path; empty = byte-level (256 bytes + end of document)
};

struct PrepareReport {
    int64_t files = 0, train_docs = 0, val_docs = 0, train_tokens = 0, val_tokens = 0;
};

PrepareReport prepare_data(const PrepareOptions& options);

// One document of training data: text, or a prompt (no loss) followed by a completion (loss).
struct Document {
    std::string prompt, text;
};
// JSONL (a *.jsonl input): one {"text": "..."} or {"prompt": "...", "completion": "..."} object per line (other fields
// are ignored, blank lines skipped). Throws ConfigError naming path, the line number and what is wrong with it.
std::vector<Document> parse_jsonl(const std::string& text, const std::string& path);

}  // namespace frugal::data
