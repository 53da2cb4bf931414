#!/usr/bin/env node
// Runs cargo with `--target <host triple>`. `napi build` always passes the host triple, so
// using it for `cargo test` too lets both share one build of burn instead of compiling it twice.
'use strict'
const { execFileSync, spawnSync } = require('node:child_process')

const host = execFileSync('rustc', ['-vV'], { encoding: 'utf8' }).match(/^host: (.+)$/m)[1]
const args = process.argv.slice(2)
// `--target` belongs to cargo: before any `--`, whose followers go to the test binaries.
const split = args.indexOf('--')
const cargoArgs = split < 0 ? [...args, '--target', host] : [...args.slice(0, split), '--target', host, ...args.slice(split)]
const result = spawnSync('cargo', cargoArgs, { stdio: 'inherit' })
process.exit(result.status ?? 1)
