/**
 * The DICOM container (PS3.10 file, PS3.5 data set encoding): the file meta group, the data
 * set's elements in implicit or explicit VR, little or big endian, deflated or not, sequences
 * (to step over them and to read the few this reader needs) and the pixel data, native or
 * encapsulated in fragments. Every length is checked against what is left before it is used, and
 * nothing is copied: values are views of the file's bytes. Decoding the pixels is `pixels.ts`'s.
 *
 * Written here rather than taken from dcmjs: a hostile file's lengths live in this layer, and
 * checking each one where it is read makes every error name the element and the byte offset.
 */
import { inflateRawSync } from 'node:zlib'

/** A problem with the file's structure; the caller adds the file's name. */
export class DicomError extends Error {}

/** Tag as a number: group << 16 | element. */
export const tag = (group: number, element: number) => ((group << 16) | element) >>> 0
export const tagName = (t: number) =>
  `(${(t >>> 16).toString(16).padStart(4, '0').toUpperCase()},${(t & 0xffff).toString(16).padStart(4, '0').toUpperCase()})`

export const TAGS = {
  transferSyntax: tag(0x0002, 0x0010),
  patientId: tag(0x0010, 0x0020),
  samplesPerPixel: tag(0x0028, 0x0002),
  photometric: tag(0x0028, 0x0004),
  planarConfiguration: tag(0x0028, 0x0006),
  numberOfFrames: tag(0x0028, 0x0008),
  rows: tag(0x0028, 0x0010),
  columns: tag(0x0028, 0x0011),
  bitsAllocated: tag(0x0028, 0x0100),
  bitsStored: tag(0x0028, 0x0101),
  highBit: tag(0x0028, 0x0102),
  pixelRepresentation: tag(0x0028, 0x0103),
  windowCenter: tag(0x0028, 0x1050),
  windowWidth: tag(0x0028, 0x1051),
  rescaleIntercept: tag(0x0028, 0x1052),
  rescaleSlope: tag(0x0028, 0x1053),
  voiLutFunction: tag(0x0028, 0x1056),
  redDescriptor: tag(0x0028, 0x1101),
  greenDescriptor: tag(0x0028, 0x1102),
  blueDescriptor: tag(0x0028, 0x1103),
  redData: tag(0x0028, 0x1201),
  greenData: tag(0x0028, 0x1202),
  blueData: tag(0x0028, 0x1203),
  segmentedRedData: tag(0x0028, 0x1221),
  modalityLutSequence: tag(0x0028, 0x3000),
  extendedOffsetTable: tag(0x7fe0, 0x0001),
  floatPixelData: tag(0x7fe0, 0x0008),
  doubleFloatPixelData: tag(0x7fe0, 0x0009),
  pixelData: tag(0x7fe0, 0x0010),
} as const

const ITEM = tag(0xfffe, 0xe000)
const ITEM_END = tag(0xfffe, 0xe00d)
const SEQUENCE_END = tag(0xfffe, 0xe0dd)
const UNDEFINED = 0xffffffff

/** VRs whose explicit form has a 4-byte length after 2 reserved bytes. */
const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV'])
const ALL_VRS = new Set([
  ...LONG_VRS,
  ...[
    'AE',
    'AS',
    'AT',
    'CS',
    'DA',
    'DS',
    'DT',
    'FD',
    'FL',
    'IS',
    'LO',
    'LT',
    'PN',
    'SH',
    'SL',
    'SS',
    'ST',
    'TM',
    'UI',
    'UL',
    'US',
  ],
])

/**
 * VRs of the elements this reader interprets, for implicit-VR files (which do not say). The
 * rest stay `UN`: they are stepped over by length and never interpreted.
 */
