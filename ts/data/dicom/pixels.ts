/**
 * A DICOM image's pixels, in the order the standard defines them: decode (native or compressed
 * frames to stored values), the modality LUT (Rescale Slope/Intercept, as pydicom's
 * `apply_modality_lut`), the photometric interpretation (YBR to RGB, PALETTE COLOR applied,
 * MONOCHROME1 inverted), then the window to 8 bits (`window.ts`). Each stage is a function of its
 * own, checked against pydicom on its test corpus (`parity/dicom_reference.py`,
 * `__test__/dicom.spec.ts`).
 *
 * MONOCHROME1 is inverted after the window, on the 8-bit output: windows (the file's and the
 * presets) are given in the modality's units, so inverting the values first would turn a lung
 * window upside down. The result is the same as inverting before with a mirrored window.
 */
import { type DecoderName, decodeFrame } from './codecs.js'
import { DicomError, type DicomFile, TAGS, TRANSFER_SYNTAXES, numbers, text, uint16 } from './parse.js'
import { applyModality, applyPalette, ybrToRgb } from './colour.js'
import { decodeRle } from './rle.js'
import {
  type OutputRange,
  type VoiFunction,
  type Window,
  type Windowing,
  applyRange,
  applyWindow,
  outputRange,
  percentileRange,
  to8,
} from './window.js'

/** Compressed transfer syntaxes and their decoders; `lossy` ones are compared within a tolerance. */
const ENCAPSULATED: Record<string, { name: string; decoder: DecoderName | 'rle'; lossy: boolean }> = {
  '1.2.840.10008.1.2.5': { name: 'RLE Lossless', decoder: 'rle', lossy: false },
  '1.2.840.10008.1.2.4.50': { name: 'JPEG Baseline', decoder: 'decodeJpeg', lossy: true },
  '1.2.840.10008.1.2.4.51': { name: 'JPEG Extended', decoder: 'decodeJpeg', lossy: true },
  '1.2.840.10008.1.2.4.57': { name: 'JPEG Lossless', decoder: 'decodeJpeg', lossy: false },
  '1.2.840.10008.1.2.4.70': { name: 'JPEG Lossless SV1', decoder: 'decodeJpeg', lossy: false },
  '1.2.840.10008.1.2.4.80': { name: 'JPEG-LS Lossless', decoder: 'decodeJpegLs', lossy: false },
  '1.2.840.10008.1.2.4.81': { name: 'JPEG-LS Near-Lossless', decoder: 'decodeJpegLs', lossy: true },
  '1.2.840.10008.1.2.4.90': { name: 'JPEG 2000 Lossless', decoder: 'decodeJpeg2000', lossy: false },
  '1.2.840.10008.1.2.4.91': { name: 'JPEG 2000', decoder: 'decodeJpeg2000', lossy: true },
  '1.2.840.10008.1.2.4.201': { name: 'HTJ2K Lossless', decoder: 'decodeHtJpeg2000', lossy: false },
  '1.2.840.10008.1.2.4.202': { name: 'HTJ2K Lossless RPCL', decoder: 'decodeHtJpeg2000', lossy: false },
  '1.2.840.10008.1.2.4.203': { name: 'HTJ2K', decoder: 'decodeHtJpeg2000', lossy: true },
}
const NATIVE = new Set<string>(Object.values(TRANSFER_SYNTAXES))

/** Whether pixels in this transfer syntax may differ from the original (compared within 2 grey levels). */
export const isLossy = (transferSyntax: string) => ENCAPSULATED[transferSyntax]?.lossy ?? false

/** The largest frame decoded, in bytes of samples (a 16-bit 16k x 16k RGB frame is 1.5 GiB). */
export const MAX_FRAME_BYTES = 1 << 30

const PHOTOMETRICS = new Set([
  'MONOCHROME1',
  'MONOCHROME2',
  'RGB',
  'YBR_FULL',
  'YBR_FULL_422',
  'PALETTE COLOR',
  'YBR_RCT',
  'YBR_ICT',
])

