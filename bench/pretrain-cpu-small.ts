/**
 * Throughput and peak memory of CASS pre-training with a preset (default `cpu-small`).
 *
 *   npm run bench:pretrain -- [--preset cpu-small] [--steps 40] [--warmup 5] [--batch 16]
 *
 * Times come from the engine's own per-step wall clock (`stepSec`: data wait, augmentation,
 * both forwards, one backward, both Adam updates); the first `--warmup` steps are excluded.
 * Peak memory is the process's maximum resident set size (Node + engine). Images are random
 * bytes generated here: throughput does not depend on pixel values.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'

import { type PresetName, type StepEvent, parsePretrainConfig, pretrain } from '../ts/index.js'

const { values } = parseArgs({
  options: {
    preset: { type: 'string', default: 'cpu-small' },
    steps: { type: 'string', default: '40' },
    warmup: { type: 'string', default: '5' },
    batch: { type: 'string' },
    out: { type: 'string' },
  },
})
const preset = values.preset as PresetName
const steps = Number(values.steps)
const warmup = Number(values.warmup)
const config = parsePretrainConfig({ preset, ...(values.batch ? { batchSize: Number(values.batch) } : {}) })
const size = config.imageSize
const count = config.batchSize * 8

let seed = 12345
const pixels = new Uint8Array(count * size * size * 3).map(() => {
  seed = (seed * 1103515245 + 12345) >>> 0
  return seed >>> 24
})

async function main() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cass-bench-'))
  const times: number[] = []
  const started = performance.now()
  const result = await pretrain({
    config: { preset, batchSize: config.batchSize, epochs: 1000, maxSteps: warmup + steps },
    images: { pixels, count, height: size, width: size },
    outDir: dir,
    onProgress: (e) => {
      if (e.type === 'step') times.push((e as StepEvent).stepSec)
    },
  })
  const wall = (performance.now() - started) / 1000
  rmSync(dir, { recursive: true })

  const timed = times.slice(warmup).sort((a, b) => a - b)
  const median = timed[Math.floor(timed.length / 2)]
  const report = {
    date: new Date().toISOString(),
    preset,
    batchSize: config.batchSize,
    imageSize: size,
    timedSteps: timed.length,
    warmupSteps: warmup,
    stepSec: { min: timed[0], median, max: timed[timed.length - 1] },
    stepsPerSec: 1 / median,
    imagesPerSec: config.batchSize / median,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    wallSec: wall,
    finalLoss: result.losses.at(-1),
    machine: {
      cpu: os.cpus()[0]?.model,
      cores: os.cpus().length,
      memGiB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
    },
  }
  console.log(
    `| preset | batch | px | steps/s (median) | images/s | step s min/med/max | peak RSS MiB |\n|---|---|---|---|---|---|---|\n| ${preset} | ${config.batchSize} | ${size} | ${report.stepsPerSec.toFixed(2)} | ${report.imagesPerSec.toFixed(1)} | ${timed[0].toFixed(3)} / ${median.toFixed(3)} / ${timed[timed.length - 1].toFixed(3)} | ${report.peakRssMiB.toFixed(0)} |`,
  )
  const out =
    values.out ??
    path.join('bench', 'results', `${report.date.slice(0, 10)}-${os.hostname()}-${preset}-b${config.batchSize}.json`)
  writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`)
  console.log(`written ${out}`)
}

main().catch((e: unknown) => {
  console.error(e)
  process.exit(1)
})
