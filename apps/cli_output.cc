#include "apps/cli_output.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "apps/commands.h"
#include "core/error.h"

namespace frugal::apps {

bool wants_json(const Args& args) { return std::find(args.begin(), args.end(), "--json") != args.end(); }

JsonStdout::JsonStdout(bool enabled) {
    if (!enabled) return;
    std::fflush(stdout);
    fd_ = ::dup(STDOUT_FILENO);
    FRUGAL_CHECK(fd_ >= 0, "cannot duplicate stdout for --json: ", std::strerror(errno));
    FRUGAL_CHECK(::dup2(STDERR_FILENO, STDOUT_FILENO) >= 0,
                 "cannot send stdout to stderr for --json: ", std::strerror(errno));
}

JsonStdout::~JsonStdout() {
    if (fd_ < 0) return;
    std::fflush(stdout);
    ::dup2(fd_, STDOUT_FILENO);
    ::close(fd_);
}

void JsonStdout::print(const std::string& text) {
    FRUGAL_CHECK(!printed_ || fd_ < 0, "a --json command printed a second document");
    printed_ = true;
    if (fd_ < 0) {
        std::fputs(text.c_str(), stdout);
        std::fflush(stdout);
        return;
    }
    size_t off = 0;
    while (off < text.size()) {
        const ssize_t n = ::write(fd_, text.data() + off, text.size() - off);
        if (n < 0 && errno == EINTR) continue;
        FRUGAL_CHECK(n > 0, "writing the JSON document to stdout failed: ", std::strerror(errno));
        off += size_t(n);
    }
}

}  // namespace frugal::apps
