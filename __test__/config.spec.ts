import test from 'ava'

import { CassError, ConfigError, DataError, PRESETS, parseFinetuneConfig, parsePretrainConfig, pretrain } from '../ts/index.js'
import { merge } from '../ts/config.js'
import { fromNative } from '../ts/errors.js'
import { toNativePretrainConfig } from '../ts/native-config.js'
import { stripes } from './helpers.js'

test('paper preset is the CASS paper setting', (t) => {
  const c = parsePretrainConfig({ preset: 'paper' })
  t.is(c.cnn, 'resnet50')
  t.is(c.vit, 'vit-base')
  t.is(c.imageSize, 384)
  t.is(c.batchSize, 16)
  t.is(c.epochs, 100)
  t.is(c.headDim, 1000)
  t.deepEqual([c.lrCnn, c.lrVit], [1e-3, 1e-3])
  t.deepEqual(c.adam, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 })
  t.deepEqual(c.schedule, { kind: 'cosine-wave', tMax: 16, minLr: 1e-6 })
  const f = parseFinetuneConfig({ preset: 'paper', arch: 'vit' })
  t.is(f.lr, 3e-4)
  t.is(f.patience, 5)
  t.is(f.maxEpochs, 50)
  t.deepEqual(f.loss, { kind: 'focal', alpha: 1, gamma: 2 })
  t.is(f.classWeighting, 'min-max-counts')
  t.is(f.seed, 77)
})

test('overrides merge into the preset and keep its other fields', (t) => {
  const c = parsePretrainConfig({ preset: 'cpu-small', epochs: 3, augment: { pHflip: 0 } })
  t.is(c.epochs, 3)
  t.is(c.augment.pHflip, 0)
  t.is(c.augment.pVflip, 0.3)
  t.is(c.imageSize, PRESETS['cpu-small'].pretrain.imageSize)
})

test('a schedule of another kind replaces the preset schedule', (t) => {
  const c = parsePretrainConfig({ schedule: { kind: 'cosine', warmup: 10 } })
  t.deepEqual(c.schedule, { kind: 'cosine', warmup: 10, minLr: 1e-6 })
  t.deepEqual(merge({ a: [1, 2], b: { c: 1 } }, { a: [3] }), { a: [3], b: { c: 1 } })
})

