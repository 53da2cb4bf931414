#!/usr/bin/env bash
# One prepared GPU session for the `paper` step: run on a lent GPU machine from the repository
# root, with builds that `scripts/build-gpu-bench.sh` wrote to .device/<features>/ (carried; the
# `.xz` is unpacked here). The first build named is the main one, a second is compared with it:
#
#   bash bench/gpu-session.sh .device/cuda-cpp+gpu-tuned [.device/cuda]
#
# Most important first, so a session stopped at its limit still brings back the main figures
# (each run's stderr carries its per-step times, and comes back in gpu.jsonl when it fails):
#   1. the paper step at 384/b16, main build, then PyTorch; then 224/b64;
#   2. the same 384/b16 step with the second build, with our batched convolution, in bf16;
#   3. forward parity against the timm fixtures, where a step's time goes, parallel towers.
# Everything lands in $OUT (gpu.jsonl, parity.txt, breakdown.jsonl, log). Learned on an H200: the
# autotuned, fused NVRTC build spent over 120 s in its first 5 steps, so give runs minutes; every
# run's per-step times from step 1 are in its `step_sec`, also for runs stopped at their limit.
#
# Rehearsal without a GPU (what `__test__/gpu-session.spec.ts` runs, with fake binaries):
#   CASS_GPU_DRY_RUN=1 REF_PYTHON=/usr/bin/python3 bash bench/gpu-session.sh DIR_WITH_bench_step
# runs every command of the session on the CPU with tiny stand-ins under the real row names, so
# the output parses as a GPU run's does (`npm run bench -- --import $OUT/gpu.jsonl`).
set -uo pipefail
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
exec > >(tee -a "$out/log") 2>&1
main=${1:?usage: bench/gpu-session.sh BUILD_DIR [OTHER_BUILD_DIR]}/bench_step
other=${2:+$2/bench_step}
for b in "$main" $other; do
  if [ -f "$b.xz" ]; then xz -T0 -dkf "$b.xz" && chmod +x "$b"; fi
done
dry=${CASS_GPU_DRY_RUN:-}
dev=cuda
py_ref=()
[ -n "${REF_PYTHON:-}" ] && py_ref=(--python "$REF_PYTHON")
dry_flag=()
if [ -n "$dry" ]; then
  dev=cpu
  dry_flag=(--dry-run)
  echo "DRY RUN: no GPU; every command runs a CPU stand-in"
fi

[ -z "$dry" ] && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
# NVRTC and the CUDA headers for the `cuda-cpp` build: the toolkit beside nvcc, else the wheels.
nvcc=$(command -v nvcc || true)
cuda=${CUDA_PATH:-}
[ -z "$cuda" ] && [ -n "$nvcc" ] && cuda=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
wheel=$(python3 -c 'import nvidia.cuda_nvrtc, os; print(os.path.dirname(nvidia.cuda_nvrtc.__file__) + "/lib")' 2>/dev/null || true)
[ -n "$cuda" ] && export CUDA_PATH=$cuda
export LD_LIBRARY_PATH=${cuda:+$cuda/lib64:$cuda/lib:}${wheel:+$wheel:}${LD_LIBRARY_PATH:-}
echo "CUDA_PATH=${CUDA_PATH:-none} LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
for d in ${cuda:+$cuda/lib64} $wheel; do ls "$d"/libnvrtc* 2>/dev/null | head -2; done
export RUST_BACKTRACE=1 PYTHONUNBUFFERED=1

# burn's autotune results (`gpu-tuned` builds) persist under the outermost Cargo.toml's
# target/environment (here: the repository's), else the user cache directory (~/.cache/cubecl);
# copied into $OUT after every run so the next session can start warm, even if this one is cut.
keep_cache() { [ -d target/environment ] && mkdir -p "$out/cubecl-cache" && cp -r target/environment/. "$out/cubecl-cache/"; true; }
py() { python3 bench/device.py "${py_ref[@]}" "${dry_flag[@]}" "$@"; keep_cache; }
step=paper:384:16:step
py --ours "$main" --out "$out/gpu.jsonl" --conv native --side ours --timeout 300 --only $step
py --ours "$main" --out "$out/gpu.jsonl" --conv native --side ours --timeout 240 --no-peak \
  --only paper:224:64:step
if [ -n "$other" ]; then
  py --ours "$other" --out "$out/gpu.jsonl" --conv native --side ours-other --timeout 240 \
    --no-reference --no-peak --only $step
fi
py --ours "$main" --out "$out/gpu.jsonl" --conv batched --side ours-batched-conv --timeout 180 \
  --no-reference --no-peak --only $step
py --ours "$main" --out "$out/gpu.jsonl" --conv native --side ours-bf16 --timeout 180 \
  --no-reference --no-peak --only $step --extra "--precision bf16"
parity() { # fixture precision
  printf '%s %s ' "$1" "$2" | tee -a "$out/parity.txt"
  timeout 120 "$main" --device $dev --what parity --precision "$2" \
    --fixture "crates/cass-core/fixtures/timm/$1" 2>&1 | tail -1 | tee -a "$out/parity.txt"
}
for m in resnet_bottleneck vit_tiny; do parity $m f32; parity $m bf16; done
shape=(--model paper --size 384 --batch 16)
[ -n "$dry" ] && shape=(--model cpu-small --size 32 --batch 4)
timeout 180 "$main" --device $dev "${shape[@]}" --what breakdown --steps 5 --warmup 2 --conv native | tail -1 | tee -a "$out/breakdown.jsonl"
py --ours "$main" --out "$out/gpu.jsonl" --conv native --side ours-parallel --timeout 180 \
  --no-reference --no-peak --only $step --extra "--towers parallel"
echo done
