import { execFileSync } from 'node:child_process'
import { lstatSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'
import { onnx } from 'onnx-proto'
import { InferenceSession, Tensor } from 'onnxruntime-node'

import {
  ConfigError,
  DataError,
  type InMemoryImages,
  IoError,
  type PretrainConfig,
  type PretrainInput,
  embed,
  exportWeights,
  finetune,
  loadModel,
  parsePretrainConfig,
  pretrain,
} from '../ts/index.js'
import { type OnnxNetworkSpec, buildOnnx } from '../ts/onnx/export.js'
import type { HostTensor } from '../ts/onnx/graph.js'
import { readSafetensors } from '../ts/onnx/safetensors.js'
import { rng, stripes, tempDir, tinyPretrain } from './helpers.js'

/**
 * Agreement is measured over a whole output: max |onnx - engine| / max(max |engine|, 1e-6),
 * both computed in float32 (the reference logits in float64 from float32 features).
 */
const TOLERANCE = 1e-4
const SIZE = 16
const root = tempDir('onnx')
test.after.always(() => rmSync(root, { recursive: true, force: true }))

/**
 * Three short pre-training runs give the networks: a basic-block ResNet and a two-block ViT; a
 * bottleneck ResNet with an identity-shortcut block (layer1.1); and the original ResNet v1
 * bottleneck (stride on the first 1x1, BatchNorm eps 1e-3, as the Keras ImageNet weights).
 */
const RUNS: Record<'basic' | 'bottleneck' | 'v1', PretrainInput> = {
  basic: { ...tinyPretrain, vit: { patchSize: 4, embedDim: 16, depth: 2, numHeads: 2 }, epochs: 1 },
  bottleneck: { ...tinyPretrain, cnn: { block: 'bottleneck', layers: [2, 1, 1, 1], baseWidth: 4 }, epochs: 1 },
  v1: {
    ...tinyPretrain,
    cnn: { block: 'bottleneck', layers: [1, 1, 1, 1], baseWidth: 4, strideIn1x1: true, bnEps: 1e-3 },
    epochs: 1,
  },
}

interface Trained {
  dir: string
  config: PretrainConfig
}
const runs = new Map<string, Promise<Trained>>()
/** The pre-training run `name`, trained once and shared by the tests that need it. */
function trained(name: keyof typeof RUNS): Promise<Trained> {
  let run = runs.get(name)
  if (!run) {
    const dir = path.join(root, name)
    run = pretrain({ config: RUNS[name], images: stripes(8, SIZE).images, outDir: dir }).then(() => ({
      dir,
      config: parsePretrainConfig(RUNS[name]),
    }))
    runs.set(name, run)
  }
  return run
}

/** Images the ONNX models and the engine both see: stripes and plain noise, at the trained size. */
function evalImages(count: number): InMemoryImages {
  const s = stripes(count, SIZE, 9).images
  const next = rng(3)
  for (let i = 1; i < count; i += 2) {
    for (let k = i * SIZE * SIZE * 3; k < (i + 1) * SIZE * SIZE * 3; k++) s.pixels[k] = Math.floor(next() * 256)
  }
  return s
}

/** `[count, 3, h, w]` in [0, 1], as the engine makes it from 8-bit RGB (`v as f32 * (1 / 255)`). */
function unitPixels(images: InMemoryImages): Float32Array {
  const { count, height, width, pixels } = images
  const plane = height * width
  const out = new Float32Array(count * 3 * plane)
  const scale = Math.fround(1 / 255)
  for (let i = 0; i < count; i++) {
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < 3; c++) out[(i * 3 + c) * plane + p] = Math.fround(pixels[(i * plane + p) * 3 + c] * scale)
    }
  }
  return out
}

/** The architecture part of an export spec, from the config a network was trained with. */
function architecture(config: PretrainConfig, arch: 'cnn' | 'vit'): Omit<OnnxNetworkSpec, 'output' | 'tensors' | 'metadata'> {
  if (typeof config.cnn === 'string' || typeof config.vit === 'string') throw new Error('the tests train custom shapes only')
  const { mean, std } = config.augment
  return {
    arch,
    ...(arch === 'cnn' ? { cnn: config.cnn } : { vit: { ...config.vit, imageSize: config.imageSize } }),
    imageSize: config.imageSize,
    normalization: { mean, std, channelOrder: 'rgb' },
  }
}

