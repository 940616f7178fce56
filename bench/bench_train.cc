// Training throughput of a config's model, in the config's precision recipe, against peers measured in the same run.
//
// --device cpu (the default): tokens/s and model FLOP/s of full training steps (forward, backward, AdamW, then
// weights_updated() as the trainer does) with precision.recipe, the FP32 model's tokens/s and the ratio of the two,
// and the FLOP/s of one Eigen sgemm with the model's largest matmul shape, on the same threads, against the recipe's
// model FLOP/s. The three are timed interleaved, so they see the same machine state.
//
// --device cuda: the model is built on the CUDA backend (an Error with the reason when this build or machine has no
// GPU). Prints tokens/s, model TFLOP/s, MFU against the BF16 and FP8 dense peaks of a catalogued device
// (configs/hardware.yaml through accounting/hardware.h, --hardware, h200 by default), and the TFLOP/s of cuBLASLt
// GEMMs (backend/cuda/gemm_lt.h: BF16, and FP8 blockwise where cuBLASLt runs it) of the same largest shape, timed
// with CUDA events after warm-up on random operands, with the ratio model FLOP/s / GEMM FLOP/s. Steps are timed
// with the backend's synchronize() on both sides; no FP32 peer runs (at realistic scale two models do not fit).
//
// Model FLOPs come from accounting/flops.h (Megatron-LM's convention). Every timing is the median of the repeats.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "accounting/flops.h"
#include "accounting/hardware.h"
#include "backend/backend.h"
#include "backend/cpu/ops.h"
#include "bench/bench_util.h"
#include "core/error.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "trainer/run_config.h"

#ifdef FRUGAL_HAVE_CUDA
#include <cuda_runtime.h>

#include "backend/cuda/allocator.h"
#include "backend/cuda/check.h"
#include "backend/cuda/gemm_lt.h"
#endif

using namespace frugal;
using bench::median;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kUsage =
    "usage: bench_train [--device cpu|cuda] [--hardware KEY] [--reps N] [--set KEY=VALUE]... [CONFIG.yaml]\n"
    "  CONFIG.yaml      the job whose model is timed (default configs/demo.yaml); parallel.ep is forced to 1\n"
    "  --device         cpu (default): against an FP32 peer and an Eigen sgemm; cuda: on the GPU, against\n"
    "                   cuBLASLt BF16/FP8 GEMMs, with MFU\n"
    "  --hardware KEY   the configs/hardware.yaml device whose peaks give the MFU on cuda (default h200)\n"
    "  --reps N         timed repeats, median reported (default 7)\n"
    "  --set KEY=VALUE  a config override, as frugal train --set (e.g. precision.recipe=bf16)";

struct Options {
    std::string path = "configs/demo.yaml", device = "cpu", hardware = "h200";
    int reps = 7;
    std::vector<std::string> overrides{"parallel.ep=1"};
};

Options parse(int argc, char** argv, bool* help) {
    Options o;
    *help = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&](const char* flag) -> std::string {
            FRUGAL_CONFIG_CHECK(i + 1 < argc, flag, " needs a value: see bench_train --help");
            return argv[++i];
        };
        if (a == "-h" || a == "--help") {
            *help = true;
        } else if (a == "--device") {
            o.device = value("--device");
            FRUGAL_CONFIG_CHECK(o.device == "cpu" || o.device == "cuda", "--device is '", o.device,
                                "': use cpu or cuda");
        } else if (a == "--hardware") {
            o.hardware = value("--hardware");
        } else if (a == "--reps") {
            const std::string v = value("--reps");
            o.reps = std::atoi(v.c_str());
            FRUGAL_CONFIG_CHECK(o.reps >= 1, "--reps is '", v, "': use a positive count");
        } else if (a == "--set") {
            o.overrides.push_back(value("--set"));
        } else {
            FRUGAL_CONFIG_CHECK(a.empty() || a[0] != '-', "unknown flag '", a, "': see bench_train --help");
            o.path = a;
        }
    }
    return o;
}

