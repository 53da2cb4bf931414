#!/usr/bin/env bash
# What a CUDA build of the engine needs on a Debian bookworm machine that reaches only package
# registries; prints the path of the glibc shim object to link (see below).
#
# burn 0.22's CUDA backend links LLVM 23 (cubecl-llvm), and its build script downloads a prebuilt
# LLVM from GitHub. Here LLVM comes from Debian instead: the `llvm-23` packages of Debian unstable,
# unpacked (not installed) where the bundler looks for its own copy, with a small `llvm-config`
# wrapper. Those static libraries were compiled against glibc 2.38+, whose C23
# `__isoc23_strto*`/`sscanf` entry points bookworm's glibc 2.36 lacks, so scripts/glibc-compat.c
# forwards them to the classic functions (without it the addon fails to load: undefined symbol
# `__isoc23_strtol`). Used by scripts/build-gpu-bench.sh and `npm run package -- --cuda`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ -e /usr/lib/x86_64-linux-gnu/libzstd.so ] || { echo "needs libzstd-dev: apt-get install -y libzstd-dev" >&2; exit 2; }
work=${CASS_GPU_BUILD_DIR:-$HOME/.cache/cass-gpu}
prefix=${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4
mkdir -p "$work"

if [ ! -e "$prefix/.tracel-llvm-installed" ]; then
  echo "LLVM 23 from Debian unstable -> $prefix" >&2
  lists=$work/apt-lists
  mkdir -p "$lists/partial" "$work/debs"
  printf 'deb http://deb.debian.org/debian sid main\n' >"$work/sources.list"
  apt=(-o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$lists")
  apt-get "${apt[@]}" update >/dev/null
  (cd "$work/debs" && apt-get "${apt[@]}" download llvm-23 llvm-23-dev libllvm23 >&2)
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

cc -O2 -fPIC -c "$root/scripts/glibc-compat.c" -o "$work/compat.o"
echo "$work/compat.o"

