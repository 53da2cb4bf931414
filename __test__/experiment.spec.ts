import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'

import { ConfigError } from '../ts/index.js'
import { knnClassify, macroF1 } from '../ts/experiment/knn.js'
import { armKey, planExperiment } from '../ts/experiment/plan.js'
import type { ExperimentResults } from '../ts/experiment/results.js'
import { type ExperimentOptions, runExperiment } from '../ts/experiment/run.js'
import { npy, zip } from './arrays.js'
import { tempDir } from './helpers.js'

test('the plan: CASS once, DINO once per network, every start at every fraction and seed, sweeps at the scarcest fraction', (t) => {
  const plan = planExperiment({
    methods: ['cass', 'dino'],
    networks: ['cnn', 'vit'],
    fractions: [0.1, 1],
    seeds: 2,
    batchSize: 16,
    epochs: 5,
    batchSizes: [8, 16],
  })
  t.deepEqual(
    plan.pretraining.map((u) => `${u.dir}:${u.networks.join('+')}:${u.batchSize}`),
    [
      'pretrain/cass:cnn+vit:16',
      'pretrain/dino-cnn:cnn:16',
      'pretrain/dino-vit:vit:16',
      'pretrain/cass-b8:cnn+vit:8',
      'pretrain/dino-cnn-b8:cnn:8',
      'pretrain/dino-vit-b8:vit:8',
    ],
  )
  const main = plan.arms.filter((a) => !a.sweep)
  t.is(main.length, 2 * 2 * 2 * 3) // networks x fractions x seeds x starts
  t.is(main.find((a) => a.start === 'dino' && a.network === 'vit')?.pretrainDir, 'pretrain/dino-vit')
  t.is(main.find((a) => a.start === 'random')?.pretrainDir, undefined)
  const sweep = plan.arms.filter((a) => a.sweep)
  t.is(sweep.length, 4 * 2) // (cass cnn, cass vit, dino cnn, dino vit) x seeds
  t.true(sweep.every((a) => a.fraction === 0.1 && a.sweep?.value === 8))
  t.is(new Set(plan.arms.map(armKey)).size, plan.arms.length, 'every arm has its own key')
  t.deepEqual(
    plan.knn.map((k) => `${k.start}-${k.network}`),
    ['cass-cnn', 'cass-vit', 'dino-cnn', 'dino-vit'],
  )
  // An ImageNet start for the CNN only: one more arm per CNN cell, none for the ViT.
  const withImagenet = planExperiment({
    methods: ['cass'],
    networks: ['cnn', 'vit'],
    fractions: [1],
    seeds: 1,
    batchSize: 16,
    epochs: 1,
    imagenet: { cnn: 'imagenet' },
  })
  t.deepEqual(
    withImagenet.arms.map((a) => `${a.start}-${a.network}${a.weights ? `:${a.weights}` : ''}`),
    ['cass-cnn', 'random-cnn', 'imagenet-cnn:imagenet', 'cass-vit', 'random-vit'],
  )
})

test('kNN: separable clusters are classified exactly; macro-F1 by hand', (t) => {
  // Two directions, three training points each; queries near each.
  const train = Float32Array.from([1, 0.1, 0.9, -0.1, 1, 0, 0.1, 1, -0.1, 0.9, 0, 1])
  const query = Float32Array.from([0.8, 0.2, 0.2, 0.7])
  const r = knnClassify(train, [0, 0, 0, 1, 1, 1], query, [0, 1], 2, 2, 3)
  t.deepEqual(r.predictions, [0, 1])
  t.is(r.accuracy, 1)
  // truth [0,0,1,1], predicted [0,1,1,1]: F1 class 0 = 2/3, class 1 = 0.8.
  t.true(Math.abs(macroF1([0, 0, 1, 1], [0, 1, 1, 1], 2) - (2 / 3 + 0.8) / 2) < 1e-12)
})

/** A two-class striped dataset as a MedMNIST-style .npz (train/val/test). */
function stripedNpz(dir: string): string {
  const size = 16
  const images = (n: number, offset: number) => {
    const px = new Uint8Array(n * size * size * 3)
    for (let i = 0; i < n; i++)
      for (let y = 0; y < size; y++)
        for (let x = 0; x < size; x++)
          for (let c = 0; c < 3; c++) {
            const cls = (i + offset) % 2
            const on = cls === 0 ? (x >> 1) % 2 : (y >> 1) % 2
            px[((i * size + y) * size + x) * 3 + c] = on ? 200 + ((i * 7 + c) % 40) : 30 + ((i * 5 + c) % 40)
          }
    return px
  }
  const labels = (n: number, offset: number) =>
    new Uint8Array(new BigInt64Array(Array.from({ length: n }, (_, i) => BigInt((i + offset) % 2))).buffer)
  const file = path.join(dir, 'stripes.npz')
  writeFileSync(
    file,
    zip([
      ['train_images.npy', npy([32, size, size, 3], '|u1', images(32, 0))],
      ['train_labels.npy', npy([32, 1], '<i8', labels(32, 0))],
      ['val_images.npy', npy([8, size, size, 3], '|u1', images(8, 1))],
      ['val_labels.npy', npy([8, 1], '<i8', labels(8, 1))],
      ['test_images.npy', npy([8, size, size, 3], '|u1', images(8, 0))],
      ['test_labels.npy', npy([8, 1], '<i8', labels(8, 0))],
    ]),
  )
  return file
}

