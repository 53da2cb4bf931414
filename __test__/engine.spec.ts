import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'

import {
  ConfigError,
  DataError,
  type ProgressEvent,
  type StepEvent,
  CassError,
  availableBackends,
  embed,
  evaluate,
  exportWeights,
  finetune,
  inspectCheckpoint,
  parsePretrainConfig,
  pretrain,
} from '../ts/index.js'
import { fromNative } from '../ts/errors.js'
import { toNativePretrainConfig } from '../ts/native-config.js'
import { native } from '../ts/native.js'
import { stripes, tempDir, tinyPretrain } from './helpers.js'

test('cpu backend is always built', (t) => {
  t.true(availableBackends().includes('cpu'))
})

test('pretrain runs, reports progress, lowers the loss and writes a checkpoint', async (t) => {
  const { images } = stripes(16, 16)
  const outDir = tempDir('pretrain')
  const events: ProgressEvent[] = []
  const result = await pretrain({
    config: { ...tinyPretrain, epochs: 6, augment: { enabled: false } },
    images,
    outDir,
    onProgress: (e) => events.push(e),
  })
  t.is(result.status, 'completed')
  t.is(result.steps, 24) // 6 epochs x 16 / 4 batches
  t.is(result.losses.length, 24)
  const steps = events.filter((e): e is StepEvent => e.type === 'step')
  t.is(steps.length, 24)
  t.deepEqual(
    steps.map((s) => s.step),
    Array.from({ length: 24 }, (_, i) => i + 1),
  )
  t.true(steps.every((s) => s.imagesPerSec > 0 && s.etaSec >= 0 && s.lr > 0 && s.parts[0][0] === 'cass'))
  // Each network's output spread, typed, equal to the named diagnostic parts.
  const named = Object.fromEntries(steps[0].parts)
  t.deepEqual(steps[0].spread, { cnn: named.cnn_spread, vit: named.vit_spread })
  t.is(events.filter((e) => e.type === 'epoch').length, 6)
  const [first, last] = [result.epochMeanLosses[0], result.epochMeanLosses[5]]
  t.true(last < first, `epoch losses ${result.epochMeanLosses.join(', ')}`)
  for (const f of ['cnn.safetensors', 'vit.safetensors', 'cnn.adam.safetensors', 'vit.adam.safetensors', 'state.json']) {
    t.true(existsSync(path.join(result.checkpoint, f)), f)
  }
  const state = JSON.parse(readFileSync(path.join(result.checkpoint, 'state.json'), 'utf8'))
  t.is(state.step, 24)
  t.true(state.completed)
  t.is(state.config.batch_size, 4)
  // The engine finds the checkpoint from the output folder or from the checkpoint folder.
  for (const dir of [outDir, result.checkpoint]) {
    const info = inspectCheckpoint(dir)
    t.is(info.kind, 'pretrain')
    t.is(info.method, 'cass-pretrain')
    t.is(info.dir, path.resolve(result.checkpoint))
    t.is(info.imageSize, 16)
    t.deepEqual(info.networks, ['cnn', 'vit'])
    t.is(info.step, 24)
    t.true(info.completed)
  }
  const none = t.throws(() => inspectCheckpoint(path.join(outDir, 'nothing-here')))
  t.true(none instanceof CassError, String(none))
  t.is((none as CassError).code, 'no-checkpoint')
  rmSync(outDir, { recursive: true })
})

test('two views with the guard report its part, and a low spread raises a collapse warning', async (t) => {
  const { images } = stripes(16, 16)
  const outDir = tempDir('guard')
  const events: ProgressEvent[] = []
  // A threshold above any possible spread makes every epoch count as collapsed: this checks that
  // the warning reaches the caller, named and with its advice (the cargo tests show a real collapse).
  const result = await pretrain({
    config: { ...tinyPretrain, epochs: 2, views: 2, collapseGuard: { weight: 1, target: 0.5 }, collapseWarningSpread: 10 },
    images,
    outDir,
    onProgress: (e) => events.push(e),
  })
  t.is(result.status, 'completed')
  const step = events.find((e): e is StepEvent => e.type === 'step')!
  t.deepEqual(
    step.parts.map(([k]) => k),
    ['cass', 'guard', 'cnn_spread', 'vit_spread'],
  )
  t.true(step.loss >= step.parts[0][1], 'the total includes the guard')
  const warnings = events.filter((e) => e.type === 'warning')
  t.is(warnings.length, 2)
  t.true(warnings.every((w) => w.type === 'warning' && w.code === 'collapse' && /collapseGuard/.test(w.message)))
  rmSync(outDir, { recursive: true })
})

