#!/usr/bin/env bash
# Builds the engine's benchmark binary with the CUDA backend on a Debian bookworm machine that
# reaches only package registries, and puts it in `.device/` (git-ignored) for a GPU machine
# without Rust (see bench/README.md).
#
# Why this is more than `cargo build --features cuda`: burn 0.22's CUDA backend links LLVM 23
# (cubecl-llvm), and its build script downloads a prebuilt LLVM from GitHub. Here LLVM comes from
# Debian instead: the `llvm-23` packages of Debian unstable, unpacked (not installed) where the
# bundler looks for its own copy, with a small `llvm-config` wrapper. Those static libraries were
# compiled against glibc 2.38+, whose C23 `__isoc23_strto*`/`sscanf` entry points bookworm's
# glibc 2.36 lacks, so a few lines of C forward them to the classic functions.
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
[ -e /usr/lib/x86_64-linux-gnu/libzstd.so ] || { echo "needs libzstd-dev: apt-get install -y libzstd-dev" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
work=${CASS_GPU_BUILD_DIR:-$HOME/.cache/cass-gpu}
prefix=${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4
mkdir -p "$work"

if [ ! -e "$prefix/.tracel-llvm-installed" ]; then
  echo "LLVM 23 from Debian unstable -> $prefix"
  lists=$work/apt-lists
  mkdir -p "$lists/partial" "$work/debs"
  printf 'deb http://deb.debian.org/debian sid main\n' >"$work/sources.list"
  apt=(-o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$lists")
  apt-get "${apt[@]}" update >/dev/null
  (cd "$work/debs" && apt-get "${apt[@]}" download llvm-23 llvm-23-dev libllvm23)
  rm -rf "$work/root" "$prefix"
  for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/root"; done
  mkdir -p "$prefix/include"
  cp -a "$work/root/usr/lib/llvm-23/bin" "$work/root/usr/lib/llvm-23/lib" "$prefix/"
  cp -a "$work/root/usr/include/llvm-23/llvm" "$work/root/usr/include/llvm-c-23/llvm-c" "$prefix/include/"
  mv "$prefix/bin/llvm-config" "$prefix/bin/llvm-config.real"
  # llvm-config answers relative to its own location, so paths point into $prefix. The system
  # libraries it lists for Debian's build: z3 and xml2 serve parts of LLVM that CubeCL does not
  # link, so only zlib and zstd (libzstd-dev) are kept; Polly, packaged separately, is left out.
  cat >"$prefix/bin/llvm-config" <<'EOF'
#!/bin/sh
here=$(dirname "$(readlink -f "$0")")
out=$(LD_LIBRARY_PATH="$here/../lib" "$here/llvm-config.real" "$@") || exit $?
case " $* " in
  *" --system-libs "*) echo "-lrt -ldl -lm -lz -lzstd" ;;
  *" --libs "*)
    for l in $out; do [ -e "$here/../lib/lib${l#-l}.a" ] && printf '%s ' "$l"; done
    echo ;;
  *) echo "$out" ;;
esac
EOF
  chmod +x "$prefix/bin/llvm-config"
  touch "$prefix/.tracel-llvm-installed"
fi

cat >"$work/compat.c" <<'EOF'
/* glibc >= 2.38 names the C23 variants of these functions separately; forward them. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
long __isoc23_strtol(const char *s, char **e, int b) { return strtol(s, e, b); }
long long __isoc23_strtoll(const char *s, char **e, int b) { return strtoll(s, e, b); }
unsigned long __isoc23_strtoul(const char *s, char **e, int b) { return strtoul(s, e, b); }
unsigned long long __isoc23_strtoull(const char *s, char **e, int b) { return strtoull(s, e, b); }
int __isoc23_sscanf(const char *s, const char *f, ...) {
  va_list a; va_start(a, f); int r = vsscanf(s, f, a); va_end(a); return r;
}
int __isoc23_scanf(const char *f, ...) {
  va_list a; va_start(a, f); int r = vscanf(f, a); va_end(a); return r;
}
EOF
cc -O2 -fPIC -c "$work/compat.c" -o "$work/compat.o"

host=$(rustc -vV | sed -n 's/^host: //p')
# No LTO and more codegen units than the release profile: the binary is for timing GPU kernels,
# and this halves the build on small machines.
CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  RUSTFLAGS="-C link-arg=$work/compat.o" \
  cargo build --release -p cass-core --features "cuda,testing,$feature" --example bench_step --target "$host"
dir=$root/.device/${feature//,/+}
mkdir -p "$dir"
rm -f "$dir/"*
xz -T0 -9 -c "$target/$host/release/examples/bench_step" >"$dir/bench_step.xz"
ls -l "$dir"
