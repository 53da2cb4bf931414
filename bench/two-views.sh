#!/usr/bin/env bash
# The cpu-small CASS step with one view and with two views plus the collapse guard, ours
# (bench_step) and PyTorch (reference.py), alternated over 3 rounds of 40 timed steps, plus our
# two-view step with the towers run serially. One JSON line per run, prefixed by its label;
# the README's two-view figures are the medians of bench/results/2026-11-26-vm-cpu-small-two-views.jsonl.
#   cargo build --workspace --features cass-core/testing --example bench_step --target "$(rustc -vV | sed -n 's/^host: //p')"
#   bash bench/two-views.sh > out.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
B="${CARGO_TARGET_DIR:-target}/$host/debug/examples/bench_step"
PY=${PYTHON:-/usr/bin/python3}
args=(--model cpu-small --size 32 --batch 16 --steps 40 --warmup 5)
for round in 1 2 3; do
  "$B" "${args[@]}" | sed "s/^/ours-1view /"
  "$PY" bench/reference.py "${args[@]}" | sed "s/^/torch-1view /"
  "$B" "${args[@]}" --views 2 --guard | sed "s/^/ours-2views /"
  "$PY" bench/reference.py "${args[@]}" --views 2 --guard | sed "s/^/torch-2views /"
  "$B" "${args[@]}" --views 2 --guard --towers serial | sed "s/^/ours-2views-serial /"
done
