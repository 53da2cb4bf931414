/**
 * `cass experiment`: the CASS paper's comparison on the user's data. Pre-trains each method
 * (CASS once, DINO once per network), fine-tunes every network from every method and from random
 * weights at each label fraction and seed, evaluates on the test split, probes frozen features
 * with kNN, and writes `results.json` after every finished unit (atomically) and `report.html` at
 * the end. A killed experiment continues where it stopped: finished units are skipped, an
 * interrupted pre-training resumes from its checkpoint.
 */
import path from 'node:path'

import { parsePretrainConfig } from '../config.js'
import { loadDataset } from '../data/dataset.js'
import { countGroups, stratifiedSplit } from '../data/splits.js'
import { baseOf, runsOf } from '../methods/info.js'
import { methodConfig } from '../methods/start.js'
import { writeFileAtomic, writeReport } from '../report/write.js'
import { progressReporter } from '../progress.js'
import { Eta, armCost, pretrainCost } from './eta.js'
import { explainBest } from './explanations.js'
import { readPrevious } from './identity.js'
import { type ExperimentOptions, SEED, overridesOf } from './options.js'
import { type ArmUnit, type PretrainUnit, armKey, planExperiment } from './plan.js'
import type { ExperimentResults } from './results.js'
import { labelledImages, runArm, runKnn, runPretrain, stopped } from './units.js'
import { makeDir } from '../io/make-dir.js'

export type { ExperimentOptions, ExperimentSizes } from './options.js'

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
