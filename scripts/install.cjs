#!/usr/bin/env node
// `npm install` hook: use a prebuilt addon when one fits this platform, else build it from
// source (needs a Rust toolchain), then compile the TypeScript if it is not built yet.
'use strict'
const { existsSync, readdirSync } = require('node:fs')
const { spawnSync } = require('node:child_process')
const path = require('node:path')

const root = path.resolve(__dirname, '..')
const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' })
  if (r.status !== 0) {
    console.error(`cass-ssl: \`${cmd} ${args.join(' ')}\` failed (exit ${r.status}).`)
    process.exit(r.status ?? 1)
  }
}

const addon = readdirSync(root).find((f) => f.startsWith('cass.') && f.endsWith('.node'))
if (addon && process.env.CASS_FORCE_BUILD !== '1') {
  console.log(`cass-ssl: using native addon ${addon}`)
} else if (existsSync(path.join(root, 'crates', 'cass-node', 'Cargo.toml'))) {
  const probe = spawnSync('cargo', ['--version'], { stdio: 'ignore', shell: process.platform === 'win32' })
  if (probe.status !== 0) {
    console.error('cass-ssl: no prebuilt addon for this platform and no Rust toolchain (cargo) to build one. Install Rust from rustup.rs and run `npm install` again.')
    process.exit(1)
  }
  console.log('cass-ssl: building the native addon from source (a few minutes the first time)...')
  run('npx', ['--no-install', 'napi', 'build', '--platform', '--manifest-path', 'crates/cass-node/Cargo.toml', '--output-dir', '.'])
}

if (!existsSync(path.join(root, 'dist', 'index.js')) && existsSync(path.join(root, 'node_modules', 'typescript'))) {
  run('npx', ['--no-install', 'tsc', '-p', 'tsconfig.json'])
}
