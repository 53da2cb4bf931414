/**
 * From a user's data to the engine's dataset cache. Sources (detected from the path, or forced
 * with `format`):
 * - `folder`: one sub-folder per class (optionally under `train/`, `val/`, `test/`), or a folder
 *   of unlabelled images;
 * - `csv`: ISIC-2019 style (an image-id column plus one-hot class columns) or `path,label` rows,
 *   relative to an image root (the CSV's folder unless given);
 * - `npz`: MedMNIST layout; `idx`: MNIST / Fashion-MNIST IDX files (gzipped or not).
 * Every image is decoded and resized ONCE (by sharp/libvips, in parallel, no per-pixel
 * JavaScript) into a cache keyed by the source's files (size, mtime), the target size and this
 * pipeline's version; a later call with an unchanged source decodes nothing. Nothing the user
 * gave is ever written to.
 */
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, statSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import sharp from 'sharp'

import { DataError } from '../errors.js'
import { CacheWriter, type CacheIndex, defaultCacheDir, readCacheIndex } from './cache.js'
import { type ImageArray, readIdxImages, readNpz } from './arrays.js'
import { stratifiedSplit } from './splits.js'

const PIPELINE_VERSION = 1
const IMAGE_EXT = new Set(['.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp', '.webp', '.gif'])

export type SourceFormat = 'folder' | 'csv' | 'npz' | 'idx'
export type SplitName = 'train' | 'val' | 'test'

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

/** One image to decode: a file, or a slice of an in-memory array. */
type Item =
  | { kind: 'file'; file: string; name: string; label: number; split?: SplitName }
  | { kind: 'array'; array: ImageArray; position: number; name: string; label: number; split?: SplitName }

interface Discovered {
  format: SourceFormat
  items: Item[]
  classes: string[]
  /** Files whose size and mtime identify the source state. */
  files: string[]
  badRows: { name: string; reason: string }[]
}

const isImage = (f: string) => IMAGE_EXT.has(path.extname(f).toLowerCase())

/**
 * What a folder walk found besides images: symbolic links are followed when they lead to a place
 * inside the data folder and reported (not read) when they lead outside it or nowhere.
 */
interface Walk {
  /** The data folder, symbolic links resolved. */
  realRoot: string
  /** Folders already walked (by real path): a link back up cannot loop. */
  seen: Set<string>
  badRows: { name: string; reason: string }[]
}

/** Where a directory entry really leads: its kind, or why it is not followed. */
function follow(full: string, e: { isDirectory(): boolean; isFile(): boolean; isSymbolicLink(): boolean }, w: Walk) {
  if (!e.isSymbolicLink()) return e.isDirectory() ? 'dir' : e.isFile() ? 'file' : 'other'
  let real: string
  try {
    real = realpathSync(full)
  } catch {
    return 'symbolic link to nothing (broken)'
  }
  if (real !== w.realRoot && !real.startsWith(w.realRoot + path.sep))
    return `symbolic link to ${real}, outside the data folder (not read)`
  const st = statSync(real)
  return st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other'
}

function listImages(dir: string, w: Walk, rel = '', shown = rel): string[] {
  const here = path.join(dir, rel)
  const real = realpathSync(here)
  if (w.seen.has(real)) return []
  w.seen.add(real)
  const out: string[] = []
  for (const e of readdirSync(here, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const r = path.join(rel, e.name)
    const kind = follow(path.join(dir, r), e, w)
    if (kind === 'dir') out.push(...listImages(dir, w, r, path.join(shown, e.name)))
    else if (kind === 'file') {
      if (isImage(e.name)) out.push(r)
    } else if (kind !== 'other') w.badRows.push({ name: path.join(shown, e.name), reason: kind })
  }
  return out
}

function detectFormat(p: string): SourceFormat {
  const st = statSync(p)
  if (st.isFile()) {
    const ext = path.extname(p).toLowerCase()
    if (ext === '.csv') return 'csv'
    if (ext === '.npz') return 'npz'
    if (p.includes('idx')) return 'idx'
    throw new DataError(`cannot tell the format of ${p}; pass format: folder | csv | npz | idx`, 'unknown-format', p)
  }
  const entries = readdirSync(p)
  if (entries.some((e) => /-idx\d-ubyte(\.gz)?$/.test(e))) return 'idx'
  return 'folder'
}

function discoverFolder(root: string): Discovered {
  const w: Walk = { realRoot: realpathSync(root), seen: new Set(), badRows: [] }
  const subdirs = (d: string) =>
    readdirSync(d, { withFileTypes: true })
      .filter((e) => {
        if (e.name.startsWith('.')) return false
        const kind = follow(path.join(d, e.name), e, w)
        if (kind !== 'dir' && kind !== 'file' && kind !== 'other')
          w.badRows.push({ name: path.relative(root, path.join(d, e.name)), reason: kind })
        return kind === 'dir'
      })
      .map((e) => e.name)
      .sort()
  const top = subdirs(root)
  const splitDirs = top.filter((d) => d === 'train' || d === 'val' || d === 'test' || d === 'Training' || d === 'Testing')
  const splitName = (d: string): SplitName => (d === 'Training' ? 'train' : d === 'Testing' ? 'test' : (d as SplitName))
  const roots: { dir: string; split?: SplitName }[] = splitDirs.length
    ? splitDirs.map((d) => ({ dir: d, split: splitName(d) }))
    : [{ dir: '' }]
  const classSet = new Set<string>()
  for (const r of roots) for (const c of subdirs(path.join(root, r.dir))) classSet.add(c)
  const classes = [...classSet].sort()
  const items: Item[] = []
  if (classes.length === 0) {
    for (const f of listImages(root, w)) items.push({ kind: 'file', file: path.join(root, f), name: f, label: -1 })
  } else {
    for (const r of roots) {
      for (const [label, c] of classes.entries()) {
        const dir = path.join(root, r.dir, c)
        if (!existsSync(dir)) continue
        w.seen.clear() // one walk per class folder: the same images may be linked from two classes
        for (const f of listImages(dir, w, '', path.join(r.dir, c))) {
          items.push({ kind: 'file', file: path.join(dir, f), name: path.join(r.dir, c, f), label, split: r.split })
        }
      }
    }
  }
  // Links that lead outside the folder are reported once each (class folders are listed per split).
  const badRows = [...new Map(w.badRows.map((b) => [b.name, b])).values()]
  return { format: 'folder', items, classes, files: items.map((i) => (i.kind === 'file' ? i.file : '')), badRows }
}

function parseCsvLine(line: string): string[] {
  const out: string[] = []
  let cur = ''
  let quoted = false
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        cur += '"'
        i++
      } else if (ch === '"') quoted = false
      else cur += ch
    } else if (ch === '"') quoted = true
    else if (ch === ',') {
      out.push(cur)
      cur = ''
    } else cur += ch
  }
  out.push(cur)
  return out.map((s) => s.trim())
}

