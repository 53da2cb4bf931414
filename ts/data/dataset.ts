/**
 * From a user's data to the engine's dataset cache. Sources (detected from the path, or forced
 * with `format`):
 * - `folder`: one sub-folder per class (optionally under `train/`, `val/`, `test/`), or a folder
 *   of unlabelled images;
 * - `csv`: ISIC-2019 style (an image-id column plus one-hot class columns) or `path,label` rows,
 *   relative to an image root (the CSV's folder unless given);
 * - `npz`: MedMNIST layout; `idx`: MNIST / Fashion-MNIST IDX files (gzipped or not);
 * - `dicom`: a folder laid out as `folder` whose files are DICOM, or one DICOM file
 *   (`dicom/`: every frame or the middle one, windowed to 8 bits as `dicom` options say).
 * Images that carry a group (a DICOM file's PatientID, a CSV's `groupBy` column) keep their
 * group in one split (`splits.ts`).
 * `discover.ts` finds the images of a source. Every image is decoded and resized ONCE (by sharp/libvips, in parallel, no per-pixel
 * JavaScript) into a cache keyed by the source's files (size, mtime), the target size and this
 * pipeline's version; a later call with an unchanged source decodes nothing. Nothing the user
 * gave is ever written to.
 */
import { createHash } from 'node:crypto'
import { statSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import { ConfigError, DataError } from '../errors.js'
import type { ImageArray } from './arrays.js'
import { DEFAULT_MAX_PIXELS, decodeImage } from './decode.js'
import { decodeStrip, stripLength, stripPadding } from './decode-strip.js'
import { CacheWriter, type CacheIndex, defaultCacheDir, readCacheIndex } from './cache.js'
import { type DicomReadOptions, readDicomFile } from './dicom/read.js'
import { type Windowing, parseWindow, parseWindows } from './dicom/window.js'
import { type Discovered, type Item, type SourceFormat, type SplitName, discover } from './discover.js'
import { countGroups, stratifiedSplit } from './splits.js'
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
  /** How DICOM files become images (part of the cache key; see {@link DicomOptions}). */
  dicom?: DicomOptions
  /**
   * A CSV column naming each image's group (a patient): the seeded splits keep a group's images
   * in one split. DICOM files are grouped by their PatientID without it.
   */
  groupBy?: string
  onProgress?: (done: number, total: number) => void
}

/**
 * DICOM images to 8 bits: `window` is one window for all channels (`lung`, `mediastinum`, `bone`,
 * `brain`, `subdural`, `soft`, or `CENTER,WIDTH` in the modality's units, Hounsfield units for
 * CT); `windows` three, one per channel (`brain,subdural,bone` or `40/80,80/200,600/2800`).
 * Neither: the file's first window, else the image's 0.5-99.5 percentiles. `frames`: `middle`
 * (default) gives one image per file, `all` one per frame.
 */
export interface DicomOptions {
  window?: string
  windows?: string
  frames?: 'all' | 'middle'
}

/** Validated DICOM options; a bad one is a ConfigError naming the field. */
export function dicomReadOptions(o: DicomOptions | undefined): DicomReadOptions {
  const at = (field: string, f: () => Windowing): Windowing => {
    try {
      return f()
    } catch (e) {
      throw new ConfigError(`invalid argument at \`dicom.${field}\`: ${(e as Error).message}`, `dicom.${field}`, [])
    }
  }
  if (o?.window !== undefined && o.windows !== undefined)
    throw new ConfigError('invalid argument at `dicom.windows`: give window or windows, not both', 'dicom.windows', [])
  if (o?.frames !== undefined && o.frames !== 'all' && o.frames !== 'middle')
    throw new ConfigError(`invalid argument at \`dicom.frames\`: all or middle, not "${String(o.frames)}"`, 'dicom.frames', [])
  const windowing: Windowing =
    o?.window !== undefined
      ? at('window', () => ({ kind: 'window', window: parseWindow(o.window!, 'window') }))
      : o?.windows !== undefined
        ? at('windows', () => ({ kind: 'windows', windows: parseWindows(o.windows!, 'windows') }))
        : { kind: 'auto' }
  return { windowing, frames: o?.frames ?? 'middle' }
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
  /**
   * The group (patient) of every cached image, null where it has none; absent when no image has
   * one. The seeded splits keep each group in one split.
   */
  groups?: (string | null)[]
  /** Distinct groups (patients) per split, when images carry groups. */
  patients?: Record<SplitName, number>
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
      // Only sources with DICOM files or groups key on these: other caches stay valid.
      ...(d.items.some((i) => i.kind === 'file' && i.dicom) ? { dicom: dicomReadOptions(opts.dicom) } : {}),
      ...(opts.groupBy !== undefined ? { groupBy: opts.groupBy } : {}),
    }),
  )
  for (const f of d.files) {
    if (!f) continue
    const st = statSync(f)
    h.update(`${f}\0${st.size}\0${st.mtimeMs}\n`)
  }
  return h.digest('hex').slice(0, 24)
}

