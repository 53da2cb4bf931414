#!/usr/bin/env node
// `npm run package`: the npm tarballs a release publishes, built here: the platform package of
// this machine (`npm/<platform>/`, the release addon alone) and the main package (compiled
// TypeScript, the generated loader, and the Rust sources for the build-from-source fallback),
// whose `optionalDependencies` name the platform packages as `napi prepublish` would write them.
// Writes `pack/*.tgz` and prints their sizes.
//
//   npm run package [-- --profile release|dev]   (dev: a faster build for checking the packaging)
'use strict'
const { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } = require('node:fs')
const { execFileSync, spawnSync } = require('node:child_process')
const path = require('node:path')

const root = path.resolve(__dirname, '..')
const profile = process.argv.includes('--profile') ? process.argv[process.argv.indexOf('--profile') + 1] : 'release'
if (!['release', 'dev'].includes(profile)) throw new Error(`--profile must be release or dev, not ${profile}`)
const run = (cmd, args, cwd = root) => {
  const r = spawnSync(cmd, args, { cwd, stdio: 'inherit' })
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
const t0 = Date.now()
run('npx', ['--no-install', 'napi', 'build', '--platform', ...(profile === 'release' ? ['--release'] : []), '--manifest-path', 'crates/cass-node/Cargo.toml', '--output-dir', '.'])
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
  optionalDependencies: Object.fromEntries(platforms.map((p) => [`${pkg.name}-${p}`, pkg.version])),
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
for (const [f, b] of Object.entries(sizes)) console.log(`${f}: ${(b / 2 ** 20).toFixed(1)} MiB`)
writeFileSync(path.join(out, 'sizes.json'), `${JSON.stringify({ profile, addonBytes, buildSec, tarballs: sizes }, null, 2)}\n`)
