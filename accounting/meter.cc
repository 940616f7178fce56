#include "accounting/meter.h"

namespace frugal::accounting {

const char* phase_name(Phase p) {
    switch (p) {
        case Phase::kStartup:
            return "startup";
        case Phase::kCompute:
            return "compute";
        case Phase::kCommunication:
            return "communication";
        case Phase::kData:
            return "data";
        case Phase::kCheckpoint:
            return "checkpoint";
        case Phase::kEvaluation:
            return "evaluation";
        case Phase::kIdle:
            return "idle";
        case Phase::kLost:
            return "lost";
    }
    return "?";
}

PhaseSeconds Meter::snapshot() const {
    PhaseSeconds s = seconds_;
    double claimed = 0;
    for (int i = 0; i < kNumPhases; ++i)
        if (i != int(Phase::kIdle) && i != int(Phase::kLost)) claimed += s[size_t(i)];
    s[size_t(Phase::kIdle)] += std::max(0.0, wall() - claimed);
    return s;
}

}  // namespace frugal::accounting
