#!/usr/bin/env node
// `npm install` hook: use a prebuilt addon when one fits this platform, else build it from
// source (needs a Rust toolchain), then compile the TypeScript if it is not built yet.
'use strict'
const { copyFileSync, existsSync } = require('node:fs')
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

// The generated loader (index.js) finds an addon beside it or in this platform's package
// (`cass-ssl-<platform>`, an optional dependency); loading it in a child process tells whether one
// fits without risking this process.
const prebuilt = () => spawnSync(process.execPath, ['-e', "require('./index.js')"], { cwd: root, stdio: 'ignore' }).status === 0
if (process.env.CASS_FORCE_BUILD !== '1' && prebuilt()) {
  console.log('cass-ssl: using a prebuilt native addon')
} else if (existsSync(path.join(root, 'crates', 'cass-node', 'Cargo.toml'))) {
  const probe = spawnSync('cargo', ['--version'], { stdio: 'ignore', shell: process.platform === 'win32' })
  if (probe.status !== 0) {
    console.error(
      `cass-ssl: no prebuilt addon for ${process.platform}-${process.arch} and no Rust toolchain (cargo) to build one. Install Rust from rustup.rs and run \`npm install\` again.`,
    )
    process.exit(1)
  }
  console.log('cass-ssl: building the native addon from source (a few minutes the first time)...')
  if (existsSync(path.join(root, 'node_modules', '@napi-rs', 'cli'))) {
    run('npx', ['--no-install', 'napi', 'build', '--platform', '--manifest-path', 'crates/cass-node/Cargo.toml', '--output-dir', '.'])
  } else {
    // An installed package has no napi CLI (a development dependency): cargo builds the library
    // and it is put where the loader looks, under napi's platform name.
    run('cargo', ['build', '--release', '--manifest-path', 'crates/cass-node/Cargo.toml'])
    const lib = { linux: 'libcass_node.so', darwin: 'libcass_node.dylib', win32: 'cass_node.dll' }[process.platform]
    const abi = process.platform === 'linux' ? '-gnu' : process.platform === 'win32' ? '-msvc' : ''
    const target = process.env.CARGO_TARGET_DIR ?? path.join(root, 'target')
    copyFileSync(path.join(target, 'release', lib), path.join(root, `cass.${process.platform}-${process.arch}${abi}.node`))
  }
} else {
  console.error(`cass-ssl: no prebuilt addon for ${process.platform}-${process.arch}, and this copy has no Rust sources to build one.`)
  process.exit(1)
}

if (!existsSync(path.join(root, 'dist', 'index.js')) && existsSync(path.join(root, 'node_modules', 'typescript'))) {
  run('npx', ['--no-install', 'tsc', '-p', 'tsconfig.json'])
}
