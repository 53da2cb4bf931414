/**
 * Array sources read without Python: MNIST-style IDX files (optionally gzipped) and NumPy
 * `.npz` archives in the MedMNIST layout (`train_images`, `train_labels`, `val_*`, `test_*`).
 */
import { closeSync } from 'node:fs'
import { gunzipSync, inflateRawSync, constants as zlibConstants } from 'node:zlib'

import { LIMITS } from '../config.js'
import { openRegularFileSync, readAtSync, readRegularFileSync } from '../io/read-file.js'

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
  const buf = maybeGunzip(file, readRegularFileSync(file, MAX_ARRAY_BYTES, 'an IDX file'))
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

/** What a `.npy` header says: the dtype, the shape and where the data starts. */
interface NpyHeader {
  shape: number[]
  dtype: string
  dataOffset: number
  /** The bytes the whole array takes: header and data. */
  totalBytes: number
}

/** Parses the header of a `.npy` payload (format 1.0-3.0, C order); `b` may be its first bytes only. */
function parseNpyHeader(b: Buffer, name: string): NpyHeader {
  if (b.length < 12 || b.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${name}: not a .npy array`)
  const major = b[6]
  const headerLen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8)
  const start = major === 1 ? 10 : 12
  if (start + headerLen > b.length) throw new Error(`${name}: unreadable .npy header (${headerLen} bytes long)`)
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
  const dataBytes = shape.reduce((a, d) => a * d, 1) * itemSize
  if (!Number.isSafeInteger(dataBytes)) throw new Error(`${name}: shape ${JSON.stringify(shape)} (${descr}) is too large`)
  return { shape, dtype: descr, dataOffset: start + headerLen, totalBytes: start + headerLen + dataBytes }
}

/** Parses a `.npy` payload (format 1.0-3.0, C order). */
export function parseNpy(buf: Uint8Array, name: string): NpyArray {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  const { shape, dtype, dataOffset, totalBytes } = parseNpyHeader(b, name)
  const want = totalBytes - dataOffset
  const have = b.length - dataOffset
  // The data must be exactly what the shape says: a header claiming more would read whatever
  // follows in the archive as images.
  if (want !== have)
    throw new Error(`${name}: holds ${have} bytes of data but its shape ${JSON.stringify(shape)} (${dtype}) needs ${want}`)
  return { shape, dtype, data: new Uint8Array(b.buffer, b.byteOffset + dataOffset, have) }
}

/** The largest zip central directory read (a few hundred bytes per entry). */
const MAX_ZIP_DIRECTORY_BYTES = 16 * 2 ** 20
/** The largest `.npz` file opened; only the entries needed are read from it. */
const MAX_NPZ_FILE_BYTES = 64 * 2 ** 30

/** One entry of a zip archive, read on demand from the open file. */
export interface ZipEntry {
  name: string
  /** The size the archive declares for the entry's contents. */
  size: number
  /** The first bytes of the contents (at most `n`; a deflated entry inflates no further than that). */
  head(n: number): Buffer
  /** The contents: exactly the declared size, inflated no further. */
  read(): Buffer
}

/**
 * The entries of a zip archive (stored or deflated, as `.npz` files are), read from the open file
 * `fd` as they are asked for: an entry nobody reads is neither read nor inflated.
 */
function zipEntries(file: string, fd: number, fileSize: number): Map<string, ZipEntry> {
  const at = (position: number, length: number) => {
    if (!(Number.isSafeInteger(position) && position >= 0 && position + length <= fileSize))
      throw new Error(`${file}: corrupt zip archive (a record at byte ${position} lies outside the file)`)
    return readAtSync(fd, file, position, length)
  }
  const tailStart = Math.max(0, fileSize - 65557)
  const tail = at(tailStart, fileSize - tailStart)
  let eocd = -1
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === 0x06054b50) {
      eocd = i
      break
    }
  }
  if (eocd < 0) throw new Error(`${file}: not a zip/npz archive`)
  let entries = tail.readUInt16LE(eocd + 10)
  let cdSize = tail.readUInt32LE(eocd + 12)
  let cdStart = tail.readUInt32LE(eocd + 16)
  if (cdStart === 0xffffffff || entries === 0xffff || cdSize === 0xffffffff) {
    // ZIP64 end of central directory record (numpy writes it for large arrays).
    const locator = at(tailStart + eocd - 20, 20)
    if (locator.readUInt32LE(0) !== 0x07064b50) throw new Error(`${file}: broken zip64 archive`)
    const rec = at(Number(locator.readBigUInt64LE(8)), 56)
    entries = Number(rec.readBigUInt64LE(32))
    cdSize = Number(rec.readBigUInt64LE(40))
    cdStart = Number(rec.readBigUInt64LE(48))
  }
  if (cdSize > MAX_ZIP_DIRECTORY_BYTES)
    throw new Error(`${file}: zip central directory of ${cdSize} bytes, more than the ${MAX_ZIP_DIRECTORY_BYTES} limit`)
  const cd = at(cdStart, cdSize)
  const out = new Map<string, ZipEntry>()
  let p = 0
  for (let e = 0; e < entries; e++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== 0x02014b50) throw new Error(`${file}: corrupt zip central directory`)
    const method = cd.readUInt16LE(p + 10)
    let compressed = cd.readUInt32LE(p + 20)
    let uncompressed = cd.readUInt32LE(p + 24)
    const nameLen = cd.readUInt16LE(p + 28)
    const extraLen = cd.readUInt16LE(p + 30)
    const commentLen = cd.readUInt16LE(p + 32)
    let local = cd.readUInt32LE(p + 42)
    if (p + 46 + nameLen + extraLen > cd.length) throw new Error(`${file}: corrupt zip central directory`)
    const name = cd.toString('utf8', p + 46, p + 46 + nameLen)
    // ZIP64 extra field: sizes and offset that overflowed 32 bits, in this order.
    let q = p + 46 + nameLen
    const extraEnd = q + extraLen
    while (q + 4 <= extraEnd) {
      const id = cd.readUInt16LE(q)
      const size = cd.readUInt16LE(q + 2)
      if (id === 0x0001) {
        let r = q + 4
        const u64 = () => {
          if (r + 8 > extraEnd) throw new Error(`${file}: corrupt zip64 extra field of ${name}`)
          const v = Number(cd.readBigUInt64LE(r))
          r += 8
          return v
        }
        if (uncompressed === 0xffffffff) uncompressed = u64()
        if (compressed === 0xffffffff) compressed = u64()
        if (local === 0xffffffff) local = u64()
      }
      q += 4 + size
    }
    p += 46 + nameLen + extraLen + commentLen
    if (method !== 0 && method !== 8) {
      out.set(name, unsupported(file, name, method, uncompressed))
      continue
    }
    const where = `${file}: entry ${name}`
    const compressedData = (limit: number) => {
      const header = at(local, 30)
      const dataStart = local + 30 + header.readUInt16LE(26) + header.readUInt16LE(28)
      return at(dataStart, Math.min(compressed, limit))
    }
    // Inflate no further than the size the archive declares (a bomb declares a small one), and
    // refuse a declared size above the limit before inflating anything.
    const checkDeclared = () => {
      if (uncompressed > MAX_ARRAY_BYTES)
        throw new Error(`${where} declares ${uncompressed} bytes, more than the ${MAX_ARRAY_BYTES} limit for one array`)
    }
    out.set(name, {
      name,
      size: uncompressed,
      head(n) {
        checkDeclared()
        const want = Math.min(n, uncompressed)
        if (method === 0) return compressedData(want)
        // Deflate expands at most 1032:1, so `n` bytes come from the first n / 1032 + a few
        // compressed bytes; 4 KiB of input more than covers a `.npy` header.
        const data = inflateBounded(`${file}:${name}`, () =>
          inflateRawSync(compressedData(Math.max(4096, Math.ceil(n / 1000) + 64)), {
            finishFlush: zlibConstants.Z_SYNC_FLUSH,
            maxOutputLength: Math.max(1, uncompressed),
          }),
        )
        return data.subarray(0, want)
      },
      read() {
        checkDeclared()
        if (method === 0) {
          if (compressed !== uncompressed)
            throw new Error(`${where} is stored with ${compressed} bytes but declares ${uncompressed}`)
          return compressedData(compressed)
        }
        const data = inflateBounded(`${file}:${name}`, () =>
          inflateRawSync(compressedData(compressed), { maxOutputLength: Math.max(1, uncompressed) }),
        )
        if (data.length !== uncompressed)
          throw new Error(`${where} inflates to ${data.length} bytes, not the ${uncompressed} it declares`)
        return data
      },
    })
  }
  return out
}

function unsupported(file: string, name: string, method: number, size: number): ZipEntry {
  const fail = (): never => {
    throw new Error(`${file}: entry ${name} uses unsupported zip compression ${method}`)
  }
  return { name, size, head: fail, read: fail }
}

/**
 * A `.npy` entry, read only after its header: the size the archive declares must be the size
 * its shape makes (a header that says 4 images does not get 1 GiB inflated behind it), and
 * `check` may refuse the shape (a label count) before the data is read.
 */
function readNpyEntry(entry: ZipEntry, name: string, check?: (header: NpyHeader) => void): NpyArray {
  const header = parseNpyHeader(entry.head(64 * 1024), name)
  if (header.totalBytes !== entry.size) {
    const want = header.totalBytes - header.dataOffset
    throw new Error(
      `${name}: holds ${entry.size - header.dataOffset} bytes of data but its shape ${JSON.stringify(header.shape)} (${header.dtype}) needs ${want}`,
    )
  }
  check?.(header)
  return parseNpy(entry.read(), name)
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

/**
 * Reads a MedMNIST-style `.npz`: `{split}_images` uint8 `[n, h, w]` or `[n, h, w, 3]`,
 * `{split}_labels`. Other entries are neither read nor inflated.
 */
export function readNpz(file: string): Partial<Record<'train' | 'val' | 'test', ImageArray>> {
  const { fd, size } = openRegularFileSync(file, MAX_NPZ_FILE_BYTES, 'an .npz archive')
  try {
    return npzSplits(file, zipEntries(file, fd, size))
  } finally {
    closeSync(fd)
  }
}

function npzSplits(file: string, zip: Map<string, ZipEntry>): Partial<Record<'train' | 'val' | 'test', ImageArray>> {
  const out: Partial<Record<'train' | 'val' | 'test', ImageArray>> = {}
  for (const split of ['train', 'val', 'test'] as const) {
    const imgs = zip.get(`${split}_images.npy`)
    if (!imgs) continue
    const a = readNpyEntry(imgs, `${file}:${split}_images`, (h) => {
      if (h.dtype !== '|u1') throw new Error(`${file}:${split}_images has dtype ${h.dtype}; expected uint8`)
    })
    const [count, height, width, c = 1] = a.shape
    if (a.shape.length < 3 || a.shape.length > 4 || (c !== 1 && c !== 3)) {
      throw new Error(`${file}:${split}_images has shape ${JSON.stringify(a.shape)}; expected [n, h, w] or [n, h, w, 3]`)
    }
    const arr: ImageArray = { pixels: a.data, count, height, width, channels: c as 1 | 3 }
    const lab = zip.get(`${split}_labels.npy`)
    if (lab) {
      const name = `${file}:${split}_labels`
      const labels = readNpyEntry(lab, name, (h) => {
        if (h.shape[0] !== count) throw new Error(`${name}: ${h.shape[0]} labels for ${count} images`)
      })
      arr.labels = npyLabels(labels, name)
    }
    out[split] = arr
  }
  if (Object.keys(out).length === 0) throw new Error(`${file}: no train_images/val_images/test_images arrays`)
  return out
}