test('a fresh pre-training refuses an outDir holding a run, unless resume or overwrite says what to do', async (t) => {
  const { images } = stripes(8, 16)
  const outDir = tempDir('overwrite')
  const config = { ...tinyPretrain, epochs: 1 }
  const first = await pretrain({ config, images, outDir })
  t.is(first.steps, 2)
  // The regression: a second run replaced the first run's checkpoint without a word.
  const err = t.throws(() => pretrain({ config, images, outDir }), { instanceOf: ConfigError })
  t.is(err.field, 'outDir')
  t.regex(err.message, /already holds a pre-training run.*resume.*overwrite/)
  const again = await pretrain({ config: { ...config, epochs: 2 }, images, outDir, overwrite: true })
  t.is(again.steps, 4)
  rmSync(outDir, { recursive: true })
})

test('cancel stops at the next step and resume continues the same loss curve', async (t) => {
  const { images } = stripes(12, 16, 2)
  // Enough steps that the cancel (sent from a progress event, which crosses threads) lands
  // well before the end of the run.
  const config = { ...tinyPretrain, epochs: 20 }
  const fullDir = tempDir('full')
  const full = await pretrain({ config, images, outDir: fullDir })
  t.is(full.steps, 60)

  const dir = tempDir('resume')
  const controller = new AbortController()
  const first = await pretrain({
    config,
    images,
    outDir: dir,
    signal: controller.signal,
    onProgress: (e) => {
      if (e.type === 'step' && e.step === 4) controller.abort()
    },
  })
  t.is(first.status, 'cancelled')
  t.true(first.steps >= 4 && first.steps < 60, `stopped after ${first.steps}`)
  const rest = await pretrain({ config, images, outDir: dir, resume: true })
  t.is(rest.status, 'completed')
  t.is(rest.losses.length, full.losses.length)
  rest.losses.forEach((l, i) =>
    t.true(Math.abs(l - full.losses[i]) <= 1e-6 * Math.max(1, Math.abs(l)), `step ${i}: ${l} vs ${full.losses[i]}`),
  )
  rmSync(fullDir, { recursive: true })
  rmSync(dir, { recursive: true })
})

test('two jobs writing the same outDir: the second is refused while the first runs', async (t) => {
  const { images } = stripes(8, 16, 3)
  const dir = tempDir('lock')
  let refused: unknown
  const first = pretrain({
    config: { ...tinyPretrain, epochs: 50 },
    images,
    outDir: dir,
    onProgress: (e) => {
      if (e.type !== 'step' || e.step !== 2) return
      // Refused at the call, before anything in the folder is touched.
      try {
        void pretrain({ config: { ...tinyPretrain, epochs: 1 }, images, outDir: dir, overwrite: true })
      } catch (e) {
        refused = e
      }
      first.cancel()
    },
  })
  t.is((await first).status, 'cancelled')
  t.true(refused instanceof DataError, String(refused))
  const err = refused as DataError
  t.is(err.code, 'output-in-use')
  t.regex(err.message, /another job \(process \d+\) is writing to this folder/)
  // The lock goes with the job: the folder can be resumed now.
  t.is((await pretrain({ config: { ...tinyPretrain, epochs: 50, maxSteps: 3 }, images, outDir: dir, resume: true })).steps, 3)
  rmSync(dir, { recursive: true })
})

test('job.cancel() works too and leaves a resumable checkpoint', async (t) => {
  const { images } = stripes(8, 16, 3)
  const dir = tempDir('cancel')
  const job = pretrain({
    config: { ...tinyPretrain, epochs: 50 },
    images,
    outDir: dir,
    onProgress: (e) => e.type === 'step' && e.step === 2 && job.cancel(),
  })
  const r = await job
  t.is(r.status, 'cancelled')
  const state = JSON.parse(readFileSync(path.join(dir, 'checkpoint', 'state.json'), 'utf8'))
  t.is(state.step, r.steps)
  t.false(state.completed)
  rmSync(dir, { recursive: true })
})

