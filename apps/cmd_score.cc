// frugal score: mean cross-entropy and perplexity of a model on a text file.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <memory>
#include <sstream>

#include "apps/commands.h"
#include "apps/model_loading.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf.h"
#include "core/error.h"
#include "data/hf_tokenizer.h"
#include "data/tokenizer.h"
#include "model/hf_config.h"
#include "model/transformer.h"

namespace frugal::apps {

namespace fs = std::filesystem;

int cmd_score(const Args& args) {
    if (args.empty() || wants_help(args)) {
        std::fputs(
            "usage: frugal score MODEL --text-file FILE [--tokenizer tokenizer.json] [--seq-len N] [--json]\n\n"
            "MODEL is a Frugal checkpoint (.h5) or hf:DIR. Tokenizes FILE with the model's tokenizer (hf:DIR: "
            "DIR/tokenizer.json; a checkpoint: --tokenizer, or the byte-level tokenizer for a 257-token vocabulary), "
            "runs the model over consecutive windows of --seq-len tokens (default model.max_seq_len) and prints the "
            "tokens scored, the mean cross-entropy in nats per token and the perplexity. --json prints num_tokens, "
            "mean_nll, perplexity, token_ids and logprobs (of every token after the first, given the ones before it "
            "in its window).\n",
            args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    std::string model_arg, text_file, tokenizer;
    int64_t seq_len = 0;
    bool json = false;
    for (size_t i = 0; i < args.size(); ++i) {
        auto value = [&]() -> const std::string& {
            FRUGAL_CONFIG_CHECK(i + 1 < args.size(), args[i], " needs a value");
            return args[++i];
        };
        if (args[i] == "--text-file")
            text_file = value();
        else if (args[i] == "--tokenizer")
            tokenizer = value();
        else if (args[i] == "--seq-len")
            seq_len = std::stoll(value());
        else if (args[i] == "--json")
            json = true;
        else if (args[i].rfind("-", 0) == 0)
            FRUGAL_CONFIG_ERROR("frugal score: unknown option '", args[i], "'");
        else
            model_arg = args[i];
    }
    FRUGAL_CONFIG_CHECK(!model_arg.empty() && !text_file.empty(), "frugal score MODEL --text-file FILE (see --help)");
    std::ifstream in(text_file, std::ios::binary);
    FRUGAL_CONFIG_CHECK(in.good(), "cannot read --text-file ", text_file);
    std::stringstream ss;
    ss << in.rdbuf();

    const bool hf = model_arg.rfind("hf:", 0) == 0;
    LoadedModel loaded = hf ? load_hf_model(model_arg.substr(3)) : load_checkpoint_model(model_arg);
    const model::ModelConfig& cfg = loaded.cfg;
    model::Transformer<float>* net = loaded.net.get();
    if (hf && tokenizer.empty()) tokenizer = (fs::path(model_arg.substr(3)) / "tokenizer.json").string();
    std::vector<int32_t> ids;
    if (!tokenizer.empty() && fs::exists(tokenizer)) {
        data::HfTokenizer(tokenizer).encode(ss.str(), ids);
    } else {
        FRUGAL_CONFIG_CHECK(cfg.vocab_size == data::ByteTokenizer::kVocabSize, "the model's vocabulary is ",
                            cfg.vocab_size, " tokens: give its tokenizer with --tokenizer tokenizer.json");
        data::ByteTokenizer().encode(ss.str(), ids);
    }
    for (int32_t t : ids)
        FRUGAL_CONFIG_CHECK(t < cfg.vocab_size, "token id ", t, " is outside the model's vocabulary of ",
                            cfg.vocab_size, ": the tokenizer does not belong to this model");
    FRUGAL_CONFIG_CHECK(ids.size() >= 2, text_file, " has fewer than two tokens: nothing to score");
    const int64_t s_max = seq_len > 0 ? std::min(seq_len, cfg.max_seq_len) : cfg.max_seq_len;
    std::vector<double> logprobs;
    for (size_t start = 0; start + 1 < ids.size(); start += size_t(s_max)) {
        const int64_t s = std::min<int64_t>(s_max, int64_t(ids.size() - start - 1));
        std::vector<int32_t> x(ids.begin() + long(start), ids.begin() + long(start) + s),
            y(ids.begin() + long(start) + 1, ids.begin() + long(start) + s + 1);
        net->forward(x.data(), y.data(), 1, s);
        for (int64_t i = 0; i < s; ++i) logprobs.push_back(-double(net->token_losses()[i]));
    }
    double sum = 0;
    for (double lp : logprobs) sum -= lp;
    const double mean = sum / double(logprobs.size());
    std::ostringstream os;
    os << std::setprecision(10);
    if (json) {
        os << "{\"num_tokens\": " << logprobs.size() << ", \"mean_nll\": " << mean
           << ", \"perplexity\": " << std::exp(mean) << ", \"token_ids\": [";
        for (size_t i = 0; i < ids.size(); ++i) os << (i ? ", " : "") << ids[i];
        os << "], \"logprobs\": [";
        for (size_t i = 0; i < logprobs.size(); ++i) os << (i ? ", " : "") << logprobs[i];
        os << "]}\n";
    } else {
        os << "tokens scored    " << logprobs.size() << "\nmean NLL         " << mean
           << " nats/token\nperplexity       " << std::exp(mean) << "\n";
    }
    std::fputs(os.str().c_str(), stdout);
    return 0;
}

}  // namespace frugal::apps
