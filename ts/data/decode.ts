/**
 * One image to the engine's input: decoded by sharp (libvips, off the event loop), grey and alpha
 * made plain RGB, 16-bit scaled to 8, and resized to `size` x `size` (fit `fill`, sharp's
 * default Lanczos-3). The dataset cache and a loaded model's inputs go through this same
 * function, so a model sees at prediction time what it saw in training.
 *
 * A file is treated as possibly hostile: opened without blocking (a FIFO must not hang us),
 * checked to be a regular file and bounded in size before a byte is read, and read whole into
 * memory (encoded images are small) so sharp never opens the path itself.
 */
import { constants } from 'node:fs'
import { open } from 'node:fs/promises'

import sharp from 'sharp'

/** The largest encoded image file read (a 100-megapixel 16-bit TIFF is 600 MB uncompressed). */
export const MAX_IMAGE_FILE_BYTES = 1 << 30
/** The largest image accepted, in pixels (decompression-bomb guard), unless told otherwise. */
export const DEFAULT_MAX_PIXELS = 100_000_000

/** What to decode: a file, an encoded image in memory, or raw pixels of any size. */
export type ImageSource =
  { file: string } | { encoded: Uint8Array } | { raw: Uint8Array; width: number; height: number; channels: 1 | 2 | 3 | 4 }

/** Reads a regular file of at most `maxBytes`, refusing FIFOs, devices and folders. */
export async function readRegularFile(file: string, maxBytes: number): Promise<Buffer> {
  const handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK)
  try {
    const st = await handle.stat()
    if (!st.isFile()) throw new Error('not a regular file')
    if (st.size > maxBytes) throw new Error(`${st.size} bytes is over the ${maxBytes}-byte limit`)
    const buf = Buffer.alloc(st.size)
    let at = 0
    while (at < st.size) {
      const { bytesRead } = await handle.read(buf, at, st.size - at, at)
      if (bytesRead === 0) break
      at += bytesRead
    }
    if (at !== st.size) throw new Error('the file shrank while it was read')
    return buf
  } finally {
    await handle.close()
  }
}

/** `size * size * 3` RGB bytes of `source`. */
export async function decodeImage(source: ImageSource, size: number, maxPixels = DEFAULT_MAX_PIXELS): Promise<Buffer> {
  const img =
    'raw' in source
      ? sharp(Buffer.from(source.raw.buffer, source.raw.byteOffset, source.raw.byteLength), {
          raw: { width: source.width, height: source.height, channels: source.channels },
        })
      : sharp('file' in source ? await readRegularFile(source.file, MAX_IMAGE_FILE_BYTES) : Buffer.from(source.encoded), {
          limitInputPixels: maxPixels,
          failOn: 'truncated',
        })
  return img
    .resize({ width: size, height: size, fit: 'fill' })
    .removeAlpha()
    .toColourspace('srgb')
    .raw({ depth: 'uchar' })
    .toBuffer()
}
