#!/usr/bin/env bash
# Records the per-step training losses (and the validation losses) of the demo model on the CPU backend into
# tests/golden/demo_losses.txt, the file test RecordedLosses.* compares with bit for bit. The losses are written as
# metrics.jsonl prints them (shortest round-trip decimal: the exact double).
#
# Two runs of 30 steps, on the test corpus (five fortune files, 5% held out, as tests/util.cc prepares it):
#   demo-ep4-fp8   configs/demo.yaml as `make demo` runs it: 4 ranks, ep 4, fp8-blockwise
#   ep1-variant    1 rank, FP32, sigmoid scores, sequence-wise aux loss, capacity 1.0, bias updates, gated shared
#                  expert, tied embeddings, attention biases, document masking: the paths the demo leaves out
# Every rank runs one thread, so the recording does not depend on the core count. Eigen picks its kernels by
# instruction set: the file records the CPU features it was made with, and the test compares only on a CPU with
# the same ones.
#
# usage: tests/golden/make_demo_losses.sh [BUILD_DIR]    (default build; needs `make build` first)
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build}
frugal=$build/frugal
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
inputs=()
for f in fortunes computers science wisdom people; do
  [[ -e /usr/share/games/fortunes/$f ]] && inputs+=("/usr/share/games/fortunes/$f")
done
"$frugal" prepare-data "${inputs[@]}" --out "$work/corpus" --val-fraction 0.05 >/dev/null
common=(--set data.dir="$work/corpus" --set train.steps=30 --set run.log_every=1 --set train.eval_every=10
        --set train.eval_batches=4 --set train.threads=1 --set checkpoint.every=0)
"$frugal" launch -n 4 "$src/configs/demo.yaml" "${common[@]}" --set run.out_dir="$work/demo-ep4-fp8" >/dev/null
"$frugal" train "$src/configs/demo.yaml" "${common[@]}" --set run.out_dir="$work/ep1-variant" \
  --set parallel.ep=1 --set precision.recipe=fp32 --set moe.score_func=sigmoid --set moe.aux_loss=seq \
  --set moe.capacity_factor=1.0 --set moe.bias_update_rate=0.001 --set moe.shared_expert_gate=true \
  --set model.tie_embeddings=true --set model.attn_bias=true --set data.document_mask=true >/dev/null
out=$src/tests/golden/demo_losses.txt
{
  echo "# Made by tests/golden/make_demo_losses.sh at commit $(git -C "$src" rev-parse --short HEAD)."
  if grep -q -w avx512f /proc/cpuinfo; then isa=avx512f; elif grep -q -w avx2 /proc/cpuinfo; then isa=avx2; else isa=baseline; fi
  echo "isa $isa"
  echo "# run step key value"
  for run in demo-ep4-fp8 ep1-variant; do
    python3 - "$work/$run/metrics.jsonl" "$run" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    rec = json.loads(line)
    for key in ("loss", "val_loss"):
        if key in rec:
            print(sys.argv[2], rec["step"], key, repr(float(rec[key])))
PY
  done
} > "$out"
echo "wrote $out"