const IMPLICIT_VRS = new Map<number, string>([
  [TAGS.transferSyntax, 'UI'],
  [TAGS.patientId, 'LO'],
  [TAGS.samplesPerPixel, 'US'],
  [TAGS.photometric, 'CS'],
  [TAGS.planarConfiguration, 'US'],
  [TAGS.numberOfFrames, 'IS'],
  [TAGS.rows, 'US'],
  [TAGS.columns, 'US'],
  [TAGS.bitsAllocated, 'US'],
  [TAGS.bitsStored, 'US'],
  [TAGS.highBit, 'US'],
  [TAGS.pixelRepresentation, 'US'],
  [TAGS.windowCenter, 'DS'],
  [TAGS.windowWidth, 'DS'],
  [TAGS.rescaleIntercept, 'DS'],
  [TAGS.rescaleSlope, 'DS'],
  [TAGS.voiLutFunction, 'CS'],
  [TAGS.redDescriptor, 'US'],
  [TAGS.greenDescriptor, 'US'],
  [TAGS.blueDescriptor, 'US'],
  [TAGS.redData, 'OW'],
  [TAGS.greenData, 'OW'],
  [TAGS.blueData, 'OW'],
  [TAGS.segmentedRedData, 'OW'],
  [TAGS.modalityLutSequence, 'SQ'],
  [TAGS.extendedOffsetTable, 'OV'],
  [TAGS.pixelData, 'OW'],
])

export interface Element {
  vr: string
  /** The value's bytes (a view of the file); empty for sequences and encapsulated pixel data. */
  value: Buffer
  /** A sequence's items. */
  items?: DataSet[]
  /** Encapsulated pixel data: the Basic Offset Table's item, then every fragment. */
  fragments?: { offsetTable: Buffer; fragments: Buffer[] }
}

export type DataSet = Map<number, Element>

export interface DicomFile {
  transferSyntax: string
  littleEndian: boolean
  explicitVr: boolean
  /** Whether the file began with the 128-byte preamble and `DICM`. */
  preamble: boolean
  dataSet: DataSet
}

export const TRANSFER_SYNTAXES = {
  implicitLittle: '1.2.840.10008.1.2',
  explicitLittle: '1.2.840.10008.1.2.1',
  deflatedLittle: '1.2.840.10008.1.2.1.99',
  explicitBig: '1.2.840.10008.1.2.2',
} as const

/**
 * The largest data set a Deflated Explicit VR file may inflate to: as large as the largest file
 * this reader opens, so a small deflated file cannot fill memory.
 */
export const MAX_INFLATED_BYTES = 1 << 30
/** Sequences nest at most this deep (a crafted file could nest until the stack overflows). */
const MAX_DEPTH = 16

/** Whether `bytes` begins like a DICOM file: the preamble and `DICM`. */
export function hasDicomPreamble(bytes: Uint8Array): boolean {
  return bytes.length >= 132 && bytes[128] === 0x44 && bytes[129] === 0x49 && bytes[130] === 0x43 && bytes[131] === 0x4d
}

class Reader {
  pos: number
  constructor(
    readonly buf: Buffer,
    readonly littleEndian: boolean,
    readonly explicitVr: boolean,
    start = 0,
    readonly base = 0,
  ) {
    this.pos = start
  }
  get left() {
    return this.buf.length - this.pos
  }
  /** Offset in the file (for messages); `base` shifts offsets of an inflated data set. */
  at(pos = this.pos) {
    return this.base < 0 ? `byte ${pos} of the inflated data set` : `byte ${pos + this.base}`
  }
  need(n: number, what: string) {
    if (n > this.left) throw new DicomError(`the file ends inside ${what} at ${this.at()}: ${n} bytes needed, ${this.left} left`)
  }
  u16() {
    const v = this.littleEndian ? this.buf.readUInt16LE(this.pos) : this.buf.readUInt16BE(this.pos)
    this.pos += 2
    return v
  }
  u32() {
    const v = this.littleEndian ? this.buf.readUInt32LE(this.pos) : this.buf.readUInt32BE(this.pos)
    this.pos += 4
    return v
  }
  tag() {
    this.need(4, 'an element tag')
    const group = this.u16()
    return tag(group, this.u16())
  }
  take(n: number, what: string) {
    this.need(n, what)
    const v = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return v
  }
}