// A model with its optimizer, in one precision recipe, taking timed training steps on fixed tokens.
class TrainedModel {
  public:
    TrainedModel(const trainer::TrainConfig& cfg, const precision::PrecisionConfig& recipe, backend::Backend& be)
        : be_(be), net_(cfg.model, {}, true, be) {
        net_.init(1);
        net_.set_precision(recipe);
        for (auto* p : net_.params().params())
            params_.push_back({p->value.data<float>(), p->grad.data<float>(), p->value.numel(), true});
        opt_ = std::make_unique<optim::AdamW>(cfg.optim, params_, false, be);
    }
    // Seconds of one step over b x s tokens, the device's queue drained on both sides.
    double step(const std::vector<int32_t>& tokens, const std::vector<int32_t>& targets, int64_t b, int64_t s) {
        be_.synchronize();
        const auto t0 = Clock::now();
        net_.params().zero_grad();
        net_.forward(tokens.data(), targets.data(), b, s);
        net_.backward(1.0f / float(b * s), 1.0f);
        opt_->step(1e-4);
        net_.weights_updated();
        be_.synchronize();
        return std::chrono::duration<double>(Clock::now() - t0).count();
    }

  private:
    backend::Backend& be_;
    model::Transformer<float> net_;
    std::vector<optim::OptimParam> params_;
    std::unique_ptr<optim::AdamW> opt_;
};

// The largest matmul of the model, [n x D] x [D x out] with out the widest projection.
int64_t widest_out(const model::ModelConfig& m) {
    return std::max<int64_t>({2 * m.d_ff, m.vocab_size, 2 * m.moe.d_expert, m.n_heads * m.hd()});
}

int run_cpu(const Options& o, const trainer::TrainConfig& cfg, const std::vector<int32_t>& tokens,
            const std::vector<int32_t>& targets) {
    const int64_t b = cfg.train.micro_batch, s = cfg.train.seq_len, n = b * s;
    precision::PrecisionConfig fp32 = cfg.precision;
    fp32.recipe = "fp32";
    backend::Backend& be = backend::cpu_backend();
    TrainedModel with_recipe(cfg, cfg.precision, be), reference(cfg, fp32, be);
    const int64_t d = cfg.model.d_model, out = widest_out(cfg.model);
    std::vector<float> x(size_t(n * d), 0.5f), w(size_t(out * d), 0.25f), y(size_t(n * out));
    auto gemm = [&] { backend::cpu::linear_forward(y.data(), x.data(), w.data(), n, d, out); };

    // Warm-up: buffers grow once.
    with_recipe.step(tokens, targets, b, s);
    reference.step(tokens, targets, b, s);
    gemm();
    std::vector<double> recipe_s, fp32_s, gemm_s;
    for (int r = 0; r < o.reps; ++r) {
        recipe_s.push_back(with_recipe.step(tokens, targets, b, s));
        fp32_s.push_back(reference.step(tokens, targets, b, s));
        const auto t0 = Clock::now();
        for (int i = 0; i < 5; ++i) gemm();
        gemm_s.push_back(std::chrono::duration<double>(Clock::now() - t0).count() / 5);
    }
    const double tok_s = double(n) / median(recipe_s), fp32_tok_s = double(n) / median(fp32_s);
    const double model_flops = tok_s * accounting::training_flops_per_token(cfg.model, s);
    const double gemm_flops = 2.0 * double(n) * double(d) * double(out) / median(gemm_s);
    std::printf("config            %s (%lld x %lld tokens per micro-batch, %d threads)\n", o.path.c_str(), (long long)b,
                (long long)s, omp_get_max_threads());
    std::printf("training          %.0f tokens/s in %s, %.2f GFLOP/s model FLOPs (%.1f MFLOP/token)\n", tok_s,
                cfg.precision.recipe.c_str(), model_flops / 1e9,
                accounting::training_flops_per_token(cfg.model, s) / 1e6);
    std::printf("fp32 peer         %.0f tokens/s; %s / fp32 = %.2f\n", fp32_tok_s, cfg.precision.recipe.c_str(),
                tok_s / fp32_tok_s);
    std::printf("eigen sgemm       %lld x %lld x %lld: %.2f GFLOP/s\n", (long long)n, (long long)d, (long long)out,
                gemm_flops / 1e9);
    std::printf("ratio             %.2f (model FLOP/s / GEMM FLOP/s; goal >= 0.5)\n", model_flops / gemm_flops);
    return 0;
}

