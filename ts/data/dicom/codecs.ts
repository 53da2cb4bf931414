/**
 * The compressed transfer syntaxes' decoders: dcmjs-codecs (MIT), a WebAssembly build of the IJG
 * 6b 8/12/16-bit libraries as DCMTK uses them (JPEG baseline, extended, lossless), CharLS 2.3.4
 * (JPEG-LS), OpenJPEG 2.5.0 (JPEG 2000) and OpenJPH 0.18.2 (HTJ2K). No C compiler is needed to
 * install it and it runs the same on every platform. RLE is decoded in `rle.ts`.
 *
 * A decoder that fails leaves the WebAssembly instance in a state that is not safe to reuse (an
 * error thrown through its frames does not restore its stack pointer, and its context is not
 * freed), so after any failure the module is released and instantiated afresh for the next frame.
 */
import { createRequire } from 'node:module'

import { DicomError } from './parse.js'

interface CodecContext {
  getDecodedBuffer(): Uint8Array | undefined
  getPhotometricInterpretation(): string | undefined
  getPlanarConfiguration(): number | undefined
}
interface CodecsModule {
  Context: new (attrs: Record<string, unknown>) => CodecContext
  NativeCodecs: {
    initializeAsync(): Promise<void>
    isInitialized(): boolean
    release(): void
  } & Record<DecoderName, (context: CodecContext, parameters?: Record<string, unknown>) => CodecContext>
}

export type DecoderName = 'decodeJpeg' | 'decodeJpegLs' | 'decodeJpeg2000' | 'decodeHtJpeg2000'

let loaded: CodecsModule | undefined
let ready: Promise<CodecsModule> | undefined

function codecs(): Promise<CodecsModule> {
  ready ??= (async () => {
    // Required lazily: a process that reads no compressed DICOM file never loads it.
    loaded ??= createRequire(__filename)('dcmjs-codecs') as CodecsModule
    await loaded.NativeCodecs.initializeAsync()
    return loaded
  })()
  return ready
}

export interface EncodedFrame {
  width: number
  height: number
  bitsAllocated: number
  bitsStored: number
  samplesPerPixel: number
  pixelRepresentation: number
  planarConfiguration: number
  photometric: string
  encoded: Uint8Array
}

export interface DecodedFrame {
  /** Samples as the decoder wrote them: little endian, `bitsAllocated` wide, interleaved. */
  bytes: Uint8Array
  /** The colour space of `bytes` (a JPEG in YBR comes out in RGB). */
  photometric: string
  planarConfiguration: number
}

/** Decodes one frame with the named decoder; a codec failure is a DicomError with its message. */
export async function decodeFrame(decoder: DecoderName, frame: EncodedFrame): Promise<DecodedFrame> {
  let m = await codecs()
  // Another frame's failure may have released the module while this call waited for it.
  while (!m.NativeCodecs.isInitialized()) m = await codecs()
  try {
    const context = new m.Context({
      width: frame.width,
      height: frame.height,
      bitsAllocated: frame.bitsAllocated,
      bitsStored: frame.bitsStored,
      samplesPerPixel: frame.samplesPerPixel,
      pixelRepresentation: frame.pixelRepresentation,
      planarConfiguration: frame.planarConfiguration,
      photometricInterpretation: frame.photometric,
      encodedBuffer: frame.encoded,
    })
    // JPEG holding YBR is converted to RGB by the decoder; JPEG said to hold RGB is left as it is.
    const convertColorspaceToRgb = frame.photometric.startsWith('YBR')
    const out = m.NativeCodecs[decoder](context, { convertColorspaceToRgb })
    const bytes = out.getDecodedBuffer()
    if (!bytes) throw new Error('the decoder returned no pixels')
    // The decoded buffer is a view of the module's memory, which the next call reuses.
    return {
      bytes: Uint8Array.from(bytes),
      photometric: out.getPhotometricInterpretation() ?? frame.photometric,
      planarConfiguration: out.getPlanarConfiguration() ?? frame.planarConfiguration,
    }
  } catch (e) {
    reset(m)
    throw new DicomError(`the ${decoder.slice('decode'.length)} decoder failed: ${(e as Error).message}`)
  }
}

function reset(m: CodecsModule) {
  try {
    m.NativeCodecs.release()
  } catch {
    // released already
  }
  ready = undefined
}
