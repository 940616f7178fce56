#include <cstdio>
#include <cstdlib>

#include "apps/commands.h"
#include "core/error.h"
#include "core/log.h"
#include "data/prepare.h"

namespace frugal::apps {

namespace {
const char* kHelp =
    "usage: frugal prepare-data INPUT... --out DIR [--val-fraction F] [--seed N] [--format auto|fortune|text]\n"
    "                           [--tokenizer tokenizer.json]\n"
    "\n"
    "Tokenizes text files (byte-level: 256 bytes + end-of-document) into DIR/train.bin and DIR/val.bin.\n"
    "INPUT may be files or directories (walked recursively; fortune *.dat index files are skipped).\n"
    "Fortune files (documents separated by lines holding a single %) are split into documents; other files are\n"
    "one document each. The shard format is described in docs/data-format.md.\n"
    "\n"
    "  --out DIR            output directory (created)\n"
    "  --val-fraction F     share of documents held out for validation (default 0.02)\n"
    "  --seed N             seed of the train/validation split (default 1234)\n"
    "  --format F           auto (default: detect fortune files), fortune, or text\n"
    "  --tokenizer FILE     a Hugging Face tokenizer.json (byte-level or Metaspace BPE) instead of bytes; documents\n"
    "                       end with its <|endoftext|> or </s>\n";

double parse_double(const std::string& flag, const std::string& v) {
    char* end = nullptr;
    double x = std::strtod(v.c_str(), &end);
    FRUGAL_CONFIG_CHECK(!v.empty() && *end == '\0', flag, ": expected a number, got '", v, "'");
    return x;
}
}  // namespace

int cmd_prepare_data(const Args& args) {
    if (wants_help(args)) {
        std::fputs(kHelp, stdout);
        return 0;
    }
    data::PrepareOptions opt;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        auto value = [&]() -> const std::string& {
            FRUGAL_CONFIG_CHECK(i + 1 < args.size(), a, " needs a value (see frugal prepare-data --help)");
            return args[++i];
        };
        if (a == "--out")
            opt.out_dir = value();
        else if (a == "--val-fraction")
            opt.val_fraction = parse_double(a, value());
        else if (a == "--seed")
            opt.seed = uint64_t(parse_double(a, value()));
        else if (a == "--tokenizer")
            opt.tokenizer = value();
        else if (a == "--format")
            opt.format = value();
        else if (a.rfind("-", 0) == 0)
            FRUGAL_CONFIG_ERROR("frugal prepare-data: unknown option '", a, "' (see frugal prepare-data --help)");
        else
            opt.inputs.push_back(a);
    }
    data::PrepareReport r = data::prepare_data(opt);
    log::info("prepare-data: ", r.files, " files -> ", r.train_docs, " training documents (", r.train_tokens,
              " tokens) and ", r.val_docs, " validation documents (", r.val_tokens, " tokens) in ", opt.out_dir);
    return 0;
}

}  // namespace frugal::apps
