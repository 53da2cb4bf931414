/** Images of a loaded dataset read back from its cache file, a chunk at a time. */
import { closeSync, openSync, readSync } from 'node:fs'

import { CACHE_HEADER_LEN } from '../data/cache.js'
import { UsageError } from './shared.js'

/** An open dataset cache of `side x side` RGB images; `close()` when done. */
export class CachedPixels {
  readonly #fd: number
  readonly #bytes: number

  constructor(
    readonly file: string,
    readonly side: number,
  ) {
    this.#fd = openSync(file, 'r')
    this.#bytes = side * side * 3
  }

  /** The images at `indices`, one after another. */
  read(indices: readonly number[]): Buffer {
    const pixels = Buffer.alloc(indices.length * this.#bytes)
    indices.forEach((i, k) => {
      if (readSync(this.#fd, pixels, k * this.#bytes, this.#bytes, CACHE_HEADER_LEN + i * this.#bytes) !== this.#bytes)
        throw new UsageError(`dataset cache ${this.file} is shorter than its index says; delete it to rebuild`)
    })
    return pixels
  }

  close(): void {
    closeSync(this.#fd)
  }
}
