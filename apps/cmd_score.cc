// frugal score: mean cross-entropy and perplexity of a model on a text file, on one process or expert parallel
// over the ranks of `frugal launch -n N score ...`.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <optional>
#include <sstream>

#include "apps/cli_output.h"
#include "apps/commands.h"
#include "apps/model_loading.h"
#include "apps/mpi_job.h"
#include "core/error.h"
#include "core/flags.h"
#include "core/input_file.h"
#include "core/json.h"
#include "core/log.h"
#include "core/memory.h"
#include "data/hf_tokenizer.h"
#include "data/tokenizer.h"
#include "parallel/expert_parallel.h"
#include "parallel/mpi_comm.h"
#include "parallel/parallel_dims.h"

namespace frugal::apps {

namespace fs = std::filesystem;

namespace {

const std::vector<Flag> kFlags = {
    {"--text-file", "FILE", "the text to score (required)"},
    {"--tokenizer", "FILE",
     "a tokenizer.json (default: hf:DIR/tokenizer.json; for a checkpoint the tokenizer.json of the Hugging Face "
     "model it was fine-tuned from, else the byte-level tokenizer for a 257-token vocabulary)"},
    {"--seq-len", "N",
     "window length in tokens (default 1024, at most model.max_seq_len; each window restarts the "
     "context)"},
    {"--stride", "S",
     "start a window every S tokens (default: --seq-len, windows side by side); with S smaller than the window, "
     "each window scores only the tokens the previous one did not, so every token after the first window sees at "
     "least window - S tokens of context (the sliding-window perplexity of Hugging Face's guide)"},
    {"--ep", "E",
     "under frugal launch: experts are sharded over groups of E ranks (default: every rank), each rank reads only "
     "its experts' weights and the windows are spread over the ranks"},
    {"--timeout", "S", "under frugal launch: seconds a collective may wait before the job stops (default 600)"},
    {"--json", "",
     "print one JSON object: num_tokens, mean_nll, perplexity, token_ids and logprobs (of every token after the "
     "first, given the ones before it in its window; a non-finite value is null); under frugal launch only rank 0 "
     "prints it"}};

std::string help() {
    return "usage: frugal score MODEL --text-file FILE [--tokenizer tokenizer.json] [--seq-len N] [--stride S] "
           "[--json]\n"
           "       frugal launch -n N score MODEL --text-file FILE [--ep E] [...]\n\n"
           "MODEL is a Frugal checkpoint (.h5) or hf:DIR. Tokenizes FILE with the model's tokenizer, runs the model "
           "over consecutive windows of --seq-len tokens and prints the tokens scored, the mean cross-entropy in nats "
           "per token and the perplexity.\n\n" +
           flags_help(kFlags);
}

// Default window: long enough for a meaningful context, short enough that the attention scores of a large model
// (heads x window^2 per layer) fit in memory.
constexpr int64_t kDefaultWindow = 1024;

struct ScoreArgs {
    std::string model, text_file, tokenizer;
    int64_t seq_len = 0, stride = 0, ep = 0;
    double timeout_s = 600;
    bool json = false;
};

double number(const ParsedFlags& f, const std::string& flag, double min, double fallback) {
    if (!f.has(flag)) return fallback;
    const std::string v = f.get(flag);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    FRUGAL_CONFIG_CHECK(!v.empty() && *end == '\0' && x >= min, flag, " '", v, "': expected a number >= ", min);
    return x;
}

ScoreArgs parse(const Args& args) {
    const ParsedFlags f = parse_flags("frugal score", kFlags, args);
    ScoreArgs a;
    a.text_file = f.get("--text-file");
    a.tokenizer = f.get("--tokenizer");
    a.seq_len = int64_t(number(f, "--seq-len", 2, 0));
    a.stride = int64_t(number(f, "--stride", 1, 0));
    a.ep = int64_t(number(f, "--ep", 1, 0));
    a.timeout_s = number(f, "--timeout", 1, a.timeout_s);
    a.json = f.has("--json");
    FRUGAL_CONFIG_CHECK(f.positional.size() <= 1, "frugal score: two models given ('", f.positional[0], "' and '",
                        f.positional.size() > 1 ? f.positional[1] : "", "')");
    if (!f.positional.empty()) a.model = f.positional[0];
    FRUGAL_CONFIG_CHECK(!a.model.empty() && !a.text_file.empty(), "frugal score MODEL --text-file FILE (see --help)");
    return a;
}

bool is_hf(const ScoreArgs& a) { return a.model.rfind("hf:", 0) == 0; }

// One forward pass: inputs ids[start, start + len), targets ids[start + 1, start + len + 1); it reports the
// targets [skip, len) (the earlier ones were reported by the previous window).
struct Window {
    int64_t start, len, skip;
};

// Everything that can be checked before a rank communicates: the model's architecture, the tokens, the windows,
// the layout.
struct Plan {
    model::ModelConfig cfg;
    std::vector<int32_t> ids;
    int64_t window = 0;  // longest window
    std::vector<Window> windows;
    parallel::ParallelDims dims;
};

Plan plan(const ScoreArgs& a, int world_size, int rank) {
    Plan p;
    std::string init_from;
    p.cfg = is_hf(a) ? hf_model_config(a.model.substr(3)) : checkpoint_model_config(a.model, &init_from);
    std::string tokenizer = a.tokenizer;
    if (tokenizer.empty() && is_hf(a)) tokenizer = (fs::path(a.model.substr(3)) / "tokenizer.json").string();
    if (tokenizer.empty() && init_from.rfind("hf:", 0) == 0) {
        const fs::path t = fs::path(init_from.substr(3)) / "tokenizer.json";
        if (fs::exists(t)) tokenizer = t.string();
    }
    input::require_file(a.text_file, "--text-file", "give a text file to score");
    std::ifstream in(a.text_file, std::ios::binary);
    FRUGAL_CONFIG_CHECK(in.good(), "cannot read --text-file ", a.text_file);
    std::stringstream ss;
    ss << in.rdbuf();
    if (!tokenizer.empty() && fs::exists(tokenizer)) {
        data::HfTokenizer(tokenizer).encode(ss.str(), p.ids);
    } else {
        FRUGAL_CONFIG_CHECK(p.cfg.vocab_size == data::ByteTokenizer::kVocabSize, "the model's vocabulary is ",
                            p.cfg.vocab_size, " tokens: give its tokenizer with --tokenizer tokenizer.json");
        data::ByteTokenizer().encode(ss.str(), p.ids);
    }
    for (int32_t t : p.ids)
        FRUGAL_CONFIG_CHECK(t < p.cfg.vocab_size, "token id ", t, " is outside the model's vocabulary of ",
                            p.cfg.vocab_size, ": the tokenizer does not belong to this model");
    FRUGAL_CONFIG_CHECK(p.ids.size() >= 2, a.text_file, " has fewer than two tokens: nothing to score");
    p.window = std::min(a.seq_len > 0 ? a.seq_len : kDefaultWindow, p.cfg.max_seq_len);
    const int64_t stride = a.stride > 0 ? a.stride : p.window;
    FRUGAL_CONFIG_CHECK(stride <= p.window, "--stride ", stride, " is longer than the window (", p.window,
                        " tokens): windows would skip tokens; use at most ", p.window);
    // Each window reports the targets after the last one reported; every target exactly once, in order.
    const int64_t n = int64_t(p.ids.size()) - 1;
    for (int64_t start = 0, reported = 0; reported < n; start += stride) {
        const int64_t len = std::min(p.window, n - start);
        p.windows.push_back({start, len, std::max<int64_t>(0, reported - start)});
        reported = start + len;
    }
    p.dims = parallel::ParallelDims::make(world_size, rank, a.ep > 0 ? a.ep : world_size, p.cfg.moe.n_experts);
    return p;
}

// Scores every window, spread round-robin over the ranks (window w on rank w mod world): every rank runs the same
// number of forward passes, because the experts' all-to-all needs every rank of the group; a rank without a
// window in the last round scores a one-token filler and discards it. Returns all log-probabilities, in order,
// on every rank.
std::vector<double> score_windows(const ScoreArgs& a, const Plan& p, parallel::Communicator& world) {
    const auto& dims = p.dims;
    auto ep_comm = world.split(dims.edp_rank, dims.ep_rank, "ep");
    const model::ExpertShard shard = dims.expert_shard(p.cfg.moe.n_experts);
    const int64_t rss_before = current_rss_bytes();
    LoadedModel m = is_hf(a) ? load_hf_model(a.model.substr(3), shard) : load_checkpoint_model(a.model, shard);
    const int64_t load_growth = peak_rss_bytes() - rss_before;
    parallel::use_expert_parallel(*m.net, *ep_comm, false);
    const int64_t n_win = int64_t(p.windows.size());
    const int64_t ranks = world.size(), rounds = (n_win + ranks - 1) / ranks;
    if (world.rank() == 0)
        log::info("score: ", p.ids.size() - 1, " tokens in ", n_win, " window(s) of up to ", p.window, " (stride ",
                  n_win > 1 ? p.windows[1].start : p.window, ") over ", ranks, " rank(s), ep ", dims.ep, " (",
                  shard.count, " of ", p.cfg.moe.n_experts, " experts per rank); rank 0 holds ",
                  m.net->params().numel(), " parameters (", std::llround(double(m.net->params().numel()) * 4 / 1e6),
                  " MB); loading raised its peak memory by ", std::llround(double(load_growth) / 1e6), " MB");
    std::vector<double> mine(size_t(rounds * p.window), std::numeric_limits<double>::quiet_NaN());
    for (int64_t r = 0; r < rounds; ++r) {
        const int64_t w = r * ranks + world.rank();
        const Window win = w < n_win ? p.windows[size_t(w)] : Window{0, 1, 1};
        world.set_layer("score window " + std::to_string(w));
        m.net->forward(p.ids.data() + win.start, p.ids.data() + win.start + 1, 1, win.len);
        for (int64_t i = win.skip; i < win.len; ++i) mine[size_t(r * p.window + i)] = -double(m.net->token_losses()[i]);
    }
    std::vector<double> all(size_t(ranks) * mine.size());
    world.set_layer("gather log-probabilities");
    world.all_gather(mine.data(), all.data(), int64_t(mine.size()), DType::kF64);
    std::vector<double> logprobs;
    logprobs.reserve(p.ids.size() - 1);
    for (int64_t w = 0; w < n_win; ++w) {
        const Window& win = p.windows[size_t(w)];
        const double* src = all.data() + ((w % ranks) * rounds + w / ranks) * p.window;
        logprobs.insert(logprobs.end(), src + win.skip, src + win.len);
    }
    return logprobs;
}

void print(const ScoreArgs& a, const Plan& p, const std::vector<double>& logprobs, JsonStdout& out) {
    double sum = 0;
    for (double lp : logprobs) sum -= lp;
    const double mean = sum / double(logprobs.size());
    if (a.json) {
        out.print(JsonWriter()
                      .begin_object()
                      .field("num_tokens", int64_t(logprobs.size()))
                      .field("mean_nll", mean)
                      .field("perplexity", std::exp(mean))
                      .array("token_ids", p.ids)
                      .array("logprobs", logprobs)
                      .end_object()
                      .str());
        return;
    }
    std::ostringstream os;
    os << std::setprecision(10) << "tokens scored    " << logprobs.size() << "\nmean NLL         " << mean
       << " nats/token\nperplexity       " << std::exp(mean) << "\n";
    out.print(os.str());
}

}  // namespace

int cmd_score(const Args& args) {
    if (args.empty() || wants_help(args)) {
        std::fputs(help().c_str(), args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    if (!parallel::launched_by_mpi()) {
        JsonStdout out(wants_json(args));
        const ScoreArgs a = parse(args);
        const Plan p = plan(a, 1, 0);
        parallel::SingleProcessComm world;
        print(a, p, score_windows(a, p, world), out);
        return 0;
    }
    // Every rank sends its stray stdout to stderr under --json; rank 0 alone prints the document.
    ScoreArgs a;
    Plan p;
    std::optional<JsonStdout> out;
    return run_mpi_job(
        [&] {
            int rank = 0, size = 1;
            MPI_Comm_rank(MPI_COMM_WORLD, &rank);
            MPI_Comm_size(MPI_COMM_WORLD, &size);
            out.emplace(wants_json(args));
            a = parse(args);
            p = plan(a, size, rank);
            return a.timeout_s;
        },
        [&](parallel::Communicator& world) {
            const std::vector<double> logprobs = score_windows(a, p, world);
            if (world.rank() == 0) print(a, p, logprobs, *out);
        });
}

}  // namespace frugal::apps