for (const [input, field] of [
  [{ batchSize: 1 }, 'batchSize'],
  [{ epochs: 0 }, 'epochs'],
  [{ lrVit: -1 }, 'lrVit'],
  [{ augment: { pHflip: 1.5 } }, 'augment.pHflip'],
  [{ schedule: { kind: 'cosine-wave', tMax: 0 } }, 'schedule.tMax'],
  [{ vit: { embedDim: 64, depth: 2, numHeads: 4, patchSize: 0 } }, 'vit'],
  [{ device: 'tpu' }, 'device'],
  [{ epocs: 3 }, '(root)'],
  [{ views: 3 }, 'views'],
  // Sizes that decide allocations are bounded: this one used to abort the process.
  [{ headDim: 1e9 }, 'headDim'],
  [{ imageSize: 100_000 }, 'imageSize'],
  [{ batchSize: 1e7 }, 'batchSize'],
  [{ vit: { embedDim: 1e6, depth: 2, numHeads: 4, patchSize: 8 } }, 'vit'],
  [{ cnn: { block: 'basic', layers: [1, 1, 1, 1e6] } }, 'cnn'],
  [{ collapseGuard: { weight: 1, target: 0 } }, 'collapseGuard.target'],
  [{ collapseGuard: { weight: -1 } }, 'collapseGuard.weight'],
] as const) {
  test(`invalid config names the field: ${field} (${JSON.stringify(input)})`, (t) => {
    const err = t.throws(() => parsePretrainConfig(input as never), { instanceOf: ConfigError })
    t.true(err.field.startsWith(field), `${err.field} vs ${field}: ${err.message}`)
    t.regex(err.message, /invalid pretrain config at `/)
  })
}

test('geometry is checked when the config is parsed, before any native call', (t) => {
  const err = t.throws(() => parsePretrainConfig({ imageSize: 30 }), { instanceOf: ConfigError })
  t.is(err.field, 'vit.patchSize')
  t.regex(err.message, /8 does not divide imageSize 30/)
  const heads = t.throws(() => parseFinetuneConfig({ arch: 'vit', vit: { embedDim: 100, numHeads: 3, depth: 1 } }), {
    instanceOf: ConfigError,
  })
  t.is(heads.field, 'vit.numHeads')
})

test('pretrain rejects a bad config synchronously, naming the field', (t) => {
  const { images } = stripes(4, 16)
  const err = t.throws(() => pretrain({ config: { batchSize: 0 }, images, outDir: '/tmp/never' }), { instanceOf: ConfigError })
  t.is(err.field, 'batchSize')
  const err2 = t.throws(() => pretrain({ images: { ...images, count: 5 }, outDir: '/tmp/never' }), { instanceOf: ConfigError })
  t.is(err2.field, 'images.pixels')
})

test('a __proto__ key in a JSON config is an unknown key, not a way around the check', (t) => {
  // JSON.parse makes `__proto__` an own key; merged by assignment it became the prototype and
  // the strict schema never saw it.
  const err = t.throws(() => parsePretrainConfig(JSON.parse('{"__proto__": {"epochs": 3}, "epochs": 2}')), {
    instanceOf: ConfigError,
  })
  t.regex(err.message, /__proto__/)
  t.throws(() => parseFinetuneConfig(JSON.parse('{"arch": "cnn", "adam": {"__proto__": {"eps": 1}}}')), {
    instanceOf: ConfigError,
  })
})

test('unknown preset is a config error', (t) => {
  const err = t.throws(() => parsePretrainConfig({ preset: 'huge' as never }), { instanceOf: ConfigError })
  t.is(err.field, 'preset')
})

test('collapse guard and views cross to the engine; null turns a guard off', (t) => {
  const on = parsePretrainConfig({ views: 2, collapseGuard: { weight: 2 } })
  // Fields not given keep the preset's (cpu-small: weight 1, target 0.5, covariance 1).
  t.deepEqual(on.collapseGuard, { weight: 2, target: 0.5, covariance: 1 })
  const small = parsePretrainConfig({ preset: 'cpu-small' })
  t.is(small.views, 2)
  t.deepEqual(small.collapseGuard, { weight: 1, target: 0.5, covariance: 1 })
  const native = toNativePretrainConfig(on)
  t.is(native.views, 2)
  t.deepEqual(native.collapseGuard, { weight: 2, target: 0.5, covariance: 1 })
  t.is(native.collapseWarningSpread, 0.1)
  t.is(toNativePretrainConfig(parsePretrainConfig({ collapseGuard: null })).collapseGuard, undefined)
  const paper = parsePretrainConfig({ preset: 'paper' })
  t.is(paper.views, 1, 'the paper runs one view')
  t.is(paper.collapseGuard, null, 'the paper has no guard')
  t.is(parsePretrainConfig({ ...on, preset: 'cpu-small', collapseGuard: null }).collapseGuard, null)
})

test('fine-tuning losses: the authors focal form and RetinaNet alpha-balanced form are distinct kinds', (t) => {
  const f = parseFinetuneConfig({ arch: 'cnn', loss: { kind: 'focal-alpha-balanced' } })
  t.deepEqual(f.loss, { kind: 'focal-alpha-balanced', alpha: 0.25, gamma: 2 })
  const e = t.throws(() => parseFinetuneConfig({ arch: 'cnn', loss: { kind: 'focal', alpha: 2 } }), { instanceOf: ConfigError })
  t.is(e.field, 'loss.alpha')
})

test('engine errors become typed errors; an engine panic is a plain Error, not a data problem', (t) => {
  const native = (shape: object) => new Error(JSON.stringify(shape))
  const config = fromNative(native({ kind: 'config', field: 'batch_size', message: 'too small' }))
  t.true(config instanceof ConfigError)
  const data = fromNative(native({ kind: 'data', code: 'bad-cache', message: 'torn', path: '/x' }))
  t.true(data instanceof DataError)
  t.is((data as DataError).code, 'bad-cache')
  const panic = fromNative(native({ kind: 'internal', code: 'internal', message: 'the engine panicked: x' }))
  t.false(panic instanceof CassError)
  t.true(panic instanceof Error)
  t.is(panic.message, 'the engine panicked: x')
})

test('conv: the convolution strategy crosses to the engine, and a wrong one names the field', (t) => {
  t.is(parsePretrainConfig({}).conv, 'auto')
  const native = toNativePretrainConfig(parsePretrainConfig({ conv: 'batched' }))
  t.is(native.conv, 'batched')
  const e = t.throws(() => parsePretrainConfig({ conv: 'fast' } as never), { instanceOf: ConfigError })
  t.is(e.field, 'conv')
  t.is(parseFinetuneConfig({ arch: 'cnn', numClasses: 2, conv: 'native' }).conv, 'native')
})