interface Network {
  run: Trained
  arch: 'cnn' | 'vit'
  /** The exported timm-named safetensors file. */
  file: string
  tensors: Map<string, HostTensor>
}
const networks = new Map<string, Promise<Network>>()
/** One network of a run, exported once (tests run concurrently; two exports to one file would race). */
function network(name: keyof typeof RUNS, arch: 'cnn' | 'vit'): Promise<Network> {
  const key = `${name}/${arch}`
  let net = networks.get(key)
  if (!net) {
    net = (async () => {
      const run = await trained(name)
      const file = await exportWeights({ checkpoint: run.dir, arch, out: path.join(run.dir, `${arch}.safetensors`) })
      return { run, arch, file, tensors: readSafetensors(file).tensors }
    })()
    networks.set(key, net)
  }
  return net
}

/** A `[rows, cols]` result. */
interface Rows {
  dims: number[]
  data: Float32Array | Float64Array
}

/**
 * The engine's output for `images`: `embed` for features; for logits, the features through the
 * network's own classifier (`fc` / `head`) from its exported tensors. This is the one place that
 * says what the engine computes; a loaded model's `predict` can replace the logits path here.
 */
async function engineOutput(net: Network, output: 'logits' | 'features', images: InMemoryImages): Promise<Rows> {
  const e = await embed({ checkpoint: net.run.dir, arch: net.arch, images })
  if (output === 'features') return { dims: [e.count, e.dim], data: e.features }
  const head = net.arch === 'cnn' ? 'fc' : 'head'
  const w = net.tensors.get(`${head}.weight`)!
  const b = net.tensors.get(`${head}.bias`)!
  const [classes, dim] = w.shape
  const logits = new Float64Array(e.count * classes)
  for (let r = 0; r < e.count; r++) {
    for (let k = 0; k < classes; k++) {
      let acc = b.data[k]
      for (let j = 0; j < dim; j++) acc += e.features[r * dim + j] * w.data[k * dim + j]
      logits[r * classes + k] = acc
    }
  }
  return { dims: [e.count, classes], data: logits }
}

/** Writes the model to a file and runs it there, as a user of the file would. */
async function runOnnx(model: Uint8Array, pixels: Float32Array, batch: number, size = SIZE): Promise<Rows> {
  const dir = path.join(root, 'models')
  mkdirSync(dir, { recursive: true })
  const file = path.join(dir, `${runOnnx.count++}.onnx`)
  writeFileSync(file, model)
  const session = await InferenceSession.create(file)
  try {
    const out = await session.run({ pixels: new Tensor('float32', pixels, [batch, 3, size, size]) })
    const value = out[session.outputNames[0]]
    return { dims: [...value.dims], data: value.data as Float32Array }
  } finally {
    await session.release()
  }
}
runOnnx.count = 0

function relativeError(got: Rows, want: Rows): number {
  let diff = 0
  let scale = 0
  for (let i = 0; i < want.data.length; i++) {
    diff = Math.max(diff, Math.abs(got.data[i] - want.data[i]))
    scale = Math.max(scale, Math.abs(want.data[i]))
  }
  return diff / Math.max(scale, 1e-6)
}

const parityCases = [
  ['basic-block ResNet', 'basic', 'cnn'],
  ['bottleneck ResNet', 'bottleneck', 'cnn'],
  ['ResNet v1 bottleneck', 'v1', 'cnn'],
  ['ViT', 'basic', 'vit'],
] as const

for (const [label, run, arch] of parityCases) {
  test(`${label}: onnxruntime on the exported file matches the engine (features and logits)`, async (t) => {
    const net = await network(run, arch)
    const images = evalImages(6)
    const pixels = unitPixels(images)
    for (const output of ['features', 'logits'] as const) {
      const model = buildOnnx({ ...architecture(net.run.config, arch), output, tensors: net.tensors })
      const got = await runOnnx(model, pixels, images.count)
      const want = await engineOutput(net, output, images)
      t.deepEqual(got.dims, want.dims, output)
      const err = relativeError(got, want)
      t.log(`${label} ${output}: max relative error ${err.toExponential(2)} over ${want.dims.join('x')}`)
      t.true(err < TOLERANCE, `${output}: ${err}`)
      // The images must give different outputs, or agreement would prove little.
      const dim = want.dims[1]
      t.true(
        relativeError(
          { dims: [1, dim], data: want.data.slice(0, dim) },
          { dims: [1, dim], data: want.data.slice(dim, 2 * dim) },
        ) > 1e-3,
      )
    }
  })
}

