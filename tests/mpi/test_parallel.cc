// Expert parallelism under mpirun (2 and 4 ranks): communicator collectives, tagged-token dispatch, count
// invariants, combine(dispatch(x)) with identity experts and its gradient, empty experts and ranks, gradient sync
// with and without ZeRO-1.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "model/moe/moe_layer.h"
#include "model/params.h"
#include "parallel/all_to_all_dispatcher.h"
#include "parallel/expert_parallel.h"
#include "parallel/grad_sync.h"
#include "parallel/hierarchical_dispatcher.h"
#include "parallel/mpi_comm.h"
#include "parallel/parallel_dims.h"
#include "precision/quantize.h"

namespace frugal {
namespace {

using parallel::MpiComm;
using parallel::ReduceOp;

std::unique_ptr<MpiComm>& world() {
    static std::unique_ptr<MpiComm> w = MpiComm::world(60.0);
    return w;
}

TEST(Communicator, EveryCollectiveGivesTheExpectedValuesAndSplitGroupsEvenAndOddRanks) {
    auto& w = *world();
    const int r = w.rank(), n = w.size();
    ASSERT_GE(n, 2) << "run under mpirun with 2 or more ranks";
    double v[2] = {double(r), double(r + 1)};
    w.all_reduce(v, 2, DType::kF64, ReduceOp::kSum);
    EXPECT_EQ(v[0], n * (n - 1) / 2.0);
    int64_t mx = r;
    w.all_reduce(&mx, 1, DType::kI64, ReduceOp::kMax);
    EXPECT_EQ(mx, n - 1);
    std::vector<int32_t> gathered(static_cast<size_t>(n));
    int32_t mine = 10 * r;
    w.all_gather(&mine, gathered.data(), 1, DType::kI32);
    for (int i = 0; i < n; ++i) EXPECT_EQ(gathered[static_cast<size_t>(i)], 10 * i);
    float b = r == 0 ? 3.5f : 0.f;
    w.broadcast(&b, 1, DType::kF32, 0);
    EXPECT_EQ(b, 3.5f);
    // all_to_all: rank r sends value 100 r + j to rank j.
    std::vector<int64_t> send(static_cast<size_t>(n)), recv(static_cast<size_t>(n));
    for (int j = 0; j < n; ++j) send[static_cast<size_t>(j)] = 100 * r + j;
    w.all_to_all(send.data(), recv.data(), 1, DType::kI64);
    for (int i = 0; i < n; ++i) EXPECT_EQ(recv[static_cast<size_t>(i)], 100 * i + r);
    // reduce_scatter: rank i receives the sum of block i (i + 1 elements); all_gather_v fills block i from rank i.
    std::vector<int64_t> counts(static_cast<size_t>(n)), displs(static_cast<size_t>(n));
    int64_t total = 0;
    for (int i = 0; i < n; ++i) {
        counts[static_cast<size_t>(i)] = i + 1;
        displs[static_cast<size_t>(i)] = total;
        total += i + 1;
    }
    std::vector<double> blocks(static_cast<size_t>(total)), mine_sum(static_cast<size_t>(r + 1));
    for (int64_t j = 0; j < total; ++j) blocks[static_cast<size_t>(j)] = double(r) + double(j);
    w.reduce_scatter(blocks.data(), mine_sum.data(), counts.data(), DType::kF64, ReduceOp::kSum);
    for (int64_t j = 0; j <= r; ++j)
        EXPECT_EQ(mine_sum[static_cast<size_t>(j)], n * (n - 1) / 2.0 + n * double(displs[static_cast<size_t>(r)] + j));
    std::vector<double> gathered_v(static_cast<size_t>(total), -1.0);
    for (int64_t j = 0; j <= r; ++j) gathered_v[static_cast<size_t>(displs[static_cast<size_t>(r)] + j)] = 10.0 * r;
    w.all_gather_v(gathered_v.data(), counts.data(), displs.data(), DType::kF64);
    for (int i = 0; i < n; ++i)
        for (int64_t j = 0; j <= i; ++j)
            EXPECT_EQ(gathered_v[static_cast<size_t>(displs[static_cast<size_t>(i)] + j)], 10.0 * i);
    // Split into even and odd ranks.
    auto sub = w.split(r % 2, r, "parity");
    EXPECT_EQ(sub->size(), (n + 1 - r % 2) / 2);
    EXPECT_EQ(sub->rank(), r / 2);
    w.barrier();
}

// Exchanges started together (different sizes and buffers, several in flight) all arrive once finish_all() returns,
// with progress() called in between as the MoE layer does while it computes.
TEST(Communicator, StartedExchangesAllArriveAtFinishAll) {
    auto& w = *world();
    const int r = w.rank(), n = w.size();
    const int kExchanges = 3;
    std::vector<std::vector<int64_t>> send(kExchanges), recv(kExchanges);
    std::vector<std::vector<int64_t>> sc(kExchanges), sd(kExchanges), rc(kExchanges), rd(kExchanges);
    for (int x = 0; x < kExchanges; ++x) {
        // Exchange x: rank r sends (r + j + x) % 3 values 1000 x + 100 r + j to rank j.
        int64_t so = 0, ro = 0;
        for (int j = 0; j < n; ++j) {
            sc[x].push_back((r + j + x) % 3);
            sd[x].push_back(so);
            so += sc[x].back();
            rc[x].push_back((j + r + x) % 3);
            rd[x].push_back(ro);
            ro += rc[x].back();
            for (int64_t c = 0; c < sc[x].back(); ++c) send[x].push_back(1000 * x + 100 * r + j);
        }
        recv[x].assign(size_t(std::max<int64_t>(ro, 1)), -1);
        send[x].resize(size_t(std::max<int64_t>(so, 1)));
    }
    for (int x = 0; x < kExchanges; ++x) {
        w.start_all_to_all_v(send[x].data(), sc[x].data(), sd[x].data(), recv[x].data(), rc[x].data(), rd[x].data(),
                             DType::kI64);
        w.progress();
    }
    w.finish_all();
    for (int x = 0; x < kExchanges; ++x)
        for (int i = 0; i < n; ++i)
            for (int64_t c = 0; c < rc[x][size_t(i)]; ++c)
                EXPECT_EQ(recv[x][size_t(rd[x][size_t(i)] + c)], 1000 * x + 100 * i + r) << "exchange " << x;
    // The communicator is usable for blocking collectives again.
    int64_t one = 1;
    w.all_reduce(&one, 1, DType::kI64, ReduceOp::kSum);
    EXPECT_EQ(one, n);
}

// An expert-parallel MoE layer with shared experts (gated or not): computing them while the dispatch is in flight
// (the default) gives bitwise the outputs and gradients of computing them after it, and both agree with the whole
// layer on one rank. (Buffers are Tensors, aligned as in training, so that alignment cannot change the sums.)
TEST(ExpertParallelMoE, SharedExpertsOverlappedWithTheExchangesChangeNoBit) {
    auto& w = *world();
    const int r = w.rank(), n = w.size();
    const model::Ops<double>& ops = backend::cpu_backend().ops<double>();
    for (bool gate : {false, true}) {
        model::ModelConfig cfg;
        cfg.d_model = 8;
        cfg.init_std = 0.3;
        cfg.moe.n_experts = 2 * n;
        cfg.moe.top_k = 2;
        cfg.moe.d_expert = 6;
        cfg.moe.n_shared_experts = 1;
        cfg.moe.shared_expert_gate = gate;
        const int64_t t = 7, d = cfg.d_model;
        Tensor x = Tensor::empty({t, d}, DType::kF64), dout = Tensor::empty({t, d}, DType::kF64);
        for (int64_t i = 0; i < t * d; ++i) {
            x.data<double>()[i] = std::sin(double(i) * 0.7 + r);
            dout.data<double>()[i] = std::cos(double(i) * 0.3 - r);
        }
        struct Result {
            std::vector<double> out, dx, grads;
        };
        // mode 0: overlapped, 1: after the dispatch, 2: every expert on this rank (no communication).
        auto run = [&](int mode) {
            model::ParamStore store;
            const model::ExpertShard shard = mode == 2 ? model::ExpertShard{} : model::ExpertShard{2 * r, 2};
            model::MoELayer<double> moe(ops, store, cfg, "moe.", shard);
            store.allocate(DType::kF64);
            store.init(11);
            if (mode < 2)
                moe.set_dispatcher(
                    std::make_unique<parallel::AllToAllDispatcher<double>>(ops, w, cfg.moe.n_experts, "test layer"));
            moe.set_overlap_shared(mode == 0);
            Tensor out = Tensor::zeros({t, d}, DType::kF64), dx = Tensor::zeros({t, d}, DType::kF64);
            moe.forward(out.data<double>(), x.data<double>(), 1, t);
            moe.backward(dx.data<double>(), dout.data<double>(), x.data<double>(), 1, t, 1.0);
            Result res{
                {out.data<double>(), out.data<double>() + t * d}, {dx.data<double>(), dx.data<double>() + t * d}, {}};
            for (model::Param* p : store.params())  // the router's and the shared experts' (the same on every layout)
                if (p->name.find("moe.experts.") == std::string::npos)
                    res.grads.insert(res.grads.end(), p->grad.data<double>(), p->grad.data<double>() + p->grad.numel());
            return res;
        };
        const Result over = run(0), after = run(1), whole = run(2);
        EXPECT_EQ(over.out, after.out) << "gate " << gate;
        EXPECT_EQ(over.dx, after.dx) << "gate " << gate;
        EXPECT_EQ(over.grads, after.grads) << "gate " << gate;
        ASSERT_EQ(over.grads.size(), whole.grads.size());
        for (size_t i = 0; i < over.out.size(); ++i) {
            EXPECT_NEAR(over.out[i], whole.out[i], 1e-12) << "gate " << gate << " output " << i;
            EXPECT_NEAR(over.dx[i], whole.dx[i], 1e-12) << "gate " << gate << " dx " << i;
        }
        for (size_t i = 0; i < over.grads.size(); ++i)
            EXPECT_NEAR(over.grads[i], whole.grads[i], 1e-12) << "gate " << gate << " gradient " << i;
    }
}

// The hierarchical dispatch against the flat one, with the ranks as 2 nodes (1 or 2 ranks each): the same combine,
// routing-weight gradients and input gradients (to float reassociation: the per-node sums), every token sent to a
// node once however many of its experts are there, and fewer bytes between the nodes. The experts are a nonlinear
// map of their rows that depends on the expert, so a row given to the wrong expert shows.
TEST(HierarchicalDispatch, GivesTheFlatResultsSendingEachTokenToANodeOnce) {
    auto& w = *world();
    const int r = w.rank(), n = w.size();
    if (n % 2 != 0) GTEST_SKIP() << "needs an even number of ranks";
    const int64_t lanes = n / 2, local = 2, e = local * n, k = 3, d = 64, t = 9 + r;
    parallel::NodeLayout layout = parallel::node_layout(w, lanes, true);
    ASSERT_TRUE(layout.hierarchical());
    std::vector<double> x(static_cast<size_t>(t * d)), weight(static_cast<size_t>(t * k)), dout(x.size());
    std::vector<int32_t> expert(static_cast<size_t>(t * k));
    for (int64_t i = 0; i < t; ++i) {
        for (int64_t c = 0; c < d; ++c) {
            x[static_cast<size_t>(i * d + c)] = std::sin(double(i * d + c) + 0.5 * r);
            dout[static_cast<size_t>(i * d + c)] = std::cos(double(i * d + c) * 0.7 - r);
        }
        for (int64_t j = 0; j < k; ++j) {  // distinct experts, often two on one node; a few choices dropped
            const bool drop = (i + j + r) % 7 == 6;
            expert[static_cast<size_t>(i * k + j)] = drop ? -1 : int32_t((i * 5 + j * (1 + r % 2) + r) % e);
            weight[static_cast<size_t>(i * k + j)] = 0.2 + 0.1 * double(j) + 0.01 * double(i);
        }
        if (expert[static_cast<size_t>(i * k + 1)] == expert[static_cast<size_t>(i * k)])
            expert[static_cast<size_t>(i * k + 1)] = -1;
        if (expert[static_cast<size_t>(i * k + 2)] == expert[static_cast<size_t>(i * k)] ||
            expert[static_cast<size_t>(i * k + 2)] == expert[static_cast<size_t>(i * k + 1)])
            expert[static_cast<size_t>(i * k + 2)] = -1;
    }
    const model::Ops<double>& ops = backend::cpu_backend().ops<double>();
    struct Result {
        std::vector<double> out, dweight, dx;
        int64_t bytes = 0;
    };
    auto run = [&](model::Dispatcher<double>& disp) {
        auto& h = disp.dispatch(x.data(), expert.data(), t, k, e, d);
        // Expert g maps a row v to (g + 1) v + v^2; its backward is dv = ((g + 1) + 2 v) dy.
        std::vector<double> y(static_cast<size_t>(std::max<int64_t>(h.num_expert_rows, 1) * d));
        std::vector<int64_t> expert_of_row;
        for (int64_t el = 0; el < local; ++el)
            for (int64_t q = 0; q < h.tokens_per_local_expert[static_cast<size_t>(el)]; ++q)
                expert_of_row.push_back(disp.first_local_expert() + el);
        EXPECT_EQ(int64_t(expert_of_row.size()), h.num_expert_rows);
        for (int64_t row = 0; row < h.num_expert_rows; ++row)
            for (int64_t c = 0; c < d; ++c) {
                const double v = h.expert_rows[row * d + c];
                y[static_cast<size_t>(row * d + c)] = double(expert_of_row[static_cast<size_t>(row)] + 1) * v + v * v;
            }
        Result res;
        res.out.assign(static_cast<size_t>(t * d), 0.0);
        disp.combine(res.out.data(), y.data(), weight.data());
        std::vector<double> dy(y.size(), 0.0), dv(y.size(), 0.0);
        res.dweight.assign(static_cast<size_t>(t * k), 0.0);
        disp.combine_backward(dy.data(), res.dweight.data(), dout.data(), y.data(), weight.data());
        for (int64_t row = 0; row < h.num_expert_rows; ++row)
            for (int64_t c = 0; c < d; ++c) {
                const double v = h.expert_rows[row * d + c];
                dv[static_cast<size_t>(row * d + c)] = (double(expert_of_row[static_cast<size_t>(row)] + 1) + 2 * v) *
                                                       dy[static_cast<size_t>(row * d + c)];
            }
        res.dx.assign(static_cast<size_t>(t * d), 0.0);
        disp.dispatch_backward(res.dx.data(), dv.data());
        res.bytes = disp.bytes_to_other_nodes();
        return res;
    };
    parallel::AllToAllDispatcher<double> flat(ops, w, e, "flat layer", false, lanes);
    parallel::HierarchicalDispatcher<double> hier(ops, w, *layout.node_comm, *layout.rail_comm, e,
                                                  "hierarchical layer");
    const Result a = run(flat), b = run(hier);
    for (size_t i = 0; i < a.out.size(); ++i) {
        EXPECT_NEAR(b.out[i], a.out[i], 1e-12) << "output " << i;
        EXPECT_NEAR(b.dx[i], a.dx[i], 1e-12) << "input gradient " << i;
    }
    for (size_t i = 0; i < a.dweight.size(); ++i) EXPECT_NEAR(b.dweight[i], a.dweight[i], 1e-12) << "weight " << i;
    // One node-token per (token, node with at least one of its experts).
    const int64_t per_node = e / 2;
    std::vector<int64_t> want(2, 0);
    for (int64_t i = 0; i < t; ++i) {
        bool on[2] = {false, false};
        for (int64_t j = 0; j < k; ++j)
            if (expert[static_cast<size_t>(i * k + j)] >= 0)
                on[expert[static_cast<size_t>(i * k + j)] / per_node] = true;
        for (int m = 0; m < 2; ++m) want[static_cast<size_t>(m)] += on[m];
    }
    EXPECT_EQ(hier.node_tokens_sent(), want);
    int64_t bytes[2] = {a.bytes, b.bytes};
    w.all_reduce(bytes, 2, DType::kI64, ReduceOp::kSum);
    EXPECT_LT(bytes[1], bytes[0]) << "the hierarchical dispatch sends fewer bytes between the nodes (rows of " << d
                                  << " values; the routing metadata is k values per node-token)";
    EXPECT_GT(bytes[1], 0);
}

// Routing of source rank s, token t, choice k over E experts: a fixed function every rank can evaluate, so each
// rank knows what every other rank sent. avoid_rank's experts are never chosen (that rank receives nothing);
// expert 0 is never chosen either (an expert with zero tokens); drop marks some assignments dropped (-1).
int32_t route(int s, int64_t t, int64_t k, int64_t e, int64_t local, int avoid_rank, bool drop) {
    if (drop && (t + k) % 5 == 3) return -1;
    for (int64_t shift = 0;; ++shift) {
        int64_t ex = (s * 7 + t * 3 + k * 5 + shift) % e;
        if (ex == 0 || ex / local == avoid_rank) continue;
        return int32_t(ex);
    }
}

struct DispatchCase {
    int avoid_rank;
    bool drop;
};

class TaggedDispatch : public ::testing::TestWithParam<DispatchCase> {};

TEST_P(TaggedDispatch, RowsArriveWhereTheyShouldAndCombineInverts) {
    const DispatchCase dc = GetParam();
    auto& w = *world();
    const int r = w.rank(), n = w.size();
    const int64_t local = 2, e = local * n, k = 2, d = 4;
    const int64_t t = 11 + r;  // ranks hold different token counts
    // Token rows tagged with (source rank, token index).
    std::vector<double> x(static_cast<size_t>(t * d));
    for (int64_t i = 0; i < t; ++i) {
        x[static_cast<size_t>(i * d + 0)] = r;
        x[static_cast<size_t>(i * d + 1)] = double(i);
        x[static_cast<size_t>(i * d + 2)] = 0.25 * double(i + r);
        x[static_cast<size_t>(i * d + 3)] = -1.0 - double(r);
    }
    std::vector<int32_t> expert(static_cast<size_t>(t * k));
    for (int64_t i = 0; i < t; ++i)
        for (int64_t j = 0; j < k; ++j)
            expert[static_cast<size_t>(i * k + j)] = route(r, i, j, e, local, dc.avoid_rank, dc.drop);
    std::vector<double> weight(static_cast<size_t>(t * k));
    for (int64_t i = 0; i < t * k; ++i) weight[static_cast<size_t>(i)] = 0.1 + 0.05 * double((i + r) % 7);

    parallel::AllToAllDispatcher<double> disp(backend::cpu_backend().ops<double>(), w, e, "test layer");
    auto& h = disp.dispatch(x.data(), expert.data(), t, k, e, d);
    ASSERT_EQ(int64_t(h.tokens_per_local_expert.size()), local);

    // Expected arrivals: for each local expert, rows from source 0, 1, ... in (token, choice) order.
    int64_t row = 0, kept_here = 0;
    for (int64_t el = 0; el < local; ++el) {
        const int64_t ge = r * local + el;
        int64_t count = 0;
        for (int s = 0; s < n; ++s)
            for (int64_t i = 0; i < 11 + s; ++i)
                for (int64_t j = 0; j < k; ++j) {
                    if (route(s, i, j, e, local, dc.avoid_rank, dc.drop) != ge) continue;
                    ASSERT_LT(row, h.num_expert_rows);
                    EXPECT_EQ(h.expert_rows[row * d + 0], s) << "expert " << ge << " row " << row;
                    EXPECT_EQ(h.expert_rows[row * d + 1], double(i)) << "expert " << ge << " row " << row;
                    EXPECT_EQ(h.expert_rows[row * d + 2], 0.25 * double(i + s));
                    ++row;
                    ++count;
                }
        EXPECT_EQ(h.tokens_per_local_expert[static_cast<size_t>(el)], count) << "expert " << ge;
        kept_here += count;
        if (ge == 0) {
            EXPECT_EQ(count, 0);
        }
    }
    EXPECT_EQ(h.num_expert_rows, kept_here);
    if (r == dc.avoid_rank) {
        EXPECT_EQ(h.num_expert_rows, 0) << "this rank's experts were never chosen";
    }

    // sum(num_tokens_per_expert) == T*K - dropped, globally.
    int64_t dropped_local = 0;
    for (int32_t ex : expert) dropped_local += ex < 0;
    int64_t tot[3] = {kept_here, t * k, dropped_local};
    w.all_reduce(tot, 3, DType::kI64, ReduceOp::kSum);
    EXPECT_EQ(tot[0], tot[1] - tot[2]);
    if (dc.drop) {
        EXPECT_GT(tot[2], 0);
    }

    // Identity experts: combine returns x times the sum of the kept choices' weights.
    std::vector<double> y(h.expert_rows, h.expert_rows + h.num_expert_rows * d);
    std::vector<double> out(static_cast<size_t>(t * d), 0.0);
    disp.combine(out.data(), y.data(), weight.data());
    for (int64_t i = 0; i < t; ++i) {
        double wsum = 0;
        for (int64_t j = 0; j < k; ++j)
            wsum += expert[static_cast<size_t>(i * k + j)] >= 0 ? weight[static_cast<size_t>(i * k + j)] : 0.0;
        for (int64_t c = 0; c < d; ++c)
            EXPECT_NEAR(out[static_cast<size_t>(i * d + c)], wsum * x[static_cast<size_t>(i * d + c)], 1e-12)
                << "token " << i;
    }
    // And its gradient: dx = g * sum of kept weights, dweight = <g, x> for kept choices, 0 for dropped ones.
    std::vector<double> g(static_cast<size_t>(t * d));
    for (int64_t i = 0; i < t * d; ++i) g[static_cast<size_t>(i)] = std::sin(double(i + 3 * r));
    std::vector<double> dy(static_cast<size_t>(std::max<int64_t>(h.num_expert_rows, 1) * d), 0.0),
        dw(static_cast<size_t>(t * k), 0.0), dx(static_cast<size_t>(t * d), 0.0);
    disp.combine_backward(dy.data(), dw.data(), g.data(), y.data(), weight.data());
    disp.dispatch_backward(dx.data(), dy.data());
    for (int64_t i = 0; i < t; ++i) {
        double wsum = 0, gx = 0;
        for (int64_t j = 0; j < k; ++j)
            wsum += expert[static_cast<size_t>(i * k + j)] >= 0 ? weight[static_cast<size_t>(i * k + j)] : 0.0;
        for (int64_t c = 0; c < d; ++c) {
            EXPECT_NEAR(dx[static_cast<size_t>(i * d + c)], wsum * g[static_cast<size_t>(i * d + c)], 1e-12)
                << "token " << i;
            gx += g[static_cast<size_t>(i * d + c)] * x[static_cast<size_t>(i * d + c)];
        }
        for (int64_t j = 0; j < k; ++j)
            EXPECT_NEAR(dw[static_cast<size_t>(i * k + j)], expert[static_cast<size_t>(i * k + j)] >= 0 ? gx : 0.0,
                        1e-12);
    }
}

// What gtest prints for a case in listings and failure messages (instead of a byte dump).
void PrintTo(const DispatchCase& dc, std::ostream* os) {
    *os << "avoid_rank " << dc.avoid_rank << (dc.drop ? ", some assignments dropped" : ", nothing dropped");
}

// Names such as Rank0ReceivesNothingAndSomeAssignmentsAreDropped.
std::string dispatch_case_name(const ::testing::TestParamInfo<DispatchCase>& info) {
    const DispatchCase& dc = info.param;
    std::string name =
        dc.avoid_rank < 0 ? "EveryRankReceivesTokens" : "Rank" + std::to_string(dc.avoid_rank) + "ReceivesNothing";
    if (dc.drop) name += "AndSomeAssignmentsAreDropped";
    return name;
}

INSTANTIATE_TEST_SUITE_P(Cases, TaggedDispatch,
                         ::testing::Values(DispatchCase{-1, false}, DispatchCase{1, false}, DispatchCase{0, true}),
                         dispatch_case_name);

TEST(GradSync, SumsReplicatedOverAllAndExpertsOverTheirReplicas) {
    auto& w = *world();
    const int r = w.rank(), n = w.size();
    const int64_t ep = n >= 4 ? 2 : n;  // with 4 ranks: 2 expert groups of 2, expert replicas in pairs
    auto dims = parallel::ParallelDims::make(n, r, ep, 4);
    auto ep_comm = w.split(dims.edp_rank, dims.ep_rank, "ep");
    auto edp_comm = w.split(dims.ep_rank, dims.edp_rank, "edp");
    model::ParamStore store;
    model::Param* dense = store.add("dense", {5}, model::ParamKind::kWeight, 0.1);
    model::Param* experts =
        store.add("experts", {2, 3}, model::ParamKind::kWeight, 0.1, true, {4, 3}, dims.ep_rank * 6);
    store.allocate(DType::kF32);
    for (int64_t i = 0; i < 5; ++i) dense->grad.data<float>()[i] = float(r + 1) * float(i);
    for (int64_t i = 0; i < 6; ++i) experts->grad.data<float>()[i] = float(r + 1);
    parallel::GradSync sync(store, w, *edp_comm, *ep_comm, backend::cpu_backend(), /*zero=*/false,
                            /*bucket_elems=*/2);  // several buckets
    sync.sync();
    const float world_sum = float(n * (n + 1) / 2);
    for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(dense->grad.data<float>()[i], world_sum * float(i));
    // Replicas of this rank's experts: ranks with the same ep_rank.
    float replica_sum = 0;
    for (int q = 0; q < n; ++q)
        if (q % ep == dims.ep_rank) replica_sum += float(q + 1);
    for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(experts->grad.data<float>()[i], replica_sum);
    // The norm counts every expert once: sum over the ep group of its replica sums.
    double expect_sq = 0;
    for (int64_t i = 0; i < 5; ++i) expect_sq += double(world_sum * float(i)) * double(world_sum * float(i));
    for (int e = 0; e < ep; ++e) {
        float rs = 0;
        for (int q = 0; q < n; ++q)
            if (q % ep == e) rs += float(q + 1);
        expect_sq += 6.0 * double(rs) * double(rs);
    }
    EXPECT_NEAR(sync.grad_sq_norm(), expect_sq, 1e-9 * expect_sq);
}

}  // namespace
}  // namespace frugal

