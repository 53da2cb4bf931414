/**
 * `cass experiment`: the CASS paper's comparison on the user's data. Pre-trains each method
 * (CASS once, DINO once per network), fine-tunes every network from every method and from random
 * weights at each label fraction and seed, evaluates on the test split, probes frozen features
 * with kNN, and writes `results.json` after every finished unit (atomically) and `report.html` at
 * the end. A killed experiment continues where it stopped: finished units are skipped, an
 * interrupted pre-training resumes from its checkpoint.
 */
import path from 'node:path'

import { type DeviceName, type FinetuneInput, type PresetName, type PretrainInput, parsePretrainConfig } from '../config.js'
import { type DicomOptions, type LoadedDataset, type SourceFormat, loadDataset } from '../data/dataset.js'
import { countGroups, stratifiedSplit, sampleFraction } from '../data/splits.js'
import type { DinoInput } from '../dino-config.js'
import { CassError, ConfigError } from '../errors.js'
import type { ProgressEvent } from '../events.js'
import { embed, evaluate, finetune } from '../index.js'
import { baseOf, runsOf } from '../methods/info.js'
import { methodConfig, startUnit } from '../methods/start.js'
import { writeFileAtomic, writeReport } from '../report/write.js'
import { progressReporter } from '../progress.js'
import { Eta, armCost, pretrainCost } from './eta.js'
import { explainBest } from './explanations.js'
import { readPrevious } from './identity.js'
import { knnClassify } from './knn.js'
import { type ArmUnit, type KnnUnit, type PretrainUnit, armKey, armTag, planExperiment } from './plan.js'
import type { ExperimentResults, MethodName, Network, PretrainRecord } from './results.js'
import { writeInputRecord } from '../io/input-record.js'
import { makeDir } from '../io/make-dir.js'

export interface ExperimentSizes {
  /** Unlabelled images for pre-training (0: every training image). */
  pretrainImages: number
  pretrainEpochs: number
  /** The labelled pool the label fractions are drawn from. */
  poolImages: number
  finetuneMaxEpochs: number
  valImages: number
  testImages: number
}

export interface ExperimentOptions {
  data: string
  format?: SourceFormat
  /** How DICOM files become images (windows, frames). */
  dicom?: DicomOptions
  /** A CSV's patient column: a patient's images stay in one split. */
  groupBy?: string
  datasetName?: string
  outDir: string
  methods: MethodName[]
  networks: Network[]
  fractions: number[]
  seeds: number
  /** Seeds at fraction 1 (default: `seeds`): there every seed sees the same labelled images. */
  seedsAtFull?: number
  preset: PresetName
  device?: DeviceName
  sizes: ExperimentSizes
  /** Robustness sweeps: other pre-training batch sizes and epoch counts. */
  batchSizes?: number[]
  epochsSweep?: number[]
  /**
   * Also fine-tune from these weights (the `imagenet` start, the paper's): per network, `imagenet`
   * (the Keras ImageNet ResNet-50), `hf:owner/name` or a timm-named file. The fine-tuning config
   * must give the network the file's shape (e.g. `--preset paper`).
   */
  imagenet?: Partial<Record<Network, string>>
  /**
   * Named variants `method@tag` listed in `methods` (e.g. `cass@hinge`): each one's config
   * fields, over its method's overrides.
   */
  variants?: Record<string, Record<string, unknown>>
  /** Overrides of each method's and of fine-tuning's preset config. */
  pretrain?: PretrainInput
  dino?: Omit<DinoInput, 'arch'>
  /** Overrides of any other method's preset config, by method name (e.g. `vicreg`). */
  methodConfigs?: Partial<Record<MethodName, Record<string, unknown>>>
  finetune?: FinetuneInput
  /** Neighbours of the kNN probe. */
  k?: number
  signal?: AbortSignal
  cacheDir?: string
  /** Progress lines (default: stderr). */
  log?: (line: string) => void
  /**
   * Seconds between plain progress lines (step, epoch, loss, images/s, ETA) during a unit when
   * the lines do not go to a terminal (default: `CASS_PROGRESS_SECONDS`, else 30).
   */
  progressEverySec?: number
}

const SEED = 77

/**
 * A method's config overrides: its base method's (`pretrain` for CASS, `dino`), then, for a
 * variant `method@tag`, the variant's own fields over them.
 */
function overridesOf(opts: ExperimentOptions, ref: MethodName): Record<string, unknown> | undefined {
  const base = ({ ...opts.methodConfigs, cass: opts.pretrain, dino: opts.dino } as Record<string, unknown>)[baseOf(ref)] as
    Record<string, unknown> | undefined
  if (ref === baseOf(ref)) return base
  const own = opts.variants?.[ref]
  if (own === undefined)
    throw new ConfigError(`invalid argument at \`variants\`: the variant ${ref} has no config (give its fields)`, 'variants', [])
  return { ...base, ...own }
}