/** What the pixel module says, checked and bounded before anything is allocated. */
export interface ImageDescription {
  transferSyntax: string
  rows: number
  columns: number
  frames: number
  samplesPerPixel: 1 | 3
  bitsAllocated: number
  bitsStored: number
  signed: boolean
  planarConfiguration: number
  photometric: string
  rescale?: { slope: number; intercept: number }
  /** The file's windows (the first is used), and its VOI LUT Function. */
  windows: Window[]
  voiFunction: VoiFunction
  patientId?: string
}

/**
 * Reads and checks the image attributes of `file`. `maxPixels` bounds Rows x Columns (the same
 * decompression-bomb guard as other images); frames are bounded by the pixel data they need.
 */
export function describeImage(file: DicomFile, maxPixels: number): ImageDescription {
  const ds = file.dataSet
  if (ds.has(TAGS.floatPixelData) || ds.has(TAGS.doubleFloatPixelData))
    throw new DicomError('float pixel data (7FE0,0008/0009) is not supported yet')
  if (!ds.has(TAGS.pixelData)) throw new DicomError('no Pixel Data (7FE0,0010): not an image (a report, plan or waveform?)')
  const ts = file.transferSyntax
  if (!NATIVE.has(ts) && !ENCAPSULATED[ts]) throw new DicomError(`transfer syntax ${ts} is not supported`)
  const rows = uint16(file, ds, TAGS.rows, 'Rows')
  const columns = uint16(file, ds, TAGS.columns, 'Columns')
  if (rows === 0 || columns === 0) throw new DicomError(`an image of ${rows} x ${columns} pixels`)
  if (rows * columns > maxPixels)
    throw new DicomError(`${rows} x ${columns} is larger than ${maxPixels} pixels (decompression-bomb guard)`)
  const frameList = numbers(ds, TAGS.numberOfFrames, 'Number of Frames', true)
  const frames = frameList.length ? frameList[0] : 1
  if (!(frames >= 1)) throw new DicomError(`Number of Frames is ${frames}`)
  const samples = uint16(file, ds, TAGS.samplesPerPixel, 'Samples per Pixel', 1)
  if (samples !== 1 && samples !== 3) throw new DicomError(`Samples per Pixel is ${samples}, not 1 or 3`)
  const bitsAllocated = uint16(file, ds, TAGS.bitsAllocated, 'Bits Allocated')
  if (bitsAllocated !== 1 && bitsAllocated !== 8 && bitsAllocated !== 16 && bitsAllocated !== 32)
    throw new DicomError(`Bits Allocated is ${bitsAllocated}, not 1, 8, 16 or 32`)
  const bitsStored = uint16(file, ds, TAGS.bitsStored, 'Bits Stored', bitsAllocated)
  if (bitsStored < 1 || bitsStored > bitsAllocated)
    throw new DicomError(`Bits Stored is ${bitsStored} with Bits Allocated ${bitsAllocated}`)
  const pixelRepresentation = uint16(file, ds, TAGS.pixelRepresentation, 'Pixel Representation', 0)
  const photometric = text(ds, TAGS.photometric) ?? (samples === 1 ? 'MONOCHROME2' : 'RGB')
  if (!PHOTOMETRICS.has(photometric)) throw new DicomError(`Photometric Interpretation ${photometric} is not supported`)
  if ((samples === 1) !== (photometric.startsWith('MONOCHROME') || photometric === 'PALETTE COLOR'))
    throw new DicomError(`Photometric Interpretation ${photometric} with ${samples} samples per pixel`)
  if (samples * bitsAllocated * rows * columns > MAX_FRAME_BYTES * 8)
    throw new DicomError(
      `one frame of ${rows} x ${columns} x ${samples} samples at ${bitsAllocated} bits is over the ${MAX_FRAME_BYTES}-byte limit`,
    )
  if (ds.has(TAGS.modalityLutSequence)) throw new DicomError('a Modality LUT Sequence (0028,3000) is not supported yet')
  const slope = numbers(ds, TAGS.rescaleSlope, 'Rescale Slope')
  const intercept = numbers(ds, TAGS.rescaleIntercept, 'Rescale Intercept')
  const centers = numbers(ds, TAGS.windowCenter, 'Window Center')
  const widths = numbers(ds, TAGS.windowWidth, 'Window Width')
  const fn = (text(ds, TAGS.voiLutFunction) || 'LINEAR').toUpperCase()
  if (fn !== 'LINEAR' && fn !== 'LINEAR_EXACT' && fn !== 'SIGMOID')
    throw new DicomError(`VOI LUT Function ${fn} is not supported`)
  return {
    transferSyntax: ts,
    rows,
    columns,
    frames,
    samplesPerPixel: samples,
    bitsAllocated,
    bitsStored,
    signed: pixelRepresentation === 1,
    planarConfiguration: uint16(file, ds, TAGS.planarConfiguration, 'Planar Configuration', 0),
    photometric,
    ...(slope.length && intercept.length ? { rescale: { slope: slope[0], intercept: intercept[0] } } : {}),
    windows: centers.length && widths.length ? [{ center: centers[0], width: widths[0] }] : [],
    voiFunction: fn,
    ...(text(ds, TAGS.patientId) ? { patientId: text(ds, TAGS.patientId) } : {}),
  }
}

