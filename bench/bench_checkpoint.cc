// Checkpoint write and read throughput against raw sequential I/O of the same number of bytes to the same disk,
// measured in the same run (single process; parameters plus two optimizer moments of the configured model).
//   build/bench_checkpoint [CONFIG.yaml] [DIR]     (default configs/demo.yaml, runs/bench-checkpoint)
// Reads come from the page cache in both cases (the same state for both: the file was just written).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "bench/bench_util.h"
#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "model/transformer.h"
#include "parallel/communicator.h"
#include "trainer/run_config.h"

using namespace frugal;
using bench::median;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
    try {
        std::string path = argc > 1 ? argv[1] : "configs/demo.yaml";
        if (path == "-h" || path == "--help") {
            std::puts("usage: bench_checkpoint [CONFIG.yaml] [DIR]");
            return 0;
        }
        const std::string dir = argc > 2 ? argv[2] : "runs/bench-checkpoint";
        trainer::TrainConfig cfg = trainer::load_config(path, {"parallel.ep=1"}, 1);
        model::Transformer<float> net(cfg.model);
        net.init(1);
        std::vector<std::vector<float>> moments;
        std::vector<checkpoint::TensorSlot> slots;
        for (model::Param* p : net.params().params())
            for (const char* kind : {"params/", "optim/exp_avg/", "optim/exp_avg_sq/"}) {
                float* data = p->value.data<float>();
                if (std::string(kind) != "params/") {
                    moments.emplace_back(p->value.data<float>(), p->value.data<float>() + p->value.numel());
                    data = moments.back().data();
                }
                slots.push_back({kind + p->name, p->global_shape, 0, p->shape, true, data});
            }
        int64_t bytes = 0;
        for (const auto& s : slots) bytes += shape_numel(s.local_shape) * 4;
        parallel::SingleProcessComm world;
        checkpoint::TrainingState st;
        st.config_yaml = trainer::to_yaml(cfg);
        std::vector<double> wr, rd, raw_wr, raw_rd;
        std::vector<char> buf(size_t(bytes), 'x');
        const std::string raw = (fs::path(dir) / "raw.bin").string();
        fs::create_directories(dir);
        for (int r = 0; r < 5; ++r) {
            st.step = r + 1;
            auto t0 = Clock::now();
            std::string file = checkpoint::save(dir, slots, st, world, 2, 0);
            wr.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
            t0 = Clock::now();
            checkpoint::load(file, slots, st);
            rd.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
            // Raw: the same bytes, one sequential write + fsync, one sequential read.
            const auto [raw_w, raw_r] = bench::raw_write_read(raw, buf);
            raw_wr.push_back(raw_w);
            raw_rd.push_back(raw_r);
        }
        const double mb = double(bytes) / 1e6;
        std::printf("checkpoint of %s: %.1f MB (parameters + 2 moments)\n", path.c_str(), mb);
        std::printf("write  %.0f MB/s  (raw sequential write + fsync %.0f MB/s, ratio %.2f)\n", mb / median(wr),
                    mb / median(raw_wr), median(raw_wr) / median(wr));
        std::printf("read   %.0f MB/s  (raw sequential read %.0f MB/s, ratio %.2f)\n", mb / median(rd),
                    mb / median(raw_rd), median(raw_rd) / median(rd));
        fs::remove_all(dir);
        return 0;
    } catch (const Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
