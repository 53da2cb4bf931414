/**
 * Array sources read without Python: MNIST-style IDX files (optionally gzipped) and NumPy
 * `.npz` archives in the MedMNIST layout (`train_images`, `train_labels`, `val_*`, `test_*`).
 */
import { readFileSync } from 'node:fs'
import { gunzipSync, inflateRawSync, constants as zlibConstants } from 'node:zlib'

import { LIMITS } from '../config.js'

/**
 * Largest decompressed array this reader accepts (a gzipped IDX file, an `.npz` entry): 4 GiB,
 * above the largest MedMNIST+ arrays. Decompression stops at the bound, so a small archive cannot
 * inflate into all of memory.
 */
export const MAX_ARRAY_BYTES = 4 * 2 ** 30

/** A stack of uint8 images `[count, height, width, channels]` with optional labels. */
export interface ImageArray {
  pixels: Uint8Array
  count: number
  height: number
  width: number
  channels: 1 | 3
  labels?: number[]
}

function inflateBounded(file: string, inflate: () => Buffer): Buffer {
  try {
    return inflate()
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' || /Cannot create a Buffer larger/.test(String(e)))
      throw new Error(`${file}: decompresses to more than it may (its declared size, at most ${MAX_ARRAY_BYTES} bytes)`)
    throw new Error(`${file}: corrupt compressed data (${(e as Error).message})`)
  }
}

/** Bytes an IDX file declares: its header plus the product of its dims (uint8 data). */
function idxDeclaredBytes(head: Buffer): number | undefined {
  if (head.length < 4) return undefined
  const rank = head[3]
  if (head.length < 4 + 4 * rank) return undefined
  let size = 1
  for (let i = 0; i < rank; i++) size *= head.readUInt32BE(4 + 4 * i)
  return 4 + 4 * rank + size
}

/**
 * Gunzips an IDX file no further than its header declares: the header is inflated first (from
 * the first kilobytes), then the whole file with that size as the bound. A gzip bomb stops at
 * the declared size instead of filling memory.
 */
function maybeGunzip(file: string, buf: Buffer): Buffer {
  if (!(buf.length > 2 && buf[0] === 0x1f && buf[1] === 0x8b)) return buf
  // 4 KiB of deflate data inflate to at most about 4 MiB (deflate's ratio is at most 1032:1).
  const head = inflateBounded(file, () =>
    gunzipSync(buf.subarray(0, 4096), { finishFlush: zlibConstants.Z_SYNC_FLUSH, maxOutputLength: 8 * 2 ** 20 }),
  )
  const declared = idxDeclaredBytes(head)
  if (declared === undefined) throw new Error(`${file}: not an IDX file (no header after decompression)`)
  if (declared > MAX_ARRAY_BYTES)
    throw new Error(`${file}: declares ${declared} bytes, more than the ${MAX_ARRAY_BYTES} limit for one array`)
  return inflateBounded(file, () => gunzipSync(buf, { maxOutputLength: Math.max(declared, 1) }))
}

/** Parses an IDX file: magic 0x0000 0x08 rank, big-endian dims, uint8 data. */
export function readIdx(file: string): { dims: number[]; data: Uint8Array } {
  const buf = maybeGunzip(file, readFileSync(file))
  if (buf.length < 4 || buf[0] !== 0 || buf[1] !== 0) throw new Error(`${file}: not an IDX file (bad magic)`)
  if (buf[2] !== 0x08) throw new Error(`${file}: IDX element type 0x${buf[2].toString(16)} is not unsigned byte`)
  const rank = buf[3]
  const dims = Array.from({ length: rank }, (_, i) => buf.readUInt32BE(4 + 4 * i))
  const offset = 4 + 4 * rank
  const size = dims.reduce((a, b) => a * b, 1)
  if (buf.length < offset + size) throw new Error(`${file}: truncated IDX file (${buf.length} bytes, needs ${offset + size})`)
  return { dims, data: new Uint8Array(buf.buffer, buf.byteOffset + offset, size) }
}

