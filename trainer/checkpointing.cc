#include "trainer/checkpointing.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <unordered_map>

#include "checkpoint/hf.h"
#include "core/bf16.h"
#include "core/file_io.h"
#include "core/log.h"
#include "core/version.h"
#include "trainer/cost_meter.h"
#include "trainer/fault.h"
#include "trainer/run_guard.h"

namespace frugal::trainer {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

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

}  // namespace

std::string checkpoint_dir(const TrainConfig& cfg) {
    return cfg.checkpoint.dir.empty() ? (fs::path(cfg.run.out_dir) / "checkpoints").string() : cfg.checkpoint.dir;
}

Checkpointer::Checkpointer(Session& s) : s_(s), dir_(checkpoint_dir(s.cfg)) {
    const model::ModelConfig& m = s.cfg.model;
    auto& params = s.net.params().params();
    for (model::Param* p : params) add_slot("params/" + p->name, *p, host_data(p->value));
    // The moments of the part of each parameter this rank updates: all of it without ZeRO, written by the same
    // ranks as the parameter; under ZeRO-1 a flat range of the global tensor that this rank alone writes (or
    // nothing, when its shards miss the parameter: every rank still names every dataset, which is created
    // collectively).
    std::unordered_map<const model::Param*, size_t> part_of;
    for (size_t j = 0; j < s.oparts.size(); ++j) part_of[s.oparts[j].param] = j;
    for (model::Param* p : params)
        for (auto [kind, moments] : {std::pair<const char*, std::vector<Tensor>*>{"exp_avg", &s.opt.exp_avg()},
                                     {"exp_avg_sq", &s.opt.exp_avg_sq()}}) {
            const std::string name = std::string("optim/") + kind + "/" + p->name;
            const auto it = part_of.find(p);
            if (!s.grad_sync.zero()) {
                FRUGAL_CHECK(it != part_of.end(), "no optimizer state for ", p->name);
                add_slot(name, *p, host_data((*moments)[it->second]));
                continue;
            }
            checkpoint::TensorSlot slot;
            slot.name = name;
            slot.global_shape = p->global_shape;
            slot.flat_begin = 0;
            if (it != part_of.end()) {
                const Session::OptimPart& part = s.oparts[it->second];
                slot.flat_begin = p->global_offset + part.begin;
                slot.flat_count = part.numel;
                slot.writer = true;
                slot.data = host_data((*moments)[it->second]);
            }
            slots_.push_back(slot);
        }
    size_t i = 0;
    for (int64_t l : m.moe_block_indices()) {  // the main model's MoE layers, then the MTP modules'
        checkpoint::TensorSlot slot;
        slot.name = "moe/" + m.block_name(l) + ".expert_bias";
        slot.global_shape = {m.moe.n_experts};
        slot.local_shape = {m.moe.n_experts};
        slot.writer = s.dims.rank == 0;
        model::Router<float>& router = s.moe_layers[i++]->router();
        if (s.net.ops().backend().device() == Device::kCpu) {
            slot.data = router.expert_bias();
        } else {
            Staged& st = staged_.emplace_back();
            st.host.resize(size_t(m.moe.n_experts));
            st.pull = [&router](std::vector<float>& host) {
                const std::vector<float> bias = router.expert_bias_host();
                std::copy(bias.begin(), bias.end(), host.begin());  // in place: the slot points at host's buffer
            };
            st.push = [&router](const std::vector<float>& host) { router.set_expert_bias(host); };
            slot.data = st.host.data();
        }
        slots_.push_back(slot);
    }
    recipes_ = s.net.recipes();
    int64_t n = 0;
    for (auto* r : recipes_) n += r->state_size();
    if (n > 0) {
        recipe_state_.assign(size_t(n), 0.0f);
        slots_.push_back({kRecipeState, {s.dims.world, n}, s.dims.rank, {1, n}, true, recipe_state_.data()});
    }
}

