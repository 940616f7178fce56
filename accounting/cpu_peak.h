// The peak MFU is measured against, and where it came from. GPUs: the catalogue's vendor figure
// (configs/hardware.yaml). The `cpu` device: measured on the machine that runs, because no catalogue figure fits
// every CPU (vector width, FMA units and clock vary by a factor of ten between machines a CPU run may land on).
//
// The measurement: `threads` OpenMP threads each run kChains independent FP32 fused multiply-add chains on vectors of
// the widest width the build was compiled for (AVX-512: 16 lanes, AVX2: 8, SSE: 4), enough chains to hide the FMA
// latency on every FMA port; FLOPs = 2 x lanes per FMA. Each thread's FLOPs are divided by its own CPU time (the
// time it had a core), and the threads' rates summed: other processes on the machine, or the other ranks of the job
// measuring at the same moment, do not lower the figure. About `seconds` of CPU time per run, the best of
// `repetitions` runs. The chains' sum is written to a volatile, so the compiler must compute every FMA.
//
// Ranks of one job on one machine share its cores, so the per-rank (per-device) peak is the machine's measured with
// min(threads per rank x ranks on the machine, logical CPUs) threads, divided by the ranks on the machine.
#pragma once

#include <cstdint>
#include <string>

#include "accounting/hardware.h"

namespace frugal::accounting {

struct PeakFigure {
    double tflops = 0;   // per device (one GPU, or one rank of a CPU run)
    std::string source;  // "measured: FP32 FMA microbenchmark, ..." or "catalogue: ..."
};

// What the build and /proc/cpuinfo say about this CPU.
struct CpuDescription {
    std::string isa;           // the vector instructions the benchmark runs: "AVX-512", "AVX2+FMA", "AVX", "SSE2"
    int lanes = 1;             // FP32 lanes per vector
    bool fma = false;          // fused multiply-add (else a multiply and an add, also 2 FLOPs per lane)
    int logical_cpus = 1;      // CPUs this process may run on
    int physical_cores = 1;    // logical_cpus without SMT siblings (they share the FMA units)
    double ghz = 0;            // the highest clock the system reports, 0 when unknown
    std::string clock_source;  // "cpuinfo_max_freq" or "/proc/cpuinfo cpu MHz"
    int fma_units = 2;         // assumed vector FMA (or multiply + add) ports per core
};
CpuDescription describe_cpu();

// FP32 TFLOP/s of `threads` threads (at least 1) running the FMA chains: the best of `repetitions` runs of about
// `seconds` of CPU time each.
double measure_fma_tflops(int threads, double seconds = 0.02, int repetitions = 5);

// The theoretical FP32 peak of `threads` threads: min(threads, physical cores) x GHz x FMA units x lanes x 2; 0 when
// the clock is unknown.
double derived_fma_tflops(const CpuDescription& cpu, int threads);

// The peak of one rank of a CPU run with threads_per_rank OpenMP threads and ranks_on_machine ranks on this machine
// (see the header comment); the source names the measurement, its threads, the machine's figure and the derived one.
PeakFigure cpu_peak(int threads_per_rank, int64_t ranks_on_machine);

// The peak of one device: the catalogue's (FP8 when low_precision and the device has FP8 units, else BF16) for every
// device but `cpu`, cpu_peak() for `cpu` with threads_per_rank (0: omp_get_max_threads()) and the ranks of a
// world_size job that share this machine (frugal::ranks_on_this_machine). Measured once per process and thread count.
PeakFigure device_peak(const Device& device, bool low_precision, int64_t world_size = 1, int threads_per_rank = 0);

}  // namespace frugal::accounting
