// frugal prepare-data: text files to token shards; with --json a summary of what was written.
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "apps/cli_output.h"
#include "apps/commands.h"
#include "core/error.h"
#include "core/flags.h"
#include "core/json.h"
#include "core/log.h"
#include "data/prepare.h"

namespace frugal::apps {

namespace {
const std::vector<Flag> kFlags = {
    {"--out", "DIR", "output directory (created)"},
    {"--val-fraction", "F", "share of documents held out for validation (default 0.02)"},
    {"--seed", "N", "seed of the train/validation split (default 1234)"},
    {"--format", "F", "auto (default: detect fortune files), fortune, or text"},
    {"--tokenizer", "FILE",
     "a Hugging Face tokenizer.json (byte-level or Metaspace BPE) instead of bytes; documents end with its "
     "<|endoftext|> or </s>"},
    {"--json", "",
     "print one JSON object: out_dir, train_file, val_file, files, train_documents, train_tokens, "
     "validation_documents, validation_tokens"}};

std::string help() {
    return "usage: frugal prepare-data INPUT... --out DIR [--val-fraction F] [--seed N] [--format auto|fortune|text]\n"
           "                           [--tokenizer tokenizer.json] [--json]\n"
           "\n"
           "Tokenizes text files (byte-level: 256 bytes + end-of-document) into DIR/train.bin and DIR/val.bin.\n"
           "INPUT may be files or directories (walked recursively; fortune *.dat index files are skipped).\n"
           "Fortune files (documents separated by lines holding a single %) are split into documents; other files "
           "are\none document each. The shard format is described in docs/data-format.md.\n\n" +
           flags_help(kFlags);
}

double parse_double(const std::string& flag, const std::string& v) {
    char* end = nullptr;
    double x = std::strtod(v.c_str(), &end);
    FRUGAL_CONFIG_CHECK(!v.empty() && *end == '\0', flag, ": expected a number, got '", v, "'");
    return x;
}
}  // namespace

int cmd_prepare_data(const Args& args) {
    const ParsedFlags f = parse_flags("frugal prepare-data", kFlags, args);
    if (f.has("--help")) {
        std::fputs(help().c_str(), stdout);
        return 0;
    }
    data::PrepareOptions opt;
    opt.inputs = f.positional;
    opt.out_dir = f.get("--out");
    if (f.has("--val-fraction")) opt.val_fraction = parse_double("--val-fraction", f.get("--val-fraction"));
    if (f.has("--seed")) opt.seed = uint64_t(parse_double("--seed", f.get("--seed")));
    opt.tokenizer = f.get("--tokenizer");
    opt.format = f.get("--format", opt.format);
    const bool json = f.has("--json");
    JsonStdout out(json);
    const data::PrepareReport r = data::prepare_data(opt);
    log::info("prepare-data: ", r.files, " files -> ", r.train_docs, " training documents (", r.train_tokens,
              " tokens) and ", r.val_docs, " validation documents (", r.val_tokens, " tokens) in ", opt.out_dir);
    if (json) {
        const std::filesystem::path dir(opt.out_dir);
        out.print(JsonWriter()
                      .begin_object()
                      .field("out_dir", opt.out_dir)
                      .field("train_file", (dir / "train.bin").string())
                      .field("val_file", (dir / "val.bin").string())
                      .field("files", r.files)
                      .field("train_documents", r.train_docs)
                      .field("train_tokens", r.train_tokens)
                      .field("validation_documents", r.val_docs)
                      .field("validation_tokens", r.val_tokens)
                      .end_object()
                      .str());
    }
    return 0;
}

}  // namespace frugal::apps
