#include "core/signals.h"

#include <unistd.h>

#include <csignal>
#include <cstring>

namespace frugal {

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;
constexpr int kStopSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1};

void on_stop_signal(int sig) {
    if (g_stop_signal != 0) {
        // Asked twice: stop now.
        std::signal(sig, SIG_DFL);
        std::raise(sig);
        return;
    }
    g_stop_signal = sig;
    const char* name = signal_name(sig);
    const char head[] = "frugal: ";
    const char tail[] =
        " received: stopping at the end of this step (with a checkpoint when checkpoint.every is set); send it "
        "again to stop at once\n";
    // Only async-signal-safe calls here.
    ssize_t ignored = ::write(STDERR_FILENO, head, sizeof(head) - 1);
    ignored = ::write(STDERR_FILENO, name, std::strlen(name));
    ignored = ::write(STDERR_FILENO, tail, sizeof(tail) - 1);
    (void)ignored;
}

}  // namespace

void install_stop_handlers() {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (int sig : kStopSignals) sigaction(sig, &sa, nullptr);
}

int stop_signal() { return int(g_stop_signal); }

const char* signal_name(int sig) {
    switch (sig) {
        case SIGINT:
            return "SIGINT";
        case SIGTERM:
            return "SIGTERM";
        case SIGHUP:
            return "SIGHUP";
        case SIGUSR1:
            return "SIGUSR1";
        case SIGUSR2:
            return "SIGUSR2";
        case SIGKILL:
            return "SIGKILL";
        case SIGQUIT:
            return "SIGQUIT";
        case SIGSEGV:
            return "SIGSEGV";
        case SIGABRT:
            return "SIGABRT";
        case SIGBUS:
            return "SIGBUS";
        case SIGFPE:
            return "SIGFPE";
        case SIGILL:
            return "SIGILL";
        default:
            return "a signal";
    }
}

}  // namespace frugal