namespace frugal {
namespace {

TEST(Fp8Dispatch, RowsArriveAsTheirE4M3TileQuantizationAndBytesShrink) {
    auto& w = *world();
    const int r = w.rank(), n = w.size();
    const int64_t local = 2, e = local * n, k = 2, d = 300, t = 9;  // 300 = two full tiles and a ragged one
    auto make_x = [&](int s) {
        std::vector<float> x(static_cast<size_t>(t * d));
        for (int64_t i = 0; i < t * d; ++i)
            x[static_cast<size_t>(i)] = std::sin(float(i + 17 * s)) * std::ldexp(1.0f, int(i % 13) - 6);
        return x;
    };
    auto route_of = [&](int s, int64_t i, int64_t j) { return int32_t((s + i * 3 + j * 5) % e); };
    std::vector<float> x = make_x(r);
    std::vector<int32_t> expert(static_cast<size_t>(t * k));
    for (int64_t i = 0; i < t; ++i)
        for (int64_t j = 0; j < k; ++j) expert[static_cast<size_t>(i * k + j)] = route_of(r, i, j);
    const model::Ops<float>& ops = backend::cpu_backend().ops<float>();
    parallel::AllToAllDispatcher<float> plain(ops, w, e, "fp32 layer"), fp8(ops, w, e, "fp8 layer", true);
    auto& hp = plain.dispatch(x.data(), expert.data(), t, k, e, d);
    std::vector<float> exact(hp.expert_rows, hp.expert_rows + hp.num_expert_rows * d);
    auto& hq = fp8.dispatch(x.data(), expert.data(), t, k, e, d);
    ASSERT_EQ(hq.num_expert_rows, hp.num_expert_rows);
    // Each received row equals the 1x128 E4M3 quantization (power-of-two scales) of the row its source sent.
    std::vector<float> want(exact.size());
    precision::fake_quant_row_tiles(want.data(), exact.data(), hp.num_expert_rows, d, 128, precision::Fp8Format::kE4M3,
                                    true);
    for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(hq.expert_rows[i], want[i]) << "element " << i;
    // Bytes to other ranks: D codes + 3 scales per row instead of 4 D.
    const int64_t rows_out = plain.dispatch_bytes_sent() / (d * 4);
    EXPECT_EQ(fp8.dispatch_bytes_sent(), rows_out * (d + 3 * 4));
    // Combine stays in full precision: identity experts return the quantized rows times the weights.
    std::vector<float> wts(static_cast<size_t>(t * k), 0.5f), out(static_cast<size_t>(t * d), 0.0f);
    std::vector<float> y(hq.expert_rows, hq.expert_rows + hq.num_expert_rows * d);
    fp8.combine(out.data(), y.data(), wts.data());
    std::vector<float> xq(x.size());
    precision::fake_quant_row_tiles(xq.data(), x.data(), t, d, 128, precision::Fp8Format::kE4M3, true);
    for (size_t i = 0; i < xq.size(); ++i) ASSERT_FLOAT_EQ(out[i], xq[i]) << "element " << i;
}

// ZeRO-1: the reduce-scatter leaves each rank the summed gradient of its shard (a quarter of the replicated range
// on 4 ranks, half of its experts' with 2 replicas), equal to what the all-reduce gives there; the shards tile
// both ranges; the norm equals the all-reduce's; and the all-gather gives every rank every shard's values.
TEST(GradSync, ZeroOneReduceScattersIntoShardsAndAllGathersTheUpdatedValues) {
    auto& w = *world();
    const int r = w.rank(), n = w.size();
    const int64_t ep = n >= 4 ? 2 : n;
    auto dims = parallel::ParallelDims::make(n, r, ep, 4);
    auto ep_comm = w.split(dims.edp_rank, dims.ep_rank, "ep");
    auto edp_comm = w.split(dims.ep_rank, dims.edp_rank, "edp");
    auto build = [&](model::ParamStore& store) {
        store.add("dense", {7}, model::ParamKind::kWeight, 0.1);
        store.add("dense2", {2, 3}, model::ParamKind::kWeight, 0.1);
        store.add("experts", {2, 5}, model::ParamKind::kWeight, 0.1, true, {4, 5}, dims.ep_rank * 10);
        store.allocate(DType::kF32);
        float* g = store.flat_grads().data<float>();
        for (int64_t i = 0; i < store.numel(); ++i) g[i] = float(r + 1) * 0.25f + float(i) * 0.5f;
    };
    model::ParamStore plain, sharded;
    build(plain);
    build(sharded);
    parallel::GradSync all(plain, w, *edp_comm, *ep_comm, backend::cpu_backend(), false, 3);
    parallel::GradSync zero(sharded, w, *edp_comm, *ep_comm, backend::cpu_backend(), true, 3);
    all.sync();
    zero.sync();
    const parallel::FlatRange d = zero.dense_shard(), e = zero.expert_shard();
    EXPECT_EQ(d.begin, 13 * r / n);
    EXPECT_EQ(d.end, 13 * (r + 1) / n);
    EXPECT_EQ(e.begin, 13 + 10 * dims.edp_rank / dims.edp);
    EXPECT_EQ(e.end, 13 + 10 * (dims.edp_rank + 1) / dims.edp);
    const float* ga = plain.flat_grads().data<float>();
    const float* gz = sharded.flat_grads().data<float>();
    for (const parallel::FlatRange& s : {d, e})
        for (int64_t i = s.begin; i < s.end; ++i) EXPECT_EQ(gz[i], ga[i]) << "element " << i;  // small integers/4
    EXPECT_EQ(zero.grad_sq_norm(), all.grad_sq_norm());
    // The shards of all ranks tile [0, 13), and those of each expert replica group its [13, 23).
    int64_t covered[2] = {d.size(), e.size()};
    w.all_reduce(covered, 2, DType::kI64, ReduceOp::kSum);
    EXPECT_EQ(covered[0], 13);
    EXPECT_EQ(covered[1], 10 * ep);  // each ep rank's 10 expert elements once
    // Each rank writes 1000 * rank + i into its shards only; after the gather every rank holds all of them.
    float* v = sharded.flat_values().data<float>();
    std::fill_n(v, sharded.numel(), -1.0f);
    for (const parallel::FlatRange& s : {d, e})
        for (int64_t i = s.begin; i < s.end; ++i) v[i] = float(1000 * r + i);
    zero.gather_params();
    for (int q = 0; q < n; ++q) {
        const parallel::FlatRange dq = parallel::shard_of({0, 13}, q, n);
        for (int64_t i = dq.begin; i < dq.end; ++i) EXPECT_EQ(v[i], float(1000 * q + i)) << "dense element " << i;
    }
    for (int q = 0; q < n; ++q) {
        if (q % ep != dims.ep_rank) continue;  // the replicas of this rank's experts
        const parallel::FlatRange eq = parallel::shard_of({13, 23}, q / int(ep), dims.edp);
        for (int64_t i = eq.begin; i < eq.end; ++i) EXPECT_EQ(v[i], float(1000 * q + i)) << "expert element " << i;
    }
}

}  // namespace
}  // namespace frugal
