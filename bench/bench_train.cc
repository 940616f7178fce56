// Training throughput of a config's model against the Eigen GEMM ceiling measured in the same run.
//
// Prints tokens/s and model FLOP/s of full training steps (forward, backward, AdamW) next to the FLOP/s of one
// Eigen sgemm with the model's largest matmul shape, on the same threads, and their ratio.
// Model FLOPs come from accounting/flops.h (Megatron-LM's convention).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "accounting/flops.h"
#include "backend/cpu/ops.h"
#include "bench/bench_util.h"
#include "core/error.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "trainer/run_config.h"

using namespace frugal;
using bench::median;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
    try {
        std::string path = argc > 1 ? argv[1] : "configs/demo.yaml";
        if (path == "-h" || path == "--help") {
            std::puts("usage: bench_train [CONFIG.yaml]  (default configs/demo.yaml)");
            return 0;
        }
        trainer::TrainConfig cfg = trainer::load_config(path, {"parallel.ep=1"}, 1);
        const int64_t b = cfg.train.micro_batch, s = cfg.train.seq_len, n = b * s;
        model::Transformer<float> net(cfg.model);
        net.init(1);
        std::vector<optim::OptimParam> params;
        for (auto* p : net.params().params())
            params.push_back({p->value.data<float>(), p->grad.data<float>(), p->value.numel(), true});
        optim::AdamW opt(cfg.optim, params);

        // Synthetic tokens: throughput does not depend on their values.
        std::vector<int32_t> tokens(static_cast<size_t>(n)), targets(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) {
            tokens[size_t(i)] = int32_t((i * 7919) % cfg.model.vocab_size);
            targets[size_t(i)] = int32_t((i * 104729 + 1) % cfg.model.vocab_size);
        }
        auto train_step = [&] {
            net.params().zero_grad();
            net.forward(tokens.data(), targets.data(), b, s);
            net.backward(1.0f / float(n), 1.0f);
            opt.step(1e-4);
        };
        // The largest matmul of the model, [n x D] x [D x out] with out the widest projection.
        const int64_t d = cfg.model.d_model;
        int64_t out = std::max<int64_t>(
            {2 * cfg.model.d_ff, cfg.model.vocab_size, 2 * cfg.model.moe.d_expert, cfg.model.n_heads * cfg.model.hd()});
        std::vector<float> x(size_t(n * d), 0.5f), w(size_t(out * d), 0.25f), y(size_t(n * out));
        auto gemm = [&] { backend::cpu::linear_forward(y.data(), x.data(), w.data(), n, d, out); };

        train_step();  // warm-up: buffers grow once
        gemm();
        const int reps = 7;
        std::vector<double> step_s, gemm_s;
        for (int r = 0; r < reps; ++r) {
            // Interleaved, so both see the same machine state.
            auto t0 = Clock::now();
            train_step();
            step_s.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
            t0 = Clock::now();
            for (int i = 0; i < 5; ++i) gemm();
            gemm_s.push_back(std::chrono::duration<double>(Clock::now() - t0).count() / 5);
        }
        const double tok_s = double(n) / median(step_s);
        const double model_flops = tok_s * accounting::training_flops_per_token(cfg.model, s);
        const double gemm_flops = 2.0 * double(n) * double(d) * double(out) / median(gemm_s);
        std::printf("config            %s (%lld x %lld tokens per micro-batch, %d threads)\n", path.c_str(),
                    (long long)b, (long long)s, omp_get_max_threads());
        std::printf("training          %.0f tokens/s, %.2f GFLOP/s model FLOPs (%.1f MFLOP/token)\n", tok_s,
                    model_flops / 1e9, accounting::training_flops_per_token(cfg.model, s) / 1e6);
        std::printf("eigen sgemm       %lld x %lld x %lld: %.2f GFLOP/s\n", (long long)n, (long long)d, (long long)out,
                    gemm_flops / 1e9);
        std::printf("ratio             %.2f (model FLOP/s / GEMM FLOP/s; goal >= 0.5)\n", model_flops / gemm_flops);
        return 0;
    } catch (const Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return e.what() && dynamic_cast<const ConfigError*>(&e) ? 2 : 1;
    }
}
