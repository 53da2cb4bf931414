/**
 * Finding the images in a source: the format, each image (a file, or a slice of an in-memory
 * array) with its label and source split, the classes, and the rows that cannot be used (with
 * the reason). Nothing is decoded here; `dataset.ts` decodes into the cache. A `dicom` source is
 * a folder laid out as `folder` is, whose files are DICOM (`.dcm`, `.dicom`, or extensionless
 * with the DICM preamble), or one DICOM file.
 */
import { closeSync, constants, existsSync, fstatSync, openSync, readSync, readdirSync, realpathSync, statSync } from 'node:fs'
import path from 'node:path'

import { DataError } from '../errors.js'
import { type ImageArray, readIdxImages, readNpz } from './arrays.js'
import { hasDicomPreamble } from './dicom/parse.js'
import { readRegularFileSync } from '../io/read-file.js'

export type SourceFormat = 'folder' | 'csv' | 'npz' | 'idx' | 'dicom'
export type SplitName = 'train' | 'val' | 'test'

/** One image to decode: a file, or a slice of an in-memory array. */
export type Item =
  | {
      kind: 'file'
      file: string
      name: string
      label: number
      split?: SplitName
      /** Read as DICOM (a `.dcm` file, or one with the DICM preamble). */
      dicom?: boolean
      /** The row's group (a CSV's `groupBy` column); DICOM files carry their PatientID. */
      group?: string
    }
  | { kind: 'array'; array: ImageArray; position: number; name: string; label: number; split?: SplitName }

export interface Discovered {
  format: SourceFormat
  items: Item[]
  classes: string[]
  /** Files whose size and mtime identify the source state. */
  files: string[]
  badRows: { name: string; reason: string }[]
}

/** Extensions read as images (sharp decodes each); a CSV id without one is tried with each. */
const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.tif', '.tiff', '.bmp', '.webp', '.gif']
const DICOM_EXTENSIONS = ['.dcm', '.dicom']
const isImage = (f: string) => IMAGE_EXTENSIONS.includes(path.extname(f).toLowerCase())
const isDicomName = (f: string) => DICOM_EXTENSIONS.includes(path.extname(f).toLowerCase())

/**
 * Whether `file` begins with DICOM's 128-byte preamble and `DICM` (read without blocking; a FIFO
 * or a device is not one). Files without an extension are DICOM only when they say so.
 */
export function hasDicomMagic(file: string): boolean {
  let fd: number
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK)
  } catch {
    return false
  }
  try {
    if (!fstatSync(fd).isFile()) return false
    const head = Buffer.alloc(132)
    return readSync(fd, head, 0, 132, 0) === 132 && hasDicomPreamble(head)
  } catch {
    return false
  } finally {
    closeSync(fd)
  }
}

/** Whether a folder's file is read: an image, a DICOM file, or (in a DICOM folder) an extensionless DICOM file. */
const readable = (full: string, name: string, dicom: boolean) =>
  isImage(name) || isDicomName(name) || (dicom && path.extname(name) === '' && !name.startsWith('.') && hasDicomMagic(full))

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
  /** A DICOM source: extensionless files with the DICM preamble are read too. */
  dicom: boolean
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
      if (readable(path.join(dir, r), e.name, w.dicom)) out.push(r)
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
    if (isDicomName(p) || hasDicomMagic(p)) return 'dicom'
    if (p.includes('idx')) return 'idx'
    throw new DataError(`cannot tell the format of ${p}; pass format: folder | csv | npz | idx | dicom`, 'unknown-format', p)
  }
  if (!st.isDirectory()) throw new DataError(`${p} is not a regular file or a folder (a device, FIFO or socket)`, 'not-a-file', p)
  const entries = readdirSync(p)
  if (entries.some((e) => /-idx\d-ubyte(\.gz)?$/.test(e))) return 'idx'
  return firstFileIsDicom(p) ? 'dicom' : 'folder'
}

/**
 * Whether the first file found in `dir` (breadth first, hidden entries and links left out, at
 * most a few thousand entries looked at) that is an image or DICOM is DICOM.
 */
function firstFileIsDicom(dir: string): boolean {
  const queue = [dir]
  let looked = 0
  while (queue.length && looked < 4096) {
    const d = queue.shift()!
    let entries
    try {
      entries = readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))
    } catch {
      continue
    }
    for (const e of entries) {
      if (++looked > 4096) break
      if (e.name.startsWith('.')) continue
      const full = path.join(d, e.name)
      if (e.isDirectory()) queue.push(full)
      else if (e.isFile()) {
        if (isImage(e.name)) return false
        if (isDicomName(e.name) || (path.extname(e.name) === '' && hasDicomMagic(full))) return true
      }
    }
  }
  return false
}

