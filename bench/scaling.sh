#!/usr/bin/env bash
# Training tokens/s of the demo model at 1, 2 and 4 ranks (expert parallel across all ranks), same global batch.
# usage: bench/scaling.sh [path/to/frugal] [steps]
set -euo pipefail
frugal=${1:-build/frugal}
steps=${2:-30}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
common="--set train.steps=$steps --set train.eval_every=0 --set train.micro_batch=4 --set run.log_every=1000"
for n in 1 2 4; do
  if [ "$n" = 1 ]; then
    line=$("$frugal" train configs/demo.yaml $common --set parallel.ep=1 --set run.out_dir="$out/1" | grep "done:")
  else
    line=$("$frugal" launch -n "$n" configs/demo.yaml $common --set parallel.ep="$n" --set run.out_dir="$out/$n" | grep "done:")
  fi
  echo "ranks $n (ep $n): $(echo "$line" | grep -o '([0-9]* tokens/s)')"
done