// ---- Decode: frames to stored values ------------------------------------------------------

/** One frame's stored values, interleaved (`rows * columns * samples`), and their colour space. */
export interface StoredFrame {
  values: Float64Array
  photometric: string
}

/** The stored values of frame `index` (0-based). */
export async function decodeStored(file: DicomFile, img: ImageDescription, index: number): Promise<StoredFrame> {
  const px = file.dataSet.get(TAGS.pixelData)!
  const pixels = img.rows * img.columns
  const samples = img.samplesPerPixel
  if (!px.fragments) {
    if (ENCAPSULATED[img.transferSyntax]) throw new DicomError(`${img.transferSyntax} pixel data is not encapsulated`)
    return { values: nativeFrame(file, img, px.value, px.vr, index), photometric: img.photometric }
  }
  const codec = ENCAPSULATED[img.transferSyntax]
  if (!codec) throw new DicomError(`encapsulated pixel data in the uncompressed transfer syntax ${img.transferSyntax}`)
  const encoded = frameBytes(px.fragments, img.frames, index, codec.decoder)
  if (img.bitsAllocated === 1) throw new DicomError('compressed 1-bit pixel data is not supported')
  const bytesPerSample = img.bitsAllocated / 8
  if (codec.decoder === 'rle') {
    const bytes = decodeRle(encoded, pixels, samples, bytesPerSample)
    return { values: samplesOf(bytes, 0, pixels * samples, bytesPerSample, true, img), photometric: img.photometric }
  }
  checkCodestreamSize(encoded, img, codec.name)
  const out = await decodeFrame(codec.decoder, {
    width: img.columns,
    height: img.rows,
    bitsAllocated: img.bitsAllocated,
    bitsStored: img.bitsStored,
    samplesPerPixel: samples,
    pixelRepresentation: img.signed ? 1 : 0,
    planarConfiguration: img.planarConfiguration,
    photometric: img.photometric,
    encoded,
  })
  const need = pixels * samples * bytesPerSample
  if (out.bytes.length < need)
    throw new DicomError(
      `the ${codec.name} frame decodes to ${out.bytes.length} bytes; ${img.rows} x ${img.columns} x ${samples} needs ${need}`,
    )
  let values = samplesOf(out.bytes, 0, pixels * samples, bytesPerSample, true, img)
  if (samples === 3 && out.planarConfiguration === 1) values = interleave(values, pixels)
  return { values, photometric: out.photometric }
}

