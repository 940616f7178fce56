// Counter-based random numbers (Philox4x32-10, Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3", SC'11).
//
// A draw is a pure function of (key, counter): no state advances, so any element can be drawn on any rank in any
// order. Parameter initialization keys on (seed, parameter name) and counts by the global element index, which
// makes weights layout-independent: expert 5 has the same values whether it lives on rank 0 or rank 3.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string_view>

namespace frugal::rng {

// FNV-1a, 64 bit: a stable hash of a parameter name (std::hash is not stable across library versions).
inline uint64_t hash_name(std::string_view s) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s) {
        h ^= c;
        h *= 1099511628211ull;
    }
    return h;
}

// SplitMix64 finalizer: mixes a seed with a hash so that nearby seeds give unrelated keys.
inline uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

inline std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
    constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
    for (int round = 0; round < 10; ++round) {
        uint64_t p0 = static_cast<uint64_t>(kM0) * ctr[0];
        uint64_t p1 = static_cast<uint64_t>(kM1) * ctr[2];
        uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
        uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
        ctr = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
        key[0] += kW0;
        key[1] += kW1;
    }
    return ctr;
}

// A stream of draws identified by a 64-bit key; draw i depends on (key, i, lane) only.
class Stream {
  public:
    Stream(uint64_t seed, std::string_view name) : key_(mix64(seed ^ mix64(hash_name(name)))) {}
    explicit Stream(uint64_t key) : key_(key) {}

    std::array<uint32_t, 4> bits(uint64_t index, uint64_t lane = 0) const {
        return philox4x32({static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
                           static_cast<uint32_t>(lane), static_cast<uint32_t>(lane >> 32)},
                          {static_cast<uint32_t>(key_), static_cast<uint32_t>(key_ >> 32)});
    }
    // Uniform in (0, 1), 53-bit resolution.
    double uniform(uint64_t index, uint64_t lane = 0) const {
        auto b = bits(index, lane);
        uint64_t u = (static_cast<uint64_t>(b[0]) << 21) ^ b[1];
        u &= (1ull << 53) - 1;
        return (static_cast<double>(u) + 0.5) * (1.0 / 9007199254740992.0);
    }
    // Standard normal by Box-Muller on the first two words of the draw.
    double normal(uint64_t index, uint64_t lane = 0) const {
        auto b = bits(index, lane);
        double u1 = (static_cast<double>(b[0]) + 0.5) * (1.0 / 4294967296.0);
        double u2 = (static_cast<double>(b[1]) + 0.5) * (1.0 / 4294967296.0);
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    }
    // Uniform integer in [0, n).
    uint64_t below(uint64_t n, uint64_t index, uint64_t lane = 0) const {
        auto b = bits(index, lane);
        uint64_t u = (static_cast<uint64_t>(b[0]) << 32) | b[1];
        return static_cast<uint64_t>((static_cast<unsigned __int128>(u) * n) >> 64);
    }
    uint64_t key() const { return key_; }

  private:
    uint64_t key_;
};

}  // namespace frugal::rng
