// Test helpers: deterministic random fills and comparisons that report the largest absolute and relative error,
// where it is, both values and the seed.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"

namespace frugal::test {

template <typename T>
std::vector<T> random_vec(int64_t n, uint64_t seed, double scale = 1.0) {
    rng::Stream s(seed, "test");
    std::vector<T> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = T(scale * s.normal(uint64_t(i)));
    return v;
}

struct Comparison {
    double max_abs = 0, max_rel = 0;
    int64_t where = -1;
    double got = 0, want = 0;
};

template <typename A, typename B>
Comparison compare(const A* got, const B* want, int64_t n) {
    Comparison c;
    for (int64_t i = 0; i < n; ++i) {
        double g = double(got[i]), w = double(want[i]);
        double abs = std::fabs(g - w);
        double rel = abs / std::max(std::fabs(w), 1e-30);
        if (abs > c.max_abs || !(abs == abs)) {
            c.max_abs = abs;
            c.where = i;
            c.got = g;
            c.want = w;
        }
        c.max_rel = std::max(c.max_rel, rel);
    }
    return c;
}

// Fails when any element differs by more than atol + rtol * |want|.
template <typename A, typename B>
void expect_close(const A* got, const B* want, int64_t n, double atol, double rtol, const std::string& what,
                  uint64_t seed = 0) {
    for (int64_t i = 0; i < n; ++i) {
        double g = double(got[i]), w = double(want[i]);
        if (!(std::fabs(g - w) <= atol + rtol * std::fabs(w))) {
            Comparison c = compare(got, want, n);
            ADD_FAILURE() << what << ": element " << i << " got " << g << " want " << w << "; largest abs error "
                          << c.max_abs << " at " << c.where << " (got " << c.got << ", want " << c.want
                          << "), largest rel error " << c.max_rel << ", seed " << seed;
            return;
        }
    }
}

inline std::filesystem::path temp_dir(const std::string& name) {
    auto p = std::filesystem::temp_directory_path() / ("frugal_test_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(p);
    std::filesystem::create_directories(p);
    return p;
}

// The message of the ConfigError that f throws ("" and a test failure when it throws none).
template <typename F>
std::string config_error(F&& f) {
    try {
        f();
    } catch (const ConfigError& e) {
        return e.what();
    }
    ADD_FAILURE() << "no ConfigError";
    return "";
}

// Fails for each needle that message does not contain.
inline void expect_has(const std::string& message, const std::vector<std::string>& needles) {
    for (const auto& n : needles)
        EXPECT_NE(message.find(n), std::string::npos) << "'" << n << "' missing in\n" << message;
}

// Runs build/frugal with the given arguments (shell-quoted by the caller), stdout and stderr together.
struct CliResult {
    int code;  // exit code; -1 when killed by a signal
    std::string output;
    double seconds;  // wall time
};
CliResult run_frugal(const std::string& args);

// A few Debian fortune files prepared once into the build tree and reused by later tests and runs. Empty when the
// fortunes package is missing (scripts/setup.sh installs it).
std::filesystem::path test_corpus();

}  // namespace frugal::test