/** Bytes a native frame occupies (1-bit frames are packed, and need not end on a byte). */
function nativeFrame(file: DicomFile, img: ImageDescription, data: Buffer, vr: string, index: number): Float64Array {
  const pixels = img.rows * img.columns
  const samples = img.samplesPerPixel
  const littleEndian = file.littleEndian
  if (img.bitsAllocated === 1) {
    const bits = pixels * samples * img.frames
    if (data.length * 8 < bits) throw truncated(data.length, Math.ceil(bits / 8), img)
    const out = new Float64Array(pixels * samples)
    const first = index * pixels * samples
    for (let i = 0; i < out.length; i++) {
      const bit = first + i
      out[i] = (data[bit >> 3] >> (bit & 7)) & 1
    }
    return out
  }
  const bytesPerSample = img.bitsAllocated / 8
  // YBR_FULL_422 stores two luma samples and one pair of chroma samples per two pixels.
  const subsampled = img.photometric === 'YBR_FULL_422'
  const frameBytes = subsampled ? pixels * 2 * bytesPerSample : pixels * samples * bytesPerSample
  if (data.length < frameBytes * img.frames) throw truncated(data.length, frameBytes * img.frames, img)
  const start = index * frameBytes
  // Big endian OW data holds 16-bit words even where samples are 8 bits.
  const swapWords = !littleEndian && vr === 'OW' && bytesPerSample === 1
  if (subsampled) {
    const raw = samplesOf(data, start, pixels * 2, bytesPerSample, littleEndian, img, swapWords)
    return upsample422(raw, img.rows, img.columns)
  }
  let values = samplesOf(data, start, pixels * samples, bytesPerSample, littleEndian, img, swapWords)
  if (samples === 3 && img.planarConfiguration === 1) values = interleave(values, pixels)
  return values
}

const truncated = (have: number, need: number, img: ImageDescription) =>
  new DicomError(
    `the pixel data holds ${have} bytes; ${img.frames} frame(s) of ${img.rows} x ${img.columns} x ${img.samplesPerPixel} at ${img.bitsAllocated} bits need ${need} (a truncated file?)`,
  )

/**
 * `count` samples of `bytesPerSample` bytes from `data` at `start`, masked to Bits Stored and
 * sign-extended when Pixel Representation says signed (bits above Bits Stored may hold overlays).
 */
function samplesOf(
  data: Uint8Array,
  start: number,
  count: number,
  bytesPerSample: number,
  littleEndian: boolean,
  img: ImageDescription,
  swapWords = false,
): Float64Array {
  const out = new Float64Array(count)
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength)
  const bits = img.bitsStored
  const mask = bits >= 32 ? 0xffffffff : 2 ** bits - 1
  const signBit = 2 ** (bits - 1)
  for (let i = 0; i < count; i++) {
    const at = start + i * bytesPerSample
    let v =
      bytesPerSample === 1
        ? data[swapWords ? at ^ 1 : at]
        : bytesPerSample === 2
          ? view.getUint16(at, littleEndian)
          : view.getUint32(at, littleEndian)
    if (bits < 32) v = v % (mask + 1)
    if (img.signed && v >= signBit) v -= 2 * signBit
    out[i] = v
  }
  return out
}

/** Planar (RRR..GGG..BBB..) to interleaved (RGBRGB..). */
function interleave(planar: Float64Array, pixels: number): Float64Array {
  const out = new Float64Array(planar.length)
  for (let p = 0; p < pixels; p++) for (let s = 0; s < 3; s++) out[p * 3 + s] = planar[s * pixels + p]
  return out
}

/** YBR_FULL_422 (Y1 Y2 Cb Cr per pixel pair) to YBR_FULL, each chroma pair shared by both pixels. */
function upsample422(raw: Float64Array, rows: number, columns: number): Float64Array {
  const out = new Float64Array(rows * columns * 3)
  for (let p = 0; p < rows * columns; p += 2) {
    const k = p * 2
    for (const [q, y] of [
      [p, raw[k]],
      [p + 1, raw[k + 1]],
    ]) {
      if (q >= rows * columns) break
      out[q * 3] = y
      out[q * 3 + 1] = raw[k + 2]
      out[q * 3 + 2] = raw[k + 3]
    }
  }
  return out
}