export async function runExperiment(opts: ExperimentOptions): Promise<ExperimentResults> {
  // On a terminal a unit's progress is a live line; a log line first clears it.
  const tty = opts.log === undefined && process.stderr.isTTY === true
  const log = opts.log ?? ((s: string) => process.stderr.write(`${tty ? '\r\x1b[2K' : ''}${s}\n`))
  const out = path.resolve(opts.outDir)
  makeDir(out)
  const device = opts.device ?? 'auto'
  const cassBase = parsePretrainConfig({ preset: opts.preset, ...opts.pretrain, epochs: opts.sizes.pretrainEpochs, device })
  // Every method's overrides are checked before anything runs, not when its turn comes.
  for (const method of opts.methods) {
    const networks = runsOf(method, opts.networks)[0] ?? []
    const overrides = overridesOf(opts, method)
    methodConfig(baseOf(method), { preset: opts.preset, overrides, networks, batchSize: cassBase.batchSize, epochs: 1, device })
  }
  const settings: ExperimentResults['settings'] = {
    methods: opts.methods,
    networks: opts.networks,
    fractions: opts.fractions,
    seeds: opts.seeds,
    ...(opts.seedsAtFull !== undefined && opts.seedsAtFull !== opts.seeds ? { seedsAtFull: opts.seedsAtFull } : {}),
    preset: opts.preset,
    device,
    ...(opts.batchSizes ? { batchSizes: opts.batchSizes } : {}),
    ...(opts.epochsSweep ? { epochsSweep: opts.epochsSweep } : {}),
    ...(opts.imagenet && Object.keys(opts.imagenet).length ? { imagenet: opts.imagenet } : {}),
    // Everything else that changes a result is part of the experiment's identity too: a rerun
    // with another pool or epoch count would put arms of different settings in one table.
    sizes: { ...opts.sizes },
    k: opts.k ?? 20,
    ...(opts.format ? { format: opts.format } : {}),
    ...(opts.dicom && Object.keys(opts.dicom).length ? { dicom: { ...opts.dicom } } : {}),
    ...(opts.groupBy !== undefined ? { groupBy: opts.groupBy } : {}),
    ...(opts.pretrain || opts.dino || opts.finetune || opts.variants || opts.methodConfigs
      ? {
          overrides: {
            pretrain: opts.pretrain ?? {},
            dino: opts.dino ?? {},
            finetune: opts.finetune ?? {},
            ...(opts.variants ? { variants: opts.variants } : {}),
            ...(opts.methodConfigs ? { methods: opts.methodConfigs } : {}),
          },
        }
      : {}),
  }
  const file = path.join(out, 'results.json')
  const source = path.resolve(opts.data)
  const previous = readPrevious(file, settings, source)

  const ds = await loadDataset(opts.data, {
    size: cassBase.imageSize,
    format: opts.format,
    seed: SEED,
    cacheDir: opts.cacheDir,
    ...(opts.dicom ? { dicom: opts.dicom } : {}),
    ...(opts.groupBy !== undefined ? { groupBy: opts.groupBy } : {}),
  })
  const { labels } = ds
  const pick = (pool: number[], n: number, s: number) =>
    n <= 0 || n >= pool.length ? pool : stratifiedSplit(pool, labels, [n / pool.length, 1 - n / pool.length], s, ds.groups)[0]
  const split = {
    pretrain: pick(ds.splits.train.indices, opts.sizes.pretrainImages, SEED),
    pool: pick(ds.splits.train.indices, opts.sizes.poolImages, SEED + 1),
    val: pick(ds.splits.val.indices, opts.sizes.valImages, SEED + 2),
    test: pick(ds.splits.test.indices, opts.sizes.testImages, SEED + 3),
  }
  const now = new Date().toISOString()
  const results: ExperimentResults = previous ?? {
    version: 1,
    startedAt: now,
    updatedAt: now,
    dataset: {
      name: opts.datasetName ?? path.basename(source),
      source,
      classes: ds.classes.length,
      classNames: ds.classes.map(String),
      pretrain: split.pretrain.length,
      pool: split.pool.length,
      val: split.val.length,
      test: split.test.length,
      ...(ds.groups
        ? {
            patients: {
              pretrain: countGroups(split.pretrain, ds.groups),
              pool: countGroups(split.pool, ds.groups),
              val: countGroups(split.val, ds.groups),
              test: countGroups(split.test, ds.groups),
            },
          }
        : {}),
    },
    settings,
    pretraining: [],
    arms: [],
    knn: [],
  }
  const save = () => {
    results.updatedAt = new Date().toISOString()
    writeFileAtomic(file, `${JSON.stringify(results, null, 1)}\n`)
  }
  const plan = planExperiment({
    ...settings,
    batchSize: cassBase.batchSize,
    epochs: opts.sizes.pretrainEpochs,
  })
  const images = { cacheFile: ds.cacheFile }
  // Progress within a unit, under the unit's name: plain lines every few seconds off a terminal.
  let unitName = 'cass experiment'
  const progress = progressReporter(() => `${unitName}:`, {
    stream: opts.log ? { write: (text: string) => text.split('\n').forEach((l) => l && log(l)) } : process.stderr,
    everySec: opts.progressEverySec,
  })
  const ctx = { opts, ds, split, images, device, out, results, save, log, progress }
  const eta = new Eta()
  const pretrainUnit = (u: PretrainUnit) => pretrainCost(u)
  const armUnit = (a: ArmUnit) =>
    armCost(a, {
      labelled: labelledImages(ctx, a).length,
      val: split.val.length,
      test: split.test.length,
      maxEpochs: opts.sizes.finetuneMaxEpochs,
    })
  for (const u of plan.pretraining) eta.add(pretrainUnit(u))
  for (const a of plan.arms) eta.add(armUnit(a))

  for (const [i, u] of plan.pretraining.entries()) {
    const done = results.pretraining.find((r) => r.dir === u.dir && r.status === 'completed')
    if (done) {
      eta.skip(pretrainUnit(u))
      continue
    }
    unitName = `cass experiment: [pre-training ${i + 1}/${plan.pretraining.length}] ${u.dir}`
    log(`${unitName} (${eta.text()})`)
    const t0 = Date.now()
    const record = await runPretrain(ctx, u)
    results.pretraining = [...results.pretraining.filter((r) => r.dir !== u.dir), record]
    save()
    if (record.status !== 'completed') return stopped(ctx)
    eta.record(pretrainUnit(u), (Date.now() - t0) / 1000)
  }
  const finished = new Map(results.arms.map((r) => [armKey(r), r]))
  for (const [i, a] of plan.arms.entries()) {
    const earlier = finished.get(armKey(a))
    if (earlier) {
      // Its fine-tuning time (a resumed experiment has an ETA at once; evaluation not counted).
      if (Number.isFinite(earlier.trainSec)) eta.record(armUnit(a), earlier.trainSec)
      else eta.skip(armUnit(a))
      continue
    }
    const name = `${a.start} ${a.network} ${+(a.fraction * 100).toFixed(2)} % seed ${a.seed}${a.sweep ? ` (${a.sweep.kind} ${a.sweep.value})` : ''}`
    unitName = `cass experiment: [arm ${i + 1}/${plan.arms.length}] ${name}`
    log(`${unitName} (${eta.text()})`)
    const t0 = Date.now()
    const record = await runArm(ctx, a)
    if (record === undefined) return stopped(ctx)
    results.arms.push(record)
    save()
    eta.record(armUnit(a), (Date.now() - t0) / 1000)
  }
  for (const k of plan.knn) {
    if (results.knn.some((r) => r.start === k.start && r.network === k.network)) continue
    results.knn.push(await runKnn(ctx, k))
    save()
  }
  if (!results.explanations && !opts.signal?.aborted) {
    log('cass experiment: explaining a few test images with each network')
    const explanations = await explainBest({ out, ds, test: split.test, results, device })
    if (explanations) {
      results.explanations = explanations
      save()
    }
  }
  const report = writeReport(out)
  log(`cass experiment: done; ${file} and ${report}`)
  return results
}

