// The instruction sets this binary was compiled for, and the check at process start that the CPU running it has
// them. A build with FRUGAL_NATIVE=ON (-march=native) may use every instruction of the build machine (AVX-512, ...);
// started on a CPU without them it would die of SIGILL somewhere inside the first kernel. Instead, a constructor
// that runs before every other static initializer of the program (core/cpu_features.cc) compares the list below with
// what the CPU reports and stops the process with exit code 2 and a message naming the missing instruction sets and
// the build option.
//
// Invariants:
//   - kCompiledFor is evaluated with the build's own flags (core/cpu_features_built.cc), so it lists exactly the
//     instruction sets the compiler was allowed to use everywhere else.
//   - The checker (core/cpu_features.cc) is compiled for the x86-64 baseline (-march=x86-64, set per file in
//     CMakeLists.txt) and calls only C library functions: it cannot itself execute an instruction it checks for,
//     not even through an inline C++ function whose copy the linker might take from a -march=native object.
//   - Both objects are linked into every executable through the frugal_cpu_guard OBJECT library, never through a
//     static archive the linker could leave out.
//
// FRUGAL_CPU_FEATURES_OVERRIDE="sse,sse2,avx2,..." replaces what the CPU reports by that comma-separated list of
// names (those of GCC's __builtin_cpu_supports), so that tests can play a CPU without AVX-512.
#pragma once

namespace frugal::cpu_features {

// The names (as __builtin_cpu_supports spells them: "avx2", "avx512f", "sse4.2") of the instruction sets the build
// enabled, ending with a null pointer.
extern const char* const kCompiledFor[];
// 1 when the build compiled for the build machine's CPU (FRUGAL_NATIVE=ON), 0 otherwise.
extern const int kNativeBuild;

// Whether this CPU (or FRUGAL_CPU_FEATURES_OVERRIDE when set) supports `feature`, a name of kCompiledFor.
// Unknown names are unsupported.
bool cpu_supports(const char* feature);

// Writes the names of kCompiledFor this CPU lacks into out ("avx512f, avx512bw", NUL-terminated, truncated to
// out_size) and returns how many there are.
int missing_features(char* out, int out_size);

}  // namespace frugal::cpu_features
