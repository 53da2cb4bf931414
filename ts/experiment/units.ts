/**
 * The units of an experiment, each run on its own: a method's pre-training, a fine-tuning arm
 * with its evaluation, a kNN probe; and what they share while the experiment runs (`Ctx`).
 */
import path from 'node:path'

import type { DeviceName } from '../config.js'
import type { LoadedDataset } from '../data/dataset.js'
import { sampleFraction } from '../data/splits.js'
import { CassError } from '../errors.js'
import type { ProgressEvent } from '../events.js'
import { embed, evaluate, finetune } from '../index.js'
import { writeInputRecord } from '../io/input-record.js'
import { baseOf } from '../methods/info.js'
import { startUnit } from '../methods/start.js'
import { writeReport } from '../report/write.js'
import { knnClassify } from './knn.js'
import { type ExperimentOptions, SEED, overridesOf } from './options.js'
import { type ArmUnit, type KnnUnit, type PretrainUnit, armTag } from './plan.js'
import type { ExperimentResults, PretrainRecord } from './results.js'
/** The labelled images of an arm: seed k draws the same ones for every start, so the comparison is paired. */
export function labelledImages(ctx: Pick<Ctx, 'ds' | 'split'>, a: ArmUnit): number[] {
  return sampleFraction(ctx.split.pool, ctx.ds.labels, a.fraction, SEED + 1000 * a.seed, ctx.ds.groups)
}

export type Ctx = {
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

export function stopped(ctx: Ctx): ExperimentResults {
  ctx.save()
  writeReport(ctx.out)
  ctx.log(`cass experiment: stopped; run the same command again to continue`)
  return ctx.results
}

export async function runPretrain(ctx: Ctx, u: PretrainUnit): Promise<PretrainRecord> {
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

export async function runArm(ctx: Ctx, a: ArmUnit) {
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

export async function runKnn(ctx: Ctx, k: KnnUnit) {
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
