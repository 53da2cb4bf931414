/**
 * The same CASS pre-training steps through different builds of the native addon (e.g. release
 * profiles), alternated round by round in one invocation so that machine drift hits every build
 * alike. Each round runs `bench/pretrain-cpu-small.ts` once per build, in a child process that
 * loads that build through napi's `NAPI_RS_NATIVE_LIBRARY_PATH`; the step time is the engine's
 * own (`stepSec`, warm-up steps excluded).
 *
 *   node --import tsx bench/addon-ab.ts --rounds 5 --steps 30 NAME=path/to/a.node NAME=path/to/b.node [--out FILE]
 *
 * Prints per build the median over rounds of each round's median images/s, with min and max,
 * and the ratio of each build to the first, round by round (median, min, max).
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    rounds: { type: 'string', default: '5' },
    steps: { type: 'string', default: '30' },
    warmup: { type: 'string', default: '5' },
    out: { type: 'string' },
  },
})
const builds = positionals.map((p) => {
  const at = p.indexOf('=')
  if (at < 1) throw new Error(`builds are NAME=FILE.node, not ${p}`)
  return { name: p.slice(0, at), file: path.resolve(p.slice(at + 1)) }
})
if (builds.length < 2) throw new Error('give at least two builds, NAME=FILE.node')

const tmp = mkdtempSync(path.join(os.tmpdir(), 'cass-addon-ab-'))
const stat = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b)
  return { median: s[Math.floor(s.length / 2)], min: s[0], max: s[s.length - 1] }
}
const perBuild: Record<string, number[]> = Object.fromEntries(builds.map((b) => [b.name, []]))
for (let round = 0; round < Number(values.rounds); round++) {
  for (const b of builds) {
    const out = path.join(tmp, `${b.name}-${round}.json`)
    execFileSync(
      process.execPath,
      ['--import', 'tsx', 'bench/pretrain-cpu-small.ts', '--steps', values.steps, '--warmup', values.warmup, '--out', out],
      { env: { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: b.file, CASS_SSL_ADDON: 'default' }, stdio: 'ignore' },
    )
    const r = JSON.parse(readFileSync(out, 'utf8')) as { imagesPerSec: number }
    perBuild[b.name].push(r.imagesPerSec)
    process.stderr.write(`round ${round + 1} ${b.name}: ${r.imagesPerSec.toFixed(1)} img/s\n`)
  }
}
const first = builds[0].name
const report = {
  date: new Date().toISOString(),
  rounds: Number(values.rounds),
  steps: Number(values.steps),
  warmup: Number(values.warmup),
  builds: builds.map((b) => ({
    name: b.name,
    file: b.file,
    bytes: statSync(b.file).size,
    imagesPerSec: stat(perBuild[b.name]),
    perRound: perBuild[b.name],
    ratioToFirst: stat(perBuild[b.name].map((v, i) => v / perBuild[first][i])),
  })),
  machine: { cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version },
}
console.log(`| build | MiB | images/s median (min-max) | / ${first} median (min-max) |\n|---|---|---|---|`)
for (const b of report.builds) {
  const f = (s: { median: number; min: number; max: number }, d: number) =>
    `${s.median.toFixed(d)} (${s.min.toFixed(d)}-${s.max.toFixed(d)})`
  console.log(`| ${b.name} | ${(b.bytes / 2 ** 20).toFixed(1)} | ${f(b.imagesPerSec, 1)} | ${f(b.ratioToFirst, 3)} |`)
}
if (values.out) writeFileSync(values.out, `${JSON.stringify(report, null, 2)}\n`)