const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.tif', '.tiff', '.bmp', '.webp']

function discoverCsv(file: string, imageRoot: string | undefined): Discovered {
  const root = imageRoot ?? path.dirname(file)
  const lines = readFileSync(file, 'utf8')
    .split(/\r?\n/)
    .filter((l) => l.trim() !== '')
  if (lines.length < 2) throw new DataError(`${file} has no data rows`, 'bad-csv', file)
  const header = parseCsvLine(lines[0])
  const rows = lines.slice(1).map(parseCsvLine)
  const items: Item[] = []
  const badRows: { name: string; reason: string }[] = []
  let realRoot: string
  try {
    realRoot = realpathSync(root)
  } catch {
    throw new DataError(`image root ${root} (for ${file}) does not exist`, 'bad-csv', root)
  }
  const inside = (p: string) => {
    const rel = path.relative(realRoot, p)
    return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel)
  }
  // A row's path must stay inside the image root, lexically AND after following symlinks; the
  // lexical check comes first, so a path outside is rejected before the filesystem is asked
  // whether it exists (the answer would tell which files exist outside the root).
  const resolveImage = (id: string): string | undefined | 'outside' => {
    if (path.isAbsolute(id) || !inside(path.resolve(realRoot, id))) return 'outside'
    const direct = path.join(realRoot, id)
    const candidates = [...(path.extname(id) ? [direct] : []), ...IMAGE_EXTENSIONS.map((e) => direct + e), direct]
    const found = candidates.find((c) => existsSync(c))
    if (found === undefined) return undefined
    return inside(realpathSync(found)) ? found : 'outside'
  }
  const addRow = (k: number, name: string, label: number) => {
    const f = resolveImage(name)
    if (f === 'outside') badRows.push({ name, reason: `row ${k + 2}: path is outside the image root ${root}` })
    else if (!f) badRows.push({ name, reason: `row ${k + 2}: file not found under ${root}` })
    else items.push({ kind: 'file', file: f, name, label })
  }
  let classes: string[]
  const twoColumn =
    header.length === 2 && /^(path|file|image|filename)$/i.test(header[0]) && /^(label|class|target)$/i.test(header[1])
  if (twoColumn) {
    // A missing or empty label is a bad row, not a class of its own.
    classes = [...new Set(rows.flatMap((r) => (r[1] ? [r[1]] : [])))].sort()
    rows.forEach((r, k) => {
      if (!r[1]) badRows.push({ name: r[0], reason: `row ${k + 2}: missing label` })
      else addRow(k, r[0], classes.indexOf(r[1]))
    })
  } else {
    // ISIC-2019 style: first column the image id, every other column a one-hot class
    // (an all-zero "UNK" column is allowed and simply never chosen).
    classes = header.slice(1)
    rows.forEach((r, k) => {
      const name = r[0]
      const hot = r.slice(1).map(Number)
      const ones = hot.flatMap((v, i) => (v === 1 ? [i] : []))
      if (hot.some((v) => !Number.isFinite(v)) || ones.length !== 1) {
        badRows.push({ name, reason: `row ${k + 2}: expected exactly one class column set to 1` })
        return
      }
      addRow(k, name, ones[0])
    })
    const used = new Set(items.map((i) => i.label))
    const keep = classes.map((_, i) => used.has(i))
    if (keep.some((k) => !k)) {
      // Drop never-used classes (ISIC's UNK) and renumber, so every class has images.
      const remap = new Map<number, number>()
      classes = classes.filter((c, i) => {
        if (keep[i]) remap.set(i, remap.size)
        return keep[i]
      })
      for (const it of items) it.label = remap.get(it.label)!
    }
  }
  return { format: 'csv', items, classes, files: [file, ...items.map((i) => (i.kind === 'file' ? i.file : ''))], badRows }
}