test('the model states its normalisation and opset, and runs any batch size', async (t) => {
  const net = await network('basic', 'vit')
  const spec = { ...architecture(net.run.config, 'vit'), output: 'features', tensors: net.tensors } as const
  const bytes = buildOnnx({ ...spec, metadata: { 'cass.checkpoint': 'basic' } })
  const model = onnx.ModelProto.decode(bytes)
  t.is(Number(model.irVersion), 8)
  t.deepEqual(
    model.opsetImport.map((o) => [o.domain, Number(o.version)]),
    [['', 17]],
  )
  t.is(model.producerName, 'cass-ssl')
  const meta = Object.fromEntries(model.metadataProps.map((p) => [p.key, p.value]))
  t.deepEqual(JSON.parse(meta['cass.preprocess']), {
    channel_order: 'rgb',
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
  })
  t.is(meta['cass.image_size'], '16')
  t.is(meta['cass.output'], 'features')
  t.is(meta['cass.arch'], 'vit')
  t.is(meta['cass.checkpoint'], 'basic')
  const dims = (v: onnx.IValueInfoProto) => v.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue))
  t.deepEqual(dims(model.graph!.input[0]), ['batch', 3, 16, 16])
  t.deepEqual(dims(model.graph!.output[0]), ['batch', 16])
  // Every weight keeps its timm name (linear weights transposed for MatMul, as `<name>.T`).
  const initializers = new Set(model.graph!.initializer.map((i) => i.name))
  for (const name of net.tensors.keys()) {
    if (name === 'head.weight' || name === 'head.bias') continue
    t.true(initializers.has(name) || initializers.has(`${name}.T`), name)
  }

  const images = evalImages(3)
  const pixels = unitPixels(images)
  const three = await runOnnx(bytes, pixels, 3)
  t.deepEqual(three.dims, [3, 16])
  const plane = 3 * SIZE * SIZE
  const one = await runOnnx(bytes, pixels.slice(2 * plane, 3 * plane), 1)
  t.deepEqual(one.dims, [1, 16])
  t.true(relativeError(one, { dims: [1, 16], data: three.data.slice(32, 48) }) < 1e-6)
})

test('a bgr network reverses the channels inside the graph before normalising', async (t) => {
  const net = await network('basic', 'cnn')
  const spec = { ...architecture(net.run.config, 'cnn'), output: 'features', tensors: net.tensors } as const
  const normalization = { mean: [0.4, 0.5, 0.6], std: [0.2, 0.25, 0.3], channelOrder: 'rgb' } as const
  const rgb = buildOnnx({ ...spec, normalization })
  const bgr = buildOnnx({ ...spec, normalization: { ...normalization, channelOrder: 'bgr' } })
  const images = evalImages(4)
  const pixels = unitPixels(images)
  const flipped = new Float32Array(pixels.length)
  const plane = SIZE * SIZE
  for (let i = 0; i < images.count; i++) {
    for (let c = 0; c < 3; c++)
      flipped.set(pixels.subarray((i * 3 + c) * plane, (i * 3 + c + 1) * plane), (i * 3 + 2 - c) * plane)
  }
  const bgrOut = await runOnnx(bgr, pixels, 4)
  t.deepEqual(Array.from(bgrOut.data), Array.from((await runOnnx(rgb, flipped, 4)).data))
  t.true(relativeError(bgrOut, await runOnnx(rgb, pixels, 4)) > 1e-4) // the flip changes the result
  const meta = Object.fromEntries(onnx.ModelProto.decode(bgr).metadataProps.map((p) => [p.key, p.value]))
  t.is(JSON.parse(meta['cass.preprocess']).channel_order, 'bgr')
})