test('finetune from pre-training, then evaluate and embed', async (t) => {
  const { images, labels } = stripes(32, 16, 4)
  const root = tempDir('finetune')
  await pretrain({ config: { ...tinyPretrain, epochs: 1 }, images, outDir: path.join(root, 'pre') })
  const train = { indices: [...Array(16).keys()], labels: labels.slice(0, 16) }
  const val = { indices: [...Array(16).keys()].map((i) => i + 16), labels: labels.slice(16) }
  const ft = await finetune({
    config: {
      preset: 'cpu-small',
      arch: 'cnn',
      cnn: tinyPretrain.cnn,
      vit: tinyPretrain.vit,
      imageSize: 16,
      batchSize: 4,
      maxEpochs: 3,
      lr: 3e-3,
      augment: { enabled: false },
    },
    from: path.join(root, 'pre'),
    images,
    train,
    val,
    outDir: path.join(root, 'ft'),
  })
  t.true(ft.history.length >= 1 && ft.history.length <= 3)
  t.is(ft.valMetrics.numSamples, 16)
  t.is(
    ft.valMetrics.confusion.flat().reduce((a, b) => a + b, 0),
    16,
  )
  for (const k of ['accuracy', 'balancedAccuracy', 'macroF1', 'microF1Sigmoid05'] as const) {
    t.true(ft.valMetrics[k] >= 0 && ft.valMetrics[k] <= 1, k)
  }
  const again = await evaluate({ checkpoint: path.join(root, 'ft'), images, data: val })
  t.deepEqual(again, ft.valMetrics)
  t.true(ft.valMetrics.aurocPerClass.every((a) => typeof a === 'number'))
  t.is(typeof ft.valMetrics.macroAuroc, 'number')
  // Samples of one class only: no class has both positives and negatives, so no AUROC, which the
  // Metrics type gives as null (the binding leaves absent values out).
  const zeros = val.indices.filter((_, k) => val.labels[k] === 0)
  const oneClass = await evaluate({
    checkpoint: path.join(root, 'ft'),
    images,
    data: { indices: zeros, labels: zeros.map(() => 0) },
  })
  t.deepEqual(oneClass.aurocPerClass, [null, null])
  t.is(oneClass.macroAuroc, null)
  const emb = await embed({ checkpoint: path.join(root, 'pre'), arch: 'vit', images, indices: [0, 1, 2] })
  t.is(emb.dim, 16)
  t.is(emb.count, 3)
  t.true(emb.features instanceof Float32Array)
  t.is(emb.features.length, 48)
  t.true(emb.features.every(Number.isFinite))
  // Inference batch sizes are whole and positive (0 and 1.5 used to be accepted).
  for (const batchSize of [0, 1.5, 1e9]) {
    const e1 = await t.throwsAsync(evaluate({ checkpoint: path.join(root, 'ft'), images, data: val, batchSize }), {
      instanceOf: ConfigError,
    })
    t.is(e1.field, 'batchSize')
    const e2 = await t.throwsAsync(embed({ checkpoint: path.join(root, 'pre'), arch: 'vit', images, batchSize }), {
      instanceOf: ConfigError,
    })
    t.is(e2.field, 'batchSize')
  }
  rmSync(root, { recursive: true })
})

test('a corrupt cache file is a typed DataError with the path', async (t) => {
  const dir = tempDir('badcache')
  const file = path.join(dir, 'broken.cassds')
  writeFileSync(file, 'this is not a cache')
  const err = await t.throwsAsync(pretrain({ config: tinyPretrain, images: { cacheFile: file }, outDir: dir }), {
    instanceOf: DataError,
  })
  t.is(err.code, 'bad-cache')
  t.is(err.path, file)
  rmSync(dir, { recursive: true })
})

test('an empty class in the labelled split is a typed DataError', async (t) => {
  const { images } = stripes(8, 16, 5)
  const dir = tempDir('empty')
  const err = await t.throwsAsync(
    finetune({
      config: { arch: 'cnn', numClasses: 2, cnn: tinyPretrain.cnn, vit: tinyPretrain.vit, imageSize: 16, batchSize: 4 },
      images,
      train: { indices: [0, 2, 4, 6], labels: [0, 0, 0, 0] },
      val: { indices: [1, 3], labels: [1, 1] },
      outDir: dir,
    }),
    { instanceOf: DataError },
  )
  t.is(err.code, 'empty-class')
  rmSync(dir, { recursive: true })
})

