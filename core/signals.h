// Stop requests. SIGINT, SIGTERM, SIGHUP and SIGUSR1 (what `frugal launch` forwards to the ranks through mpirun or
// srun, and what Slurm sends before a time limit) only set a flag; the training loop reads it at the end of a step,
// agrees on it across ranks, writes a checkpoint and stops. A second signal ends the process at once.
#pragma once

namespace frugal {

void install_stop_handlers();
// The first stop signal received (0: none).
int stop_signal();
// "SIGTERM", "SIGINT", ... (the number for others).
const char* signal_name(int sig);
// Exit code after a stop on sig: 128 + sig, as a shell reports a process ended by it.
inline int stop_exit_code(int sig) { return 128 + sig; }

}  // namespace frugal