/** The labelled images of an arm: seed k draws the same ones for every start, so the comparison is paired. */
function labelledImages(ctx: Pick<Ctx, 'ds' | 'split'>, a: ArmUnit): number[] {
  return sampleFraction(ctx.split.pool, ctx.ds.labels, a.fraction, SEED + 1000 * a.seed, ctx.ds.groups)
}

type Ctx = {
  opts: ExperimentOptions
  ds: LoadedDataset
  split: { pretrain: number[]; pool: number[]; val: number[]; test: number[] }
  images: { cacheFile: string }
  device: DeviceName
  out: string
  results: ExperimentResults
  save: () => void
  log: (line: string) => void
  /** Progress events of the running unit (steps, and a pre-training's epochs). */
  progress: (e: ProgressEvent) => void
}

function stopped(ctx: Ctx): ExperimentResults {
  ctx.save()
  writeReport(ctx.out)
  ctx.log(`cass experiment: stopped; run the same command again to continue`)
  return ctx.results
}

async function runPretrain(ctx: Ctx, u: PretrainUnit): Promise<PretrainRecord> {
  const { opts, split, images, device } = ctx
  const outDir = path.join(ctx.out, u.dir)
  const perEpoch: PretrainRecord['perEpoch'] = []
  let epochStart = Date.now()
  let spread: Record<string, number[]> = {}
  let backend: PretrainRecord['backend']
  const onProgress = (e: ProgressEvent) => {
    if (e.type === 'step' || e.type === 'epoch') ctx.progress(e)
    if (e.type === 'step') {
      for (const [name, v] of Object.entries(e.spread ?? {})) if (typeof v === 'number') (spread[name] ??= []).push(v)
    } else if (e.type === 'epoch') {
      const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length
      perEpoch.push({
        epoch: e.epoch,
        meanLoss: e.meanLoss,
        sec: (Date.now() - epochStart) / 1000,
        spread: Object.fromEntries(Object.entries(spread).map(([k, v]) => [k, mean(v)])),
      })
      epochStart = Date.now()
      spread = {}
    } else if (e.type === 'warning') ctx.log(`warning: ${e.message}`)
    else if (e.type === 'device') {
      backend = { name: e.backend, reason: e.reason }
      ctx.log(`device ${e.backend} (${e.reason})`)
    }
  }
  const t0 = Date.now()
  // `resume: true` continues an interrupted run and starts a fresh one where there is none.
  const common = { images, indices: split.pretrain, outDir, resume: true, signal: opts.signal, onProgress }
  const overrides = overridesOf(opts, u.method)
  const { config, job } = startUnit(
    baseOf(u.method),
    { preset: opts.preset, overrides, networks: u.networks, batchSize: u.batchSize, epochs: u.epochs, device },
    common,
  )
  const r = await job
  return {
    method: u.method,
    networks: u.networks,
    status: r.status,
    batchSize: u.batchSize,
    epochs: u.epochs,
    wallSec: (Date.now() - t0) / 1000,
    ...(backend ? { backend } : {}),
    perEpoch,
    dir: u.dir,
    config,
    ...(u.sweep ? { sweep: u.sweep } : {}),
  }
}