/**
 * The fragments of frame `index`: by the Basic Offset Table when it has one, else one fragment
 * per frame, else split where a fragment begins a new codestream (JPEG's SOI, JPEG 2000's SOC).
 */
function frameBytes(
  px: { offsetTable: Buffer; fragments: Buffer[] },
  frames: number,
  index: number,
  decoder: string,
): Uint8Array {
  const { offsetTable, fragments } = px
  if (fragments.length === 0) throw new DicomError('encapsulated pixel data with no fragments')
  let groups: Buffer[][]
  if (frames === 1) groups = [fragments]
  else if (offsetTable.length >= 4 * frames && offsetTable.length % 4 === 0) {
    const offsets = Array.from({ length: offsetTable.length / 4 }, (_, i) => offsetTable.readUInt32LE(4 * i))
    // Offsets count from the first fragment's item tag; each fragment item has an 8-byte header.
    const starts: number[] = []
    let at = 0
    for (const f of fragments) {
      starts.push(at)
      at += 8 + f.length
    }
    groups = offsets.map((o, k) => {
      const first = starts.indexOf(o)
      const end = k + 1 < offsets.length ? offsets[k + 1] : at
      if (first < 0 || end <= o)
        throw new DicomError(`the Basic Offset Table's offset ${o} of frame ${k + 1} is not at a fragment`)
      return fragments.filter((_, j) => starts[j] >= o && starts[j] < end)
    })
  } else if (fragments.length === frames) groups = fragments.map((f) => [f])
  else {
    const starts = (f: Buffer) =>
      decoder === 'decodeJpeg2000' || decoder === 'decodeHtJpeg2000'
        ? f[0] === 0xff && f[1] === 0x4f && f[2] === 0xff && f[3] === 0x51
        : f[0] === 0xff && f[1] === 0xd8
    groups = []
    for (const f of fragments) {
      if (groups.length === 0 || starts(f)) groups.push([f])
      else groups[groups.length - 1].push(f)
    }
  }
  if (groups.length < frames)
    throw new DicomError(`the encapsulated pixel data holds ${groups.length} frame(s); Number of Frames says ${frames}`)
  const parts = groups[index]
  return parts.length === 1 ? parts[0] : Buffer.concat(parts)
}

/**
 * Checks that a JPEG, JPEG-LS or JPEG 2000 codestream's own size is the frame's, before the
 * decoder allocates by it: a small file must not make the decoder allocate for a larger image.
 */
function checkCodestreamSize(encoded: Uint8Array, img: ImageDescription, name: string): void {
  const size = codestreamSize(encoded)
  if (!size) throw new DicomError(`the ${name} frame has no readable image header`)
  if (size.width !== img.columns || size.height !== img.rows)
    throw new DicomError(`the ${name} frame is ${size.height} x ${size.width} pixels; the file says ${img.rows} x ${img.columns}`)
}

function codestreamSize(b: Uint8Array): { width: number; height: number } | undefined {
  const u16 = (i: number) => (b[i] << 8) | b[i + 1]
  const u32 = (i: number) => ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0
  // JPEG 2000: SOC then SIZ (Xsiz, Ysiz, XOsiz, YOsiz after Lsiz and Rsiz), at the start or, in a
  // JP2 file, inside its boxes.
  const limit = Math.min(b.length - 24, 4096)
  for (let i = 0; i <= limit; i++) {
    if (u16(i) === 0xff4f && u16(i + 2) === 0xff51) return { width: u32(i + 8) - u32(i + 16), height: u32(i + 12) - u32(i + 20) }
    if (i === 0 && u16(0) === 0xffd8) break
  }
  if (b.length < 4 || u16(0) !== 0xffd8) return undefined
  let i = 2
  while (i + 4 <= b.length) {
    if (b[i] !== 0xff) return undefined
    const marker = b[i + 1]
    if (marker === 0xff) {
      i++
      continue
    }
    const length = u16(i + 2)
    // SOF0-SOF15 (not DHT C4, JPG C8, DAC CC) and JPEG-LS's SOF55 (F7): P, Y, X.
    if ((marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) || marker === 0xf7) {
      if (i + 9 > b.length) return undefined
      return { height: u16(i + 5), width: u16(i + 7) }
    }
    if (marker === 0xd9 || marker === 0xda) return undefined
    i += 2 + length
  }
  return undefined
}