test('weights that do not fit the architecture are refused, naming the tensor', async (t) => {
  const net = await network('bottleneck', 'cnn')
  const spec = { ...architecture(net.run.config, 'cnn'), output: 'logits', tensors: net.tensors } as const
  const without = (name: string) => new Map([...net.tensors].filter(([k]) => k !== name))
  const missing = t.throws(() => buildOnnx({ ...spec, tensors: without('layer3.0.bn2.running_var') }), { instanceOf: DataError })
  t.regex(missing.message, /layer3\.0\.bn2\.running_var is missing/)
  t.is(missing.code, 'bad-weights')
  // The spec says one block in the first stage; the weights have two.
  const fewer = t.throws(() => buildOnnx({ ...spec, cnn: { ...spec.cnn!, layers: [1, 1, 1, 1] } }), { instanceOf: DataError })
  t.regex(fewer.message, /does not use: layer1\.1\./)
  const wider = t.throws(() => buildOnnx({ ...spec, cnn: { ...spec.cnn!, baseWidth: 8 } }), { instanceOf: DataError })
  t.regex(wider.message, /conv1\.weight has shape \[4, 3, 7, 7\], the architecture needs \[8, 3, 7, 7\]/)
  const noShortcut = t.throws(() => buildOnnx({ ...spec, tensors: without('layer2.0.downsample.0.weight') }), {
    instanceOf: DataError,
  })
  t.regex(noShortcut.message, /layer2\.0 .* needs a shortcut projection/)
  // Without the classifier, features can still be exported, logits cannot.
  const headless = new Map([...net.tensors].filter(([k]) => !k.startsWith('fc.')))
  t.true(buildOnnx({ ...spec, output: 'features', tensors: headless }).length > 0)
  t.throws(() => buildOnnx({ ...spec, tensors: headless }), { instanceOf: DataError, message: /fc\.weight is missing/ })
})

test('a spec with an impossible geometry is a ConfigError naming the field', (t) => {
  const tensors = new Map<string, HostTensor>()
  const vit = { imageSize: 16, patchSize: 5, embedDim: 16, depth: 1, numHeads: 2, mlpRatio: 4 }
  const normalization = { mean: [0, 0, 0], std: [1, 1, 1], channelOrder: 'rgb' } as const
  const base = { arch: 'vit', output: 'features', imageSize: 16, normalization, tensors } as const
  t.is(t.throws(() => buildOnnx({ ...base, vit }), { instanceOf: ConfigError }).field, 'vit.patchSize')
  t.is(
    t.throws(() => buildOnnx({ ...base, vit: { ...vit, patchSize: 4, imageSize: 32 } }), { instanceOf: ConfigError }).field,
    'vit.imageSize',
  )
  t.is(t.throws(() => buildOnnx({ ...base, arch: 'cnn' }), { instanceOf: ConfigError }).field, 'cnn')
  const own = t.throws(() => buildOnnx({ ...base, vit: { ...vit, patchSize: 4 }, metadata: { 'cass.preprocess': 'x' } }), {
    instanceOf: ConfigError,
  })
  t.is(own.field, 'metadata.cass.preprocess')
  t.is(
    t.throws(() => buildOnnx({ ...base, vit: { ...vit, patchSize: 4 }, normalization: { ...normalization, std: [1, 0, 1] } }), {
      instanceOf: ConfigError,
    }).field,
    'normalization.std.1',
  )
})

test('the safetensors reader checks the header against the file', async (t) => {
  const net = await network('basic', 'cnn')
  const file = net.file
  const { tensors, metadata } = readSafetensors(file)
  t.is(metadata.format, 'pt')
  t.deepEqual(tensors.get('conv1.weight')!.shape, [4, 3, 7, 7])
  t.false(tensors.has('bn1.num_batches_tracked')) // the int64 counters are left out
  const bytes = readFileSync(file)
  const broken = (name: string, b: Buffer) => {
    const f = path.join(root, name)
    writeFileSync(f, b)
    return t.throws(() => readSafetensors(f), { instanceOf: DataError })
  }
  t.regex(broken('truncated.safetensors', bytes.subarray(0, bytes.length - 4)).message, /outside the|bytes for shape/)
  t.regex(broken('trailing.safetensors', Buffer.concat([bytes, Buffer.alloc(4)])).message, /4 bytes after the last tensor/)
  const huge = Buffer.from(bytes)
  huge.writeBigUInt64LE(BigInt(bytes.length), 0)
  t.regex(broken('header.safetensors', huge).message, /a header of/)
  // A shape that disagrees with the tensor's byte range.
  const headerLength = Number(bytes.readBigUInt64LE(0))
  const header = bytes.toString('utf8', 8, 8 + headerLength).replace('[4,3,7,7]', '[4,3,7,6]')
  t.regex(
    broken('shape.safetensors', Buffer.concat([bytes.subarray(0, 8), Buffer.from(header), bytes.subarray(8 + headerLength)]))
      .message,
    /bytes for shape \[4, 3, 7, 6\]/,
  )
  t.is(t.throws(() => readSafetensors(root), { instanceOf: DataError }).code, 'bad-weights') // a directory
  t.is(t.throws(() => readSafetensors(file, 1000), { instanceOf: DataError }).code, 'too-large')
})

