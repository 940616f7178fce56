// Hugging Face export and import throughput against raw sequential I/O of the same bytes to the same disk, measured
// in the same run (single process, BF16 safetensors in 1 GB shards).
//   build/bench_hf [CONFIG.yaml] [DIR] [--set key=value]...
//   (default configs/demo.yaml widened to ~100M parameters: d_model 512, 32 experts of 512, every layer MoE as the
//   Hugging Face families need; DIR runs/bench-hf)
// Export = FP32 -> BF16 conversion + write + fsync of every shard; import = mmap + BF16 -> FP32 of every tensor.
// Reads come from the page cache in both cases (the files were just written).

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "bench/bench_util.h"
#include "checkpoint/hf.h"
#include "core/error.h"
#include "model/transformer.h"
#include "trainer/run_config.h"

using namespace frugal;
using bench::median;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
    try {
        std::string path = "configs/demo.yaml", dir = "runs/bench-hf";
        std::vector<std::string> sets = {"parallel.ep=1",          "model.d_model=512",     "model.n_heads=8",
                                         "moe.n_experts=32",       "moe.d_expert=512",      "model.dense_layers=0",
                                         "moe.n_shared_experts=0", "moe.bias_update_rate=0"};
        int positional = 0;
        for (int i = 1; i < argc; ++i) {
            const std::string a = argv[i];
            if (a == "-h" || a == "--help") {
                std::puts("usage: bench_hf [CONFIG.yaml] [DIR] [--set key=value]...");
                return 0;
            }
            if (a == "--set" && i + 1 < argc)
                sets.push_back(argv[++i]);
            else if (positional++ == 0)
                path = a;
            else
                dir = a;
        }
        trainer::TrainConfig cfg = trainer::load_config(path, sets, 1);
        model::Transformer<float> net(cfg.model, {}, false);
        net.init(1);
        model::Transformer<float> back(cfg.model, {}, false);
        const int64_t bytes = net.params().numel() * 2;
        std::vector<double> ex, im, raw_wr, raw_rd;
        std::vector<char> buf(size_t(bytes), 'x');
        fs::create_directories(dir);
        const std::string out = (fs::path(dir) / "model").string(), raw = (fs::path(dir) / "raw.bin").string();
        for (int r = 0; r < 5; ++r) {
            auto t0 = Clock::now();
            checkpoint::export_hf(out, net.params(), cfg.model, checkpoint::hf_model_type(cfg.model), "bf16", "",
                                  int64_t(1) << 30);
            ex.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
            t0 = Clock::now();
            checkpoint::load_hf_weights(out, back.params());
            im.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
            // Raw: the same bytes, one sequential write + fsync, one sequential read.
            const auto [raw_w, raw_r] = bench::raw_write_read(raw, buf);
            raw_wr.push_back(raw_w);
            raw_rd.push_back(raw_r);
        }
        const double mb = double(bytes) / 1e6;
        std::printf("%s as %s: %lld parameters, %.1f MB in BF16\n", path.c_str(),
                    checkpoint::hf_model_type(cfg.model).c_str(), (long long)net.params().numel(), mb);
        std::printf("export %.0f MB/s  (raw sequential write + fsync %.0f MB/s, ratio %.2f)\n", mb / median(ex),
                    mb / median(raw_wr), median(raw_wr) / median(ex));
        std::printf("import %.0f MB/s  (raw sequential read %.0f MB/s, ratio %.2f)\n", mb / median(im),
                    mb / median(raw_rd), median(raw_rd) / median(im));
        fs::remove_all(dir);
        return 0;
    } catch (const Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
