#!/usr/bin/env node
// Type-checks the engine with each GPU backend (`cargo check`), so the `cuda` and `wgpu`
// features cannot rot on machines without a GPU.
//
// burn 0.22's CUDA backend depends on cubecl-llvm, whose build script downloads a prebuilt LLVM
// from GitHub. Machines that reach only package registries cannot do that, so the check runs
// with DOCS_RS=1, which makes that build script skip the download: enough to type-check our
// code against the CUDA backend, not to link a CUDA binary. `scripts/build-gpu-bench.sh` links
// one, with LLVM taken from Debian's packages instead of the download.
'use strict'
const { spawnSync } = require('node:child_process')

for (const [feature, env] of [
  ['wgpu', {}],
  ['cuda', { DOCS_RS: '1' }],
]) {
  console.log(`cargo check -p cass-core --features ${feature}`)
  const r = spawnSync('cargo', ['check', '-p', 'cass-core', '--features', feature], {
    stdio: 'inherit',
    env: { ...process.env, ...env },
  })
  if (r.status !== 0) process.exit(r.status ?? 1)
}
