#!/usr/bin/env node
// Runs cargo with `--target <host triple>`. `napi build` always passes the host triple, so
// using it for `cargo test` too lets both share one build of burn instead of compiling it twice.
'use strict'
const { execFileSync, spawnSync } = require('node:child_process')

const host = execFileSync('rustc', ['-vV'], { encoding: 'utf8' }).match(/^host: (.+)$/m)[1]
const args = process.argv.slice(2)
const result = spawnSync('cargo', [...args, '--target', host], { stdio: 'inherit' })
process.exit(result.status ?? 1)
