// Accuracy and cost of every precision recipe: trains the same model from the same seed with fp32 and with each
// other recipe (single process) and prints, for each, the relative loss error against fp32 (mean loss over the
// last 10% of steps) and the throughput relative to fp32 measured in the same run.
//   build/bench_precision [CONFIG.yaml] [--set key=value]...   (default configs/demo.yaml on one rank)
// DeepSeek-V3's goal for its FP8 recipe (fp8-blockwise here): relative loss error below 0.25%.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "trainer/trainer.h"

using namespace frugal;

int main(int argc, char** argv) {
    std::string path = "configs/demo.yaml";
    std::vector<std::string> overrides = {"parallel.ep=1", "train.eval_every=0", "run.log_every=100000"};
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            std::puts("usage: bench_precision [CONFIG.yaml] [--set key=value]...");
            return 0;
        }
        if (a == "--set" && i + 1 < argc)
            overrides.push_back(argv[++i]);
        else
            path = a;
    }
    try {
        struct Row {
            std::string recipe;
            double tail_loss, tokens_per_s;
        };
        std::vector<Row> rows;
        for (const char* recipe : {"fp32", "bf16", "fp8-tensorwise", "fp8-delayed", "fp8-blockwise"}) {
            auto o = overrides;
            o.push_back(std::string("precision.recipe=") + recipe);
            o.push_back(std::string("run.out_dir=runs/bench-precision/") + recipe);
            trainer::TrainConfig cfg = trainer::load_config(path, o, 1);
            log::set_level(log::Level::kWarn);
            trainer::TrainResult r = trainer::train(cfg);
            log::set_level(log::Level::kInfo);
            const size_t n = r.history.size(), tail = std::max<size_t>(1, n / 10);
            double mean = 0;
            for (size_t i = n - tail; i < n; ++i) mean += r.history[i].loss;
            rows.push_back({recipe, mean / double(tail), double(r.tokens) / r.seconds});
            std::printf("%-15s mean loss of the last %zu steps %.5f, %.0f tokens/s\n", recipe, tail,
                        rows.back().tail_loss, rows.back().tokens_per_s);
            std::fflush(stdout);
        }
        std::printf("\n%-15s %22s %18s\n", "recipe", "rel. loss error vs fp32", "throughput vs fp32");
        for (const Row& row : rows)
            std::printf("%-15s %21.3f%% %17.2fx\n", row.recipe.c_str(),
                        100.0 * (row.tail_loss - rows[0].tail_loss) / rows[0].tail_loss,
                        row.tokens_per_s / rows[0].tokens_per_s);
        std::puts("goal for fp8-blockwise (DeepSeek-V3): |relative loss error| < 0.25%");
        return 0;
    } catch (const Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return dynamic_cast<const ConfigError*>(&e) ? 2 : 1;
    }
}