// ---- Modality LUT, photometric interpretation, window -------------------------------------

/** One frame as 8-bit RGB (`rows * columns * 3`), with the windowing asked for. */
export interface Rendered {
  rgb: Uint8Array
  /** The values after the modality LUT and the photometric conversion (what parity compares). */
  modality: Float64Array
  /** Channels of `modality` per pixel: 1 (monochrome) or 3 (colour). */
  channels: 1 | 3
}

/** decode -> modality LUT -> photometric interpretation -> window, for frame `index`. */
export async function renderFrame(
  file: DicomFile,
  img: ImageDescription,
  index: number,
  windowing: Windowing,
): Promise<Rendered> {
  const stored = await decodeStored(file, img, index)
  const pixels = img.rows * img.columns
  const rgb = new Uint8Array(pixels * 3)
  if (img.photometric.startsWith('MONOCHROME')) {
    const values = applyModality(stored.values, img)
    const range = outputRange(img.bitsStored, img.signed, img.rescale)
    const windows = windowing.kind === 'windows' ? windowing.windows : undefined
    if (windows) windows.forEach((w, c) => applyWindow(values, w, range, 'LINEAR', rgb, c, 3))
    else {
      const grey = new Uint8Array(pixels)
      greyTo8(values, img, windowing, range, grey)
      for (let p = 0; p < pixels; p++) rgb[p * 3] = rgb[p * 3 + 1] = rgb[p * 3 + 2] = grey[p]
    }
    if (img.photometric === 'MONOCHROME1') for (let i = 0; i < rgb.length; i++) rgb[i] = 255 - rgb[i]
    return { rgb, modality: values, channels: 1 }
  }
  // Colour: windows are for monochrome values; colour samples are scaled from their full range.
  // YBR_RCT and YBR_ICT come out of the JPEG 2000 decoder in RGB (its codestream's own transform).
  let values = stored.values
  let bits = img.bitsStored
  if (stored.photometric === 'PALETTE COLOR') ({ rgb: values, bits } = applyPalette(file, values))
  else if (stored.photometric === 'YBR_FULL' || stored.photometric === 'YBR_FULL_422') {
    if (img.bitsAllocated !== 8) throw new DicomError(`${stored.photometric} at ${img.bitsAllocated} bits is not supported`)
    ybrToRgb(values)
  } else if (stored.photometric !== 'RGB' && stored.photometric !== 'YBR_RCT' && stored.photometric !== 'YBR_ICT')
    throw new DicomError(`the decoder left the pixels in ${stored.photometric}`)
  const max = 2 ** bits - 1
  for (let i = 0; i < values.length; i++) rgb[i] = bits === 8 ? values[i] : to8(values[i] / max)
  return { rgb, modality: values, channels: 3 }
}

function greyTo8(values: Float64Array, img: ImageDescription, windowing: Windowing, range: OutputRange, out: Uint8Array) {
  if (windowing.kind === 'window') return applyWindow(values, windowing.window, range, 'LINEAR', out)
  if (img.windows.length) return applyWindow(values, img.windows[0], range, img.voiFunction, out)
  const { low, high } = percentileRange(values)
  applyRange(values, low, high, out)
}

/** Which frames a file gives: every one, or the middle one (`floor(frames / 2)`, 0-based). */
export const framesOf = (img: ImageDescription, frames: 'all' | 'middle') =>
  frames === 'all' ? Array.from({ length: img.frames }, (_, i) => i) : [Math.floor(img.frames / 2)]
