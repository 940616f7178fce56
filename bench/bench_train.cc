// Training throughput of a config's model, in the config's precision recipe, against two peers measured in the same
// run: the same model in FP32 and the Eigen GEMM ceiling.
//
// Prints tokens/s and model FLOP/s of full training steps (forward, backward, AdamW, then weights_updated() as the
// trainer does) with precision.recipe, the FP32 model's tokens/s and the ratio of the two, and the FLOP/s of one
// Eigen sgemm with the model's largest matmul shape, on the same threads, against the recipe's model FLOP/s. The
// three are timed interleaved, so they see the same machine state. Model FLOPs come from accounting/flops.h
// (Megatron-LM's convention).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
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

namespace {

// A model with its optimizer, in one precision recipe, taking timed training steps on fixed tokens.
class TrainedModel {
  public:
    TrainedModel(const trainer::TrainConfig& cfg, const precision::PrecisionConfig& recipe) : net_(cfg.model) {
        net_.init(1);
        net_.set_precision(recipe);
        for (auto* p : net_.params().params())
            params_.push_back({p->value.data<float>(), p->grad.data<float>(), p->value.numel(), true});
        opt_ = std::make_unique<optim::AdamW>(cfg.optim, params_);
    }
    // Seconds of one step over b x s tokens.
    double step(const std::vector<int32_t>& tokens, const std::vector<int32_t>& targets, int64_t b, int64_t s) {
        const auto t0 = Clock::now();
        net_.params().zero_grad();
        net_.forward(tokens.data(), targets.data(), b, s);
        net_.backward(1.0f / float(b * s), 1.0f);
        opt_->step(1e-4);
        net_.weights_updated();
        return std::chrono::duration<double>(Clock::now() - t0).count();
    }

  private:
    model::Transformer<float> net_;
    std::vector<optim::OptimParam> params_;
    std::unique_ptr<optim::AdamW> opt_;
};

}  // namespace

int main(int argc, char** argv) {
    try {
        std::string path = argc > 1 ? argv[1] : "configs/demo.yaml";
        if (path == "-h" || path == "--help") {
            std::puts("usage: bench_train [CONFIG.yaml]  (default configs/demo.yaml)");
            return 0;
        }
        trainer::TrainConfig cfg = trainer::load_config(path, {"parallel.ep=1"}, 1);
        const int64_t b = cfg.train.micro_batch, s = cfg.train.seq_len, n = b * s;
        // Synthetic tokens: throughput does not depend on their values.
        std::vector<int32_t> tokens(static_cast<size_t>(n)), targets(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) {
            tokens[size_t(i)] = int32_t((i * 7919) % cfg.model.vocab_size);
            targets[size_t(i)] = int32_t((i * 104729 + 1) % cfg.model.vocab_size);
        }
        precision::PrecisionConfig fp32 = cfg.precision;
        fp32.recipe = "fp32";
        TrainedModel with_recipe(cfg, cfg.precision), reference(cfg, fp32);
        // The largest matmul of the model, [n x D] x [D x out] with out the widest projection.
        const int64_t d = cfg.model.d_model;
        int64_t out = std::max<int64_t>(
            {2 * cfg.model.d_ff, cfg.model.vocab_size, 2 * cfg.model.moe.d_expert, cfg.model.n_heads * cfg.model.hd()});
        std::vector<float> x(size_t(n * d), 0.5f), w(size_t(out * d), 0.25f), y(size_t(n * out));
        auto gemm = [&] { backend::cpu::linear_forward(y.data(), x.data(), w.data(), n, d, out); };

        // Warm-up: buffers grow once.
        with_recipe.step(tokens, targets, b, s);
        reference.step(tokens, targets, b, s);
        gemm();
        const int reps = 7;
        std::vector<double> recipe_s, fp32_s, gemm_s;
        for (int r = 0; r < reps; ++r) {
            recipe_s.push_back(with_recipe.step(tokens, targets, b, s));
            fp32_s.push_back(reference.step(tokens, targets, b, s));
            const auto t0 = Clock::now();
            for (int i = 0; i < 5; ++i) gemm();
            gemm_s.push_back(std::chrono::duration<double>(Clock::now() - t0).count() / 5);
        }
        const double tok_s = double(n) / median(recipe_s), fp32_tok_s = double(n) / median(fp32_s);
        const double model_flops = tok_s * accounting::training_flops_per_token(cfg.model, s);
        const double gemm_flops = 2.0 * double(n) * double(d) * double(out) / median(gemm_s);
        std::printf("config            %s (%lld x %lld tokens per micro-batch, %d threads)\n", path.c_str(),
                    (long long)b, (long long)s, omp_get_max_threads());
        std::printf("training          %.0f tokens/s in %s, %.2f GFLOP/s model FLOPs (%.1f MFLOP/token)\n", tok_s,
                    cfg.precision.recipe.c_str(), model_flops / 1e9,
                    accounting::training_flops_per_token(cfg.model, s) / 1e6);
        std::printf("fp32 peer         %.0f tokens/s; %s / fp32 = %.2f\n", fp32_tok_s, cfg.precision.recipe.c_str(),
                    tok_s / fp32_tok_s);
        std::printf("eigen sgemm       %lld x %lld x %lld: %.2f GFLOP/s\n", (long long)n, (long long)d, (long long)out,
                    gemm_flops / 1e9);
        std::printf("ratio             %.2f (model FLOP/s / GEMM FLOP/s; goal >= 0.5)\n", model_flops / gemm_flops);
        return 0;
    } catch (const Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return e.what() && dynamic_cast<const ConfigError*>(&e) ? 2 : 1;
    }
}
