#include "accounting/cpu_peak.h"

#include <omp.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "core/memory.h"

namespace frugal::accounting {

namespace {

// One vector of FP32 lanes and its fused multiply-add, at the widest width the build enables. kChains independent
// accumulators hide the FMA latency: at least latency x ports of them (4 x 2 on Skylake-SP and Ice Lake, 5 x 2 on
// Zen 2 and 3, 4 x 2 on Zen 4), and no more than the vector registers leave room for (32 with AVX-512, 16 before it,
// two of them the constants).
#if defined(__AVX512F__)
using Vec = __m512;
constexpr int kLanes = 16, kChains = 16;
constexpr const char* kIsa = "AVX-512";
constexpr bool kFma = true;
inline Vec splat(float x) { return _mm512_set1_ps(x); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
#elif defined(__AVX__)
using Vec = __m256;
constexpr int kLanes = 8, kChains = 12;
inline Vec splat(float x) { return _mm256_set1_ps(x); }
#if defined(__FMA__)
constexpr const char* kIsa = "AVX2+FMA";
constexpr bool kFma = true;
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
#else
constexpr const char* kIsa = "AVX";
constexpr bool kFma = false;
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_add_ps(_mm256_mul_ps(a, b), c); }
#endif
#elif defined(__SSE2__)
using Vec = __m128;
constexpr int kLanes = 4, kChains = 12;
constexpr const char* kIsa = "SSE2";
constexpr bool kFma = false;
inline Vec splat(float x) { return _mm_set1_ps(x); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
#else
using Vec = float;
constexpr int kLanes = 1, kChains = 8;
constexpr const char* kIsa = "scalar";
constexpr bool kFma = false;
inline Vec splat(float x) { return x; }
inline Vec fma(Vec a, Vec b, Vec c) { return a * b + c; }
#endif

// The sum of v's lanes (through memory: GCC 12's _mm512_reduce_add_ps trips its own -Wuninitialized).
inline float lane_sum(Vec v) {
    float lanes[kLanes];
    std::memcpy(lanes, &v, sizeof(lanes));
    float s = 0;
    for (float x : lanes) s += x;
    return s;
}

constexpr double kFlopsPerStep = 2.0 * kLanes * kChains;  // one step: an FMA on every chain

// The chains' sum goes here, so no FMA result is dead.
volatile float g_sink = 0;

// kChains accumulators x <- x * mul + add, `steps` times; with seed in [1, 2), x converges to add / (1 - mul) = 1,
// so nothing overflows or turns denormal. seed comes from the caller at run time: nothing can be folded at compile
// time.
__attribute__((noinline)) float run_chains(int64_t steps, float seed) {
    Vec acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = splat(seed + float(c));
    const Vec mul = splat(1.0f - 1e-4f * seed), add = splat(1e-4f * seed);
    for (int64_t i = 0; i < steps; ++i) {
#pragma GCC unroll 16
        for (int c = 0; c < kChains; ++c) acc[c] = fma(acc[c], mul, add);
    }
    float s = 0;
    for (int c = 0; c < kChains; ++c) s += lane_sum(acc[c]);
    return s;
}

// Seconds of CPU time this thread has used.
double thread_cpu_seconds() {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// FLOP/s of `threads` threads running `steps` steps each: the sum over threads of each one's FLOPs over its own CPU
// time, the time it had a core. Time on a core, not wall time: other processes sharing the machine (and preempting
// a thread) do not lower the figure, which is the machine's, not this moment's share of it.
double team_flops(int threads, int64_t steps) {
    double flops = 0;
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    {
        const double t0 = thread_cpu_seconds();
        const float s = run_chains(steps, 1.0f + 1e-3f * float(omp_get_thread_num() % 1000));
        const double t = thread_cpu_seconds() - t0;
        if (t > 0) flops += kFlopsPerStep * double(steps) / t;
#pragma omp critical
        g_sink = g_sink + s;
    }
    return flops;
}

// The first value of "key : value" lines of /proc/cpuinfo whose key is `key`, as a number (the largest, for "cpu
// MHz"); -1 when absent.
double cpuinfo_number(const std::string& key, bool largest) {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    double best = -1;
    while (std::getline(in, line)) {
        const size_t colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string k = line.substr(0, colon);
        while (!k.empty() && (k.back() == ' ' || k.back() == '\t')) k.pop_back();
        if (k != key) continue;
        const double v = std::strtod(line.c_str() + colon + 1, nullptr);
        if (!largest) return v;
        best = std::max(best, v);
    }
    return best;
}

std::string fixed(double v, int digits) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
    return buf;
}

}  // namespace

CpuDescription describe_cpu() {
    CpuDescription c;
    c.isa = kIsa;
    c.lanes = kLanes;
    c.fma = kFma;
    cpu_set_t set;
    CPU_ZERO(&set);
    c.logical_cpus = ::sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 0;
    if (c.logical_cpus <= 0) c.logical_cpus = std::max(1, int(::sysconf(_SC_NPROCESSORS_ONLN)));
    // "siblings" logical CPUs per package share "cpu cores" physical ones.
    const double siblings = cpuinfo_number("siblings", false), cores = cpuinfo_number("cpu cores", false);
    const double smt = siblings > 0 && cores > 0 && siblings >= cores ? siblings / cores : 1.0;
    c.physical_cores = std::max(1, int(double(c.logical_cpus) / smt + 0.5));
    std::ifstream max_freq("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq");
    double khz = 0;
    if (max_freq >> khz && khz > 0) {
        c.ghz = khz / 1e6;
        c.clock_source = "cpuinfo_max_freq";
    } else if (const double mhz = cpuinfo_number("cpu MHz", true); mhz > 0) {
        c.ghz = mhz / 1e3;
        c.clock_source = "/proc/cpuinfo cpu MHz";
    }
    return c;
}

double measure_fma_tflops(int threads, double seconds, int repetitions) {
    threads = std::max(1, threads);
    // Calibrate on one thread: double the step count until a run takes a quarter of the target, then scale. (A run
    // too short for the CPU-time clock counts as taking no time.)
    auto one_thread_seconds = [](int64_t n) {
        const double rate = team_flops(1, n);
        return rate > 0 ? kFlopsPerStep * double(n) / rate : 0.0;
    };
    int64_t steps = 1 << 12;
    double t = one_thread_seconds(steps);
    while (t < 0.25 * seconds && steps < (int64_t(1) << 40)) {
        steps *= 2;
        t = one_thread_seconds(steps);
    }
    steps = std::max<int64_t>(1, int64_t(double(steps) * seconds / std::max(t, 1e-9)));
    double best = 0;
    for (int r = 0; r < std::max(1, repetitions); ++r) best = std::max(best, team_flops(threads, steps));
    return best / 1e12;
}

double derived_fma_tflops(const CpuDescription& cpu, int threads) {
    const int cores = std::min(std::max(1, threads), cpu.physical_cores);
    return double(cores) * cpu.ghz * 1e9 * double(cpu.fma_units) * double(cpu.lanes) * 2.0 / 1e12;
}

PeakFigure cpu_peak(int threads_per_rank, int64_t ranks_on_machine) {
    const CpuDescription cpu = describe_cpu();
    const int64_t ranks = std::max<int64_t>(1, ranks_on_machine);
    const int threads = int(std::min<int64_t>(std::max(1, threads_per_rank) * ranks, cpu.logical_cpus));
    const double machine = measure_fma_tflops(threads);
    const double derived = derived_fma_tflops(cpu, threads);
    PeakFigure p;
    p.tflops = machine / double(ranks);
    std::ostringstream s;
    s << "measured: FP32 FMA microbenchmark (" << cpu.isa << ", " << cpu.lanes << " lanes), " << threads
      << (threads == 1 ? " thread, " : " threads, ") << fixed(machine, 3) << " TFLOP/s";
    if (ranks > 1) s << " shared by " << ranks << " ranks on this machine";
    if (derived > 0)
        s << "; derived " << fixed(derived, 3) << " TFLOP/s = " << std::min(threads, cpu.physical_cores) << " cores x "
          << fixed(cpu.ghz, 2) << " GHz (" << cpu.clock_source << ") x " << cpu.fma_units << " "
          << (cpu.fma ? "FMA units" : "multiply+add ports") << " (assumed) x " << cpu.lanes << " lanes x 2";
    p.source = s.str();
    return p;
}

PeakFigure device_peak(const Device& device, bool low_precision, int64_t world_size, int threads_per_rank) {
    if (device.key != "cpu") {
        const bool fp8 = low_precision && device.fp8_tflops > 0;
        return {device.peak_tflops(low_precision), std::string("catalogue: ") + device.name + " dense " +
                                                       (fp8 ? "FP8" : "BF16") + " peak (configs/hardware.yaml)"};
    }
    const int threads = threads_per_rank > 0 ? threads_per_rank : omp_get_max_threads();
    const int64_t ranks = ranks_on_this_machine(world_size);
    static std::mutex mutex;
    static std::map<std::pair<int, int64_t>, PeakFigure> measured;
    std::lock_guard<std::mutex> lock(mutex);
    auto it = measured.find({threads, ranks});
    if (it == measured.end()) it = measured.emplace(std::make_pair(threads, ranks), cpu_peak(threads, ranks)).first;
    return it->second;
}

}  // namespace frugal::accounting
