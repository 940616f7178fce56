// Expert-parallel dispatch + combine throughput against the raw MPI_Alltoallv of the same bytes, measured in the
// same run on the same ranks. Run under mpirun, e.g.
//   mpirun -n 2 build/bench_dispatch [tokens_per_rank] [d_model] [n_experts] [top_k]
// Prints, from rank 0, the median over repetitions of: dispatch + combine time, the time of two raw all-to-all-v
// calls moving the same rows (there and back), the bytes this rank sent and received, and their ratio.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bench/bench_util.h"
#include "core/rng.h"
#include "parallel/all_to_all_dispatcher.h"
#include "parallel/mpi_comm.h"

using namespace frugal;
using bench::median;

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc > 1 && (std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help")) {
        if (rank == 0)
            std::puts(
                "usage: mpirun -n N bench_dispatch [tokens_per_rank=8192] [d_model=1024] [n_experts=8*N] [top_k=2]");
        MPI_Finalize();
        return 0;
    }
    const int64_t t = argc > 1 ? std::atoll(argv[1]) : 8192;
    const int64_t d = argc > 2 ? std::atoll(argv[2]) : 1024;
    const int64_t e = argc > 3 ? std::atoll(argv[3]) : 8 * size;
    const int64_t k = argc > 4 ? std::atoll(argv[4]) : 2;
    auto world = parallel::MpiComm::world(600);

    std::vector<float> x(static_cast<size_t>(t * d));
    for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 97) * 0.01f;
    // Uniform random routing, distinct experts per token.
    rng::Stream stream(uint64_t(rank) + 1, "bench.routing");
    std::vector<int32_t> expert(static_cast<size_t>(t * k));
    for (int64_t i = 0; i < t; ++i)
        for (int64_t j = 0; j < k; ++j) {
            int32_t ex;
            bool dup;
            uint64_t draw = uint64_t(i * k + j);
            do {
                ex = int32_t(stream.below(uint64_t(e), draw, 0));
                draw += uint64_t(t * k);
                dup = false;
                for (int64_t p = 0; p < j; ++p) dup |= expert[static_cast<size_t>(i * k + p)] == ex;
            } while (dup);
            expert[static_cast<size_t>(i * k + j)] = ex;
        }
    std::vector<float> w(static_cast<size_t>(t * k), 0.5f), out(static_cast<size_t>(t * d));

    parallel::AllToAllDispatcher<float> disp(backend::cpu_backend().ops<float>(), *world, e, "bench");
    const int reps = 11;
    std::vector<double> ours, raw, disp_only, raw_one;
    int64_t sent_rows = 0, recv_rows = 0;
    for (int r = 0; r < reps + 1; ++r) {
        // combine adds into the layer's output, which the MoE layer zeroes (or fills with the shared experts')
        // before: not the dispatcher's time.
        std::fill(out.begin(), out.end(), 0.0f);
        MPI_Barrier(MPI_COMM_WORLD);
        auto t0 = std::chrono::steady_clock::now();
        auto& h = disp.dispatch(x.data(), expert.data(), t, k, e, d);
        auto t1 = std::chrono::steady_clock::now();
        disp.combine(out.data(), h.expert_rows, w.data());  // identity experts
        MPI_Barrier(MPI_COMM_WORLD);
        auto t2 = std::chrono::steady_clock::now();
        const double ours_s = std::chrono::duration<double>(t2 - t0).count();
        const double disp_s = std::chrono::duration<double>(t1 - t0).count();

        // The same rows, raw: there and back with MPI_Alltoallv on prepared buffers.
        const auto& srows = disp.send_rows_per_rank();
        const auto& rrows = disp.recv_rows_per_rank();
        std::vector<int> sc(static_cast<size_t>(size)), sd(static_cast<size_t>(size)), rc(static_cast<size_t>(size)),
            rd(static_cast<size_t>(size));
        int64_t so = 0, ro = 0;
        for (int j = 0; j < size; ++j) {
            sc[static_cast<size_t>(j)] = int(srows[static_cast<size_t>(j)] * d);
            sd[static_cast<size_t>(j)] = int(so);
            so += sc[static_cast<size_t>(j)];
            rc[static_cast<size_t>(j)] = int(rrows[static_cast<size_t>(j)] * d);
            rd[static_cast<size_t>(j)] = int(ro);
            ro += rc[static_cast<size_t>(j)];
        }
        std::vector<float> sbuf(static_cast<size_t>(std::max<int64_t>(so, 1))),
            rbuf(static_cast<size_t>(std::max<int64_t>(ro, 1)));
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = std::chrono::steady_clock::now();
        MPI_Alltoallv(sbuf.data(), sc.data(), sd.data(), MPI_FLOAT, rbuf.data(), rc.data(), rd.data(), MPI_FLOAT,
                      MPI_COMM_WORLD);
        auto t3 = std::chrono::steady_clock::now();
        MPI_Alltoallv(rbuf.data(), rc.data(), rd.data(), MPI_FLOAT, sbuf.data(), sc.data(), sd.data(), MPI_FLOAT,
                      MPI_COMM_WORLD);
        MPI_Barrier(MPI_COMM_WORLD);
        double raw_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (r > 0) {  // the first round grows the buffers
            ours.push_back(ours_s);
            raw.push_back(raw_s);
            disp_only.push_back(disp_s);
            raw_one.push_back(std::chrono::duration<double>(t3 - t0).count());
        }
        sent_rows = so / d;
        recv_rows = ro / d;
    }
    // FP8 dispatch: bytes per dispatched token row sent to other ranks, with and without it.
    parallel::AllToAllDispatcher<float> fp8(backend::cpu_backend().ops<float>(), *world, e, "bench fp8", true);
    fp8.dispatch(x.data(), expert.data(), t, k, e, d);
    const double rows_out = double(disp.dispatch_bytes_sent()) / double(d * 4);
    double fp8_s = 0;
    {
        std::vector<double> times;
        for (int r = 0; r < 5; ++r) {
            std::fill(out.begin(), out.end(), 0.0f);
            MPI_Barrier(MPI_COMM_WORLD);
            auto t0 = std::chrono::steady_clock::now();
            auto& h = fp8.dispatch(x.data(), expert.data(), t, k, e, d);
            fp8.combine(out.data(), h.expert_rows, w.data());
            MPI_Barrier(MPI_COMM_WORLD);
            times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        fp8_s = median(times);
    }
    // The local work alone, on this rank's permutation: the gather of every routed row from the tokens and the
    // weighted un-permute back (what dispatch + combine must do besides moving bytes).
    double gather_s = 0, scatter_s = 0;
    {
        const auto& perm = disp.handle().perm;
        const auto& ops = backend::cpu_backend().ops<float>();
        std::vector<float> rows(static_cast<size_t>(std::max<int64_t>(perm.num_rows, 1) * d));
        std::vector<double> g, c;
        for (int r = 0; r < 5; ++r) {
            MPI_Barrier(MPI_COMM_WORLD);
            auto t0 = std::chrono::steady_clock::now();
            model::permute_rows(ops, rows.data(), x.data(), perm, d);
            auto t1 = std::chrono::steady_clock::now();
            model::unpermute_combine(ops, out.data(), rows.data(), w.data(), perm, d);
            auto t2 = std::chrono::steady_clock::now();
            g.push_back(std::chrono::duration<double>(t1 - t0).count());
            c.push_back(std::chrono::duration<double>(t2 - t1).count());
        }
        gather_s = median(g);
        scatter_s = median(c);
    }
    // Bytes this rank moves: rows out and in, both directions.
    const double bytes = 2.0 * double(sent_rows + recv_rows) * double(d) * sizeof(float);
    if (rank == 0) {
        std::printf("ranks %d, %lld tokens/rank, d_model %lld, %lld experts, top-%lld (fp32 rows)\n", size,
                    (long long)t, (long long)d, (long long)e, (long long)k);
        std::printf("dispatch+combine  %.3f ms  %.2f GB/s per rank\n", median(ours) * 1e3, bytes / median(ours) / 1e9);
        std::printf("raw alltoallv x2  %.3f ms  %.2f GB/s per rank\n", median(raw) * 1e3, bytes / median(raw) / 1e9);
        std::printf("  of which         dispatch %.3f ms, combine %.3f ms; raw first call %.3f ms\n",
                    median(disp_only) * 1e3, (median(ours) - median(disp_only)) * 1e3, median(raw_one) * 1e3);
        std::printf("  local work       gather of the routed rows %.3f ms, weighted un-permute %.3f ms\n",
                    gather_s * 1e3, scatter_s * 1e3);
        std::printf("ratio             %.2f (dispatch+combine bandwidth / raw; goal >= 0.8)\n",
                    median(raw) / median(ours));
        std::printf(
            "dispatch bytes    %.0f per token row fp32, %.0f with precision.fp8_dispatch (%.2fx less); "
            "fp8 dispatch+combine %.3f ms\n",
            double(disp.dispatch_bytes_sent()) / rows_out, double(fp8.dispatch_bytes_sent()) / rows_out,
            double(disp.dispatch_bytes_sent()) / double(fp8.dispatch_bytes_sent()), fp8_s * 1e3);
    }
    world.reset();
    MPI_Finalize();
    return 0;
}
