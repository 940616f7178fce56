#include "core/progress.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>

#include "core/log.h"

namespace frugal {

namespace {
double steady_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
void print_to_stderr(const std::string& line) {
    if (log::rank() != 0) return;
    std::fprintf(stderr, "%s\n", line.c_str());
    std::fflush(stderr);
}
std::string format(const char* fmt, double v, const char* suffix) {
    char buf[64];
    std::snprintf(buf, sizeof buf, fmt, v, suffix);
    return buf;
}
}  // namespace

Progress::Progress(std::string label, double total, std::string unit)
    : Progress(std::move(label), total, std::move(unit), Options{}) {}

Progress::Progress(std::string label, double total, std::string unit, Options options)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), opt_(std::move(options)) {
    if (!opt_.clock) opt_.clock = steady_seconds;
    if (!opt_.print) opt_.print = print_to_stderr;
    if (opt_.terminal < 0) opt_.terminal = ::isatty(STDERR_FILENO) ? 1 : 0;
    start_ = opt_.clock();
}

Progress::~Progress() {
    // Unwinding from a failure: the operation did not complete, so no final "done" line.
    if (std::uncaught_exceptions() > 0) return;
    try {
        finish();
    } catch (...) {
        // A destructor never throws; a failing print loses only a progress line.
    }
}

double Progress::elapsed() const { return opt_.clock() - start_; }

bool Progress::due(double t) const {
    if (t < (opt_.terminal ? opt_.quiet_s : opt_.long_s)) return false;
    if (last_print_ >= 0 && t - last_print_ < opt_.every_s) return false;
    if (opt_.terminal || last_print_ < 0) return true;
    // Not a terminal: after the first line, one per further tenth of the total (unknown total: one per long_s).
    if (total_ <= 0) return t - last_print_ >= opt_.long_s;
    return int(std::floor(10 * done_ / total_)) > last_tenth_;
}

void Progress::advance(double amount) {
    done_ += amount;
    if (finished_) return;
    const double t = elapsed();
    if (!due(t)) return;
    opt_.print(line());
    printed_ = true;
    last_print_ = t;
    if (total_ > 0) last_tenth_ = int(std::floor(10 * done_ / total_));
}

std::string Progress::line() const {
    const double t = elapsed();
    const double rate = t > 0 ? done_ / t : 0;
    // "412.3 MB of 1.20 GB", "12 of 40 files".
    std::string s = label_ + ": " + (unit_ == "B" || total_ <= 0 ? amount(done_, unit_) : format("%.0f%s", done_, ""));
    if (total_ > 0) {
        s += " of " + amount(total_, unit_) + " (" + std::to_string(int(std::floor(100 * done_ / total_))) + "%)";
    }
    s += ", " + amount(rate, unit_) + "/s";
    if (total_ > 0 && rate > 0 && done_ < total_) s += ", " + duration((total_ - done_) / rate) + " left";
    return s;
}

void Progress::finish() {
    if (finished_) return;
    finished_ = true;
    const double t = elapsed();
    if (!printed_ && t < (opt_.terminal ? opt_.quiet_s : opt_.long_s)) return;
    opt_.print(label_ + ": " + amount(done_, unit_) + " in " + duration(t) + ", " +
               amount(t > 0 ? done_ / t : 0, unit_) + "/s");
}

std::string Progress::amount(double v, const std::string& unit) {
    if (unit != "B") {
        // Counts stay whole; rates of a few per second keep one decimal.
        return format(v < 100 && v != std::floor(v) ? "%.1f %s" : "%.0f %s", v, unit.c_str());
    }
    if (v < 1e3) return format("%.0f %s", v, "B");
    if (v < 1e6) return format("%.1f %s", v / 1e3, "kB");
    if (v < 1e9) return format("%.1f %s", v / 1e6, "MB");
    if (v < 1e12) return format("%.2f %s", v / 1e9, "GB");
    return format("%.2f %s", v / 1e12, "TB");
}

std::string Progress::duration(double seconds) {
    const double s = std::max(0.0, seconds);
    if (s < 10) return format("%.1f %s", s, "s");
    const long total = std::lround(s);
    if (total < 60) return std::to_string(total) + " s";
    if (total < 3600) return std::to_string(total / 60) + " min " + std::to_string(total % 60) + " s";
    char buf[48];
    std::snprintf(buf, sizeof buf, "%ld h %02ld min", total / 3600, (total % 3600) / 60);
    return buf;
}

}  // namespace frugal