#ifdef FRUGAL_HAVE_CUDA
// FLOP/s of the cuBLASLt forward product y_NO = x_NI w_OI^T (n x in x out) in format, on random operands: median
// over reps of CUDA-event timings of 10 back-to-back calls, after 3 warm-up calls.
double lt_gemm_flops(cuda::CudaAllocator& alloc, cuda::GemmFormat format, int64_t n, int64_t in, int64_t out,
                     int reps) {
    cuda::GemmSpec spec;
    spec.product = cuda::LinearProduct::kForward;
    spec.format = format;
    spec.n = n;
    spec.in = in;
    spec.out = out;
    spec.out_dtype = DType::kBF16;
    const bool fp8 = format == cuda::GemmFormat::kFp8Blockwise || format == cuda::GemmFormat::kFp8Tensorwise;
    const size_t elem = fp8 ? 1 : 2;
    std::mt19937 rng(42);
    // Random BF16 values in [-1, 1) (upper halves of floats), or E4M3 codes that are not NaN (S.1111.111).
    auto random_bytes = [&](size_t count) {
        std::vector<uint8_t> host(count * elem);
        std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
        for (size_t i = 0; i < count; ++i) {
            if (fp8) {
                uint8_t c = uint8_t(rng());
                if ((c & 0x7F) == 0x7F) c = uint8_t(c ^ 0x01);
                host[i] = c;
            } else {
                const float f = uni(rng);
                uint32_t bits;
                std::memcpy(&bits, &f, 4);
                const uint16_t h = uint16_t(bits >> 16);
                std::memcpy(&host[2 * i], &h, 2);
            }
        }
        void* dev = alloc.allocate(host.size());
        alloc.copy_from_host(dev, host.data(), host.size());
        return dev;
    };
    void* x_NI = random_bytes(size_t(n * in));
    void* w_OI = random_bytes(size_t(out * in));
    void* y_NO = alloc.allocate(size_t(n * out) * 2);
    float *x_scale = nullptr, *w_scale = nullptr;
    size_t x_scale_n = 0, w_scale_n = 0;
    if (fp8) {
        x_scale_n = size_t(cuda::lt_scale_layout(spec, 0).numel);
        w_scale_n = size_t(cuda::lt_scale_layout(spec, 1).numel);
        std::vector<float> ones(std::max(x_scale_n, w_scale_n), 1.0f / 64);
        x_scale = static_cast<float*>(alloc.allocate(x_scale_n * 4));
        w_scale = static_cast<float*>(alloc.allocate(w_scale_n * 4));
        alloc.copy_from_host(x_scale, ones.data(), x_scale_n * 4);
        alloc.copy_from_host(w_scale, ones.data(), w_scale_n * 4);
    }
    cuda::LtGemm lt(alloc);
    auto call = [&] { lt.run(spec, y_NO, x_NI, x_scale, w_OI, w_scale); };
    cudaEvent_t start, stop;
    FRUGAL_CUDA_CHECK(cudaEventCreate(&start));
    FRUGAL_CUDA_CHECK(cudaEventCreate(&stop));
    for (int i = 0; i < 3; ++i) call();
    FRUGAL_CUDA_CHECK(cudaStreamSynchronize(alloc.stream()));
    std::vector<double> secs;
    for (int r = 0; r < reps; ++r) {
        FRUGAL_CUDA_CHECK(cudaEventRecord(start, alloc.stream()));
        for (int i = 0; i < 10; ++i) call();
        FRUGAL_CUDA_CHECK(cudaEventRecord(stop, alloc.stream()));
        FRUGAL_CUDA_CHECK(cudaEventSynchronize(stop));
        float ms = 0;
        FRUGAL_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        secs.push_back(double(ms) / 1e3 / 10);
    }
    FRUGAL_CUDA_CHECK(cudaEventDestroy(start));
    FRUGAL_CUDA_CHECK(cudaEventDestroy(stop));
    alloc.deallocate(x_NI, size_t(n * in) * elem);
    alloc.deallocate(w_OI, size_t(out * in) * elem);
    alloc.deallocate(y_NO, size_t(n * out) * 2);
    if (fp8) {
        alloc.deallocate(x_scale, x_scale_n * 4);
        alloc.deallocate(w_scale, w_scale_n * 4);
    }
    return 2.0 * double(n) * double(in) * double(out) / median(secs);
}
#endif