async function runArm(ctx: Ctx, a: ArmUnit) {
  const { opts, ds, split, images, device } = ctx
  const labels = ds.labels
  const chosen = labelledImages(ctx, a)
  const samples = (idx: number[]) => ({ indices: idx, labels: idx.map((i) => labels[i]) })
  const tag = armTag(a)
  const t0 = Date.now()
  const job = finetune({
    config: {
      preset: opts.preset,
      ...opts.finetune,
      arch: a.network,
      numClasses: ds.classes.length,
      maxEpochs: opts.sizes.finetuneMaxEpochs,
      seed: SEED + a.seed,
      device,
    },
    from: a.pretrainDir ? path.join(ctx.out, a.pretrainDir) : undefined,
    weights: a.weights,
    cacheDir: opts.cacheDir,
    images,
    train: samples(chosen),
    val: samples(split.val),
    outDir: path.join(ctx.out, 'finetune', tag),
    // The checkpoint answers `predict` and `explain` with the dataset's class names.
    classNames: ds.classes.map(String),
    // An arm left unfinished by a stopped experiment is run again from the start.
    overwrite: true,
    signal: opts.signal,
    // Steps only: an arm's epochs (up to the preset's 30) would bury the unit lines.
    onProgress: (e) => e.type === 'step' && ctx.progress(e),
  })
  // Stopped before its first validation, a fine-tuning has nothing to keep: the arm runs again.
  const ft = await job.then(undefined, (e: unknown) => {
    if (opts.signal?.aborted && e instanceof CassError && e.code === 'cancelled-before-validation') return undefined
    throw e
  })
  if (ft === undefined || ft.status === 'cancelled') return undefined
  writeInputRecord(path.join(ctx.out, 'finetune', tag), opts.dicom)
  const trainSec = (Date.now() - t0) / 1000
  const test = await evaluate({ checkpoint: ft.checkpoint, images, data: samples(split.test), device })
  return {
    start: a.start,
    network: a.network,
    fraction: a.fraction,
    labelled: chosen.length,
    seed: a.seed,
    bestEpoch: ft.bestEpoch,
    trainSec,
    test,
    ...(a.pretrainDir ? { pretrainDir: a.pretrainDir } : {}),
    ...(a.weights ? { weights: a.weights } : {}),
    ...(a.sweep ? { sweep: a.sweep } : {}),
  }
}

async function runKnn(ctx: Ctx, k: KnnUnit) {
  const { ds, split, images, device } = ctx
  const checkpoint = path.join(ctx.out, k.pretrainDir)
  const features = (indices: number[]) => embed({ checkpoint, arch: k.network, images, indices, device })
  const [train, test] = [await features(split.pool), await features(split.test)]
  const neighbours = ctx.opts.k ?? 20
  const r = knnClassify(
    train.features,
    split.pool.map((i) => ds.labels[i]),
    test.features,
    split.test.map((i) => ds.labels[i]),
    train.dim,
    ds.classes.length,
    neighbours,
  )
  return { start: k.start, network: k.network, k: neighbours, accuracy: r.accuracy, macroF1: r.macroF1 }
}
