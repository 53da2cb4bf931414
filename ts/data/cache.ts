/**
 * The engine's dataset cache file: decoded RGB images of one size back to back, plus a JSON
 * index. The layout is documented in `crates/cass-core/src/data.rs`; the engine memory-maps it.
 */
import { closeSync, fsyncSync, openSync, readSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export const CACHE_MAGIC = 'CASSDS01'
export const CACHE_VERSION = 1
export const CACHE_HEADER_LEN = 64

/** Where dataset caches (and converted weights, under `weights/`) live unless told otherwise. */
export const defaultCacheDir = () => path.join(os.homedir(), '.cache', 'cass-ssl')

export interface CacheIndex {
  /** Source name of each image (file path relative to the source, or `split/position`). */
  names: string[]
  /** Class index of each image, -1 when unlabelled. */
  labels: number[]
  /** Which split each image belongs to, when the source defines splits. */
  splits?: ('train' | 'val' | 'test')[]
  /** The group (patient) of each image, null where it has none; absent when none has one. */
  groups?: (string | null)[]
  classes: string[]
  /** Identifies the source state the cache was built from (sizes, mtimes, target size). */
  key: string
  skipped: { name: string; reason: string }[]
}

/** Streams images into a cache file; `finish` writes the index and publishes it atomically. */
export class CacheWriter {
  readonly #tmp: string
  readonly #final: string
  readonly #fd: number
  readonly #imageBytes: number
  #count = 0

  constructor(
    file: string,
    readonly height: number,
    readonly width: number,
  ) {
    this.#final = file
    removeOrphans(file)
    this.#tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`)
    this.#fd = openSync(this.#tmp, 'w')
    this.#imageBytes = height * width * 3
    writeSync(this.#fd, Buffer.alloc(CACHE_HEADER_LEN), 0, CACHE_HEADER_LEN, 0)
  }

  get count(): number {
    return this.#count
  }

  /** Appends one image (`height * width * 3` RGB bytes). */
  append(rgb: Uint8Array): void {
    if (rgb.length !== this.#imageBytes) {
      throw new Error(`cache image must be ${this.#imageBytes} bytes, got ${rgb.length}`)
    }
    writeSync(this.#fd, rgb, 0, rgb.length, CACHE_HEADER_LEN + this.#count * this.#imageBytes)
    this.#count++
  }

  finish(index: CacheIndex): void {
    const json = Buffer.from(JSON.stringify(index))
    const indexOffset = CACHE_HEADER_LEN + this.#count * this.#imageBytes
    writeSync(this.#fd, json, 0, json.length, indexOffset)
    const header = Buffer.alloc(CACHE_HEADER_LEN)
    header.write(CACHE_MAGIC, 0, 'latin1')
    header.writeUInt32LE(CACHE_VERSION, 8)
    header.writeUInt32LE(this.#count, 12)
    header.writeUInt32LE(this.height, 16)
    header.writeUInt32LE(this.width, 20)
    header.writeUInt32LE(3, 24)
    header.writeBigUInt64LE(BigInt(indexOffset), 32)
    header.writeBigUInt64LE(BigInt(json.length), 40)
    writeSync(this.#fd, header, 0, CACHE_HEADER_LEN, 0)
    fsyncSync(this.#fd)
    closeSync(this.#fd)
    renameSync(this.#tmp, this.#final)
  }

  /** Stops writing and removes the partial file. */
  abort(): void {
    try {
      closeSync(this.#fd)
    } catch {
      // already closed
    }
    rmSync(this.#tmp, { force: true })
  }
}

/** Whether process `pid` still runs (signal 0 checks without sending anything). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM' // it exists, owned by someone else
  }
}

/**
 * Removes partial cache files (`.NAME.tmp-PID`) beside `file` left by processes that are gone
 * (killed while decoding); those of running processes are left alone.
 */
export function removeOrphans(file: string): void {
  const prefix = `.${path.basename(file)}.tmp-`
  let names: string[]
  try {
    names = readdirSync(path.dirname(file))
  } catch {
    return
  }
  for (const name of names) {
    const pid = Number(name.startsWith(prefix) ? name.slice(prefix.length) : NaN)
    if (Number.isInteger(pid) && pid > 0 && !alive(pid)) rmSync(path.join(path.dirname(file), name), { force: true })
  }
}

/** Reads the header and index of a cache file (not the pixels). */
export function readCacheIndex(file: string): { count: number; height: number; width: number; index: CacheIndex } | undefined {
  let fd: number
  try {
    fd = openSync(file, 'r')
  } catch {
    return undefined
  }
  try {
    const header = Buffer.alloc(CACHE_HEADER_LEN)
    if (readSync(fd, header, 0, CACHE_HEADER_LEN, 0) !== CACHE_HEADER_LEN) return undefined
    if (header.toString('latin1', 0, 8) !== CACHE_MAGIC || header.readUInt32LE(8) !== CACHE_VERSION) return undefined
    const offset = Number(header.readBigUInt64LE(32))
    const length = Number(header.readBigUInt64LE(40))
    const json = Buffer.alloc(length)
    if (readSync(fd, json, 0, length, offset) !== length) return undefined
    return {
      count: header.readUInt32LE(12),
      height: header.readUInt32LE(16),
      width: header.readUInt32LE(20),
      index: JSON.parse(json.toString('utf8')) as CacheIndex,
    }
  } catch {
    return undefined
  } finally {
    closeSync(fd)
  }
}
