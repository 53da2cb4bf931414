#!/usr/bin/env bash
# Builds the engine's benchmark binary with the CUDA backend on a Debian bookworm machine that
# reaches only package registries, and puts it in `.device/` (git-ignored) for a GPU machine
# without Rust (see bench/README.md).
#
# Why this is more than `cargo build --features cuda`: burn 0.22's CUDA backend links LLVM 23;
# scripts/cuda-toolchain.sh provides it (and the glibc shim it needs here).
#
#   scripts/build-gpu-bench.sh                      # kernels through LLVM; then: ls -l .device/
#   scripts/build-gpu-bench.sh cuda-cpp,gpu-tuned    # NVRTC (CUDA C++), autotune + fusion
#
# Writes .device/<features, joined by +>/bench_step.xz (the benchmark, with `--what parity` for the forward-parity
# check): xz because one build is about 160 MB (LLVM is linked in) and a GPU call carries 64 MiB.
set -euo pipefail
feature=${1:-cuda}
for f in ${feature//,/ }; do
  case "$f" in cuda|cuda-cpp|gpu-tuned) ;; *) echo "features are cuda, cuda-cpp, gpu-tuned; not $f" >&2; exit 2 ;; esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
compat=$(bash "$root/scripts/cuda-toolchain.sh")

host=$(rustc -vV | sed -n 's/^host: //p')
# No LTO and more codegen units than the release profile: the binary is for timing GPU kernels,
# and this halves the build on small machines.
CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  RUSTFLAGS="-C link-arg=$compat" \
  cargo build --release -p cass-core --features "cuda,testing,$feature" --example bench_step --target "$host"
dir=$root/.device/${feature//,/+}
mkdir -p "$dir"
rm -f "$dir/"*
xz -T0 -9 -c "$target/$host/release/examples/bench_step" >"$dir/bench_step.xz"
ls -l "$dir"
