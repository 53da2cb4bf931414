/**
 * From a user's data to the engine's dataset cache. Sources (detected from the path, or forced
 * with `format`):
 * - `folder`: one sub-folder per class (optionally under `train/`, `val/`, `test/`), or a folder
 *   of unlabelled images;
 * - `csv`: ISIC-2019 style (an image-id column plus one-hot class columns) or `path,label` rows,
 *   relative to an image root (the CSV's folder unless given);
 * - `npz`: MedMNIST layout; `idx`: MNIST / Fashion-MNIST IDX files (gzipped or not).
 * `discover.ts` finds the images of a source. Every image is decoded and resized ONCE (by sharp/libvips, in parallel, no per-pixel
 * JavaScript) into a cache keyed by the source's files (size, mtime), the target size and this
 * pipeline's version; a later call with an unchanged source decodes nothing. Nothing the user
 * gave is ever written to.
 */
import { createHash } from 'node:crypto'
import { statSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import { DataError } from '../errors.js'
import { DEFAULT_MAX_PIXELS, decodeImage } from './decode.js'
import { CacheWriter, type CacheIndex, defaultCacheDir, readCacheIndex } from './cache.js'
import { type Discovered, type Item, type SourceFormat, type SplitName, discover } from './discover.js'
import { stratifiedSplit } from './splits.js'
import { makeDir } from '../io/make-dir.js'

export type { SourceFormat, SplitName }

const PIPELINE_VERSION = 1

export interface LoadOptions {
  /** Side of the square images in the cache (the model's input size). */
  size: number
  format?: SourceFormat
  /** Root of the images a CSV refers to (default: the CSV's folder). */
  imageRoot?: string
  /** Fail on the first bad image instead of skipping it. */
  strict?: boolean
  /** Where caches live (default `~/.cache/cass-ssl`). */
  cacheDir?: string
  /** Largest accepted image, in pixels (decompression-bomb guard). */
  maxPixels?: number
  /** Seed of the train/val/test split when the source has none. */
  seed?: number
  /** Split fractions [train, val, test] when the source has none. */
  splitFractions?: [number, number, number]
  /** Parallel decodes (default: 2 x cores). */
  concurrency?: number
  onProgress?: (done: number, total: number) => void
}

export interface Split {
  indices: number[]
  labels: number[]
}

export interface LoadedDataset {
  cacheFile: string
  format: SourceFormat
  classes: string[]
  /** Image count in the cache (skipped images excluded). */
  count: number
  size: number
  splits: Record<SplitName, Split>
  /** Names of the cached images (relative paths or `split/position`). */
  names: string[]
  /** Class of every cached image (-1 when unlabelled). */
  labels: number[]
  /** Whether the source defined its own splits (else they are seeded and stratified). */
  sourceSplits: boolean
  skipped: { name: string; reason: string }[]
  /** Images decoded by this call (0 when the cache was reused). */
  decoded: number
}

function cacheKey(d: Discovered, source: string, opts: LoadOptions): string {
  const h = createHash('sha256')
  h.update(
    JSON.stringify({
      v: PIPELINE_VERSION,
      source: path.resolve(source),
      format: d.format,
      size: opts.size,
      maxPixels: opts.maxPixels ?? null,
      root: opts.imageRoot ?? null,
    }),
  )
  for (const f of d.files) {
    if (!f) continue
    const st = statSync(f)
    h.update(`${f}\0${st.size}\0${st.mtimeMs}\n`)
  }
  return h.digest('hex').slice(0, 24)
}

/** One discovered image through the shared decoder (`decode.ts`). */
function decode(item: Item, size: number, maxPixels: number): Promise<Buffer> {
  if (item.kind === 'file') return decodeImage({ file: item.file }, size, maxPixels)
  const a = item.array
  const bytes = a.height * a.width * a.channels
  return decodeImage(
    {
      raw: a.pixels.subarray(item.position * bytes, (item.position + 1) * bytes),
      width: a.width,
      height: a.height,
      channels: a.channels,
    },
    size,
    maxPixels,
  )
}

/**
 * Discovers `source`, decodes it into a cache (or reuses a matching one) and returns the cache
 * file with its splits. Bad images are skipped and counted (or fail with `strict`).
 */
export async function loadDataset(source: string, opts: LoadOptions): Promise<LoadedDataset> {
  const d = discover(source, opts.format, opts.imageRoot)
  if (opts.strict && d.badRows.length) {
    const b = d.badRows[0]
    throw new DataError(`${b.name}: ${b.reason}`, 'bad-row', source)
  }
  const cacheDir = opts.cacheDir ?? defaultCacheDir()
  makeDir(cacheDir)
  const key = cacheKey(d, source, opts)
  const cacheFile = path.join(cacheDir, `${key}-${opts.size}.cassds`)
  let index = readCacheIndex(cacheFile)?.index
  let decoded = 0
  if (!index || index.key !== key) {
    const maxPixels = opts.maxPixels ?? DEFAULT_MAX_PIXELS
    const writer = new CacheWriter(cacheFile, opts.size, opts.size)
    const names: string[] = []
    const labels: number[] = []
    const splits: (SplitName | undefined)[] = []
    const skipped = [...d.badRows]
    const concurrency = opts.concurrency ?? Math.max(2, os.cpus().length * 2)
    const window = Math.max(concurrency * 8, 64)
    try {
      for (let start = 0; start < d.items.length; start += window) {
        const chunk = d.items.slice(start, start + window)
        const results = new Array<Buffer | Error>(chunk.length)
        let next = 0
        await Promise.all(
          Array.from({ length: Math.min(concurrency, chunk.length) }, async () => {
            while (next < chunk.length) {
              const k = next++
              results[k] = await decode(chunk[k], opts.size, maxPixels).catch((e: Error) => e)
            }
          }),
        )
        for (const [k, r] of results.entries()) {
          const item = chunk[k]
          if (r instanceof Error) {
            const reason = /pixel limit/i.test(r.message)
              ? `larger than ${maxPixels} pixels (decompression-bomb guard)`
              : r.message
            if (opts.strict)
              throw new DataError(`${item.name}: ${reason}`, 'bad-image', item.kind === 'file' ? item.file : source)
            skipped.push({ name: item.name, reason })
            continue
          }
          writer.append(r)
          names.push(item.name)
          labels.push(item.label)
          splits.push(item.split)
          decoded++
        }
        opts.onProgress?.(Math.min(start + window, d.items.length), d.items.length)
      }
      index = {
        names,
        labels,
        classes: d.classes,
        key,
        skipped,
        ...(splits.every((s) => s !== undefined) ? { splits: splits as SplitName[] } : {}),
      } satisfies CacheIndex
      writer.finish(index)
    } catch (e) {
      writer.abort()
      throw e
    }
  }
  // A cache written by a lenient run records what it skipped: `strict` fails on it just as a fresh
  // decode would (the cache key leaves `strict` out, so both runs share one cache).
  if (opts.strict && index.skipped.length) {
    const b = index.skipped[0]
    throw new DataError(`${b.name}: ${b.reason}`, 'bad-image', source)
  }
  if (index.names.length === 0) throw new DataError(`no readable images in ${source}`, 'empty-dataset', source)
  return {
    cacheFile,
    format: d.format,
    classes: index.classes,
    count: index.names.length,
    size: opts.size,
    names: index.names,
    labels: index.labels,
    skipped: index.skipped,
    decoded,
    ...splitsOf(index, opts),
  }
}

function splitsOf(index: CacheIndex, opts: LoadOptions): { splits: Record<SplitName, Split>; sourceSplits: boolean } {
  const all = index.labels.map((_, i) => i)
  const pick = (idx: number[]): Split => ({ indices: idx, labels: idx.map((i) => index.labels[i]) })
  const labelled = index.labels.every((l) => l >= 0)
  const have = new Set(index.splits ?? [])
  if (index.splits && have.has('train')) {
    const of = (s: SplitName) => all.filter((i) => index.splits![i] === s)
    let train = of('train')
    let val = of('val')
    const test = of('test')
    if (val.length === 0 && labelled) {
      // No validation split in the source: hold out 10 % of train, stratified and seeded.
      ;[train, val] = stratifiedSplit(train, index.labels, [0.9, 0.1], opts.seed ?? 0)
    }
    return { splits: { train: pick(train), val: pick(val), test: pick(test) }, sourceSplits: true }
  }
  if (!labelled) return { splits: { train: pick(all), val: pick([]), test: pick([]) }, sourceSplits: false }
  const [train, val, test] = stratifiedSplit(all, index.labels, opts.splitFractions ?? [0.7, 0.1, 0.2], opts.seed ?? 0)
  return { splits: { train: pick(train), val: pick(val), test: pick(test) }, sourceSplits: false }
}
