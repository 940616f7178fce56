#include "trainer/session.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "accounting/estimate.h"
#include "checkpoint/hf.h"
#include "core/log.h"
#include "core/memory.h"
#include "parallel/expert_parallel.h"

namespace frugal::trainer {

namespace fs = std::filesystem;

static_assert(data::kIgnoreTarget == model::kIgnoreIndex,
              "the loader's masked targets must be the loss's ignore index");

StepBuffers::StepBuffers(int64_t accum, int64_t micro, int64_t seq_len, bool document_mask)
    : micro_(micro),
      seq_len_(seq_len),
      document_mask_(document_mask),
      tokens_ABS_(size_t(accum * micro * seq_len)),
      targets_ABS_(size_t(accum * micro * seq_len)),
      starts_ABS_(document_mask ? size_t(accum * micro * seq_len) : 0) {}

const int32_t* StepBuffers::document_starts_BS(int64_t m, const data::Loader& loader) {
    if (!document_mask_) return nullptr;
    int32_t* out = starts_ABS_.data() + m * micro_ * seq_len_;
    data::document_starts(out, tokens_BS(m), micro_, seq_len_, loader.end_of_document());
    return out;
}

namespace {

int apply_thread_count(const TrainConfig& cfg) {
    if (cfg.train.threads > 0) omp_set_num_threads(int(cfg.train.threads));
    return omp_get_max_threads();
}

data::Loader open_shard(const TrainConfig& cfg, const char* file, bool shuffle) {
    return data::Loader((fs::path(cfg.data.dir) / file).string(), cfg.train.seq_len, uint64_t(cfg.run.seed), shuffle);
}

// Before anything large is allocated: what this rank will hold (accounting::rank_memory: parameters, gradients,
// AdamW moments, one micro-batch's activations) against its share of the machine's available memory.
void check_memory(const TrainConfig& cfg, const parallel::ParallelDims& dims) {
    accounting::RankMemoryInput in;
    in.model = cfg.model;
    in.ep = dims.ep;
    in.bf16_moments = cfg.precision.optimizer_state == "bf16";
    if (cfg.parallel.zero == 1) {
        in.zero_dp = dims.world;
        in.zero_edp = dims.edp;
    }
    in.micro_batch = cfg.train.micro_batch;
    in.seq_len = cfg.train.seq_len;
    if (cfg.precision.recipe != "fp32") in.low_precision_roles = cfg.precision.low_precision_layers;
    in.blockwise = cfg.precision.recipe == "fp8-blockwise";
    in.per_layer_operands = cfg.precision.recipe == "fp8-tensorwise" || cfg.precision.recipe == "fp8-delayed";
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

// The checks that need the data and the layout, run before the model is allocated; returns the model's config.
const model::ModelConfig& checked_model_config(const TrainConfig& cfg, const parallel::ParallelDims& dims,
                                               const data::Loader& train_data, const data::Loader& val_data) {
    FRUGAL_CONFIG_CHECK(
        !cfg.data.document_mask || (train_data.end_of_document() >= 0 && val_data.end_of_document() >= 0),
        "data.document_mask needs the end-of-document token, which the shards in ", cfg.data.dir,
        " do not record (written by an older prepare-data): re-run `frugal prepare-data`");
    FRUGAL_CONFIG_CHECK(train_data.vocab_size() <= cfg.model.vocab_size, "the data in ", cfg.data.dir,
                        " uses a vocabulary of ", train_data.vocab_size(), " tokens but model.vocab_size is ",
                        cfg.model.vocab_size, ": set model.vocab_size to at least ", train_data.vocab_size());
    check_memory(cfg, dims);
    return cfg.model;
}

// How the expert-parallel groups lie on nodes. Ranks are placed by slot (frugal launch, mpirun's default):
// consecutive ranks share a node, ranks_on_this_machine() of them (mpirun's count per host). needs: the setting that
// needs the layout (node-limited routing, the hierarchical dispatch), which names the errors; empty: only byte counts
// want it, and an uneven layout leaves them off (ranks_per_node 0). Collective.
parallel::NodeLayout make_node_layout(const TrainConfig& cfg, const parallel::ParallelDims& dims,
                                      parallel::Communicator& world, parallel::Communicator& ep_comm) {
    const bool hierarchical = cfg.parallel.dispatch == "hierarchical";
    const std::string needs = hierarchical                            ? "parallel.dispatch: hierarchical"
                              : cfg.model.moe.max_nodes_per_token > 0 ? "moe.max_nodes_per_token"
                                                                      : "";
    const int64_t per_node = ranks_on_this_machine(dims.world);
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    const int64_t by_slot = !local || std::atoll(local) == dims.rank % per_node ? 1 : 0;
    int64_t v[3] = {per_node, -per_node, -by_slot};
    world.set_layer("node layout");
    world.all_reduce(v, 3, DType::kI64, parallel::ReduceOp::kMax);
    const bool even = v[0] == -v[1], slots = v[2] == -1;
    const bool divides = dims.ep <= per_node ? per_node % dims.ep == 0 : dims.ep % per_node == 0;
    if (needs.empty())
        return parallel::node_layout(ep_comm, even && slots && divides ? std::min<int64_t>(per_node, dims.ep) : 0, false);
    FRUGAL_CONFIG_CHECK(even, needs, " needs the same number of ranks on every node; this job has between ", -v[1],
                        " and ", v[0], ": give every host the same slots");
    FRUGAL_CONFIG_CHECK(slots, needs,
                        " needs consecutive ranks on each node (mpirun's default --map-by slot); this job maps them "
                        "otherwise: drop the --map-by or --rank-by given to mpirun");
    FRUGAL_CONFIG_CHECK(divides, needs, ": parallel.ep (", dims.ep, ") must divide the ", per_node,
                        " ranks per node, or be a multiple of them, so that each node holds whole expert-parallel "
                        "groups or an equal share of one");
    return parallel::node_layout(ep_comm, std::min<int64_t>(per_node, dims.ep), hierarchical);
}

// Initial weights (the counter-based RNG, then model.init_from's), the precision recipe, expert parallelism and
// node-limited routing.
std::vector<model::MoELayer<float>*> prepare_model(model::Transformer<float>& net, const TrainConfig& cfg,
                                                   parallel::Communicator& ep_comm, const parallel::NodeLayout& layout,
                                                   const parallel::ParallelDims& dims) {
    net.init(uint64_t(cfg.run.seed));
    if (!cfg.model.init_from.empty()) {
        net.params().with_host_values([&] { checkpoint::load_hf_weights(cfg.model.init_from.substr(3), net.params()); },
                                      true);
        log::info("weights from ", cfg.model.init_from.substr(3), " (each rank read its own experts)");
    }
    net.set_precision(cfg.precision);
    parallel::use_expert_parallel(net, ep_comm, cfg.precision.fp8_dispatch, cfg.parallel.overlap_shared_experts,
                                  &layout);
    const int64_t nodes = layout.ranks_per_node > 0 ? dims.ep / layout.ranks_per_node : 1;
    if (cfg.parallel.dispatch == "hierarchical" && dims.rank == 0) {
        if (layout.hierarchical())
            log::info("hierarchical dispatch: each expert-parallel group spans ", nodes, " nodes of ",
                      layout.ranks_per_node, " ranks; a token crosses to each node once");
        else
            log::info(
                "parallel.dispatch: hierarchical changes nothing here: each expert-parallel group is on one node");
    }
    const int64_t m = cfg.model.moe.max_nodes_per_token;
    if (m > 0) {
        for (auto* layer : net.moe_layers()) layer->router().limit_nodes(nodes);
        if (dims.rank == 0) {
            if (nodes > 1)
                log::info("node-limited routing: the experts of each expert-parallel group are on ", nodes, " nodes (",
                          cfg.model.moe.n_experts / nodes, " each); a token goes to at most ", std::min(m, nodes));
            else
                log::info("moe.max_nodes_per_token changes nothing here: each expert-parallel group is on one node");
        }
    }
    return net.moe_layers();
}

// The parts of the parameters this rank's optimizer updates: each parameter's overlap with the rank's shard of its
// flat range (all of it without ZeRO).
std::vector<Session::OptimPart> optim_parts(model::ParamStore& store, const parallel::GradSync& sync) {
    std::vector<Session::OptimPart> out;
    const float* base = store.flat_values().data<float>();
    for (model::Param* p : store.params()) {
        const int64_t begin = p->value.data<float>() - base, end = begin + p->value.numel();
        const parallel::FlatRange shard = p->is_expert ? sync.expert_shard() : sync.dense_shard();
        const int64_t lo = std::max(begin, shard.begin), hi = std::min(end, shard.end);
        if (hi > lo) out.push_back({p, lo - begin, hi - lo});
    }
    return out;
}

// AdamW's view of those parts: weight decay unless optim.no_decay lists the kind, frozen when train.freeze does.
std::vector<optim::OptimParam> optim_params(const std::vector<Session::OptimPart>& parts, const optim::OptimConfig& cfg,
                                            const std::vector<std::string>& freeze) {
    std::vector<optim::OptimParam> out;
    for (const Session::OptimPart& part : parts) {
        model::Param* p = part.param;
        const std::string kind = model::param_kind_name(p->kind);
        const bool decay = std::find(cfg.no_decay.begin(), cfg.no_decay.end(), kind) == cfg.no_decay.end();
        const bool frozen = std::find(freeze.begin(), freeze.end(), kind) != freeze.end();
        out.push_back(
            {p->value.data<float>() + part.begin, p->grad.data<float>() + part.begin, part.numel, decay, frozen});
    }
    return out;
}

// run.device resolved: the CPU, or the CUDA backend when asked for (or, under auto, when it can run this job).
backend::Backend& choose_backend(const TrainConfig& cfg, int64_t world) {
    const std::string& asked = cfg.run.device;
    if (asked == "cpu") return backend::cpu_backend();
    std::string why_not;
    const bool gpu = backend::backend_available(Device::kCuda, &why_not);
    if (asked == "auto") {
        if (!gpu || world > 1) return backend::cpu_backend();
        log::info("run.device auto: the model computes on the GPU");
        return backend::backend_for(Device::kCuda);
    }
    FRUGAL_CONFIG_CHECK(gpu, "run.device is cuda but ", why_not, ": set run.device to cpu or auto");
    // The communicators exchange host memory (MPI); GPU-to-GPU collectives are not built yet.
    FRUGAL_CONFIG_CHECK(world == 1, "run.device cuda trains on one GPU, and this job has ", world,
                        " ranks: launch one rank, or set run.device to cpu");
    return backend::backend_for(Device::kCuda);
}

}  // namespace

Session::Session(TrainConfig& cfg_, parallel::Communicator& world_, const parallel::ParallelDims& dims_)
    : cfg(cfg_),
      world(world_),
      dims(dims_),
      threads(apply_thread_count(cfg_)),
      accum(cfg_.accum_steps(dims_.world)),
      ep_comm(world_.split(dims_.edp_rank, dims_.ep_rank, "ep")),
      edp_comm(world_.split(dims_.ep_rank, dims_.edp_rank, "edp")),
      node_layout(make_node_layout(cfg_, dims_, world_, *ep_comm)),
      train_data(open_shard(cfg_, "train.bin", true)),
      val_data(open_shard(cfg_, "val.bin", false)),
      net(checked_model_config(cfg_, dims_, train_data, val_data), dims_.expert_shard(cfg_.model.moe.n_experts), true,
          choose_backend(cfg_, dims_.world)),
      moe_layers(prepare_model(net, cfg_, *ep_comm, node_layout, dims_)),
      grad_sync(net.params(), world_, *edp_comm, *ep_comm, net.ops().backend(), cfg_.parallel.zero == 1),
      oparts(optim_parts(net.params(), grad_sync)),
      oparams(optim_params(oparts, cfg_.optim, cfg_.train.freeze)),
      opt(cfg_.optim, oparams, cfg_.precision.optimizer_state == "bf16", net.ops().backend()),
      batch(accum, cfg_.train.micro_batch, cfg_.train.seq_len, cfg_.data.document_mask) {}

void log_session(Session& s) {
    log::info("frugal: ", s.net.params().numel(), " parameters on this rank on ", s.net.ops().backend().name(), " (",
              s.net.params().dense_numel(), " replicated), ", s.moe_layers.size(), " MoE layers, ", s.dims.world,
              " ranks (ep ", s.dims.ep, ", edp ", s.dims.edp, s.grad_sync.zero() ? ", ZeRO-1" : "", "), ", s.accum,
              " micro-batches of ", s.cfg.train.micro_batch, " x ", s.cfg.train.seq_len, " tokens per rank per step, ",
              s.threads, " threads per rank; optimizer state ", std::llround(double(s.opt.state_bytes()) / 1e5) / 10.0,
              " MB on this rank");
}

}  // namespace frugal::trainer
