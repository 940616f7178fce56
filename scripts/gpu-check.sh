#!/usr/bin/env bash
# The device check: on a machine with one GPU, builds frugal, frugal_cuda_tests and bench_train, runs every CUDA
# test, times bench_train --device cuda on configs/demo.yaml and configs/bench-h200.yaml in bf16 and fp8-blockwise,
# and prints ONE summary block at the end (also written to $OUT/gpu-check.txt when OUT is set; the full logs go to
# $OUT/gpu-check/ or, without OUT, to /tmp/gpu-check.XXXX).
#
# Usage: scripts/gpu-check.sh [--prebuilt] [BUILD_DIR]        (BUILD_DIR default: build-gpu)
#   BUILD_DIR holding a configured build of this tree: built incrementally (-j 16).
#   BUILD_DIR configured for another path (a build carried along with a fresh copy of the tree) or not configured:
#     configured afresh with -DFRUGAL_CUDA=ON -DFRUGAL_CUDA_ARCHS=90a, keeping BUILD_DIR/_deps (the cudnn-frontend
#     headers: the GPU machine downloads nothing, so they must come with the build directory).
#   --prebuilt: build nothing; run BUILD_DIR/bench_train and BUILD_DIR/tests/cuda/frugal_cuda_tests as they are.
# Preparing the build directory on a machine with the toolkit (no GPU needed), to copy along with the tree:
#   cmake -S . -B build-gpu -DFRUGAL_CUDA=ON -DFRUGAL_CUDA_ARCHS=90a -DFRUGAL_WERROR=ON   (fetches _deps once)
#   cmake --build build-gpu -j 2 --target frugal frugal_cuda_tests bench_train
# then, on the GPU machine, in the copy:  bash scripts/gpu-check.sh build-gpu
# Copied with only its _deps, the directory is built there (about 1-3 minutes on 16 cores); a whole build tree with
# its object files is large (about 80 MiB), while the three binaries plus _deps are about 20 MiB: copy bench_train,
# frugal, tests/cuda/frugal_cuda_tests and _deps/ into a small folder with the same layout and pass --prebuilt.
#
# Time: the whole check stays under GPU_CHECK_BUDGET_S seconds (default 340, for a 6-minute call): every step has its
# own timeout, cut to what is left of the budget, and a step that ran out is reported as such, not hidden.
# Goals printed with the results: ratio (model FLOP/s / GEMM FLOP/s) >= 0.6, and MFU >= 40% of the BF16 peak at
# the realistic config (bench-h200, bf16).
# Exit status: 0 when the build, every test and every bench run succeeded; 1 otherwise (the summary says what failed).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1
prebuilt=0
build_arg="build-gpu"
for arg in "$@"; do
  case "$arg" in
    --prebuilt) prebuilt=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "gpu-check: unknown flag '$arg' (see --help)" >&2; exit 2 ;;
    *) build_arg="$arg" ;;
  esac
