// Progress of a long operation on stderr, with a rate and an estimate of the time left:
//
//     Progress p("importing", total_bytes, "B");
//     for (...) p.advance(n);          // prints "importing: 412.3 MB of 1.20 GB (34%), 205.1 MB/s, 4 s left"
//     p.finish();                      // (or the destructor) "importing: 1.20 GB in 5.9 s, 203.4 MB/s"
//
// Invariants: an operation shorter than Options::quiet_s prints nothing at all; on a terminal a line comes at
// most once per Options::every_s; when stderr is not a terminal (a log file, a test) nothing is printed before
// Options::long_s and then only at each further tenth of the total, so logs stay short; the final line is printed
// exactly once, and only when the operation printed a line or lasted past the threshold that applies. Only rank 0
// prints (log::rank()), as for info lines. The clock and the output are injectable for tests.
#pragma once

#include <functional>
#include <string>

namespace frugal {

class Progress {
  public:
    struct Options {
        std::function<double()> clock;                  // seconds; default: steady_clock
        std::function<void(const std::string&)> print;  // one line, no newline; default: stderr on rank 0
        int terminal = -1;                              // 1 or 0; -1: isatty(stderr)
        double quiet_s = 2;                             // shorter than this: silent (terminal)
        double long_s = 10;                             // not a terminal: silent until this long
        double every_s = 1;                             // the least time between two lines
    };

    // total <= 0: unknown (no percentage or time left). unit "B" formats bytes (kB, MB, GB, TB); any other unit
    // is written after a plain count ("12 of 40 files").
    Progress(std::string label, double total, std::string unit);
    Progress(std::string label, double total, std::string unit, Options options);
    ~Progress();
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;

    void advance(double amount);
    // Prints the final line when the operation was long enough to be reported; later calls do nothing.
    void finish();

    // The line advance() would print now.
    std::string line() const;
    double done() const { return done_; }

    // "412.3 MB", "1.20 GB", "512 B" (unit "B"); "1234 files" otherwise.
    static std::string amount(double v, const std::string& unit);
    // "4 s", "3 min 20 s", "2 h 05 min".
    static std::string duration(double seconds);

  private:
    double elapsed() const;
    bool due(double now_elapsed) const;

    std::string label_, unit_;
    double total_;
    Options opt_;
    double start_ = 0, last_print_ = -1, done_ = 0;
    int last_tenth_ = 0;
    bool printed_ = false, finished_ = false;
};

}  // namespace frugal
