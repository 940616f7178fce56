#include "trainer/trainer.h"

#include <omp.h>

#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <thread>

#include "core/log.h"
#include "data/loader.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "parallel/all_to_all_dispatcher.h"
#include "parallel/grad_sync.h"
#include "parallel/parallel_dims.h"

namespace frugal::trainer {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::vector<optim::OptimParam> optim_params(model::ParamStore& store, const optim::OptimConfig& cfg) {
    std::vector<optim::OptimParam> out;
    for (model::Param* p : store.params()) {
        const std::string kind = model::param_kind_name(p->kind);
        bool decay = std::find(cfg.no_decay.begin(), cfg.no_decay.end(), kind) == cfg.no_decay.end();
        out.push_back({p->value.data<float>(), p->grad.data<float>(), p->value.numel(), decay});
    }
    return out;
}

std::string json_number(double v) {
    if (!std::isfinite(v)) return "null";
    std::ostringstream os;
    os << std::setprecision(9) << v;
    return os.str();
}

// Per-layer MoE statistics of the step just taken (aux and z losses as means over its micro-batches).
std::string moe_stats_json(const model::ModelConfig& m, const std::vector<model::MoELayer<float>*>& layers) {
    std::ostringstream os;
    os << "[";
    size_t i = 0;
    for (int64_t l = 0; l < m.n_layers; ++l) {
        if (!m.is_moe_layer(l)) continue;
        const model::MoEStats& st = layers[i]->router().stats();
        const double micro = double(std::max<int64_t>(st.micro_batches, 1));
        os << (i ? ", " : "") << "{\"layer\": " << l << ", \"tokens_per_expert\": [";
        for (size_t e = 0; e < st.tokens_per_expert.size(); ++e) os << (e ? ", " : "") << st.tokens_per_expert[e];
        os << "], \"dropped\": " << st.dropped << ", \"imbalance\": " << json_number(st.imbalance())
           << ", \"aux_loss\": " << json_number(st.aux_loss / micro)
           << ", \"z_loss\": " << json_number(st.z_loss / micro) << "}";
        ++i;
    }
    os << "]";
    return os.str();
}

// The configured fault, once per run directory.
void inject_fault(const TrainConfig& cfg) {
    const fs::path marker = fs::path(cfg.run.out_dir) / "fault_injected";
    if (fs::exists(marker)) return;
    fs::create_directories(cfg.run.out_dir);
    std::ofstream(marker) << "rank " << cfg.fault.kill_rank << " step " << cfg.fault.at_step << "\n";
    if (cfg.fault.kind == "throw")
        FRUGAL_THROW("injected fault (fault.kind: throw) at step ", cfg.fault.at_step, " on rank ", cfg.fault.kill_rank);
    if (cfg.fault.kind == "hang") {
        log::error("injected fault: rank ", cfg.fault.kill_rank, " stops responding at step ", cfg.fault.at_step);
        for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    log::error("injected fault: rank ", cfg.fault.kill_rank, " kills itself (SIGKILL) at step ", cfg.fault.at_step);
    std::raise(SIGKILL);
}

}  // namespace

TrainResult train(TrainConfig& cfg, const std::function<void(const StepMetrics&)>& on_step) {
    parallel::SingleProcessComm world;
    return train(cfg, world, on_step);
}

TrainResult train(TrainConfig& cfg, parallel::Communicator& world,
                  const std::function<void(const StepMetrics&)>& on_step) {
    const int64_t n_experts = cfg.model.moe.n_experts;
    const parallel::ParallelDims dims = parallel::ParallelDims::make(world.size(), world.rank(), cfg.parallel.ep,
                                                                     n_experts);
    const int64_t dp_rank = dims.rank, dp_size = dims.world;
    const bool is_root = dims.rank == 0;
    if (cfg.train.threads > 0) omp_set_num_threads(int(cfg.train.threads));
    const int64_t micro = cfg.train.micro_batch, s = cfg.train.seq_len;
    const int64_t accum = cfg.accum_steps(dp_size);
    // ep group: same edp_rank, ordered by ep_rank; edp group: same ep_rank, ordered by edp_rank.
    auto ep_comm = world.split(dims.edp_rank, dims.ep_rank, "ep");
    auto edp_comm = world.split(dims.ep_rank, dims.edp_rank, "edp");

    data::Loader train_data((fs::path(cfg.data.dir) / "train.bin").string(), s, uint64_t(cfg.run.seed), true);
    data::Loader val_data((fs::path(cfg.data.dir) / "val.bin").string(), s, uint64_t(cfg.run.seed), false);
    FRUGAL_CONFIG_CHECK(train_data.vocab_size() <= cfg.model.vocab_size, "the data in ", cfg.data.dir,
                        " uses a vocabulary of ", train_data.vocab_size(), " tokens but model.vocab_size is ",
                        cfg.model.vocab_size, ": set model.vocab_size to at least ", train_data.vocab_size());

    model::Transformer<float> net(cfg.model, dims.expert_shard(n_experts));
    net.init(uint64_t(cfg.run.seed));
    net.set_precision(cfg.precision);
    auto moe_layers = net.moe_layers();
    {
        size_t i = 0;
        for (int64_t l = 0; l < cfg.model.n_layers; ++l) {
            if (!cfg.model.is_moe_layer(l)) continue;
            if (dims.ep > 1)
                moe_layers[i++]->set_dispatcher(std::make_unique<parallel::AllToAllDispatcher<float>>(
                    *ep_comm, n_experts, "layer " + std::to_string(l) + " MoE dispatch", cfg.precision.fp8_dispatch));
            else
                moe_layers[i++]->set_dispatcher(
                    std::make_unique<model::LocalDispatcher<float>>(n_experts, cfg.precision.fp8_dispatch));
        }
    }
    auto oparams = optim_params(net.params(), cfg.optim);
    optim::AdamW opt(cfg.optim, oparams, cfg.precision.optimizer_state == "bf16");
    parallel::GradSync grad_sync(net.params(), world, *edp_comm, *ep_comm);

    std::ofstream metrics;
    if (is_root) {
        fs::create_directories(cfg.run.out_dir);
        std::ofstream(fs::path(cfg.run.out_dir) / "config.yaml") << to_yaml(cfg);
        metrics.open(fs::path(cfg.run.out_dir) / "metrics.jsonl");
        FRUGAL_CHECK(metrics.good(), "cannot write ", (fs::path(cfg.run.out_dir) / "metrics.jsonl").string(),
                     ": check run.out_dir");
    }

    log::info("frugal: ", net.params().numel(), " parameters on this rank (", net.params().dense_numel(),
              " replicated), ", moe_layers.size(), " MoE layers, ", dims.world, " ranks (ep ", dims.ep, ", edp ",
              dims.edp, "), ", accum, " micro-batches of ", micro, " x ", s, " tokens per rank per step, ",
              omp_get_max_threads(), " threads per rank");

    // Token buffers for all micro-batches of a step: [accum, micro, S].
    std::vector<int32_t> tokens(size_t(accum * micro * s)), targets(size_t(accum * micro * s));
    // Validation: every rank runs the same number of forward passes (the all-to-all needs them all); rank r reads
    // batches i * ranks + r, so a layout of n ranks evaluates n times eval_batches micro-batches.
    auto evaluate = [&]() {
        double sums[2] = {0, 0};  // cross-entropy sum, valid targets
        for (int64_t i = 0; i < cfg.train.eval_batches; ++i) {
            val_data.read_samples(tokens.data(), targets.data(), (i * dp_size + dp_rank) * micro, micro);
            model::ForwardResult r = net.forward(tokens.data(), targets.data(), micro, s);
            sums[0] += r.ce_sum;
            sums[1] += double(r.num_valid);
        }
        world.set_layer("validation loss");
        world.all_reduce(sums, 2, DType::kF64, parallel::ReduceOp::kSum);
        return sums[1] > 0 ? sums[0] / sums[1] : 0.0;
    };
    std::vector<int64_t> counts(size_t(2 * std::max<int64_t>(n_experts, 1) + 1));

    TrainResult result;
    const auto t_start = Clock::now();
    auto t_window = Clock::now();
    int64_t window_tokens = 0;
    int64_t skipped_in_a_row = 0;
    for (int64_t step = 0; step < cfg.train.steps; ++step) {
        world.set_step(step + 1);
        if (cfg.fault.kill_rank == dims.rank && cfg.fault.at_step == step + 1) inject_fault(cfg);
        for (auto* layer : moe_layers) layer->router().stats().reset(n_experts);
        net.params().zero_grad();
        int64_t total_valid = 0;
        for (int64_t m = 0; m < accum; ++m) {
            int32_t* tk = tokens.data() + m * micro * s;
            int32_t* tg = targets.data() + m * micro * s;
            train_data.micro_batch(tk, tg, step, m, cfg.train.global_batch, micro, dp_rank, dp_size);
            for (int64_t i = 0; i < micro * s; ++i) total_valid += tg[i] != model::kIgnoreIndex;
        }
        world.set_layer("token count");
        world.all_reduce(&total_valid, 1, DType::kI64, parallel::ReduceOp::kSum);
        const float ce_scale = total_valid > 0 ? 1.0f / float(total_valid) : 0.0f;
        const float aux_scale = 1.0f / float(accum * dp_size);
        double sums[2] = {0, 0};  // cross-entropy sum, scaled aux + z losses
        for (int64_t m = 0; m < accum; ++m) {
            model::ForwardResult r =
                net.forward(tokens.data() + m * micro * s, targets.data() + m * micro * s, micro, s);
            sums[0] += r.ce_sum;
            sums[1] += (r.aux_loss + r.z_loss) * aux_scale;
            net.backward(ce_scale, aux_scale);
        }
        grad_sync.sync();
        world.set_layer("loss");
        world.all_reduce(sums, 2, DType::kF64, parallel::ReduceOp::kSum);
        StepMetrics sm;
        sm.step = step + 1;
        sm.loss = total_valid > 0 ? sums[0] / double(total_valid) : 0.0;
        sm.aux_loss = sums[1];
        sm.grad_norm = std::sqrt(grad_sync.grad_sq_norm());
        sm.lr = optim::lr_at(cfg.optim, step, cfg.train.steps);
        window_tokens += cfg.train.global_batch * s;

        if (!std::isfinite(sm.loss) || !std::isfinite(sm.grad_norm)) {
            ++result.skipped_steps;
            ++skipped_in_a_row;
            FRUGAL_CHECK(cfg.train.nonfinite == "skip", "step ", step + 1, ": loss ", sm.loss, ", gradient norm ",
                         sm.grad_norm,
                         " is not finite; stopping (train.nonfinite: stop). Lower optim.lr or raise "
                         "optim.warmup_steps");
            FRUGAL_CHECK(skipped_in_a_row <= cfg.train.max_skipped_steps, "step ", step + 1, ": ", skipped_in_a_row,
                         " non-finite steps in a row (train.max_skipped_steps = ", cfg.train.max_skipped_steps,
                         "); stopping. Lower optim.lr or raise optim.warmup_steps");
            log::warn("step ", step + 1, ": loss ", sm.loss, ", gradient norm ", sm.grad_norm,
                      " is not finite; update skipped (train.nonfinite: skip)");
            sm.skipped = true;
        } else {
            skipped_in_a_row = 0;
            if (cfg.optim.grad_clip > 0 && sm.grad_norm > cfg.optim.grad_clip)
                optim::scale_grads(oparams, float(cfg.optim.grad_clip / sm.grad_norm));
            opt.step(sm.lr);
        }
        // Expert loads summed over every rank: the bias update and the statistics see the global batch, so every
        // replica of an expert moves its bias the same way.
        for (auto* layer : moe_layers) {
            model::MoEStats& st = layer->router().stats();
            std::copy(st.selected_per_expert.begin(), st.selected_per_expert.end(), counts.begin());
            std::copy(st.tokens_per_expert.begin(), st.tokens_per_expert.end(), counts.begin() + n_experts);
            counts[size_t(2 * n_experts)] = st.dropped;
            world.set_layer("expert load");
            world.all_reduce(counts.data(), 2 * n_experts + 1, DType::kI64, parallel::ReduceOp::kSum);
            std::copy(counts.begin(), counts.begin() + n_experts, st.selected_per_expert.begin());
            std::copy(counts.begin() + n_experts, counts.begin() + 2 * n_experts, st.tokens_per_expert.begin());
            st.dropped = counts[size_t(2 * n_experts)];
            if (!sm.skipped) layer->router().update_bias(st.selected_per_expert);
            sm.max_imbalance = std::max(sm.max_imbalance, st.imbalance());
            sm.dropped += st.dropped;
        }
        const bool last = step + 1 == cfg.train.steps;
        const bool log_step = last || (step + 1) % cfg.run.log_every == 0 || step == 0;
        // Taken before validation, whose forward passes also go through the routers.
        const std::string moe_json = log_step && !moe_layers.empty() ? moe_stats_json(cfg.model, moe_layers) : "";
        if (last || (cfg.train.eval_every > 0 && (step + 1) % cfg.train.eval_every == 0)) sm.val_loss = evaluate();
        sm.elapsed_s = seconds_since(t_start);

        if (log_step) {
            sm.tokens_per_s = double(window_tokens) / std::max(1e-9, seconds_since(t_window));
            t_window = Clock::now();
            window_tokens = 0;
            std::ostringstream line;
            line << std::fixed << "step " << std::setw(5) << sm.step << "/" << cfg.train.steps << "  loss "
                 << std::setprecision(4) << sm.loss;
            if (sm.val_loss >= 0) line << "  val " << std::setprecision(4) << sm.val_loss;
            line << "  lr " << std::scientific << std::setprecision(2) << sm.lr << std::fixed << "  gnorm "
                 << std::setprecision(3) << sm.grad_norm << "  tok/s " << std::setprecision(0) << sm.tokens_per_s;
            if (!moe_layers.empty()) line << "  imbalance " << std::setprecision(2) << sm.max_imbalance;
            line << "  elapsed " << std::setprecision(1) << sm.elapsed_s << "s";
            log::info(line.str());
            if (is_root) {
            metrics << "{\"step\": " << sm.step << ", \"loss\": " << json_number(sm.loss)
                    << ", \"aux_loss\": " << json_number(sm.aux_loss) << ", \"lr\": " << json_number(sm.lr)
                    << ", \"grad_norm\": " << json_number(sm.grad_norm)
                    << ", \"tokens_per_s\": " << json_number(sm.tokens_per_s)
                    << ", \"max_imbalance\": " << json_number(sm.max_imbalance) << ", \"dropped\": " << sm.dropped
                    << ", \"elapsed_s\": " << json_number(sm.elapsed_s);
            if (sm.val_loss >= 0) metrics << ", \"val_loss\": " << json_number(sm.val_loss);
            if (sm.skipped) metrics << ", \"skipped\": true";
            if (!moe_json.empty()) metrics << ", \"moe\": " << moe_json;
            metrics << "}\n";
            metrics.flush();
            }
        }
        if (on_step) on_step(sm);
        result.history.push_back(sm);
    }
    result.seconds = seconds_since(t_start);
    result.tokens = cfg.train.steps * cfg.train.global_batch * s;
    result.first_loss = result.history.front().loss;
    result.final_loss = result.history.back().loss;
    result.final_val_loss = result.history.back().val_loss;
    log::info("done: ", cfg.train.steps, " steps, ", result.tokens, " tokens in ", std::fixed, std::setprecision(1),
              result.seconds, " s (", std::setprecision(0), double(result.tokens) / result.seconds, " tokens/s); loss ",
              std::setprecision(4), result.first_loss, " -> ", result.final_loss, ", validation loss ",
              result.final_val_loss, "; skipped steps ", result.skipped_steps, "; outputs in ", cfg.run.out_dir);
    return result;
}

}  // namespace frugal::trainer