/** One element's header: VR and length. Item and delimiter tags have no VR in any encoding. */
function header(r: Reader, t: number): { vr: string; length: number } {
  if (t >>> 16 === 0xfffe) {
    r.need(4, `the length of ${tagName(t)}`)
    return { vr: '', length: r.u32() }
  }
  // The file meta group is always explicit VR little endian; it is read by its own Reader.
  if (!r.explicitVr) {
    r.need(4, `the length of ${tagName(t)}`)
    return { vr: IMPLICIT_VRS.get(t) ?? 'UN', length: r.u32() }
  }
  r.need(4, `the VR of ${tagName(t)}`)
  const vr = r.buf.toString('latin1', r.pos, r.pos + 2)
  if (!ALL_VRS.has(vr))
    throw new DicomError(`element ${tagName(t)} at ${r.at(r.pos - 4)} has VR "${printable(vr)}", which is not a DICOM VR`)
  r.pos += 2
  if (LONG_VRS.has(vr)) {
    r.need(6, `the length of ${tagName(t)}`)
    r.pos += 2
    return { vr, length: r.u32() }
  }
  return { vr, length: r.u16() }
}

const printable = (s: string) => s.replace(/[^\x20-\x7e]/g, '?')

/**
 * Reads elements until `end` (a byte offset) or, for an undefined-length item, its delimiter.
 * `stopAtPixelData`: the top level ends at the pixel data (nothing after it is needed).
 */
function readDataSet(r: Reader, end: number, depth: number, untilItemEnd: boolean, stopAtPixelData: boolean): DataSet {
  if (depth > MAX_DEPTH) throw new DicomError(`sequences nested deeper than ${MAX_DEPTH} levels at ${r.at()}`)
  const ds: DataSet = new Map()
  while (r.pos < end) {
    const start = r.pos
    const t = r.tag()
    const { vr, length } = header(r, t)
    if (t === ITEM_END) {
      if (untilItemEnd) return ds
      throw new DicomError(`an item delimiter ${tagName(t)} at ${r.at(start)} outside any item`)
    }
    if (t === ITEM || t === SEQUENCE_END)
      throw new DicomError(`an item tag ${tagName(t)} at ${r.at(start)} where a data element belongs`)
    if (t === TAGS.pixelData && length === UNDEFINED) {
      ds.set(t, { vr: vr === 'UN' ? 'OB' : vr, value: Buffer.alloc(0), fragments: readFragments(r) })
      if (stopAtPixelData) return ds
      continue
    }
    if (length === UNDEFINED) {
      // An undefined length is a sequence (SQ, or UN holding one: then implicit VR little endian).
      if (vr !== 'SQ' && vr !== 'UN' && vr !== 'OB' && vr !== 'OW')
        throw new DicomError(`element ${tagName(t)} (VR ${vr}) at ${r.at(start)} has an undefined length`)
      const inner = vr === 'UN' && r.explicitVr ? new Reader(r.buf, true, false, r.pos, r.base) : r
      const items = readItems(inner, r.buf.length, depth, true)
      r.pos = inner.pos
      ds.set(t, { vr: 'SQ', value: Buffer.alloc(0), items })
      continue
    }
    if (length > r.left)
      throw new DicomError(
        `the file ends inside element ${tagName(t)} at ${r.at(start)}: its length is ${length} bytes, ${r.left} left`,
      )
    if (vr === 'SQ') {
      const items = readItems(r, r.pos + length, depth, false)
      ds.set(t, { vr, value: Buffer.alloc(0), items })
      continue
    }
    ds.set(t, { vr, value: r.take(length, `element ${tagName(t)}`) })
    if (t === TAGS.pixelData && stopAtPixelData) return ds
  }
  if (untilItemEnd) throw new DicomError(`the file ends inside an item with no delimiter (at ${r.at()})`)
  return ds
}