const tiny = {
  cnn: { block: 'basic' as const, layers: [1, 1, 1, 1] as [number, number, number, number], baseWidth: 4 },
  vit: { patchSize: 4, embedDim: 16, depth: 1, numHeads: 2 },
  imageSize: 16,
  batchSize: 4,
}

function options(root: string, data: string, signal?: AbortSignal, log?: (s: string) => void): ExperimentOptions {
  return {
    data,
    outDir: path.join(root, 'exp'),
    cacheDir: path.join(root, 'cache'),
    methods: ['cass', 'dino'],
    networks: ['cnn', 'vit'],
    fractions: [0.5, 1],
    seeds: 1,
    preset: 'cpu-small',
    sizes: { pretrainImages: 0, pretrainEpochs: 1, poolImages: 0, finetuneMaxEpochs: 1, valImages: 0, testImages: 0 },
    pretrain: { ...tiny, headDim: 16 },
    dino: { ...tiny, outDim: 32, hiddenDim: 16, bottleneckDim: 8, localCropSize: 8 },
    finetune: tiny,
    k: 5,
    signal,
    log: log ?? (() => {}),
  }
}

test('an experiment runs every arm, survives being stopped, and resumes without redoing finished arms', async (t) => {
  const root = tempDir('experiment')
  const data = stripedNpz(root)
  // Stop during the third fine-tuning arm.
  const controller = new AbortController()
  const lines: string[] = []
  const log = (s: string) => {
    lines.push(s)
    if (s.includes('[arm 3/')) controller.abort()
  }
  const first = await runExperiment(options(root, data, controller.signal, log))
  t.is(first.pretraining.filter((p) => p.status === 'completed').length, 3)
  // Each run records where `device: auto` put it, and why.
  t.true(first.pretraining.every((p) => p.backend?.name === 'cpu' && p.backend.reason.startsWith('auto: ')))
  t.is(first.arms.length, 2, 'two arms finished before the stop')
  t.true(lines.some((l) => l.includes('stopped')))
  const file = path.join(root, 'exp', 'results.json')
  const saved: ExperimentResults = JSON.parse(readFileSync(file, 'utf8'))
  t.is(saved.arms.length, 2)

  const again: string[] = []
  const done = await runExperiment(options(root, data, undefined, (s) => again.push(s)))
  t.is(done.arms.length, 2 * 2 * 3)
  t.false(
    again.some((l) => l.includes('[pre-training')),
    'finished pre-training is not redone',
  )
  t.false(
    again.some((l) => l.includes('[arm 1/') || l.includes('[arm 2/')),
    'finished arms are not redone',
  )
  t.deepEqual(done.arms.slice(0, 2), saved.arms, 'finished arms are kept as they were')
  t.is(done.knn.length, 4)
  t.true(done.knn.every((k) => k.accuracy >= 0 && k.accuracy <= 1))
  const cass = done.pretraining.find((p) => p.method === 'cass')!
  t.deepEqual(cass.networks, ['cnn', 'vit'])
  t.is(cass.perEpoch.length, 1)
  t.true(Number.isFinite(cass.perEpoch[0].spread.cnn) && Number.isFinite(cass.perEpoch[0].spread.vit))
  t.true(existsSync(path.join(root, 'exp', 'report.html')))
  // The last unit: each network's best start explained on test images, the pictures in the report.
  const ex = done.explanations!
  t.is(ex.images.length, 6)
  t.is(ex.size, 16)
  for (const img of ex.images) {
    t.deepEqual(Object.keys(img.maps).sort(), ['cnn', 'vit'])
    for (const m of Object.values(img.maps)) {
      t.is(m.correct, m.predicted === img.label)
      t.is(Buffer.from(m.png, 'base64').subarray(1, 4).toString('latin1'), 'PNG')
    }
  }
  t.is((readFileSync(path.join(root, 'exp', 'report.html'), 'utf8').match(/<img src="data:image\/png;base64,/g) ?? []).length, 18)

  // Other settings in the same folder: refused, nothing overwritten.
  const other = { ...options(root, data), seeds: 2 }
  const err = await t.throwsAsync(runExperiment(other), { instanceOf: ConfigError })
  t.is(err.field, 'outDir')
  t.is(JSON.parse(readFileSync(file, 'utf8')).arms.length, 12)
  // So is every other size or setting that changes a result: each is named in the message.
  const base = options(root, data)
  for (const [change, named] of [
    [{ sizes: { ...base.sizes, poolImages: 16 } }, /sizes\.poolImages: 0 there, 16 here/],
    [{ sizes: { ...base.sizes, finetuneMaxEpochs: 3 } }, /sizes\.finetuneMaxEpochs: 1 there, 3 here/],
    [{ sizes: { ...base.sizes, pretrainEpochs: 2 } }, /sizes\.pretrainEpochs: 1 there, 2 here/],
    [{ k: 3 }, /k: 5 there, 3 here/],
    [{ finetune: { ...tiny, batchSize: 2 } }, /overrides\.finetune\.batchSize: 4 there, 2 here/],
  ] as const) {
    const refused = await t.throwsAsync(runExperiment({ ...base, ...change }), { instanceOf: ConfigError })
    t.regex(refused.message, named)
  }
  t.is(JSON.parse(readFileSync(file, 'utf8')).arms.length, 12)
})

test('method configs: every override is checked before anything runs, and the CLI reads them from files', async (t) => {
  const root = tempDir('experiment-configs')
  const data = stripedNpz(root)
  const bad = { ...options(root, data), dino: { ...options(root, data).dino, outDim: -4 } }
  const err = await t.throwsAsync(runExperiment(bad), { instanceOf: ConfigError })
  t.regex(err.message, /outDim/)
  t.false(existsSync(path.join(root, 'exp', 'pretrain')), 'nothing pre-trained before the check')

  const cli = (...args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, '..', 'ts', 'cli.ts'), 'experiment', ...args], {
      encoding: 'utf8',
    })
  const file = path.join(root, 'dino.json')
  writeFileSync(file, JSON.stringify({ outDim: -4 }))
  const refused = cli('--data', data, '--out', path.join(root, 'cli'), '--method-config', `dino=${file}`)
  t.is(refused.status, 2, refused.stderr)
  t.regex(refused.stderr, /outDim/)
  const unknown = cli('--data', data, '--method-config', `byol=${file}`)
  t.is(unknown.status, 2)
  t.regex(unknown.stderr, /NAME one of cass, dino, vicreg, finetune/)
  const unused = cli('--data', data, '--out', path.join(root, 'unused'), '--method-config', `vicreg=${file}`)
  t.is(unused.status, 2, unused.stderr)
  t.regex(unused.stderr, /--method-config names vicreg, which --methods \(cass,dino\) does not run/)
  t.false(existsSync(path.join(root, 'unused')), 'refused before anything is written')
  // A variant in --methods needs its --method-config; a malformed tag is refused.
  const undefinedVariant = cli('--data', data, '--methods', 'cass,cass@x')
  t.is(undefinedVariant.status, 2)
  t.regex(undefinedVariant.stderr, /--methods takes a comma-separated list of cass, dino, vicreg, not "cass,cass@x"/)
  const badTag = cli('--data', data, '--method-config', `cass@Bad Tag=${file}`)
  t.is(badTag.status, 2)
  t.regex(badTag.stderr, /variant METHOD@TAG/)
})

test('named variants: cass and cass@oneview pre-train separately, each with its config, and the report names both', async (t) => {
  const root = tempDir('experiment-variants')
  const data = stripedNpz(root)
  const opts: ExperimentOptions = {
    ...options(root, data),
    methods: ['cass', 'cass@oneview'],
    networks: ['cnn'],
    fractions: [1],
    variants: { 'cass@oneview': { views: 1, collapseGuard: null } },
  }
  const r = await runExperiment(opts)
  const dirs = r.pretraining.map((p) => p.dir).sort()
  t.deepEqual(dirs, ['pretrain/cass', 'pretrain/cass@oneview'])
  const views = Object.fromEntries(r.pretraining.map((p) => [p.method, (p.config as { views: number }).views]))
  t.deepEqual(views, { cass: 2, 'cass@oneview': 1 })
  t.deepEqual([...new Set(r.arms.map((a) => a.start))].sort(), ['cass', 'cass@oneview', 'random'])
  t.regex(readFileSync(path.join(root, 'exp', 'report.html'), 'utf8'), /CASS@oneview/)
  // A variant listed without its config is refused before anything runs.
  const missing = { ...opts, outDir: path.join(root, 'other'), variants: {} }
  await t.throwsAsync(runExperiment(missing), { instanceOf: ConfigError, message: /cass@oneview has no config/ })
})