/** Softmax of each row, in float64. */
function softmaxRows({ dims, data }: Rows): Float64Array {
  const [rows, cols] = dims
  const out = new Float64Array(rows * cols)
  for (let r = 0; r < rows; r++) {
    let max = -Infinity
    for (let c = 0; c < cols; c++) max = Math.max(max, data[r * cols + c])
    let sum = 0
    for (let c = 0; c < cols; c++) sum += out[r * cols + c] = Math.exp(data[r * cols + c] - max)
    for (let c = 0; c < cols; c++) out[r * cols + c] /= sum
  }
  return out
}

for (const [name, arch] of [
  ['basic', 'cnn'],
  ['bottleneck', 'cnn'],
  ['basic', 'vit'],
] as const) {
  test(`exportWeights({ format: 'onnx' }) of a ${name} ${arch} answers as the loaded Model does`, async (t) => {
    const run = await trained(name)
    const { images, labels } = stripes(8, SIZE, 4)
    const ftDir = path.join(root, `ft-${name}-${arch}`)
    await finetune({
      config: { arch, numClasses: 2, imageSize: SIZE, batchSize: 4, maxEpochs: 1, augment: { enabled: false }, device: 'cpu' },
      from: run.dir,
      images,
      train: { indices: [0, 1, 2, 3, 4, 5], labels: labels.slice(0, 6) },
      val: { indices: [6, 7], labels: labels.slice(6) },
      outDir: ftDir,
      classNames: ['a', 'b'],
    })
    const probe = evalImages(6)
    for (const [checkpoint, kind] of [
      [ftDir, 'classifier'],
      [run.dir, 'backbone'],
    ] as const) {
      const file = await exportWeights({ checkpoint, arch, format: 'onnx', out: path.join(root, `${name}-${arch}-${kind}.onnx`) })
      const meta = Object.fromEntries(onnx.ModelProto.decode(readFileSync(file)).metadataProps.map((p) => [p.key, p.value]))
      const got = await runOnnx(readFileSync(file), unitPixels(probe), probe.count)
      const model = await loadModel(checkpoint, { arch, device: 'cpu' })
      try {
        let err: number
        if (kind === 'classifier') {
          t.is(meta['cass.output'], 'logits')
          t.is(meta['cass.class_names'], '["a","b"]')
          const scores = (await model.predict(probe)).flatMap((p) => Array.from(p.scores))
          err = relativeError({ dims: got.dims, data: softmaxRows(got) }, { dims: got.dims, data: Float64Array.from(scores) })
        } else {
          t.is(meta['cass.output'], 'features')
          const e = await model.embed(probe)
          t.deepEqual(got.dims, [e.count, e.dim])
          err = relativeError(got, { dims: [e.count, e.dim], data: e.features })
        }
        t.log(`${name} ${arch} ${kind}: max relative error ${err.toExponential(2)}`)
        t.true(err < TOLERANCE, `${kind}: ${err}`)
      } finally {
        await model.close()
      }
    }
  })
}

test('an ONNX export refuses to replace a FIFO, a symlink or a folder, and leaves them as they were', async (t) => {
  const run = await trained('basic')
  const dir = tempDir('onnx-out')
  const fifo = path.join(dir, 'fifo.onnx')
  execFileSync('mkfifo', [fifo])
  const target = path.join(dir, 'target.onnx')
  writeFileSync(target, 'keep me')
  const link = path.join(dir, 'link.onnx')
  symlinkSync(target, link)
  for (const [out, why] of [
    [fifo, /FIFO/],
    [link, /symbolic link/],
    [dir, /folder/],
  ] as const) {
    for (const format of ['onnx', 'safetensors'] as const) {
      await t.throwsAsync(exportWeights({ checkpoint: run.dir, arch: 'cnn', format, out }), { instanceOf: IoError, message: why })
    }
  }
  t.true(lstatSync(fifo).isFIFO())
  t.true(lstatSync(link).isSymbolicLink())
  t.is(readFileSync(target, 'utf8'), 'keep me')
})
