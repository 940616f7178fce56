// The check at process start that this CPU has the instruction sets the binary was compiled for (see
// core/cpu_features.h). Compiled for the x86-64 baseline whatever FRUGAL_NATIVE says (CMakeLists.txt), and written
// with C library calls only, so that nothing here can execute an instruction it is about to check for.
#include "core/cpu_features.h"

#include <errno.h>  // program_invocation_short_name
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

namespace frugal::cpu_features {
namespace {

// What the CPU reports: cpuid, and for AVX and AVX-512 also whether the operating system saves their registers.
bool hardware_supports(const char* feature) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
#define FRUGAL_CPU_FEATURE(name) \
    if (strcmp(feature, name) == 0) return __builtin_cpu_supports(name);
    FRUGAL_CPU_FEATURE("sse")
    FRUGAL_CPU_FEATURE("sse2")
    FRUGAL_CPU_FEATURE("sse3")
    FRUGAL_CPU_FEATURE("ssse3")
    FRUGAL_CPU_FEATURE("sse4.1")
    FRUGAL_CPU_FEATURE("sse4.2")
    FRUGAL_CPU_FEATURE("popcnt")
    FRUGAL_CPU_FEATURE("aes")
    FRUGAL_CPU_FEATURE("pclmul")
    FRUGAL_CPU_FEATURE("avx")
    FRUGAL_CPU_FEATURE("avx2")
    FRUGAL_CPU_FEATURE("fma")
    FRUGAL_CPU_FEATURE("bmi")
    FRUGAL_CPU_FEATURE("bmi2")
    FRUGAL_CPU_FEATURE("gfni")
    FRUGAL_CPU_FEATURE("vpclmulqdq")
    FRUGAL_CPU_FEATURE("avx512f")
    FRUGAL_CPU_FEATURE("avx512cd")
    FRUGAL_CPU_FEATURE("avx512dq")
    FRUGAL_CPU_FEATURE("avx512bw")
    FRUGAL_CPU_FEATURE("avx512vl")
    FRUGAL_CPU_FEATURE("avx512ifma")
    FRUGAL_CPU_FEATURE("avx512vbmi")
    FRUGAL_CPU_FEATURE("avx512vbmi2")
    FRUGAL_CPU_FEATURE("avx512vnni")
    FRUGAL_CPU_FEATURE("avx512bitalg")
    FRUGAL_CPU_FEATURE("avx512vpopcntdq")
    FRUGAL_CPU_FEATURE("avx512bf16")
#if !defined(__clang__)
    FRUGAL_CPU_FEATURE("f16c")
    FRUGAL_CPU_FEATURE("lzcnt")
    FRUGAL_CPU_FEATURE("movbe")
    FRUGAL_CPU_FEATURE("sha")
    FRUGAL_CPU_FEATURE("vaes")
    FRUGAL_CPU_FEATURE("avxvnni")
    FRUGAL_CPU_FEATURE("avx512fp16")
#endif
#undef FRUGAL_CPU_FEATURE
#else
    (void)feature;
#endif
    return false;
}

// Whether the comma-separated `list` has `feature` as one of its items (spaces around an item are ignored).
bool list_contains(const char* list, const char* feature) {
    const size_t want = strlen(feature);
    for (const char* item = list;;) {
        while (*item == ' ') ++item;
        const char* comma = strchr(item, ',');
        size_t len = comma ? size_t(comma - item) : strlen(item);
        while (len > 0 && item[len - 1] == ' ') --len;
        if (len == want && strncmp(item, feature, want) == 0) return true;
        if (!comma) return false;
        item = comma + 1;
    }
}

// Runs before the C++ static initializers of the program (priority 101 comes first; those without a priority run
// after every prioritized one), which may already be compiled for the instructions in question.
__attribute__((constructor(101))) void stop_on_a_cpu_without_the_compiled_for_instructions() {
    char missing[1024];
    if (missing_features(missing, int(sizeof(missing))) == 0) return;
    fprintf(stderr,
            "%s: this binary was compiled for instruction sets this CPU lacks: %s; it would stop with an illegal "
            "instruction. %s\n",
            program_invocation_short_name, missing,
            kNativeBuild
                ? "It was built with -march=native (the default, FRUGAL_NATIVE=ON) on another CPU: build it "
                  "on this machine, or configure a portable build with `cmake -DFRUGAL_NATIVE=OFF` and rebuild."
                : "Rebuild it for this CPU: configure with `cmake -DFRUGAL_NATIVE=OFF` and without -march "
                  "flags in CMAKE_CXX_FLAGS.");
    _exit(2);
}

}  // namespace

bool cpu_supports(const char* feature) {
    const char* override_list = getenv("FRUGAL_CPU_FEATURES_OVERRIDE");
    return override_list ? list_contains(override_list, feature) : hardware_supports(feature);
}

int missing_features(char* out, int out_size) {
    int count = 0;
    size_t used = 0;
    if (out_size > 0) out[0] = '\0';
    for (const char* const* f = kCompiledFor; *f; ++f) {
        if (cpu_supports(*f)) continue;
        if (out_size > 0 && used < size_t(out_size)) {
            const int n = snprintf(out + used, size_t(out_size) - used, "%s%s", count ? ", " : "", *f);
            if (n > 0) used += size_t(n);
        }
        ++count;
    }
    return count;
}

}  // namespace frugal::cpu_features