int run_cuda(const Options& o, const trainer::TrainConfig& cfg, const std::vector<int32_t>& tokens,
             const std::vector<int32_t>& targets) {
    std::string why_not;
    FRUGAL_CHECK(backend::backend_available(Device::kCuda, &why_not), "--device cuda: ", why_not,
                 ": run on a machine with a GPU and a build with FRUGAL_CUDA=ON, or use --device cpu");
#ifdef FRUGAL_HAVE_CUDA
    const accounting::Device hw = accounting::find_device(accounting::load_catalogue(), o.hardware, "--hardware");
    backend::Backend& be = backend::backend_for(Device::kCuda);
    auto* alloc = dynamic_cast<cuda::CudaAllocator*>(&be.allocator());
    FRUGAL_CHECK(alloc, "--device cuda: the CUDA backend's allocator is not a CudaAllocator");
    cudaDeviceProp prop{};
    FRUGAL_CUDA_CHECK(cudaGetDeviceProperties(&prop, alloc->device_index()));

    const int64_t b = cfg.train.micro_batch, s = cfg.train.seq_len, n = b * s;
    const int64_t d = cfg.model.d_model, out = widest_out(cfg.model);
    const double flop_per_token = accounting::training_flops_per_token(cfg.model, s);
    double tok_s = 0;
    size_t peak_bytes = 0;
    {
        TrainedModel model(cfg, cfg.precision, be);
        model.step(tokens, targets, b, s);  // warm-up: buffers, plans and cuDNN graphs are built once
        std::vector<double> step_s;
        for (int r = 0; r < o.reps; ++r) step_s.push_back(model.step(tokens, targets, b, s));
        tok_s = double(n) / median(step_s);
        peak_bytes = alloc->peak_bytes();
    }
    const double model_flops = tok_s * flop_per_token;
    const double bf16_gemm = lt_gemm_flops(*alloc, cuda::GemmFormat::kBF16, n, d, out, o.reps);
    double fp8_gemm = 0;
    std::string fp8_why;
    try {
        fp8_gemm = lt_gemm_flops(*alloc, cuda::GemmFormat::kFp8Blockwise, n, d, out, o.reps);
    } catch (const Error& e) {
        fp8_why = e.what();
    }
    const bool fp8_recipe = cfg.precision.recipe.rfind("fp8", 0) == 0;
    const double ceiling = fp8_recipe && fp8_gemm > 0 ? fp8_gemm : bf16_gemm;
    std::printf("config            %s (%lld x %lld tokens per micro-batch, %.2f B parameters)\n", o.path.c_str(),
                (long long)b, (long long)s, accounting::count_params(cfg.model).total / 1e9);
    std::printf("device            %s (sm %d%d, %d SMs, %.0f GiB); peaks from %s: BF16 %.0f, FP8 %.0f TFLOP/s\n",
                prop.name, prop.major, prop.minor, prop.multiProcessorCount, double(prop.totalGlobalMem) / (1 << 30),
                hw.key.c_str(), hw.bf16_tflops, hw.fp8_tflops);
    std::printf(
        "training          %.0f tokens/s in %s, %.1f TFLOP/s model FLOPs (%.1f MFLOP/token), peak memory %.1f"
        " GiB\n",
        tok_s, cfg.precision.recipe.c_str(), model_flops / 1e12, flop_per_token / 1e6, double(peak_bytes) / (1 << 30));
    std::printf("mfu               %.1f%% of BF16 peak, %.1f%% of FP8 peak\n",
                100 * model_flops / (hw.bf16_tflops * 1e12),
                hw.fp8_tflops > 0 ? 100 * model_flops / (hw.fp8_tflops * 1e12) : 0.0);
    std::printf("cublaslt bf16     %lld x %lld x %lld: %.1f TFLOP/s\n", (long long)n, (long long)d, (long long)out,
                bf16_gemm / 1e12);
    if (fp8_gemm > 0)
        std::printf("cublaslt fp8      %lld x %lld x %lld blockwise: %.1f TFLOP/s\n", (long long)n, (long long)d,
                    (long long)out, fp8_gemm / 1e12);
    else
        std::printf("cublaslt fp8      not run: %s\n", fp8_why.c_str());
    std::printf("ratio             %.2f (model FLOP/s / %s GEMM FLOP/s; goal >= 0.6)\n", model_flops / ceiling,
                ceiling == fp8_gemm ? "FP8" : "BF16");
    return 0;
#else
    (void)o, (void)cfg, (void)tokens, (void)targets;
    return 1;
#endif
}

}  // namespace

int main(int argc, char** argv) {
    try {
        bool help = false;
        const Options o = parse(argc, argv, &help);
        if (help) {
            std::puts(kUsage);
            return 0;
        }
        trainer::TrainConfig cfg = trainer::load_config(o.path, o.overrides, 1);
        const int64_t n = cfg.train.micro_batch * cfg.train.seq_len;
        // Synthetic tokens: throughput does not depend on their values.
        std::vector<int32_t> tokens(static_cast<size_t>(n)), targets(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) {
            tokens[size_t(i)] = int32_t((i * 7919) % cfg.model.vocab_size);
            targets[size_t(i)] = int32_t((i * 104729 + 1) % cfg.model.vocab_size);
        }
        return o.device == "cuda" ? run_cuda(o, cfg, tokens, targets) : run_cpu(o, cfg, tokens, targets);
    } catch (const Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return e.what() && dynamic_cast<const ConfigError*>(&e) ? 2 : 1;
    }
}
