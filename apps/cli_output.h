// Where a command's results go. With --json a command prints exactly one JSON document on stdout and everything
// else (log lines, progress, warnings, whatever a library prints) on stderr: JsonStdout moves file descriptor 1
// onto stderr for the life of the command and keeps the real stdout for the document alone.
//
// Invariants: at most one document is written per JsonStdout; under mpirun only the rank that calls print() writes
// to stdout (the others write nothing there).
#pragma once

#include <string>

namespace frugal::apps {

class JsonStdout {
  public:
    // enabled false: nothing is redirected and print() writes to stdout as usual.
    explicit JsonStdout(bool enabled);
    ~JsonStdout();
    JsonStdout(const JsonStdout&) = delete;
    JsonStdout& operator=(const JsonStdout&) = delete;

    // Writes text (the document, or the text report without --json) to the real stdout and flushes it.
    void print(const std::string& text);
    // The descriptor of the real stdout (a child process that should write the document inherits it).
    int document_fd() const { return fd_ >= 0 ? fd_ : 1; }

  private:
    int fd_ = -1;  // the saved stdout, -1 when not redirected
    bool printed_ = false;
};

}  // namespace frugal::apps