test('a missing backend is reported, not crashed on', async (t) => {
  const { images } = stripes(8, 16, 6)
  if (availableBackends().includes('cuda')) {
    t.pass('this build has CUDA; nothing to check')
    return
  }
  const err = await t.throwsAsync(pretrain({ config: { ...tinyPretrain, device: 'cuda' }, images, outDir: tempDir('nocuda') }))
  t.is((err as { code?: string }).code, 'backend-unavailable')
})

test('the conv and grayscale settings reach the engine and are saved with the checkpoint', async (t) => {
  const { images } = stripes(8, 16, 3)
  const outDir = tempDir('conv')
  await pretrain({ config: { ...tinyPretrain, epochs: 1, conv: 'batched', augment: { pGrayscale: 0.5 } }, images, outDir })
  const state = JSON.parse(readFileSync(path.join(outDir, 'checkpoint', 'state.json'), 'utf8'))
  t.is(state.config.conv, 'batched')
  // An option added through the three places (zod schema, binding type, engine config) arrives.
  t.is(state.config.augment.p_grayscale, 0.5)
  rmSync(outDir, { recursive: true })
})

test('the typed door: options the engine cannot take are refused, naming the camelCase field', async (t) => {
  const { images } = stripes(8, 16, 4)
  const good = toNativePretrainConfig(parsePretrainConfig({ ...tinyPretrain, epochs: 1 }))
  const outDir = tempDir('door')
  const start = (options: object) =>
    native().startPretrainingOf(
      { method: 'cass', config: options as never },
      images,
      undefined,
      outDir,
      false,
      new (native().BindingCancelToken)(),
      undefined,
    )
  const field = (e: unknown) => (fromNative(e) as ConfigError).field
  // Refused by the conversion, before the job starts.
  t.is(field(t.throws(() => start({ ...good, run: { ...good.run, seed: 0.5 } }))), 'seed')
  t.is(field(t.throws(() => start({ ...good, run: { ...good.run, maxSteps: Number.NaN } }))), 'maxSteps')
  t.is(field(t.throws(() => start({ ...good, cnn: { ...good.cnn, layers: [1, 1, 1] } }))), 'cnn.layers')
  t.is(field(t.throws(() => start({ ...good, augment: { ...good.augment, mean: [0.5, 0.5] } }))), 'augment.mean')
  t.is(field(t.throws(() => start({ ...good, schedule: { kind: 'cosine', warmup: -1, minLr: 0 } }))), 'schedule.warmup')
  // Refused by the engine's own checks, named as the API names them.
  t.is(field(await t.throwsAsync(start({ ...good, lrCnn: -1 }))), 'lrCnn')
  t.is(field(await t.throwsAsync(start({ ...good, run: { ...good.run, accumulate: 0 } }))), 'accumulate')
  t.is(
    field(await t.throwsAsync(start({ ...good, collapseGuard: { weight: 1, target: 0.5, covariance: -1 } }))),
    'collapseGuard.covariance',
  )
  // A value outside a string union is refused by the binding itself.
  const wrongBlock = t.throws(() => start({ ...good, cnn: { ...good.cnn, block: 'wide' } }))
  t.regex(String((wrongBlock as Error).message), /wide|block/i)
  rmSync(outDir, { recursive: true, force: true })
})

test('finetune from a weights file (the ImageNet start), and refuses two starts at once', async (t) => {
  const { images, labels } = stripes(16, 16, 5)
  const root = tempDir('ft-weights')
  await pretrain({ config: { ...tinyPretrain, epochs: 1 }, images, outDir: path.join(root, 'pre') })
  const file = await exportWeights({ checkpoint: path.join(root, 'pre'), arch: 'cnn', out: path.join(root, 'cnn.safetensors') })
  const samples = { indices: [...Array(16).keys()], labels }
  const config = {
    preset: 'cpu-small' as const,
    arch: 'cnn' as const,
    cnn: tinyPretrain.cnn,
    numClasses: 2,
    imageSize: 16,
    batchSize: 4,
    maxEpochs: 1,
  }
  const ft = await finetune({ config, weights: file, images, train: samples, val: samples, outDir: path.join(root, 'ft') })
  t.is(ft.status, 'completed')
  const both = t.throws(
    () =>
      finetune({
        config,
        weights: file,
        from: path.join(root, 'pre'),
        images,
        train: samples,
        val: samples,
        outDir: path.join(root, 'x'),
      }),
    { instanceOf: ConfigError },
  )
  t.is(both.field, 'weights')
  rmSync(root, { recursive: true })
})
