#include "trainer/trainer.h"

#include <omp.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <thread>

#include "accounting/estimate.h"
#include "accounting/flops.h"
#include "accounting/hardware.h"
#include "accounting/meter.h"
#include "accounting/report.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf.h"
#include "core/bf16.h"
#include "core/file_io.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/signals.h"
#include "core/version.h"
#include "data/loader.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "parallel/all_to_all_dispatcher.h"
#include "parallel/grad_sync.h"
#include "parallel/parallel_dims.h"
#include "trainer/run_guard.h"

namespace frugal::trainer {

namespace fs = std::filesystem;

static_assert(data::kIgnoreTarget == model::kIgnoreIndex,
              "the loader's masked targets must be the loss's ignore index");

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::vector<optim::OptimParam> optim_params(model::ParamStore& store, const optim::OptimConfig& cfg,
                                            const std::vector<std::string>& freeze) {
    std::vector<optim::OptimParam> out;
    for (model::Param* p : store.params()) {
        const std::string kind = model::param_kind_name(p->kind);
        const bool decay = std::find(cfg.no_decay.begin(), cfg.no_decay.end(), kind) == cfg.no_decay.end();
        const bool frozen = std::find(freeze.begin(), freeze.end(), kind) != freeze.end();
        out.push_back({p->value.data<float>(), p->grad.data<float>(), p->value.numel(), decay, frozen});
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

// The checkpoint's view of the training state: a TensorSlot per parameter, AdamW moment and expert bias, and the
// matmul recipes' state (delayed scaling's amax histories).
// BF16 moments are staged through FP32 buffers (BF16 values are exact in FP32), so the file format does not
// depend on precision.optimizer_state. Each data-parallel rank's amax histories saw its own batches: they are one
// row per rank of "precision/recipe_state" [world, n], restored only into the same layout.
struct CheckpointSlots {
    static constexpr const char* kRecipeState = "precision/recipe_state";
    std::vector<checkpoint::TensorSlot> slots;
    std::vector<std::vector<float>> staged;        // FP32 copies of BF16 moments
    std::vector<std::pair<Tensor*, size_t>> bf16;  // moment tensor -> staged index
    std::vector<precision::MatmulRecipe<float>*> recipes;
    std::vector<float> recipe_state;

    CheckpointSlots(model::Transformer<float>& net, optim::AdamW& opt, std::vector<model::MoELayer<float>*>& moe,
                    const model::ModelConfig& m, const parallel::ParallelDims& dims) {
        auto& params = net.params().params();
        auto add = [&](const std::string& name, model::Param* p, float* data) {
            int64_t row = 1;
            for (size_t i = 1; i < p->global_shape.size(); ++i) row *= p->global_shape[i];
            checkpoint::TensorSlot s;
            s.name = name;
            s.global_shape = p->global_shape;
            s.row_begin = p->global_offset / std::max<int64_t>(row, 1);
            s.local_shape = p->shape;
            s.writer = p->is_expert ? dims.edp_rank == 0 : dims.rank == 0;
            s.data = data;
            slots.push_back(s);
        };
        for (model::Param* p : params) add("params/" + p->name, p, p->value.data<float>());
        staged.reserve(2 * params.size());
        for (size_t i = 0; i < params.size(); ++i)
            for (auto [kind, moments] : {std::pair<const char*, std::vector<Tensor>*>{"exp_avg", &opt.exp_avg()},
                                         {"exp_avg_sq", &opt.exp_avg_sq()}}) {
                Tensor& t = (*moments)[i];
                float* data;
                if (opt.bf16_state()) {
                    staged.emplace_back(size_t(t.numel()));
                    bf16.push_back({&t, staged.size() - 1});
                    data = staged.back().data();
                } else {
                    data = t.data<float>();
                }
                add(std::string("optim/") + kind + "/" + params[i]->name, params[i], data);
            }
        size_t i = 0;
        for (int64_t l = 0; l < m.n_layers; ++l) {
            if (!m.is_moe_layer(l)) continue;
            checkpoint::TensorSlot s;
            s.name = "moe/layers." + std::to_string(l) + ".expert_bias";
            s.global_shape = {m.moe.n_experts};
            s.local_shape = {m.moe.n_experts};
            s.writer = dims.rank == 0;
            s.data = moe[i++]->router().expert_bias().data();
            slots.push_back(s);
        }
        recipes = net.recipes();
        int64_t n = 0;
        for (auto* r : recipes) n += r->state_size();
        if (n > 0) {
            recipe_state.assign(size_t(n), 0.0f);
            slots.push_back({kRecipeState, {dims.world, n}, dims.rank, {1, n}, true, recipe_state.data()});
        }
    }
    bool has_recipe_state() const { return !recipe_state.empty(); }
    // The slots to restore from a checkpoint written by world_size ranks with expert parallelism ep: the recipe
    // state only when it was written by this very layout (and has this size).
    std::vector<checkpoint::TensorSlot> load_slots(const std::string& path, int64_t world_size, int64_t ep,
                                                   const parallel::ParallelDims& dims, bool* with_recipe_state) const {
        *with_recipe_state = false;
        if (!has_recipe_state()) return slots;
        for (const auto& e : checkpoint::read_manifest(path))
            if (e.name == kRecipeState && e.shape == Shape{dims.world, int64_t(recipe_state.size())})
                *with_recipe_state = world_size == dims.world && ep == dims.ep;
        std::vector<checkpoint::TensorSlot> out;
        for (const auto& s : slots)
            if (s.name != kRecipeState || *with_recipe_state) out.push_back(s);
        return out;
    }
    void before_save() {
        float* out = recipe_state.data();
        for (auto* r : recipes) {
            r->save_state(out);
            out += r->state_size();
        }
        for (auto [t, k] : bf16) {
            const uint16_t* src = static_cast<const uint16_t*>(t->raw_data());
            for (size_t j = 0; j < staged[k].size(); ++j) staged[k][j] = bf16_bits_to_float(src[j]);
        }
    }
    void after_load(bool with_recipe_state) {
        if (with_recipe_state) {
            const float* in = recipe_state.data();
            for (auto* r : recipes) {
                r->load_state(in);
                in += r->state_size();
            }
        }
        for (auto [t, k] : bf16) {
            uint16_t* dst = static_cast<uint16_t*>(t->raw_data());
            for (size_t j = 0; j < staged[k].size(); ++j) dst[j] = float_to_bf16_bits(staged[k][j]);
        }
    }
};

// Steps computed after the checkpoint a run resumes from were lost to the failure: recorded in
// run.out_dir/failures.jsonl for the accounting.
void record_lost_steps(const std::string& out_dir, int64_t resumed_step) {
    std::ifstream in(fs::path(out_dir) / "progress");
    int64_t reached = resumed_step;
    if (in >> reached && reached > resumed_step) {
        AppendFile failures((fs::path(out_dir) / "failures.jsonl").string(), false);
        failures.append("{\"resumed_from_step\": " + std::to_string(resumed_step) +
                        ", \"last_completed_step\": " + std::to_string(reached) +
                        ", \"lost_steps\": " + std::to_string(reached - resumed_step) + "}\n");
        failures.close();
        log::warn("steps ", resumed_step + 1, "..", reached, " were lost to the failure and are computed again");
    }
}

std::string phases_json(const accounting::PhaseSeconds& p) {
    std::ostringstream os;
    os << std::setprecision(12) << "{";
    for (int i = 0; i < accounting::kNumPhases; ++i)
        os << (i ? ", " : "") << "\"" << accounting::phase_name(accounting::Phase(i)) << "\": " << p[size_t(i)];
    os << "}";
    return os.str();
}

accounting::PhaseSeconds parse_phases(const std::string& json) {
    accounting::PhaseSeconds p{};
    if (json.empty()) return p;
    YAML::Node n = YAML::Load(json);
    for (int i = 0; i < accounting::kNumPhases; ++i)
        if (n[accounting::phase_name(accounting::Phase(i))])
            p[size_t(i)] = n[accounting::phase_name(accounting::Phase(i))].as<double>();
    return p;
}

// Device-seconds the previous attempt of this run spent after the state it resumes from: its last cost.json total
// minus what the checkpoint carried.
double lost_device_seconds(const TrainConfig& cfg, const accounting::PhaseSeconds& carried) {
    const fs::path cost = fs::path(cfg.run.out_dir) / "cost.json";
    if (!fs::exists(cost)) return 0;
    try {
        accounting::CostReport prev = accounting::read_cost_json(cost.string());
        double carried_total = 0;
        for (double x : carried) carried_total += x;
        const double lost = prev.device_hours() * 3600.0 - carried_total;
        if (lost > 0) log::warn("accounting: ", lost / 3600.0, " device-hours of the previous attempt were lost");
        return std::max(0.0, lost);
    } catch (const Error&) {
        return 0;
    }
}

// The configured fault, once per run directory.
void inject_fault(const TrainConfig& cfg) {
    const fs::path marker = fs::path(cfg.run.out_dir) / "fault_injected";
    if (fs::exists(marker)) return;
    fs::create_directories(cfg.run.out_dir);
    std::ofstream(marker) << "rank " << cfg.fault.kill_rank << " step " << cfg.fault.at_step << "\n";
    if (cfg.fault.kind == "throw")
        FRUGAL_THROW("injected fault (fault.kind: throw) at step ", cfg.fault.at_step, " on rank ",
                     cfg.fault.kill_rank);
    if (cfg.fault.kind == "hang") {
        log::error("injected fault: rank ", cfg.fault.kill_rank, " stops responding at step ", cfg.fault.at_step);
        for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    log::error("injected fault: rank ", cfg.fault.kill_rank, " kills itself (SIGKILL) at step ", cfg.fault.at_step);
    std::raise(SIGKILL);
}

std::string checkpoint_dir(const TrainConfig& cfg) {
    return cfg.checkpoint.dir.empty() ? (fs::path(cfg.run.out_dir) / "checkpoints").string() : cfg.checkpoint.dir;
}

bool is_inside(const std::string& path, const std::string& dir) {
    const std::string p = fs::weakly_canonical(fs::absolute(path)).string(),
                      d = fs::weakly_canonical(fs::absolute(dir)).string();
    return p == d || (p.size() > d.size() && p.compare(0, d.size(), d) == 0 && p[d.size()] == '/');
}

// What the run holds while it writes (rank 0): every directory it will write is writable and locked, and the
// export target can be replaced. Checked before anything is built, so a mistake costs nothing.
struct OutputClaim {
    DirLock out_dir, ckpt_dir;
};
OutputClaim claim_outputs(const TrainConfig& cfg) {
    OutputClaim claim;
    check_writable_dir(cfg.run.out_dir, "run.out_dir");
    claim.out_dir = DirLock(cfg.run.out_dir, "run.out_dir");
    const std::string ckpt_dir = checkpoint_dir(cfg);
    if (cfg.checkpoint.every > 0 || cfg.checkpoint.resume == "auto") {
        check_writable_dir(ckpt_dir, "checkpoint.dir");
        if (!is_inside(ckpt_dir, cfg.run.out_dir)) claim.ckpt_dir = DirLock(ckpt_dir, "checkpoint.dir");
    }
    if (!cfg.checkpoint.export_hf.empty()) {
        checkpoint::check_export_target(cfg.checkpoint.export_hf, "checkpoint.export_hf", false);
        check_writable_dir(fs::absolute(cfg.checkpoint.export_hf).parent_path().string(), "checkpoint.export_hf");
    }
    return claim;
}

// The run's id: the resumed checkpoint's, or a new one for a fresh run (rank 0 writes the checkpoints' strings and
// applies retention, so only rank 0's id matters).
std::string run_id_for(const std::string& resumed_id) { return resumed_id.empty() ? new_run_id() : resumed_id; }

// Before anything large is allocated: what this rank will hold (accounting::rank_memory: parameters, gradients,
// AdamW moments, one micro-batch's activations) against its share of the machine's available memory.
void check_memory(const TrainConfig& cfg, const parallel::ParallelDims& dims) {
    accounting::RankMemoryInput in;
    in.model = cfg.model;
    in.ep = dims.ep;
    in.bf16_moments = cfg.precision.optimizer_state == "bf16";
    in.micro_batch = cfg.train.micro_batch;
    in.seq_len = cfg.train.seq_len;
    if (cfg.precision.recipe != "fp32") in.low_precision_roles = cfg.precision.low_precision_layers;
    in.blockwise = cfg.precision.recipe == "fp8-blockwise";
    const accounting::RankMemory need = accounting::rank_memory(in);
    const int64_t local_ranks = ranks_on_this_machine(dims.world);
    const int64_t avail = available_memory_bytes();
    const double per_rank = avail < 0 ? -1.0 : double(avail) / double(local_ranks);
    log::info("memory per rank: ", accounting::format_rank_memory(need), " of ", std::llround(per_rank / 1e8) / 10.0,
              " GB available (", local_ranks, " ranks on this machine)");
    accounting::check_rank_memory(need, per_rank, "frugal train",
                                  "spread the experts over more ranks (frugal launch -n N with a larger parallel.ep), "
                                  "lower train.micro_batch, or set precision.optimizer_state: bf16");
}

}  // namespace

TrainResult train(TrainConfig& cfg, const std::function<void(const StepMetrics&)>& on_step) {
    parallel::SingleProcessComm world;
    return train(cfg, world, on_step);
}

TrainResult train(TrainConfig& cfg, parallel::Communicator& world,
                  const std::function<void(const StepMetrics&)>& on_step) {
    accounting::Meter meter;
    const int64_t n_experts = cfg.model.moe.n_experts;
    const parallel::ParallelDims dims =
        parallel::ParallelDims::make(world.size(), world.rank(), cfg.parallel.ep, n_experts);
    const int64_t dp_rank = dims.rank, dp_size = dims.world;
    const bool is_root = dims.rank == 0;
    OutputClaim claim;
    if (is_root) claim = claim_outputs(cfg);
    if (cfg.train.threads > 0) omp_set_num_threads(int(cfg.train.threads));
    const int64_t micro = cfg.train.micro_batch, s = cfg.train.seq_len;
    const int64_t accum = cfg.accum_steps(dp_size);
    // ep group: same edp_rank, ordered by ep_rank; edp group: same ep_rank, ordered by edp_rank.
    auto ep_comm = world.split(dims.edp_rank, dims.ep_rank, "ep");
    auto edp_comm = world.split(dims.ep_rank, dims.edp_rank, "edp");

    data::Loader train_data((fs::path(cfg.data.dir) / "train.bin").string(), s, uint64_t(cfg.run.seed), true);
    data::Loader val_data((fs::path(cfg.data.dir) / "val.bin").string(), s, uint64_t(cfg.run.seed), false);
    FRUGAL_CONFIG_CHECK(
        !cfg.data.document_mask || (train_data.end_of_document() >= 0 && val_data.end_of_document() >= 0),
        "data.document_mask needs the end-of-document token, which the shards in ", cfg.data.dir,
        " do not record (written by an older prepare-data): re-run `frugal prepare-data`");
    FRUGAL_CONFIG_CHECK(train_data.vocab_size() <= cfg.model.vocab_size, "the data in ", cfg.data.dir,
                        " uses a vocabulary of ", train_data.vocab_size(), " tokens but model.vocab_size is ",
                        cfg.model.vocab_size, ": set model.vocab_size to at least ", train_data.vocab_size());

    check_memory(cfg, dims);
    model::Transformer<float> net(cfg.model, dims.expert_shard(n_experts));
    net.init(uint64_t(cfg.run.seed));
    if (!cfg.model.init_from.empty()) {
        checkpoint::load_hf_weights(cfg.model.init_from.substr(3), net.params());
        log::info("weights from ", cfg.model.init_from.substr(3), " (each rank read its own experts)");
    }
    net.set_precision(cfg.precision);
    parallel::use_expert_parallel(net, *ep_comm, cfg.precision.fp8_dispatch);
    auto moe_layers = net.moe_layers();
    auto oparams = optim_params(net.params(), cfg.optim, cfg.train.freeze);
    optim::AdamW opt(cfg.optim, oparams, cfg.precision.optimizer_state == "bf16");
    parallel::GradSync grad_sync(net.params(), world, *edp_comm, *ep_comm);

    // Checkpoint slots: every parameter, both AdamW moments and every expert bias, in their global shapes.
    const std::string ckpt_dir = checkpoint_dir(cfg);
    CheckpointSlots ckpt(net, opt, moe_layers, cfg.model, dims);
    int64_t start_step = 0, data_position = 0;
    std::string run_id;
    accounting::PhaseSeconds carried_accounting{};
    if (is_root && cfg.checkpoint.resume == "none" && cfg.checkpoint.every > 0) check_fresh_start(ckpt_dir, false);
    if (cfg.checkpoint.resume == "auto") {
        int64_t found = -1;
        std::string path;
        if (is_root) {
            path = checkpoint::find_resumable(ckpt_dir);
            if (path.empty()) {
                check_fresh_start(ckpt_dir, true);
            } else {
                const checkpoint::TrainingState written = checkpoint::read_state(path);
                check_resume_compatible(path, written.config_yaml, to_yaml(cfg));
                found = written.step;
            }
        }
        world.set_layer("checkpoint resume");
        world.broadcast(&found, 1, DType::kI64, 0);
        if (found >= 0) {
            std::ostringstream name;
            name << "step_" << std::setw(8) << std::setfill('0') << found << ".h5";
            path = (fs::path(ckpt_dir) / name.str()).string();
            const checkpoint::TrainingState written = checkpoint::read_state(path);
            bool with_recipe_state = false;
            std::vector<checkpoint::TensorSlot> load_slots =
                ckpt.load_slots(path, written.world_size, written.ep, dims, &with_recipe_state);
            if (ckpt.has_recipe_state() && !with_recipe_state)
                log::warn("the amax histories of ", cfg.precision.recipe, " restart empty: ", path,
                          " was written by another layout or recipe (", written.world_size, " ranks, ep ", written.ep,
                          ")");
            checkpoint::TrainingState st;
            checkpoint::load(path, load_slots, st);
            ckpt.after_load(with_recipe_state);
            start_step = st.step;
            data_position = st.data_position;
            run_id = run_id_for(st.run_id);
            opt.set_steps_taken(st.optimizer_steps);
            carried_accounting = parse_phases(st.accounting_json);
            log::info("resumed from ", path, " (step ", st.step, ", written by ", st.world_size, " ranks with ep ",
                      st.ep, ")");
            if (is_root) record_lost_steps(cfg.run.out_dir, st.step);
        } else {
            log::info("checkpoint.resume: auto found no checkpoint in ", ckpt_dir, "; starting fresh");
        }
    }
    if (run_id.empty()) run_id = run_id_for("");
    if (start_step >= cfg.train.steps)
        log::warn("the checkpoint is at step ", start_step, ", not before train.steps (", cfg.train.steps,
                  "): nothing left to train");

    AppendFile metrics;
    if (is_root) {
        write_file_atomic((fs::path(cfg.run.out_dir) / "config.yaml").string(), to_yaml(cfg));
        metrics = AppendFile((fs::path(cfg.run.out_dir) / "metrics.jsonl").string(), start_step == 0);
    }

    log::info("frugal: ", net.params().numel(), " parameters on this rank (", net.params().dense_numel(),
              " replicated), ", moe_layers.size(), " MoE layers, ", dims.world, " ranks (ep ", dims.ep, ", edp ",
              dims.edp, "), ", accum, " micro-batches of ", micro, " x ", s, " tokens per rank per step, ",
              omp_get_max_threads(), " threads per rank");

    // Token buffers for all micro-batches of a step: [accum, micro, S].
    std::vector<int32_t> tokens(size_t(accum * micro * s)), targets(size_t(accum * micro * s));
    // With data.document_mask: where each token's document starts in its window, [accum, micro, S].
    std::vector<int32_t> starts(cfg.data.document_mask ? tokens.size() : 0);
    auto doc_starts = [&](int64_t m, const data::Loader& loader) -> const int32_t* {
        if (!cfg.data.document_mask) return nullptr;
        int32_t* out = starts.data() + m * micro * s;
        data::document_starts(out, tokens.data() + m * micro * s, micro, s, loader.end_of_document());
        return out;
    };
    // Validation: the first eval_batches micro-batches of the validation shard, whatever the layout. Batch i goes
    // to data-parallel rank i mod ranks; every rank runs the same number of forward passes (the all-to-all needs
    // them all), and a rank without a batch in the last round runs batch 0 with every target ignored.
    auto evaluate = [&]() {
        double sums[2] = {0, 0};  // cross-entropy sum, valid targets
        const int64_t rounds = (cfg.train.eval_batches + dp_size - 1) / dp_size;
        for (int64_t round = 0; round < rounds; ++round) {
            const int64_t i = round * dp_size + dp_rank;
            const bool mine = i < cfg.train.eval_batches;
            val_data.read_samples(tokens.data(), targets.data(), (mine ? i : 0) * micro, micro);
            if (!mine) std::fill_n(targets.data(), micro * s, model::kIgnoreIndex);
            model::ForwardResult r = net.forward(tokens.data(), targets.data(), micro, s, doc_starts(0, val_data));
            sums[0] += r.ce_sum;
            sums[1] += double(r.num_valid);
        }
        world.set_layer("validation loss");
        world.all_reduce(sums, 2, DType::kF64, parallel::ReduceOp::kSum);
        return sums[1] > 0 ? sums[0] / sums[1] : 0.0;
    };
    std::vector<int64_t> counts(size_t(2 * std::max<int64_t>(n_experts, 1) + 1));

    // Accounting: the device, its price and peak, device-seconds carried over from the checkpoint and lost to a
    // failure since then.
    const auto catalogue = accounting::load_catalogue(cfg.accounting.hardware);
    const accounting::Device device = accounting::find_device(catalogue, cfg.accounting.device, "accounting.device");
    accounting::CostReport report;
    report.device = device.key;
    report.device_name = device.name;
    report.price_per_hour = cfg.accounting.price_per_hour > 0 ? cfg.accounting.price_per_hour : device.price_per_hour;
    report.ranks = dims.world;
    report.flops_per_token = accounting::training_flops_per_token(cfg.model, s);
    report.peak_tflops_per_device = device.peak_tflops(cfg.precision.recipe.rfind("fp8", 0) == 0);
    report.projection_tokens = cfg.accounting.projection_tokens;
    accounting::PhaseSeconds carried = carried_accounting;
    if (is_root && cfg.checkpoint.resume == "auto")
        carried[size_t(accounting::Phase::kLost)] += lost_device_seconds(cfg, carried);
    world.set_layer("accounting");
    world.broadcast(carried.data(), accounting::kNumPhases, DType::kF64, 0);
    auto totals = [&]() {
        accounting::PhaseSeconds mine = meter.snapshot();
        world.set_layer("accounting");
        world.all_reduce(mine.data(), accounting::kNumPhases, DType::kF64, parallel::ReduceOp::kSum);
        for (int i = 0; i < accounting::kNumPhases; ++i) mine[size_t(i)] += carried[size_t(i)];
        return mine;
    };
    const std::string cost_path = (fs::path(cfg.run.out_dir) / "cost.json").string();

    TrainResult result;
    meter.charge(accounting::Phase::kStartup, meter.wall());
    const auto t_start = Clock::now();
    auto t_window = Clock::now();
    int64_t window_tokens = 0;
    int64_t skipped_in_a_row = 0;
    for (int64_t step = start_step; step < cfg.train.steps; ++step) {
        // Global index of this step's first sample: continues from where the checkpoint left the data stream.
        const int64_t step_first_sample = data_position + (step - start_step) * cfg.train.global_batch;
        world.set_step(step + 1);
        if (cfg.fault.kill_rank == dims.rank && cfg.fault.at_step == step + 1 && cfg.fault.kind != "kill_in_checkpoint")
            inject_fault(cfg);
        for (auto* layer : moe_layers) layer->router().stats().reset(n_experts);
        net.params().zero_grad();
        int64_t total_valid = 0;
        auto data_scope = std::make_unique<accounting::Meter::Scope>(meter, accounting::Phase::kData);
        for (int64_t m = 0; m < accum; ++m) {
            int32_t* tk = tokens.data() + m * micro * s;
            int32_t* tg = targets.data() + m * micro * s;
            train_data.micro_batch(tk, tg, step_first_sample, m, micro, dp_rank, dp_size);
            for (int64_t i = 0; i < micro * s; ++i) total_valid += tg[i] != model::kIgnoreIndex;
        }
        data_scope.reset();
        const double comm0 = world.context().wait_seconds;
        const auto t_compute = Clock::now();
        world.set_layer("token count");
        world.all_reduce(&total_valid, 1, DType::kI64, parallel::ReduceOp::kSum);
        const float ce_scale = total_valid > 0 ? 1.0f / float(total_valid) : 0.0f;
        const float aux_scale = 1.0f / float(accum * dp_size);
        double sums[2] = {0, 0};  // cross-entropy sum, scaled aux + z losses
        for (int64_t m = 0; m < accum; ++m) {
            model::ForwardResult r = net.forward(tokens.data() + m * micro * s, targets.data() + m * micro * s, micro,
                                                 s, doc_starts(m, train_data));
            sums[0] += r.ce_sum;
            sums[1] += (r.aux_loss + r.z_loss) * aux_scale;
            net.backward(ce_scale, aux_scale);
        }
        grad_sync.sync();
        for (const optim::OptimParam& p : oparams)
            if (p.frozen) std::fill_n(p.grad, p.numel, 0.0f);  // no gradient: out of the norm and the clipping
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
        {
            const double comm = world.context().wait_seconds - comm0;
            meter.charge(accounting::Phase::kCompute, seconds_since(t_compute) - comm);
            meter.charge(accounting::Phase::kCommunication, comm);
        }
        // A stop request (SIGTERM, SIGINT, ...) on any rank stops every rank after this step, with a checkpoint.
        int64_t stop = stop_signal();
        world.set_layer("stop request");
        world.all_reduce(&stop, 1, DType::kI64, parallel::ReduceOp::kMax);
        const bool finished = step + 1 == cfg.train.steps, last = finished || stop != 0;
        if (is_root)
            write_file_atomic((fs::path(cfg.run.out_dir) / "progress").string(), std::to_string(step + 1) + "\n",
                              false);
        if (cfg.checkpoint.every > 0 && ((step + 1) % cfg.checkpoint.every == 0 || last)) {
            checkpoint::TrainingState st;
            st.step = step + 1;
            st.tokens_seen = (step + 1) * cfg.train.global_batch * s;
            st.data_position = step_first_sample + cfg.train.global_batch;
            st.optimizer_steps = opt.steps_taken();
            st.seed = cfg.run.seed;
            st.world_size = dims.world;
            st.ep = dims.ep;
            st.config_yaml = to_yaml(cfg);
            st.frugal_version = kVersion;
            st.run_id = run_id;
            const accounting::PhaseSeconds so_far = totals();
            st.accounting_json = phases_json(so_far);
            for (double x : so_far) st.accounting_seconds += x;
            ckpt.before_save();
            std::function<void()> drill;
            if (cfg.fault.kind == "kill_in_checkpoint" && cfg.fault.kill_rank == 0 && cfg.fault.at_step == step + 1)
                drill = [&cfg] { inject_fault(cfg); };
            const auto t0 = Clock::now();
            accounting::Meter::Scope io(meter, accounting::Phase::kCheckpoint);
            const std::string path = checkpoint::save(ckpt_dir, ckpt.slots, st, world, cfg.checkpoint.keep_last,
                                                      cfg.checkpoint.keep_every, drill);
            log::info("checkpoint ", path, " (", std::fixed, std::setprecision(2), seconds_since(t0), " s)");
        }
        const bool log_step = last || (step + 1) % cfg.run.log_every == 0 || step == 0;
        // Taken before validation, whose forward passes also go through the routers.
        const std::string moe_json = log_step && !moe_layers.empty() ? moe_stats_json(cfg.model, moe_layers) : "";
        if (finished || (cfg.train.eval_every > 0 && (step + 1) % cfg.train.eval_every == 0)) {
            accounting::Meter::Scope eval(meter, accounting::Phase::kEvaluation);
            sm.val_loss = evaluate();
        }
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
            report.device_seconds = totals();
            report.tokens = double((step + 1 - start_step) * cfg.train.global_batch * s);
            report.train_seconds = seconds_since(t_start);
            line << "  cost $" << std::setprecision(4) << report.cost_usd();
            line << "  elapsed " << std::setprecision(1) << sm.elapsed_s << "s";
            if (is_root) write_file_atomic(cost_path, accounting::to_json(report), false);
            log::info(line.str());
            if (is_root) {
                std::ostringstream rec;
                rec << "{\"step\": " << sm.step << ", \"loss\": " << json_number(sm.loss)
                    << ", \"aux_loss\": " << json_number(sm.aux_loss) << ", \"lr\": " << json_number(sm.lr)
                    << ", \"grad_norm\": " << json_number(sm.grad_norm)
                    << ", \"tokens_per_s\": " << json_number(sm.tokens_per_s)
                    << ", \"max_imbalance\": " << json_number(sm.max_imbalance) << ", \"dropped\": " << sm.dropped
                    << ", \"elapsed_s\": " << json_number(sm.elapsed_s);
                if (sm.val_loss >= 0) rec << ", \"val_loss\": " << json_number(sm.val_loss);
                if (sm.skipped) rec << ", \"skipped\": true";
                if (!moe_json.empty()) rec << ", \"moe\": " << moe_json;
                rec << "}\n";
                metrics.append(rec.str());
            }
        }
        if (on_step) on_step(sm);
        result.history.push_back(sm);
        if (stop != 0) {
            result.stop_signal = int(stop);
            log::warn("stopped by ", signal_name(int(stop)), " after step ", step + 1, " of ", cfg.train.steps,
                      cfg.checkpoint.every > 0 ? "; continue with --set checkpoint.resume=auto"
                                               : " (no checkpoint: checkpoint.every is 0)");
            break;
        }
    }
    result.seconds = seconds_since(t_start);
    const int64_t steps_run = int64_t(result.history.size());
    result.tokens = steps_run * cfg.train.global_batch * s;
    if (!result.history.empty()) {
        result.first_loss = result.history.front().loss;
        result.final_loss = result.history.back().loss;
        result.final_val_loss = result.history.back().val_loss;
    }
    if (!cfg.checkpoint.export_hf.empty() && start_step < cfg.train.steps && result.stop_signal == 0) {
        // Every rank of the first expert-data-parallel replica writes its own experts (ep rank 0 also the
        // replicated tensors): no process gathers the model.
        const std::string source =
            cfg.model.init_from.empty() ? "" : (fs::path(cfg.model.init_from.substr(3)) / "config.json").string();
        checkpoint::export_hf(cfg.checkpoint.export_hf, net.params(), cfg.model, checkpoint::hf_model_type(cfg.model),
                              cfg.checkpoint.export_hf_dtype, source, world,
                              checkpoint::ExportLayout{dims.ep, dims.ep_rank, dims.edp_rank == 0});
        if (is_root) log::info("exported the model in Hugging Face format to ", cfg.checkpoint.export_hf);
    }
    report.device_seconds = totals();
    report.tokens = double(result.tokens);
    report.train_seconds = result.seconds;
    if (is_root) {
        write_file_atomic(cost_path, accounting::to_json(report));
        metrics.close();
    }
    FRUGAL_CHECK(skipped_in_a_row == 0, "the run ended with ", skipped_in_a_row,
                 " step(s) in a row whose loss or gradient norm was not finite (", result.skipped_steps, " of ",
                 steps_run,
                 " skipped under train.nonfinite: skip): the model is not training. Lower optim.lr, raise "
                 "optim.warmup_steps, or check the data; the last checkpoint holds the last finite state");
    log::info(result.stop_signal ? "stopped: " : "done: ", steps_run, " steps, ", result.tokens, " tokens in ",
              std::fixed, std::setprecision(1), result.seconds, " s (", std::setprecision(0),
              double(result.tokens) / result.seconds, " tokens/s); loss ", std::setprecision(4), result.first_loss,
              " -> ", result.final_loss, ", validation loss ", result.final_val_loss, "; skipped steps ",
              result.skipped_steps, "; outputs in ", cfg.run.out_dir);
    log::info(accounting::format_report(report), "  written to ", cost_path);
    return result;
}

}  // namespace frugal::trainer