/** Reads an IDX image file and, if given, its label file. */
export function readIdxImages(imagesFile: string, labelsFile?: string): ImageArray {
  const { dims, data } = readIdx(imagesFile)
  if (dims.length !== 3) throw new Error(`${imagesFile}: expected [count, rows, cols] images, got dims ${JSON.stringify(dims)}`)
  const out: ImageArray = { pixels: data, count: dims[0], height: dims[1], width: dims[2], channels: 1 }
  if (labelsFile) {
    const l = readIdx(labelsFile)
    if (l.dims.length !== 1 || l.dims[0] !== dims[0]) {
      throw new Error(`${labelsFile}: ${l.dims[0]} labels for ${dims[0]} images`)
    }
    out.labels = Array.from(l.data)
  }
  return out
}

interface NpyArray {
  shape: number[]
  dtype: string
  data: Uint8Array
}

/** Parses a `.npy` payload (format 1.0-3.0, C order). */
export function parseNpy(buf: Uint8Array, name: string): NpyArray {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  if (b.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${name}: not a .npy array`)
  const major = b[6]
  const headerLen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8)
  const start = major === 1 ? 10 : 12
  const header = b.toString('latin1', start, start + headerLen)
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1]
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1]
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${name}: Fortran-ordered arrays are not supported`)
  if (!descr || shapeText === undefined) throw new Error(`${name}: unreadable .npy header`)
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number)
  if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new Error(`${name}: bad shape (${shapeText})`)
  const itemSize = Number(/\d+$/.exec(descr)?.[0] ?? NaN)
  const want = shape.reduce((a, d) => a * d, 1) * itemSize
  const have = b.length - start - headerLen
  // The data must be exactly what the shape says: a header claiming more would read whatever
  // follows in the archive as images.
  if (!Number.isSafeInteger(want) || want !== have)
    throw new Error(`${name}: holds ${have} bytes of data but its shape ${JSON.stringify(shape)} (${descr}) needs ${want}`)
  return { shape, dtype: descr, data: new Uint8Array(b.buffer, b.byteOffset + start + headerLen, have) }
}

/** Reads every entry of a zip archive (stored or deflated), as `.npz` files are. */
export function readZip(file: string): Map<string, Uint8Array> {
  const buf = readFileSync(file)
  let eocd = -1
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 65557); i--) {
    if (buf.readUInt32LE(i) === 0x06054b50) {
      eocd = i
      break
    }
  }
  if (eocd < 0) throw new Error(`${file}: not a zip/npz archive`)
  let entries = buf.readUInt16LE(eocd + 10)
  let cd = buf.readUInt32LE(eocd + 16)
  if (cd === 0xffffffff || entries === 0xffff) {
    // ZIP64 end of central directory record (numpy writes it for large arrays).
    const loc = eocd - 20
    if (buf.readUInt32LE(loc) !== 0x07064b50) throw new Error(`${file}: broken zip64 archive`)
    const rec = Number(buf.readBigUInt64LE(loc + 8))
    entries = Number(buf.readBigUInt64LE(rec + 32))
    cd = Number(buf.readBigUInt64LE(rec + 48))
  }
  const out = new Map<string, Uint8Array>()
  for (let e = 0; e < entries; e++) {
    if (buf.readUInt32LE(cd) !== 0x02014b50) throw new Error(`${file}: corrupt zip central directory`)
    const method = buf.readUInt16LE(cd + 10)
    let compressed = buf.readUInt32LE(cd + 20)
    let uncompressed = buf.readUInt32LE(cd + 24)
    const nameLen = buf.readUInt16LE(cd + 28)
    const extraLen = buf.readUInt16LE(cd + 30)
    const commentLen = buf.readUInt16LE(cd + 32)
    let local = buf.readUInt32LE(cd + 42)
    const name = buf.toString('utf8', cd + 46, cd + 46 + nameLen)
    // ZIP64 extra field: sizes and offset that overflowed 32 bits, in this order.
    let p = cd + 46 + nameLen
    const extraEnd = p + extraLen
    while (p + 4 <= extraEnd) {
      const id = buf.readUInt16LE(p)
      const size = buf.readUInt16LE(p + 2)
      if (id === 0x0001) {
        let q = p + 4
        if (uncompressed === 0xffffffff) {
          uncompressed = Number(buf.readBigUInt64LE(q))
          q += 8
        }
        if (compressed === 0xffffffff) {
          compressed = Number(buf.readBigUInt64LE(q))
          q += 8
        }
        if (local === 0xffffffff) local = Number(buf.readBigUInt64LE(q))
      }
      p += 4 + size
    }
    const dataStart = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28)
    const raw = buf.subarray(dataStart, dataStart + compressed)
    if (method === 0) out.set(name, raw)
    else if (method === 8) {
      // Inflate no further than the size the archive declares (a bomb declares a small one),
      // and refuse a declared size above the limit before inflating anything.
      if (uncompressed > MAX_ARRAY_BYTES)
        throw new Error(
          `${file}: entry ${name} declares ${uncompressed} bytes, more than the ${MAX_ARRAY_BYTES} limit for one array`,
        )
      const data = inflateBounded(`${file}:${name}`, () => inflateRawSync(raw, { maxOutputLength: Math.max(1, uncompressed) }))
      if (data.length !== uncompressed)
        throw new Error(`${file}: entry ${name} inflates to ${data.length} bytes, not the ${uncompressed} it declares`)
      out.set(name, data)
    } else throw new Error(`${file}: entry ${name} uses unsupported zip compression ${method}`)
    cd += 46 + nameLen + extraLen + commentLen
  }
  return out
}

