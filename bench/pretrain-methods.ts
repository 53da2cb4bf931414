/**
 * Pre-training time of CASS against DINO (the paper's "69 % less time" claim) and VICReg, per
 * epoch, on this machine, with a preset's networks (default `cpu-small`).
 *
 *   node --import tsx bench/pretrain-methods.ts [--preset cpu-small] [--images 1024] [--rounds 3]
 *
 * One epoch over `--images` random images is run for CASS (both networks at once) and for DINO
 * and VICReg on each network (they train one backbone per run, so their cost for the pair is
 * the sum), the five alternated in each round; the figures are the medians over rounds, with the range. The
 * first step of every run is left out (it builds the kernels' caches). Run on a quiet machine.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'

import {
  type PresetName,
  type StepEvent,
  parseDinoConfig,
  parsePretrainConfig,
  pretrain,
  pretrainDino,
  pretrainVicreg,
} from '../ts/index.js'

const { values } = parseArgs({
  options: {
    preset: { type: 'string', default: 'cpu-small' },
    images: { type: 'string', default: '1024' },
    rounds: { type: 'string', default: '3' },
    out: { type: 'string' },
  },
})
const preset = values.preset as PresetName
const count = Number(values.images)
const rounds = Number(values.rounds)
const cass = parsePretrainConfig({ preset })
const size = cass.imageSize

let seed = 12345
const pixels = new Uint8Array(count * size * size * 3).map(() => {
  seed = (seed * 1103515245 + 12345) >>> 0
  return seed >>> 24
})
const images = { pixels, count, height: size, width: size }

type Arm = 'cass' | 'dino-cnn' | 'dino-vit' | 'vicreg-cnn' | 'vicreg-vit'

/** Seconds of one epoch, first step excluded, scaled back to the whole epoch. */
async function epochSeconds(arm: Arm): Promise<number> {
  const outDir = mkdtempSync(path.join(os.tmpdir(), 'cass-bench-methods-'))
  const steps: number[] = []
  const onProgress = (e: { type: string }) => e.type === 'step' && steps.push((e as StepEvent).stepSec)
  const arch = arm.endsWith('cnn') ? 'cnn' : 'vit'
  if (arm === 'cass') await pretrain({ config: { preset, epochs: 1 }, images, outDir, onProgress })
  else if (arm.startsWith('dino')) await pretrainDino({ config: { preset, arch, epochs: 1 }, images, outDir, onProgress })
  else await pretrainVicreg({ config: { preset, arch, epochs: 1 }, images, outDir, onProgress })
  rmSync(outDir, { recursive: true })
  const timed = steps.slice(1)
  return (timed.reduce((a, b) => a + b, 0) / timed.length) * steps.length
}

const summary = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b)
  return { median: s[Math.floor(s.length / 2)], min: s[0], max: s[s.length - 1], runs: v }
}

async function main() {
  const arms: Arm[] = ['cass', 'dino-cnn', 'dino-vit', 'vicreg-cnn', 'vicreg-vit']
  const times: Record<Arm, number[]> = { cass: [], 'dino-cnn': [], 'dino-vit': [], 'vicreg-cnn': [], 'vicreg-vit': [] }
  for (let r = 0; r < rounds; r++) for (const arm of arms) times[arm].push(await epochSeconds(arm))
  const dinoPair = times['dino-cnn'].map((t, i) => t + times['dino-vit'][i])
  const ratio = times.cass.map((t, i) => t / dinoPair[i])
  const vicregPair = times['vicreg-cnn'].map((t, i) => t + times['vicreg-vit'][i])
  const overVicreg = times.cass.map((t, i) => t / vicregPair[i])
  const dino = parseDinoConfig({ preset, arch: 'vit' })
  const report = {
    date: new Date().toISOString(),
    preset,
    images: count,
    imageSize: size,
    batchSize: cass.batchSize,
    cassViews: cass.views,
    dinoCrops: { global: 2, local: dino.localCrops, localSize: dino.localCropSize },
    epochSec: {
      cass: summary(times.cass),
      dinoCnn: summary(times['dino-cnn']),
      dinoVit: summary(times['dino-vit']),
      dinoBoth: summary(dinoPair),
      vicregCnn: summary(times['vicreg-cnn']),
      vicregVit: summary(times['vicreg-vit']),
      vicregBoth: summary(vicregPair),
    },
    cassOverDino: summary(ratio),
    cassOverVicreg: summary(overVicreg),
    machine: { cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version },
  }
  const f = (s: { median: number; min: number; max: number }) =>
    `${s.median.toFixed(2)} (${s.min.toFixed(2)}-${s.max.toFixed(2)})`
  console.log(
    [
      `| epoch of ${count} images, s | median (range over ${rounds} rounds) |`,
      '|---|---|',
      `| CASS (CNN + ViT, ${cass.views} view${cass.views > 1 ? 's' : ''}) | ${f(report.epochSec.cass)} |`,
      `| DINO CNN | ${f(report.epochSec.dinoCnn)} |`,
      `| DINO ViT | ${f(report.epochSec.dinoVit)} |`,
      `| DINO, both networks | ${f(report.epochSec.dinoBoth)} |`,
      `| CASS / DINO | ${f(report.cassOverDino)} |`,
      `| VICReg CNN | ${f(report.epochSec.vicregCnn)} |`,
      `| VICReg ViT | ${f(report.epochSec.vicregVit)} |`,
      `| VICReg, both networks | ${f(report.epochSec.vicregBoth)} |`,
      `| CASS / VICReg | ${f(report.cassOverVicreg)} |`,
    ].join('\n'),
  )
  const out = values.out ?? path.join('bench', 'results', `${report.date.slice(0, 10)}-vm-pretrain-methods-${preset}.json`)
  writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`)
  console.log(`written ${out}`)
}

void main()
