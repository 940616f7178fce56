#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz in build-fuzz (clang, -fsanitize=fuzzer,address,undefined) and runs each
# for a bounded time from its seed corpus in tests/fuzz/corpus/<target>. Exits non-zero when any target finds a
# crash, leak, timeout or sanitizer report; the input that did it is left in build-fuzz/findings/<target>/.
# A finding becomes a regression file in tests/fuzz/regressions/<target>/ (replayed by frugal_tests, FuzzRegressions).
#
# Needs clang, libclang-rt-14-dev and libomp-dev (scripts/setup.sh installs them).
# Environment: FUZZ_SECONDS (per target, default 8), FUZZ_JOBS (build parallelism, default 2), FUZZ_TARGETS (a
# space-separated subset).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-fuzz"
seconds="${FUZZ_SECONDS:-8}"
jobs="${FUZZ_JOBS:-2}"
targets="${FUZZ_TARGETS:-safetensors_header hf_config tokenizer run_config set_override shard jsonl}"

command -v clang++ >/dev/null || { echo "fuzz: clang++ not found: run scripts/setup.sh" >&2; exit 1; }
mkdir -p "$build"
# The fuzz targets are host parsers: the CUDA backend is left out (-DFRUGAL_CUDA=OFF).
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DFRUGAL_FUZZ=ON -DFRUGAL_BUILD_TESTS=OFF -DFRUGAL_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log" 2>&1 ||
  { cat "$build/configure.log" >&2; echo "fuzz: configuring $build failed" >&2; exit 1; }
cmake --build "$build" -j "$jobs" --target fuzz_all

failed=()
for t in $targets; do
  exe="$build/fuzz/fuzz_$t"
  corpus="$build/corpus/$t"  # grows as the fuzzer finds new coverage; the committed seeds stay untouched
  findings="$build/findings/$t"
  mkdir -p "$corpus" "$findings"
  log="$build/findings/$t.log"
  echo "fuzz: $t for ${seconds}s"
  if "$exe" "$corpus" "$root/tests/fuzz/corpus/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
      -max_len=65536 -artifact_prefix="$findings/" -print_final_stats=1 >"$log" 2>&1; then
    grep -E "^stat::(number_of_executed_units|average_exec_per_sec)" "$log" | tr '\n' ' '
    echo
  else
    echo "fuzz: $t FOUND A CRASH (log: $log, input in $findings/):" >&2
    grep -E "ERROR|SUMMARY|runtime error|Test unit written" "$log" | head -20 >&2
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: all targets clean"