float* Checkpointer::host_data(Tensor& t) {
    const bool bf16 = t.dtype() == DType::kBF16;
    if (!bf16 && t.device() == Device::kCpu) return t.data<float>();
    FRUGAL_CHECK(bf16 || t.dtype() == DType::kF32, "checkpoints hold FP32 and BF16 tensors, not ",
                 dtype_name(t.dtype()));
    Staged& st = staged_.emplace_back();
    st.host.resize(size_t(t.numel()));
    Tensor* tp = &t;
    if (!bf16) {
        st.pull = [tp](std::vector<float>& host) {
            Tensor h = Tensor::empty(tp->shape(), DType::kF32);
            h.copy_from(*tp);
            std::copy_n(h.data<float>(), host.size(), host.data());
        };
        st.push = [tp](const std::vector<float>& host) {
            Tensor h = Tensor::empty(tp->shape(), DType::kF32);
            std::copy_n(host.data(), host.size(), h.data<float>());
            tp->copy_from(h);
        };
        return st.host.data();
    }
    st.pull = [tp](std::vector<float>& host) {
        Tensor h = tp->device() == Device::kCpu ? *tp : Tensor::empty(tp->shape(), DType::kBF16);
        if (tp->device() != Device::kCpu) h.copy_from(*tp);
        const uint16_t* src = static_cast<const uint16_t*>(h.raw_data());
        for (size_t j = 0; j < host.size(); ++j) host[j] = bf16_bits_to_float(src[j]);
    };
    st.push = [tp](const std::vector<float>& host) {
        Tensor h = tp->device() == Device::kCpu ? *tp : Tensor::empty(tp->shape(), DType::kBF16);
        uint16_t* dst = static_cast<uint16_t*>(h.raw_data());
        for (size_t j = 0; j < host.size(); ++j) dst[j] = float_to_bf16_bits(host[j]);
        if (tp->device() != Device::kCpu) tp->copy_from(h);
    };
    return st.host.data();
}

void Checkpointer::add_slot(const std::string& name, const model::Param& p, float* data) {
    int64_t row = 1;
    for (size_t i = 1; i < p.global_shape.size(); ++i) row *= p.global_shape[i];
    checkpoint::TensorSlot slot;
    slot.name = name;
    slot.global_shape = p.global_shape;
    slot.row_begin = p.global_offset / std::max<int64_t>(row, 1);
    slot.local_shape = p.shape;
    slot.writer = p.is_expert ? s_.dims.edp_rank == 0 : s_.dims.rank == 0;
    slot.data = data;
    slots_.push_back(slot);
}

std::vector<checkpoint::TensorSlot> Checkpointer::load_slots(const std::string& path, int64_t world_size, int64_t ep,
                                                             bool* with_recipe_state) const {
    *with_recipe_state = false;
    if (recipe_state_.empty()) return slots_;
    for (const auto& e : checkpoint::read_manifest(path))
        if (e.name == kRecipeState && e.shape == Shape{s_.dims.world, int64_t(recipe_state_.size())})
            *with_recipe_state = world_size == s_.dims.world && ep == s_.dims.ep;
    std::vector<checkpoint::TensorSlot> out;
    for (const auto& slot : slots_)
        if (slot.name != kRecipeState || *with_recipe_state) out.push_back(slot);
    return out;
}

void Checkpointer::before_save() {
    float* out = recipe_state_.data();
    for (auto* r : recipes_) {
        r->save_state(out);
        out += r->state_size();
    }
    for (Staged& st : staged_) st.pull(st.host);
}

void Checkpointer::after_load(bool with_recipe_state) {
    if (with_recipe_state) {
        const float* in = recipe_state_.data();
        for (auto* r : recipes_) {
            r->load_state(in);
            in += r->state_size();
        }
    }
    for (const Staged& st : staged_) st.push(st.host);
}

StartPoint Checkpointer::load(const std::string& path) {
    const checkpoint::TrainingState written = checkpoint::read_state(path);
    bool with_recipe_state = false;
    std::vector<checkpoint::TensorSlot> slots = load_slots(path, written.world_size, written.ep, &with_recipe_state);
    if (!recipe_state_.empty() && !with_recipe_state)
        log::warn("the amax histories of ", s_.cfg.precision.recipe, " restart empty: ", path,
                  " was written by another layout or recipe (", written.world_size, " ranks, ep ", written.ep, ")");
    checkpoint::TrainingState st;
    checkpoint::load(path, slots, st);
    after_load(with_recipe_state);
    s_.opt.set_steps_taken(st.optimizer_steps);
    run_id_ = st.run_id;
    log::info("resumed from ", path, " (step ", st.step, ", written by ", st.world_size, " ranks with ep ", st.ep, ")");
    if (s_.is_root()) record_lost_steps(s_.cfg.run.out_dir, st.step);
    return StartPoint{st.step, st.data_position, parse_phases(st.accounting_json)};
}