done
case "$build_arg" in /*) build="$build_arg" ;; *) build="$root/$build_arg" ;; esac
budget="${GPU_CHECK_BUDGET_S:-340}"
jobs="${GPU_CHECK_JOBS:-16}"
start=$SECONDS
if [[ -n "${OUT:-}" ]]; then logs="$OUT/gpu-check"; mkdir -p "$logs"; else logs="$(mktemp -d /tmp/gpu-check.XXXX)"; fi
summary=()
failed=0
note() { echo "== gpu-check [$((SECONDS - start))s] $*"; }

# Seconds a step may take: its own limit, cut to what is left of the budget (0 when nothing is left).
step_limit() {
  local left=$((budget - (SECONDS - start)))
  ((left < 0)) && left=0
  echo $(($1 < left ? $1 : left))
}

# ---- The GPU ----
gpu="none found"
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu="$(timeout 15 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
  [[ -z "$gpu" ]] && gpu="nvidia-smi printed nothing"
else
  gpu="none found (no nvidia-smi)"
fi
note "GPU: $gpu"

# ---- Build ----
build_status="not run"
if ((prebuilt)); then
  build_status="prebuilt ($build)"
  for bin in bench_train tests/cuda/frugal_cuda_tests; do
    [[ -x "$build/$bin" ]] || { build_status="FAILED: --prebuilt but $build/$bin is missing"; failed=1; }
  done
else
  cache_home=""
  [[ -f "$build/CMakeCache.txt" ]] &&
    cache_home="$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt")"
  configure=(cmake -S "$root" -B "$build" -DFRUGAL_CUDA=ON -DFRUGAL_WERROR=ON)
  if [[ "$cache_home" != "$root" ]]; then
    # A build tree of another checkout (or none): its cache and objects name other paths, so only _deps is kept.
    if [[ "$build" == "$root" || "$build" == "/" ]]; then
      echo "gpu-check: refusing to clean '$build': name a build directory" >&2
      exit 2
    fi
    if [[ -d "$build" ]]; then
      note "build: $build was configured for '${cache_home:-nothing}', not $root: configuring afresh, keeping _deps"
      find "$build" -mindepth 1 -maxdepth 1 ! -name _deps -exec rm -rf {} +
    fi
    configure+=(-DFRUGAL_CUDA_ARCHS=90a)
  fi
  mkdir -p "$build"
  limit=$(step_limit 200)
  note "build: configure + frugal frugal_cuda_tests bench_train (-j $jobs, at most ${limit}s)"
  t0=$SECONDS
  timeout "$limit" "${configure[@]}" >"$logs/configure.log" 2>&1
  rc=$?
  if ((rc != 0)); then
    build_status="FAILED: configure (rc $rc$( ((rc == 124)) && echo ', timed out'); $logs/configure.log)"
    tail -20 "$logs/configure.log"
    failed=1
  else
    timeout "$((limit > SECONDS - t0 ? limit - (SECONDS - t0) : 1))" \
      cmake --build "$build" -j "$jobs" --target frugal frugal_cuda_tests bench_train >"$logs/build.log" 2>&1
    rc=$?
  fi
  if ((failed)); then
    :
  elif ((rc != 0)); then
    build_status="FAILED: build (rc $rc$( ((rc == 124)) && echo ', timed out'); $logs/build.log)"
    grep -E "error|Error" "$logs/build.log" | head -20
    tail -5 "$logs/build.log"
    failed=1
  else
    build_status="ok ($((SECONDS - t0))s)"
  fi
fi
note "build: $build_status"
summary+=("build             $build_status")

# ---- CUDA tests ----
tests_line="not run (no build)"
if [[ "$build_status" == ok* || "$build_status" == prebuilt* ]] && [[ -x "$build/tests/cuda/frugal_cuda_tests" ]]; then
  limit=$(step_limit 90)
  note "frugal_cuda_tests (every test, at most ${limit}s)"
  timeout "$limit" "$build/tests/cuda/frugal_cuda_tests" --gtest_color=no >"$logs/cuda_tests.log" 2>&1
  rc=$?
  ran="$(grep -oE '^\[==========\] [0-9]+ tests? from [0-9]+ test suites? ran' "$logs/cuda_tests.log" |
    grep -oE '[0-9]+' | head -1)"
  passed="$(grep -oE '^\[  PASSED  \] [0-9]+' "$logs/cuda_tests.log" | grep -oE '[0-9]+$')"
  skipped="$(grep -oE '^\[  SKIPPED \] [0-9]+ tests?,' "$logs/cuda_tests.log" | grep -oE '[0-9]+')"
  nfailed="$(grep -oE '^\[  FAILED  \] [0-9]+ tests?,' "$logs/cuda_tests.log" | grep -oE '[0-9]+')"
  tests_line="${ran:-?} ran: ${passed:-0} passed, ${nfailed:-0} failed, ${skipped:-0} skipped (rc $rc)"
  ((rc == 124)) && tests_line="TIMED OUT after ${limit}s: $tests_line"
  if ((rc != 0)); then
    failed=1
    [[ -z "$ran" ]] && tail -15 "$logs/cuda_tests.log"
  fi
  ((${skipped:-0} > 0)) &&
    grep -E '^\[  SKIPPED \] [A-Za-z]' "$logs/cuda_tests.log" | sort -u | head -10 | sed 's/^/  /'
fi
note "tests: $tests_line"
summary+=("cuda tests        $tests_line")
failures="$(grep -E '^\[  FAILED  \] [A-Za-z]' "$logs/cuda_tests.log" 2>/dev/null | sort -u |
  sed 's/^\[  FAILED  \] /  failed: /')"

# ---- bench_train --device cuda ----
runs=("configs/demo.yaml bf16 40" "configs/demo.yaml fp8-blockwise 40"
      "configs/bench-h200.yaml bf16 100" "configs/bench-h200.yaml fp8-blockwise 100")
for spec in "${runs[@]}"; do
  read -r cfg recipe own <<<"$spec"
  name="$(basename "$cfg" .yaml) $recipe"
  log="$logs/bench_$(basename "$cfg" .yaml)_$recipe.log"
  if [[ ! -x "$build/bench_train" || ! ("$build_status" == ok* || "$build_status" == prebuilt*) ]]; then
    summary+=("$(printf '%-29s not run (no fresh bench_train: the build did not succeed)' "$name")")
    failed=1
    continue
  fi
  limit=$(step_limit "$own")
  if ((limit < 10)); then
    summary+=("$(printf '%-29s not run (budget of %ss spent)' "$name" "$budget")")
    failed=1
    continue
  fi
  note "bench_train --device cuda $cfg $recipe (at most ${limit}s)"
  timeout "$limit" "$build/bench_train" --device cuda --reps 5 --set "precision.recipe=$recipe" "$cfg" >"$log" 2>&1
  rc=$?
  cat "$log"
  if ((rc != 0)); then
    failed=1
    why="$(grep -m1 '^error:' "$log" |
      sed 's/^error: //; s/^check failed ([^)]*)): //; s/^check failed ([^)]*): //' | cut -c1-150)"
    ((rc == 124)) && why="timed out after ${limit}s"
    summary+=("$(printf '%-29s FAILED (rc %s): %s' "$name" "$rc" "${why:-see $log}")")
    continue
  fi
  tok="$(sed -n 's/^training *\([0-9.]*\) tokens\/s.*/\1/p' "$log")"
  tflops="$(sed -n 's/^training .* \([0-9.]*\) TFLOP\/s model FLOPs.*/\1/p' "$log")"
  mfu_bf16="$(sed -n 's/^mfu *\([0-9.]*\)% of BF16.*/\1/p' "$log")"
  mfu_fp8="$(sed -n 's/^mfu .*, \([0-9.]*\)% of FP8.*/\1/p' "$log")"
  g_bf16="$(sed -n 's/^cublaslt bf16 .*: \([0-9.]*\) TFLOP\/s/\1/p' "$log")"
  g_fp8="$(sed -n 's/^cublaslt fp8 .*: \([0-9.]*\) TFLOP\/s/\1/p' "$log")"
  ratio="$(sed -n 's/^ratio *\([0-9.]*\) .*/\1/p' "$log")"
  summary+=("$(printf '%-29s %8s tok/s %7s TFLOP/s  MFU %5s%% bf16 %5s%% fp8  GEMM bf16 %6s fp8 %6s TFLOP/s  ratio %s' \
    "$name" "${tok:-?}" "${tflops:-?}" "${mfu_bf16:-?}" "${mfu_fp8:-?}" "${g_bf16:-?}" "${g_fp8:--}" "${ratio:-?}")")
done

# ---- Summary ----
{
  echo "==================== gpu-check summary ($((SECONDS - start))s of ${budget}s) ===================="
  echo "gpu               $gpu"
  echo "tree              $root ($(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
  for line in "${summary[@]}"; do echo "$line"; done
  [[ -n "$failures" ]] && echo "$failures"
  echo "goals             ratio >= 0.6 every run; MFU >= 40% of BF16 peak at bench-h200 bf16"
  echo "logs              $logs"
  echo "result            $( ((failed)) && echo 'FAILED (see above)' || echo 'ok')"
} | tee "$logs/summary.txt"
[[ -n "${OUT:-}" ]] && cp "$logs/summary.txt" "$OUT/gpu-check.txt"
exit "$failed"