/** A sequence's items, to `end` (defined length) or its delimiter. */
function readItems(r: Reader, end: number, depth: number, untilDelimiter: boolean): DataSet[] {
  const items: DataSet[] = []
  while (r.pos < end) {
    const start = r.pos
    const t = r.tag()
    r.need(4, `the length of ${tagName(t)}`)
    const length = r.u32()
    if (t === SEQUENCE_END) {
      if (untilDelimiter) return items
      continue // tolerated inside a defined-length sequence, as other readers do
    }
    if (t !== ITEM) throw new DicomError(`expected a sequence item at ${r.at(start)}, found ${tagName(t)}`)
    if (length === UNDEFINED) items.push(readDataSet(r, r.buf.length, depth + 1, true, false))
    else {
      if (length > end - r.pos)
        throw new DicomError(`a sequence item at ${r.at(start)} says ${length} bytes, but its sequence has ${end - r.pos} left`)
      const itemEnd = r.pos + length
      items.push(readDataSet(r, itemEnd, depth + 1, false, false))
      r.pos = itemEnd
    }
  }
  if (untilDelimiter) throw new DicomError(`the file ends inside a sequence with no delimiter (at ${r.at()})`)
  return items
}

/** Encapsulated pixel data (PS3.5 A.4): the offset table item, fragments, the delimiter. */
function readFragments(r: Reader): { offsetTable: Buffer; fragments: Buffer[] } {
  let offsetTable: Buffer | undefined
  const fragments: Buffer[] = []
  for (;;) {
    const start = r.pos
    if (r.left < 8) throw new DicomError(`the file ends inside the encapsulated pixel data (at ${r.at()}) before its delimiter`)
    const t = r.tag()
    const length = r.u32()
    if (t === SEQUENCE_END) break
    if (t !== ITEM) throw new DicomError(`expected a pixel data fragment at ${r.at(start)}, found ${tagName(t)}`)
    if (length === UNDEFINED || length > r.left)
      throw new DicomError(
        `a pixel data fragment at ${r.at(start)} says ${length === UNDEFINED ? 'an undefined length' : `${length} bytes`}, ${r.left} left`,
      )
    const value = r.take(length, 'a pixel data fragment')
    if (offsetTable === undefined) offsetTable = value
    else fragments.push(value)
  }
  if (offsetTable === undefined) throw new DicomError('encapsulated pixel data without its offset table item')
  return { offsetTable, fragments }
}

/**
 * Parses a DICOM file. Files with the preamble and `DICM` are read by their meta group's transfer
 * syntax; files without one (older or bare data sets) by what their first element looks like,
 * as other readers do when forced.
 */