function discoverFolder(root: string, format: 'folder' | 'dicom'): Discovered {
  const w: Walk = { realRoot: realpathSync(root), seen: new Set(), badRows: [], dicom: format === 'dicom' }
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
  const dicom = (f: string) => (isDicomName(f) || !isImage(f) ? { dicom: true } : {})
  if (classes.length === 0) {
    for (const f of listImages(root, w)) items.push({ kind: 'file', file: path.join(root, f), name: f, label: -1, ...dicom(f) })
  } else {
    for (const r of roots) {
      for (const [label, c] of classes.entries()) {
        const dir = path.join(root, r.dir, c)
        if (!existsSync(dir)) continue
        w.seen.clear() // one walk per class folder: the same images may be linked from two classes
        for (const f of listImages(dir, w, '', path.join(r.dir, c))) {
          items.push({ kind: 'file', file: path.join(dir, f), name: path.join(r.dir, c, f), label, split: r.split, ...dicom(f) })
        }
      }
    }
  }
  // Links that lead outside the folder are reported once each (class folders are listed per split).
  const badRows = [...new Map(w.badRows.map((b) => [b.name, b])).values()]
  return { format, items, classes, files: items.map((i) => (i.kind === 'file' ? i.file : '')), badRows }
}

/** One DICOM file as a source: its images, unlabelled. */
function discoverDicomFile(file: string): Discovered {
  const name = path.basename(file)
  return {
    format: 'dicom',
    items: [{ kind: 'file', file, name, label: -1, dicom: true }],
    classes: [],
    files: [file],
    badRows: [],
  }
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

const MAX_CSV_BYTES = 512 << 20

function discoverCsv(file: string, imageRoot: string | undefined, groupBy: string | undefined): Discovered {
  const root = imageRoot ?? path.dirname(file)
  // A CSV of a million rows is tens of MB; a FIFO or a device is refused before a byte is read.
  const lines = readRegularFileSync(file, MAX_CSV_BYTES, 'a CSV of images')
    .toString('utf8')
    .split(/\r?\n/)
    .filter((l) => l.trim() !== '')
  if (lines.length < 2) throw new DataError(`${file} has no data rows`, 'bad-csv', file)
  let header = parseCsvLine(lines[0])
  let rows = lines.slice(1).map(parseCsvLine)
  // The group column (a patient id) is taken out before the layout is recognised.
  let groupOf: string[] | undefined
  if (groupBy !== undefined) {
    const g = header.indexOf(groupBy)
    if (g < 0)
      throw new DataError(`${file} has no column "${groupBy}" to group by (its columns: ${header.join(', ')})`, 'bad-csv', file)
    if (g === 0) throw new DataError(`${file}: the group column "${groupBy}" is its image column`, 'bad-csv', file)
    groupOf = rows.map((r) => r[g] ?? '')
    header = header.filter((_, i) => i !== g)
    rows = rows.map((r) => r.filter((_, i) => i !== g))
  }
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
    const candidates = [
      ...(path.extname(id) ? [direct] : []),
      ...[...IMAGE_EXTENSIONS, ...DICOM_EXTENSIONS].map((e) => direct + e),
      direct,
    ]
    const found = candidates.find((c) => existsSync(c))
    if (found === undefined) return undefined
    return inside(realpathSync(found)) ? found : 'outside'
  }
  // One image, one row: a file listed twice could land in train and test at once (a leak that
  // inflates every metric), so later rows for the same file are skipped and reported.
  const firstRow = new Map<string, number>()
  const addRow = (k: number, name: string, label: number) => {
    const f = resolveImage(name)
    if (f === 'outside') badRows.push({ name, reason: `row ${k + 2}: path is outside the image root ${root}` })
    else if (!f) badRows.push({ name, reason: `row ${k + 2}: file not found under ${root}` })
    else {
      const real = realpathSync(f)
      const first = firstRow.get(real)
      if (first !== undefined) badRows.push({ name, reason: `row ${k + 2}: the same image as row ${first + 2}; kept once` })
      else {
        firstRow.set(real, k)
        const group = groupOf?.[k] ? { group: groupOf[k] } : {}
        const dicom = isDicomName(f) || (!isImage(f) && hasDicomMagic(f)) ? { dicom: true } : {}
        items.push({ kind: 'file', file: f, name, label, ...group, ...dicom })
      }
    }
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

/** What `source` holds: its format, the images to decode with their labels, its classes. */
export function discover(source: string, forced?: SourceFormat, imageRoot?: string, groupBy?: string): Discovered {
  if (!existsSync(source)) throw new DataError(`data source does not exist: ${source}`, 'not-found', source)
  const format = forced ?? detectFormat(source)
  if (groupBy !== undefined && format !== 'csv')
    throw new DataError(
      `grouping by a column (--group-by ${groupBy}) needs a CSV source; ${source} is ${format} (DICOM files are grouped by their PatientID)`,
      'bad-option',
      source,
    )
  try {
    switch (format) {
      case 'folder':
        return discoverFolder(source, 'folder')
      case 'dicom':
        return statSync(source).isDirectory() ? discoverFolder(source, 'dicom') : discoverDicomFile(source)
      case 'csv':
        return discoverCsv(source, imageRoot, groupBy)
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