function npyLabels(arr: NpyArray, name: string): number[] {
  const n = arr.shape[0]
  const per = arr.shape.slice(1).reduce((a, b) => a * b, 1)
  if (per !== 1) throw new Error(`${name}: multi-label arrays (${per} labels per image) are not supported yet`)
  const dv = new DataView(arr.data.buffer, arr.data.byteOffset, arr.data.byteLength)
  const read: Record<string, (i: number) => number> = {
    '|u1': (i) => dv.getUint8(i),
    '|i1': (i) => dv.getInt8(i),
    '<u2': (i) => dv.getUint16(2 * i, true),
    '<i2': (i) => dv.getInt16(2 * i, true),
    '<i4': (i) => dv.getInt32(4 * i, true),
    '<u4': (i) => dv.getUint32(4 * i, true),
    '<i8': (i) => Number(dv.getBigInt64(8 * i, true)),
    '<u8': (i) => Number(dv.getBigUint64(8 * i, true)),
  }
  const f = read[arr.dtype]
  if (!f) throw new Error(`${name}: label dtype ${arr.dtype} is not an integer type`)
  const labels = Array.from({ length: n }, (_, i) => f(i))
  // Labels become class indices (and per-class arrays): bound them before anything allocates.
  const bad = labels.findIndex((l) => !(Number.isSafeInteger(l) && l >= 0 && l < LIMITS.classes))
  if (bad >= 0) throw new Error(`${name}: label ${labels[bad]} at row ${bad} is not a class index in 0..${LIMITS.classes - 1}`)
  return labels
}

/** Reads a MedMNIST-style `.npz`: `{split}_images` uint8 `[n, h, w]` or `[n, h, w, 3]`, `{split}_labels`. */
export function readNpz(file: string): Partial<Record<'train' | 'val' | 'test', ImageArray>> {
  const zip = readZip(file)
  const out: Partial<Record<'train' | 'val' | 'test', ImageArray>> = {}
  for (const split of ['train', 'val', 'test'] as const) {
    const imgs = zip.get(`${split}_images.npy`)
    if (!imgs) continue
    const a = parseNpy(imgs, `${file}:${split}_images`)
    if (a.dtype !== '|u1') throw new Error(`${file}:${split}_images has dtype ${a.dtype}; expected uint8`)
    const [count, height, width, c = 1] = a.shape
    if (a.shape.length < 3 || a.shape.length > 4 || (c !== 1 && c !== 3)) {
      throw new Error(`${file}:${split}_images has shape ${JSON.stringify(a.shape)}; expected [n, h, w] or [n, h, w, 3]`)
    }
    const arr: ImageArray = { pixels: a.data, count, height, width, channels: c as 1 | 3 }
    const lab = zip.get(`${split}_labels.npy`)
    if (lab) {
      arr.labels = npyLabels(parseNpy(lab, `${file}:${split}_labels`), `${file}:${split}_labels`)
      if (arr.labels.length !== count) throw new Error(`${file}: ${arr.labels.length} ${split} labels for ${count} images`)
    }
    out[split] = arr
  }
  if (Object.keys(out).length === 0) throw new Error(`${file}: no train_images/val_images/test_images arrays`)
  return out
}
