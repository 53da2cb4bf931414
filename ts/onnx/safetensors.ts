/**
 * A reader of the safetensors files the engine writes (`exportWeights`: timm names, float32
 * tensors plus an int64 `num_batches_tracked` per BatchNorm). The format is an 8-byte
 * little-endian header length, a JSON header (`{ name: { dtype, shape, data_offsets } ,
 * __metadata__ }`) and the tensors' bytes, little-endian, row-major.
 *
 * Everything the header claims is checked against the file before a value is read: a regular
 * file under the size bound, a header inside the file, known dtypes, every tensor's byte range
 * equal to its shape times its dtype's size, and the ranges tiling the data exactly (no gap, no
 * overlap, nothing after), as the format requires.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs'

import { DataError, IoError } from '../errors.js'
import type { HostTensor } from './graph.js'

/** The largest file read by default: a ViT-L is 1.2 GB; ONNX cannot hold more than 2 GiB anyway. */
export const MAX_SAFETENSORS_BYTES = 2 ** 31
/** The format's own bound on the JSON header (the reference implementation's). */
const MAX_HEADER_BYTES = 100_000_000

const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  U16: 2,
  I16: 2,
  F16: 2,
  BF16: 2,
  U32: 4,
  I32: 4,
  F32: 4,
  U64: 8,
  I64: 8,
  F64: 8,
}

export interface SafetensorsContents {
  /** The float32 tensors by name. */
  tensors: Map<string, HostTensor>
  /** The header's `__metadata__` (empty when there is none). */
  metadata: Record<string, string>
}

interface Entry {
  dtype: string
  shape: number[]
  data_offsets: [number, number]
}

const isOffset = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0

const littleEndianHost = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

function float32s(bytes: Uint8Array): Float32Array {
  const out = new Float32Array(bytes.length / 4)
  if (littleEndianHost)
    new Uint8Array(out.buffer).set(bytes) // a copy: the file's offsets need not be aligned
  else {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true)
  }
  return out
}

function readBounded(file: string, maxBytes: number): Buffer {
  let fd: number
  try {
    fd = openSync(file, 'r')
  } catch (e) {
    throw new IoError(`cannot open ${file}: ${(e as Error).message}`, file)
  }
  try {
    const stat = fstatSync(fd)
    if (!stat.isFile()) throw new DataError(`${file} is not a regular file`, 'bad-weights', file)
    if (stat.size > maxBytes) {
      throw new DataError(`${file} is ${stat.size} bytes, over the ${maxBytes} read here`, 'too-large', file)
    }
    const buf = Buffer.alloc(stat.size)
    for (let off = 0; off < buf.length;) {
      const n = readSync(fd, buf, off, buf.length - off, off)
      if (n === 0) throw new DataError(`${file} ended at ${off} of ${buf.length} bytes while being read`, 'bad-weights', file)
      off += n
    }
    return buf
  } finally {
    closeSync(fd)
  }
}

/**
 * The float32 tensors and the metadata of a safetensors file. BatchNorm's int64
 * `num_batches_tracked` counters are left out (evaluation does not use them); a tensor of any
 * other dtype than F32 is a `DataError`, as is anything the header and the file disagree on.
 */
export function readSafetensors(file: string, maxBytes = MAX_SAFETENSORS_BYTES): SafetensorsContents {
  const buf = readBounded(file, maxBytes)
  const bad = (why: string) => new DataError(`${file}: not a valid safetensors file (${why})`, 'bad-weights', file)
  if (buf.length < 8) throw bad(`${buf.length} bytes, shorter than the header length`)
  const headerLength = buf.readBigUInt64LE(0)
  if (headerLength > BigInt(Math.min(buf.length - 8, MAX_HEADER_BYTES))) {
    throw bad(`a header of ${headerLength} bytes in a file of ${buf.length}`)
  }
  const dataStart = 8 + Number(headerLength)
  const dataLength = buf.length - dataStart
  let header: unknown
  try {
    header = JSON.parse(buf.toString('utf8', 8, dataStart))
  } catch (e) {
    throw bad(`header is not JSON: ${(e as Error).message}`)
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw bad('header is not a JSON object')

  const { __metadata__: rawMetadata, ...entries } = header as Record<string, unknown>
  const metadata: Record<string, string> = {}
  if (rawMetadata !== undefined) {
    if (typeof rawMetadata !== 'object' || rawMetadata === null || Array.isArray(rawMetadata))
      throw bad('__metadata__ is not an object')
    for (const [k, v] of Object.entries(rawMetadata)) {
      if (typeof v !== 'string') throw bad(`__metadata__.${k} is not a string`)
      metadata[k] = v
    }
  }

  const ranges: [number, number, string][] = []
  const tensors = new Map<string, HostTensor>()
  for (const [name, raw] of Object.entries(entries)) {
    const e = raw as Partial<Entry>
    const width = typeof e?.dtype === 'string' ? DTYPE_BYTES[e.dtype] : undefined
    if (width === undefined) throw bad(`${name}: unknown dtype ${JSON.stringify(e?.dtype)}`)
    if (!Array.isArray(e.shape) || !e.shape.every(isOffset)) throw bad(`${name}: bad shape`)
    const [begin, end]: unknown[] = Array.isArray(e.data_offsets) ? e.data_offsets : []
    if (!isOffset(begin) || !isOffset(end) || end < begin || end > dataLength) {
      throw bad(`${name}: data_offsets ${JSON.stringify(e.data_offsets)} outside the ${dataLength} data bytes`)
    }
    const count = e.shape.reduce((a, b) => a * b, 1)
    if (end - begin !== count * width) {
      throw bad(`${name}: ${end - begin} bytes for shape [${e.shape.join(', ')}] of ${e.dtype}`)
    }
    ranges.push([begin, end, name])
    if (e.dtype === 'F32') {
      tensors.set(name, { shape: e.shape, data: float32s(buf.subarray(dataStart + begin, dataStart + end)) })
    } else if (!(e.dtype === 'I64' && name.endsWith('.num_batches_tracked'))) {
      throw new DataError(`${file}: tensor ${name} is ${e.dtype}; only F32 tensors are read`, 'bad-weights', file)
    }
  }
  ranges.sort((a, b) => a[0] - b[0] || a[1] - b[1])
  let at = 0
  for (const [begin, end, name] of ranges) {
    if (begin !== at) throw bad(`${name} starts at byte ${begin}, not ${at} (a gap or an overlap)`)
    at = end
  }
  if (at !== dataLength) throw bad(`${dataLength - at} bytes after the last tensor`)
  return { tensors, metadata }
}
