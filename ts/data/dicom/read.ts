/**
 * One DICOM file to the engine's input: read as a bounded regular file, parsed (`parse.ts`),
 * its frames rendered to 8-bit RGB (`pixels.ts`, `window.ts`) and resized by the same sharp call
 * as every other image. Every problem is an Error that says what is wrong; the dataset loader
 * turns it into a skipped row with that reason (or a failure with `strict`).
 */
import { DEFAULT_MAX_PIXELS, MAX_IMAGE_FILE_BYTES, decodeImage, readRegularFile } from '../decode.js'
import { DicomError, parseDicom } from './parse.js'
import { type ImageDescription, describeImage, framesOf, renderFrame } from './pixels.js'
import type { Windowing } from './window.js'

export { hasDicomPreamble } from './parse.js'

/** How DICOM files become images: the windowing and which frames of a multi-frame file. */
export interface DicomReadOptions {
  windowing: Windowing
  /** `all`: every frame is an image; `middle`: the middle frame only (default). */
  frames: 'all' | 'middle'
}

export const DEFAULT_DICOM_OPTIONS: DicomReadOptions = { windowing: { kind: 'auto' }, frames: 'middle' }

export interface DicomImages {
  /** One `size * size * 3` RGB image per frame read. */
  images: Buffer[]
  /** The 0-based frame of each image. */
  frames: number[]
  /** Frames in the file. */
  frameCount: number
  patientId?: string
}

/** The images of the DICOM file at `file`; a problem is an Error saying what is wrong and where. */
export async function readDicomFile(
  file: string,
  size: number,
  opts: DicomReadOptions = DEFAULT_DICOM_OPTIONS,
  maxPixels = DEFAULT_MAX_PIXELS,
): Promise<DicomImages> {
  return dicomImages(await readRegularFile(file, MAX_IMAGE_FILE_BYTES), size, opts, maxPixels)
}

/** Whether `bytes` begin with DICOM's 128-byte preamble and `DICM`. */
export const isDicomBytes = (bytes: Uint8Array): boolean =>
  bytes.length >= 132 && Buffer.from(bytes.buffer, bytes.byteOffset + 128, 4).toString('latin1') === 'DICM'

/** The images of a DICOM file already in memory (read bounded by the caller). */
export async function dicomImages(
  bytes: Buffer,
  size: number,
  opts: DicomReadOptions = DEFAULT_DICOM_OPTIONS,
  maxPixels = DEFAULT_MAX_PIXELS,
): Promise<DicomImages> {
  let img: ImageDescription
  let parsed
  try {
    parsed = parseDicom(bytes)
    img = describeImage(parsed, maxPixels)
  } catch (e) {
    throw asDicomError(e)
  }
  const frames = framesOf(img, opts.frames)
  const images: Buffer[] = []
  for (const k of frames) {
    let rgb: Uint8Array
    try {
      rgb = (await renderFrame(parsed, img, k, opts.windowing)).rgb
    } catch (e) {
      const err = asDicomError(e)
      throw img.frames > 1 ? new DicomError(`frame ${k + 1} of ${img.frames}: ${err.message}`) : err
    }
    images.push(await decodeImage({ raw: rgb, width: img.columns, height: img.rows, channels: 3 }, size, maxPixels))
  }
  return { images, frames, frameCount: img.frames, ...(img.patientId ? { patientId: img.patientId } : {}) }
}

/** A RangeError or TypeError from reading past a buffer is said as a torn file. */
function asDicomError(e: unknown): DicomError {
  if (e instanceof DicomError) return e
  if (e instanceof RangeError || e instanceof TypeError)
    return new DicomError(`corrupt or truncated DICOM data (${(e as Error).message})`)
  return new DicomError((e as Error).message ?? String(e))
}