StartPoint Checkpointer::start() {
    TrainConfig& cfg = s_.cfg;
    StartPoint from;
    if (s_.is_root() && cfg.checkpoint.resume == "none" && cfg.checkpoint.every > 0) check_fresh_start(dir_, false);
    if (cfg.checkpoint.resume == "auto") {
        // Rank 0 chooses the checkpoint and checks it against this run's config; every rank then loads it.
        int64_t found = -1;
        if (s_.is_root()) {
            const std::string path = checkpoint::find_resumable(dir_);
            if (path.empty()) {
                check_fresh_start(dir_, true);
            } else {
                const checkpoint::TrainingState written = checkpoint::read_state(path);
                check_resume_compatible(path, written.config_yaml, to_yaml(cfg));
                found = written.step;
            }
        }
        s_.world.set_layer("checkpoint resume");
        s_.world.broadcast(&found, 1, DType::kI64, 0);
        if (found >= 0)
            from = load((fs::path(dir_) / checkpoint::step_file_name(found)).string());
        else
            log::info("checkpoint.resume: auto found no checkpoint in ", dir_, "; starting fresh");
    }
    // Rank 0 writes the checkpoints' strings and applies retention, so only rank 0's id matters.
    if (run_id_.empty()) run_id_ = new_run_id();
    if (from.step >= cfg.train.steps)
        log::warn("the checkpoint is at step ", from.step, ", not before train.steps (", cfg.train.steps,
                  "): nothing left to train");
    return from;
}

bool Checkpointer::due(int64_t steps_done, bool last) const {
    const int64_t every = s_.cfg.checkpoint.every;
    return every > 0 && (steps_done % every == 0 || last);
}

void Checkpointer::save(int64_t steps_done, int64_t next_sample, const accounting::PhaseSeconds& so_far,
                        accounting::Meter& meter) {
    TrainConfig& cfg = s_.cfg;
    checkpoint::TrainingState st;
    st.step = steps_done;
    st.tokens_seen = steps_done * s_.tokens_per_step();
    st.data_position = next_sample;
    st.optimizer_steps = s_.opt.steps_taken();
    st.seed = cfg.run.seed;
    st.world_size = s_.dims.world;
    st.ep = s_.dims.ep;
    st.config_yaml = to_yaml(cfg);
    st.frugal_version = kVersion;
    st.run_id = run_id_;
    st.accounting_json = phases_json(so_far);
    for (double x : so_far) st.accounting_seconds += x;
    before_save();
    const auto t0 = Clock::now();
    accounting::Meter::Scope io(meter, accounting::Phase::kCheckpoint);
    const std::string path = checkpoint::save(dir_, slots_, st, s_.world, cfg.checkpoint.keep_last,
                                              cfg.checkpoint.keep_every, checkpoint_fault(cfg, steps_done));
    log::info("checkpoint ", path, " (", std::fixed, std::setprecision(2),
              std::chrono::duration<double>(Clock::now() - t0).count(), " s)");
}

void export_final_model(Session& s) {
    const TrainConfig& cfg = s.cfg;
    const std::string source =
        cfg.model.init_from.empty() ? "" : (fs::path(cfg.model.init_from.substr(3)) / "config.json").string();
    s.net.params().with_host_values(
        [&] {
            checkpoint::export_hf(cfg.checkpoint.export_hf, s.net.params(), cfg.model,
                                  checkpoint::hf_model_type(cfg.model), cfg.checkpoint.export_hf_dtype, source, s.world,
                                  checkpoint::ExportLayout{s.dims.ep, s.dims.ep_rank, s.dims.edp_rank == 0});
        },
        false);
    if (s.is_root()) log::info("exported the model in Hugging Face format to ", cfg.checkpoint.export_hf);
}

}  // namespace frugal::trainer