/** What one discovered item gives: its images (a DICOM file's frames) and their group. */
interface Decoded {
  images: Buffer[]
  /** Names of the images when an item gives several (`file#3`: frame 3, counted from 1). */
  names?: string[]
  group?: string
}

/**
 * Array images of `chunk` that can be resized as strips (`decode-strip.ts`) go in one sharp call
 * per array; their slots of `results` are filled, others are left for the per-item decoder (so
 * is every slot of a strip that failed: each image then fails or succeeds on its own).
 */
async function decodeArraysInStrips(chunk: Item[], size: number, results: (Decoded | Error)[]): Promise<void> {
  const byArray = new Map<ImageArray, number[]>()
  chunk.forEach((item, k) => {
    if (item.kind === 'array' && stripPadding(item.array, size) !== undefined)
      byArray.set(item.array, [...(byArray.get(item.array) ?? []), k])
  })
  const strips: { array: ImageArray; slots: number[] }[] = []
  for (const [array, slots] of byArray) {
    const per = stripLength(array, size)
    for (let i = 0; i < slots.length; i += per) strips.push({ array, slots: slots.slice(i, i + per) })
  }
  await Promise.all(
    strips.map(async ({ array, slots }) => {
      const positions = slots.map((k) => (chunk[k] as Extract<Item, { kind: 'array' }>).position)
      const images = await decodeStrip(array, positions, size).catch(() => undefined)
      images?.forEach((image, i) => (results[slots[i]] = { images: [image] }))
    }),
  )
}

/** One discovered item through the shared decoder (`decode.ts`) or the DICOM reader. */
async function decode(item: Item, size: number, maxPixels: number, dicom: DicomReadOptions): Promise<Decoded> {
  if (item.kind === 'file' && item.dicom) {
    const r = await readDicomFile(item.file, size, dicom, maxPixels)
    const group = item.group ?? r.patientId
    return {
      images: r.images,
      ...(r.frameCount > 1 && dicom.frames === 'all' ? { names: r.frames.map((k) => `${item.name}#${k + 1}`) } : {}),
      ...(group !== undefined ? { group } : {}),
    }
  }
  const images = [await decodeOne(item, size, maxPixels)]
  return { images, ...(item.kind === 'file' && item.group !== undefined ? { group: item.group } : {}) }
}

function decodeOne(item: Item, size: number, maxPixels: number): Promise<Buffer> {
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
  const dicom = dicomReadOptions(opts.dicom)
  const d = discover(source, opts.format, opts.imageRoot, opts.groupBy)
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
    const groups: (string | null)[] = []
    const skipped = [...d.badRows]
    const concurrency = opts.concurrency ?? Math.max(2, os.cpus().length * 2)
    // Arrays decode in strips of a window each (`decode-strip.ts`): larger windows, fewer calls.
    const window = d.items[0]?.kind === 'array' ? 512 : Math.max(concurrency * 8, 64)
    try {
      for (let start = 0; start < d.items.length; start += window) {
        const chunk = d.items.slice(start, start + window)
        const results = new Array<Decoded | Error>(chunk.length)
        await decodeArraysInStrips(chunk, opts.size, results)
        let next = 0
        await Promise.all(
          Array.from({ length: Math.min(concurrency, chunk.length) }, async () => {
            while (next < chunk.length) {
              const k = next++
              if (results[k] !== undefined) continue
              results[k] = await decode(chunk[k], opts.size, maxPixels, dicom).catch((e: Error) => e)
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
          for (const [j, image] of r.images.entries()) {
            writer.append(image)
            names.push(r.names?.[j] ?? item.name)
            labels.push(item.label)
            splits.push(item.split)
            groups.push(r.group ?? null)
            decoded++
          }
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
        ...(groups.some((g) => g !== null) ? { groups } : {}),
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
    ...withPatients(index, splitsOf(index, opts)),
  }
}

function withPatients(index: CacheIndex, s: ReturnType<typeof splitsOf>) {
  if (!index.groups) return s
  const groups = index.groups
  const count = (name: SplitName) => countGroups(s.splits[name].indices, groups)
  return { ...s, groups, patients: { train: count('train'), val: count('val'), test: count('test') } }
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
      ;[train, val] = stratifiedSplit(train, index.labels, [0.9, 0.1], opts.seed ?? 0, index.groups)
    }
    return { splits: { train: pick(train), val: pick(val), test: pick(test) }, sourceSplits: true }
  }
  if (!labelled) return { splits: { train: pick(all), val: pick([]), test: pick([]) }, sourceSplits: false }
  const [train, val, test] = stratifiedSplit(
    all,
    index.labels,
    opts.splitFractions ?? [0.7, 0.1, 0.2],
    opts.seed ?? 0,
    index.groups,
  )
  return { splits: { train: pick(train), val: pick(val), test: pick(test) }, sourceSplits: false }
}