export function parseDicom(bytes: Buffer, opts: { maxInflatedBytes?: number } = {}): DicomFile {
  const preamble = hasDicomPreamble(bytes)
  let pos = preamble ? 132 : 0
  let transferSyntax: string | undefined
  // The file meta group: explicit VR little endian, whatever the data set's encoding.
  if (bytes.length >= pos + 6 && bytes.readUInt16LE(pos) === 0x0002) {
    const meta = new Reader(bytes, true, true, pos)
    while (meta.left >= 6 && bytes.readUInt16LE(meta.pos) === 0x0002) {
      const start = meta.pos
      const t = meta.tag()
      const { length } = header(meta, t)
      if (length === UNDEFINED || length > meta.left)
        throw new DicomError(`the file meta element ${tagName(t)} at byte ${start} says ${length} bytes, ${meta.left} left`)
      const value = meta.take(length, `element ${tagName(t)}`)
      if (t === TAGS.transferSyntax) transferSyntax = value.toString('latin1').replace(/[\0 ]+$/, '')
    }
    pos = meta.pos
    if (transferSyntax === undefined) throw new DicomError('the file meta group has no Transfer Syntax UID (0002,0010)')
  } else if (preamble) {
    throw new DicomError('no file meta group after the DICM prefix')
  } else {
    transferSyntax = guessEncoding(bytes)
  }
  const ts = transferSyntax
  const littleEndian = ts !== TRANSFER_SYNTAXES.explicitBig
  let explicitVr = ts !== TRANSFER_SYNTAXES.implicitLittle
  // Some writers encode the data set in the other VR form than their transfer syntax says; as
  // other readers do, the first element decides (explicit when it carries a VR).
  if (littleEndian && ts !== TRANSFER_SYNTAXES.deflatedLittle && bytes.length >= pos + 6)
    explicitVr = ALL_VRS.has(bytes.toString('latin1', pos + 4, pos + 6))
  let r = new Reader(bytes, littleEndian, explicitVr, pos)
  if (ts === TRANSFER_SYNTAXES.deflatedLittle) {
    const maxInflated = opts.maxInflatedBytes ?? MAX_INFLATED_BYTES
    let inflated: Buffer
    try {
      inflated = inflateRawSync(bytes.subarray(pos), { maxOutputLength: maxInflated })
    } catch (e) {
      if ((e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' || /larger than/.test(String(e)))
        throw new DicomError(`the deflated data set inflates to more than ${maxInflated} bytes`)
      throw new DicomError(`the deflated data set is corrupt (${(e as Error).message})`)
    }
    r = new Reader(inflated, true, true, 0, -1)
  }
  const dataSet = readDataSet(r, r.buf.length, 0, false, true)
  return { transferSyntax: ts, littleEndian, explicitVr, preamble, dataSet }
}

/** The encoding of a data set with no meta group, from its first element. */
function guessEncoding(bytes: Buffer): string {
  if (bytes.length < 8) throw new DicomError(`${bytes.length} bytes: too short for a DICOM data set`)
  const vr = bytes.toString('latin1', 4, 6)
  // A group stored big endian reads as a large number little endian (0x0008 -> 0x0800).
  const bigEndian = bytes[0] === 0 && bytes[1] !== 0
  // A data set begins with its lowest group: 0000 to 0008 (a text or an image file does not).
  const group = bigEndian ? bytes.readUInt16BE(0) : bytes.readUInt16LE(0)
  if (group > 0x0008 || group % 2 !== 0)
    throw new DicomError('not a DICOM file: no DICM prefix, and it does not begin with a data set')
  if (ALL_VRS.has(vr)) return bigEndian ? TRANSFER_SYNTAXES.explicitBig : TRANSFER_SYNTAXES.explicitLittle
  if (bigEndian) throw new DicomError('no DICM prefix, and the data set is neither explicit VR nor little endian')
  return TRANSFER_SYNTAXES.implicitLittle
}

// ---- Values -------------------------------------------------------------------------------

/** A text value without its padding (trailing spaces and NULs), or undefined when absent. */
export function text(ds: DataSet, t: number): string | undefined {
  const e = ds.get(t)
  if (!e) return undefined
  return e.value
    .toString('latin1')
    .replace(/[\0 ]+$/, '')
    .replace(/^ +/, '')
}

/** The values of an unsigned or signed 16-bit element (US, SS, or US/SS in implicit VR). */
export function uint16s(file: DicomFile, ds: DataSet, t: number): number[] {
  const e = ds.get(t)
  if (!e) return []
  if (e.value.length % 2 !== 0) throw new DicomError(`${tagName(t)} holds ${e.value.length} bytes, not a list of 16-bit values`)
  const out: number[] = []
  for (let i = 0; i < e.value.length; i += 2) out.push(file.littleEndian ? e.value.readUInt16LE(i) : e.value.readUInt16BE(i))
  return out
}

/** The first value of a US element, or `fallback` when absent. */
export function uint16(file: DicomFile, ds: DataSet, t: number, name: string, fallback?: number): number {
  const v = uint16s(file, ds, t)
  if (v.length === 0) {
    if (fallback !== undefined) return fallback
    throw new DicomError(`${name} ${tagName(t)} is missing`)
  }
  return v[0]
}

/** Numbers of a DS or IS element (backslash-separated text), checked to be numbers. */
export function numbers(ds: DataSet, t: number, name: string, integer = false): number[] {
  const s = text(ds, t)
  if (s === undefined || s === '') return []
  return s.split('\\').map((part) => {
    const p = part.trim()
    const n = Number(p)
    if (p === '' || !Number.isFinite(n) || (integer && !/^[+-]?\d+$/.test(p)))
      throw new DicomError(`${name} ${tagName(t)} is "${printable(s.slice(0, 40))}", not ${integer ? 'an integer' : 'a number'}`)
    return n
  })
}