function arrayItems(arr: ImageArray, split: SplitName | undefined, prefix: string): Item[] {
  return Array.from({ length: arr.count }, (_, position) => ({
    kind: 'array' as const,
    array: arr,
    position,
    name: `${prefix}${position}`,
    label: arr.labels?.[position] ?? -1,
    split,
  }))
}

function classNames(items: Item[]): string[] {
  const max = items.reduce((m, i) => Math.max(m, i.label), -1)
  return Array.from({ length: max + 1 }, (_, i) => String(i))
}

function discoverIdx(p: string): Discovered {
  const dir = statSync(p).isDirectory() ? p : path.dirname(p)
  const files = readdirSync(dir)
  const find = (re: RegExp) => files.find((f) => re.test(f))
  const items: Item[] = []
  const used: string[] = []
  for (const [split, stem] of [
    ['train', 'train'],
    ['test', 't10k'],
  ] as const) {
    const img = find(new RegExp(`^${stem}-images-idx3-ubyte(\\.gz)?$`))
    if (!img) continue
    const lab = find(new RegExp(`^${stem}-labels-idx1-ubyte(\\.gz)?$`))
    used.push(path.join(dir, img), ...(lab ? [path.join(dir, lab)] : []))
    const arr = readIdxImages(path.join(dir, img), lab ? path.join(dir, lab) : undefined)
    items.push(...arrayItems(arr, split, `${split}/`))
  }
  if (items.length === 0) throw new DataError(`no *-images-idx3-ubyte files in ${dir}`, 'bad-idx', dir)
  return { format: 'idx', items, classes: classNames(items), files: used, badRows: [] }
}

function discoverNpz(file: string): Discovered {
  const parts = readNpz(file)
  const items: Item[] = []
  for (const split of ['train', 'val', 'test'] as const) {
    const arr = parts[split]
    if (arr) items.push(...arrayItems(arr, split, `${split}/`))
  }
  return { format: 'npz', items, classes: classNames(items), files: [file], badRows: [] }
}

function discover(source: string, opts: LoadOptions): Discovered {
  if (!existsSync(source)) throw new DataError(`data source does not exist: ${source}`, 'not-found', source)
  const format = opts.format ?? detectFormat(source)
  try {
    switch (format) {
      case 'folder':
        return discoverFolder(source)
      case 'csv':
        return discoverCsv(source, opts.imageRoot)
      case 'npz':
        return discoverNpz(source)
      case 'idx':
        return discoverIdx(source)
    }
  } catch (e) {
    if (e instanceof DataError) throw e
    // The readers' own errors name the file and the problem; a RangeError or TypeError is a read
    // past the end of a torn or crafted file, said as such.
    const message =
      e instanceof RangeError || e instanceof TypeError
        ? `${source}: corrupt or truncated ${format} data (${(e as Error).message})`
        : (e as Error).message
    throw new DataError(message, `bad-${format}`, source)
  }
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

async function decode(item: Item, size: number, maxPixels: number): Promise<Buffer> {
  const resize = { width: size, height: size, fit: 'fill' as const }
  const img =
    item.kind === 'file'
      ? sharp(item.file, { limitInputPixels: maxPixels, failOn: 'truncated' })
      : sharp(
          Buffer.from(
            item.array.pixels.buffer,
            item.array.pixels.byteOffset + item.position * item.array.height * item.array.width * item.array.channels,
            item.array.height * item.array.width * item.array.channels,
          ),
          { raw: { width: item.array.width, height: item.array.height, channels: item.array.channels } },
        )
  // 16-bit inputs are scaled to 8 bits, grayscale and alpha become plain RGB.
  return img.resize(resize).removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer()
}

/**
 * Discovers `source`, decodes it into a cache (or reuses a matching one) and returns the cache
 * file with its splits. Bad images are skipped and counted (or fail with `strict`).
 */
export async function loadDataset(source: string, opts: LoadOptions): Promise<LoadedDataset> {
  const d = discover(source, opts)
  if (opts.strict && d.badRows.length) {
    const b = d.badRows[0]
    throw new DataError(`${b.name}: ${b.reason}`, 'bad-row', source)
  }
  const cacheDir = opts.cacheDir ?? defaultCacheDir()
  mkdirSync(cacheDir, { recursive: true })
  const key = cacheKey(d, source, opts)
  const cacheFile = path.join(cacheDir, `${key}-${opts.size}.cassds`)
  let index = readCacheIndex(cacheFile)?.index
  let decoded = 0
  if (!index || index.key !== key) {
    const maxPixels = opts.maxPixels ?? 100_000_000
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
