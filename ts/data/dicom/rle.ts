/**
 * RLE Lossless (PS3.5 Annex G): a 64-byte header of segment offsets, then one PackBits segment
 * per byte plane, the most significant byte of each sample first. Decoded here (it is a dozen
 * lines of PackBits) so that every offset and run is checked against the frame's size.
 */
import { DicomError } from './parse.js'

/**
 * One RLE frame into `pixels * samples` little-endian samples of `bytesPerSample` bytes each,
 * interleaved (pixel by pixel), as the uncompressed syntaxes store them.
 */
export function decodeRle(frame: Uint8Array, pixels: number, samples: number, bytesPerSample: number): Uint8Array {
  if (frame.length < 64) throw new DicomError(`an RLE frame of ${frame.length} bytes is shorter than its 64-byte header`)
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength)
  const segments = view.getUint32(0, true)
  const expected = samples * bytesPerSample
  if (segments !== expected)
    throw new DicomError(`an RLE frame has ${segments} segments; ${samples} samples of ${bytesPerSample} bytes need ${expected}`)
  const offsets = Array.from({ length: segments }, (_, i) => view.getUint32(4 + 4 * i, true))
  const out = new Uint8Array(pixels * expected)
  for (let s = 0; s < segments; s++) {
    const start = offsets[s]
    const end = s + 1 < segments ? offsets[s + 1] : frame.length
    if (start < 64 || start > end || end > frame.length)
      throw new DicomError(`RLE segment ${s + 1} has offsets ${start}..${end}, outside the ${frame.length}-byte frame`)
    // Segment s holds byte (bytesPerSample - 1 - s % bytesPerSample) of sample floor(s / bytesPerSample).
    const sample = Math.floor(s / bytesPerSample)
    const byte = bytesPerSample - 1 - (s % bytesPerSample)
    const at = (p: number) => p * expected + sample * bytesPerSample + byte
    let p = 0
    let i = start
    while (i < end && p < pixels) {
      const n = (frame[i++] << 24) >> 24
      if (n >= 0) {
        const count = n + 1
        if (i + count > end) throw new DicomError(`RLE segment ${s + 1} runs past its end (a literal run of ${count} bytes)`)
        // Bytes past the frame's pixels (an encoder's padding) are dropped, as other readers do.
        for (let k = 0; k < count; k++, i++) if (p < pixels) out[at(p++)] = frame[i]
      } else if (n !== -128) {
        const count = 1 - n
        if (i >= end) throw new DicomError(`RLE segment ${s + 1} ends inside a repeat run`)
        const v = frame[i++]
        for (let k = 0; k < count && p < pixels; k++) out[at(p++)] = v
      }
    }
    if (p !== pixels) throw new DicomError(`RLE segment ${s + 1} decodes to ${p} bytes, not the frame's ${pixels}`)
  }
  return out
}
