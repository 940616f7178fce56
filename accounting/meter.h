// The run meter: wall time on a rank charged to phases. Summed over ranks it gives device-seconds, which the cost
// report turns into device-hours and dollars. Phases sum to the wall time by construction: whatever no phase
// claimed is idle.
#pragma once

#include <array>
#include <chrono>
#include <string>

namespace frugal::accounting {

enum class Phase { kStartup, kCompute, kCommunication, kData, kCheckpoint, kEvaluation, kIdle, kLost };
inline constexpr int kNumPhases = 8;
const char* phase_name(Phase p);
using PhaseSeconds = std::array<double, kNumPhases>;

class Meter {
  public:
    Meter() : start_(Clock::now()) {}
    void charge(Phase p, double seconds) { seconds_[size_t(p)] += seconds; }
    // Moves seconds from one phase to another (communication measured inside a compute interval).
    void move(Phase from, Phase to, double seconds) {
        seconds_[size_t(from)] -= seconds;
        seconds_[size_t(to)] += seconds;
    }
    double wall() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
    // This rank's seconds per phase since construction, idle filled in so they sum to wall().
    PhaseSeconds snapshot() const;

    // Charges the time between construction and destruction to a phase.
    class Scope {
      public:
        Scope(Meter& m, Phase p) : m_(m), p_(p), t0_(Clock::now()) {}
        ~Scope() { m_.charge(p_, std::chrono::duration<double>(Clock::now() - t0_).count()); }
        Scope(const Scope&) = delete;
        Scope& operator=(const Scope&) = delete;

      private:
        Meter& m_;
        Phase p_;
        std::chrono::steady_clock::time_point t0_;
    };

  private:
    using Clock = std::chrono::steady_clock;
    Clock::time_point start_;
    PhaseSeconds seconds_{};
};

}  // namespace frugal::accounting
