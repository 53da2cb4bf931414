#!/usr/bin/env node
// `npm run package`: the npm tarballs a release publishes, built here: the platform package of
// this machine (`npm/<platform>/`, the release addon alone) and the main package (compiled
// TypeScript, the generated loader, and the Rust sources for the build-from-source fallback),
// whose `optionalDependencies` name the platform packages as `napi prepublish` would write them,
// plus the CUDA build's package (linux-x64 only; ts/native.ts loads it where a GPU probe passes).
// With `--cuda`, also builds and packs that CUDA package (`npm/linux-x64-gnu-cuda/`, the addon
// built with the `cuda` feature). Writes `pack/*.tgz` and prints their sizes.
//
//   npm run package [-- --profile release|dev] [--cuda]   (dev: a faster build for checking the packaging)
'use strict'
const { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } = require('node:fs')
const { execFileSync, spawnSync } = require('node:child_process')
const path = require('node:path')

const root = path.resolve(__dirname, '..')
const profile = process.argv.includes('--profile') ? process.argv[process.argv.indexOf('--profile') + 1] : 'release'
if (!['release', 'dev'].includes(profile)) throw new Error(`--profile must be release or dev, not ${profile}`)
const withCuda = process.argv.includes('--cuda')
const CUDA_PLATFORM = 'linux-x64-gnu'
const CUDA_PACKAGE_DIR = 'linux-x64-gnu-cuda'
const run = (cmd, args, cwd = root, env = process.env) => {
  const r = spawnSync(cmd, args, { cwd, stdio: 'inherit', env })
  if (r.status !== 0) process.exit(r.status ?? 1)
}

const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'))
// napi's platform names for the Rust targets of `napi.targets`.
const PLATFORMS = {
  'x86_64-unknown-linux-gnu': 'linux-x64-gnu',
  'aarch64-unknown-linux-gnu': 'linux-arm64-gnu',
  'aarch64-apple-darwin': 'darwin-arm64',
  'x86_64-pc-windows-msvc': 'win32-x64-msvc',
}
const out = path.join(root, 'pack')
rmSync(out, { recursive: true, force: true })
mkdirSync(out)

// 1. The addon and the compiled TypeScript.
const napiBuild = (outputDir, features, env) =>
  run('npx', ['--no-install', 'napi', 'build', '--platform', ...(profile === 'release' ? ['--release'] : []), ...features, '--manifest-path', 'crates/cass-node/Cargo.toml', '--output-dir', outputDir], root, env)
const t0 = Date.now()
napiBuild('.', [])
const buildSec = (Date.now() - t0) / 1000
run('npx', ['--no-install', 'tsc', '-p', 'tsconfig.json'])

// 2. This machine's platform package.
const triple = execFileSync('rustc', ['-vV'], { encoding: 'utf8' }).match(/^host: (.+)$/m)[1]
const platform = PLATFORMS[triple]
if (!platform) throw new Error(`no npm platform package for ${triple}`)
const addon = `${pkg.napi.binaryName}.${platform}.node`
const platformDir = path.join(root, 'npm', platform)
cpSync(path.join(root, addon), path.join(platformDir, addon))
run('npm', ['pack', '--pack-destination', out], platformDir)
rmSync(path.join(platformDir, addon))

// 2b. The CUDA build, in its own package. Built into pack/ so that the repository's addon and
// generated loader stay the default build's.
let cuda
if (withCuda) {
  if (platform !== CUDA_PLATFORM) throw new Error(`the CUDA package is built for ${CUDA_PLATFORM} only, not ${platform}`)
  const t1 = Date.now()
  const buildDir = path.join(out, 'cuda-build')
  // LLVM for cubecl's CUDA kernel compiler, and the glibc shim its libraries need here.
  const shim = execFileSync('bash', [path.join(root, 'scripts', 'cuda-toolchain.sh')], { encoding: 'utf8' }).trim()
  napiBuild(buildDir, ['--features', 'cuda'], { ...process.env, CASS_EXTRA_LINK_OBJECT: shim })
  const cudaAddon = `${pkg.napi.binaryName}.${CUDA_PACKAGE_DIR}.node`
  const dir = path.join(root, 'npm', CUDA_PACKAGE_DIR)
  cpSync(path.join(buildDir, addon), path.join(dir, cudaAddon))
  cuda = { addonBytes: statSync(path.join(dir, cudaAddon)).size, buildSec: (Date.now() - t1) / 1000 }
  run('npm', ['pack', '--pack-destination', out], dir)
  rmSync(path.join(dir, cudaAddon))
  rmSync(buildDir, { recursive: true })
}

// 3. The main package, staged so that the repository's package.json stays as it is.
const stage = path.join(out, 'stage')
mkdirSync(stage)
for (const f of ['dist', 'index.js', 'index.d.ts', 'README.md', 'scripts/install.cjs', 'Cargo.toml', 'Cargo.lock', 'rustfmt.toml'])
  cpSync(path.join(root, f), path.join(stage, f), { recursive: true })
for (const crate of ['cass-core', 'cass-node'])
  for (const f of ['Cargo.toml', 'build.rs', 'src', 'examples'])
    if (existsSync(path.join(root, 'crates', crate, f)))
      cpSync(path.join(root, 'crates', crate, f), path.join(stage, 'crates', crate, f), { recursive: true })
const platforms = pkg.napi.targets.map((t) => PLATFORMS[t])
const staged = {
  ...pkg,
  files: ['dist', 'index.js', 'index.d.ts', 'scripts/install.cjs', 'Cargo.toml', 'Cargo.lock', 'rustfmt.toml', 'crates'],
  optionalDependencies: Object.fromEntries([...platforms, CUDA_PACKAGE_DIR].map((p) => [`${pkg.name}-${p}`, pkg.version])),
  scripts: { install: pkg.scripts.install },
  devDependencies: undefined,
}
writeFileSync(path.join(stage, 'package.json'), `${JSON.stringify(staged, null, 2)}\n`)
run('npm', ['pack', '--pack-destination', out], stage)
rmSync(stage, { recursive: true })

const sizes = {}
for (const f of readdirSync(out)) sizes[f] = statSync(path.join(out, f)).size
const addonBytes = statSync(path.join(root, addon)).size
console.log(`\naddon (${profile}): ${(addonBytes / 2 ** 20).toFixed(1)} MiB, built in ${buildSec.toFixed(0)} s`)
if (cuda) console.log(`CUDA addon (${profile}): ${(cuda.addonBytes / 2 ** 20).toFixed(1)} MiB, built in ${cuda.buildSec.toFixed(0)} s`)
for (const [f, b] of Object.entries(sizes)) console.log(`${f}: ${(b / 2 ** 20).toFixed(1)} MiB`)
writeFileSync(path.join(out, 'sizes.json'), `${JSON.stringify({ profile, addonBytes, buildSec, cuda, tarballs: sizes }, null, 2)}\n`)
