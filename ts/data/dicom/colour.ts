/**
 * After decoding, before the window: the modality LUT (Rescale Slope and Intercept) and the
 * colour conversions of the photometric interpretation (YBR_FULL to RGB, PALETTE COLOR through
 * its tables), each as pydicom computes it (`parity/dicom_reference.py` checks them).
 */
import { type DataSet, type DicomFile, DicomError, TAGS, tagName, uint16s } from './parse.js'
import type { ImageDescription } from './pixels.js'

/** Rescale Slope/Intercept, as pydicom's `apply_modality_lut` (monochrome only), in place. */
export function applyModality(values: Float64Array, img: ImageDescription): Float64Array {
  if (!img.rescale || !img.photometric.startsWith('MONOCHROME')) return values
  const { slope, intercept } = img.rescale
  for (let i = 0; i < values.length; i++) values[i] = values[i] * slope + intercept
  return values
}

/** YBR_FULL to RGB in 32-bit floats, as PS3.3 C.7.6.3.1.2 gives it and pydicom computes it. */
export function ybrToRgb(values: Float64Array): void {
  const f = Math.fround
  const crR = f(1.402)
  const cbG = f((-0.114 * 1.772) / 0.587)
  const crG = f((-0.299 * 1.402) / 0.587)
  const cbB = f(1.772)
  const round = (x: number) => Math.min(255, Math.max(0, Math.floor(f(x + 0.5))))
  for (let i = 0; i < values.length; i += 3) {
    const y = f(values[i])
    const cb = f(values[i + 1] - 128)
    const cr = f(values[i + 2] - 128)
    values[i] = round(f(f(y + f(cb * 0)) + f(cr * crR)))
    values[i + 1] = round(f(f(y + f(cb * cbG)) + f(cr * crG)))
    values[i + 2] = round(f(f(y + f(cb * cbB)) + f(cr * 0)))
  }
}

/** PALETTE COLOR: indices through the red, green and blue tables into RGB entries, and their depth. */
export function applyPalette(file: DicomFile, values: Float64Array): { rgb: Float64Array; bits: number } {
  const ds = file.dataSet
  if (ds.has(TAGS.segmentedRedData)) throw new DicomError('segmented palette colour tables are not supported yet')
  const luts = [
    [TAGS.redDescriptor, TAGS.redData],
    [TAGS.greenDescriptor, TAGS.greenData],
    [TAGS.blueDescriptor, TAGS.blueData],
  ].map(([d, t]) => paletteTable(file, ds, d, t))
  const { entries, firstMapped, bits } = luts[0]
  if (luts.some((l) => l.entries !== entries || l.bits !== bits))
    throw new DicomError('the palette tables differ in length or depth')
  const rgb = new Float64Array(values.length * 3)
  for (let i = 0; i < values.length; i++) {
    const k = Math.min(Math.max(values[i] - firstMapped, 0), entries - 1)
    for (let c = 0; c < 3; c++) rgb[i * 3 + c] = luts[c].table[k]
  }
  return { rgb, bits }
}

function paletteTable(file: DicomFile, ds: DataSet, descriptorTag: number, dataTag: number) {
  const d = uint16s(file, ds, descriptorTag)
  const data = ds.get(dataTag)?.value
  if (d.length !== 3 || !data) throw new DicomError(`the palette table ${tagName(dataTag)} or its descriptor is missing`)
  const entries = d[0] === 0 ? 65536 : d[0]
  // The first mapped value is signed when the pixels are (US or SS, the same bits).
  const firstMapped = d[1]
  // Entries are 8 or 16 bits wide, whichever the table's size says (the descriptor's depth is nominal).
  const bits = (data.length / entries) * 8
  if (bits !== 8 && bits !== 16)
    throw new DicomError(`the palette table ${tagName(dataTag)} holds ${data.length} bytes for ${entries} entries`)
  const table = new Float64Array(entries)
  for (let i = 0; i < entries; i++)
    table[i] = bits === 8 ? data[i] : file.littleEndian ? data.readUInt16LE(2 * i) : data.readUInt16BE(2 * i)
  return { entries, firstMapped, bits, table }
}
