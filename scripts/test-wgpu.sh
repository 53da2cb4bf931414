#!/usr/bin/env bash
# `npm run test:wgpu`: wgpu for real, on whatever Vulkan device the machine has (on machines
# without a GPU, lavapipe: Debian's mesa-vulkan-drivers, which .ci/run installs).
#   1. the engine's wgpu tests (a CASS step against the CPU backend, a short pre-training, auto's
#      choice, a buffer over the device's limit);
#   2. an addon built with the `wgpu` feature, driven through the public API (__test__/wgpu.spec.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
node scripts/cargo-host.cjs test -p cass-core --features wgpu,testing --lib wgpu_tests -- --nocapture
out=${CARGO_TARGET_DIR:-target}/wgpu-addon
npx --no-install napi build --platform --features wgpu --manifest-path crates/cass-node/Cargo.toml --output-dir "$out"
addon=$(ls "$out"/cass.*.node)
CASS_WGPU_ADDON=$addon npx --no-install ava --verbose __test__/wgpu.spec.ts
