/**
 * Many small array images (MNIST, MedMNIST) resized in one sharp call instead of one call each.
 *
 * Per image, sharp's fixed cost dominates a 28 x 28 resize. `bench/decode-strip.ts` on MNIST
 * 28 -> 32 px, 5,000 images, 5 alternated rounds, two quiet runs on the 2-core Intel VM: one call
 * per image 884 (823-927) and 848 (795-913) images/s, strips 15,979 (15,922-20,163) and 17,958
 * (16,109-18,812) images/s, median (min-max); `bench/results/2026-12-06-vm-decode-strip-*`. The images are laid side by side, each padded left and right with copies of its
 * edge columns, and the strip is resized at the same scale in one call. Upscaling interpolates
 * from a few source pixels around each output pixel, so with padding wider than that reach and
 * tile borders that map to whole output pixels, every output pixel sees the same source values
 * as when its image is resized alone, where libvips extends the edges the same way: the result
 * is identical byte for byte (`data.spec.ts` checks it against per-image decodes at several
 * sizes). Downscaling (whose reach grows with the ratio, and whose shrink step works in blocks)
 * keeps the per-image path.
 */
import sharp from 'sharp'

import type { ImageArray } from './arrays.js'

/** Source pixels beyond the edge that an upscaling kernel may read, with a margin. */
const REACH = 4

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b))

/**
 * The edge padding for `width -> size`: at least {@link REACH} columns and a whole number of
 * output pixels per padded tile; undefined where strips do not apply (downscaling, or height
 * downscaled).
 */
export function stripPadding(a: Pick<ImageArray, 'width' | 'height'>, size: number): number | undefined {
  if (size < a.width || size < a.height) return undefined
  const unit = a.width / gcd(a.width, size) // padding in steps of whole output pixels
  return Math.ceil(REACH / unit) * unit
}

/** Images per strip: at most 128, and a strip at most 16,384 output pixels wide. */
export function stripLength(a: Pick<ImageArray, 'width' | 'height'>, size: number): number {
  const pad = stripPadding(a, size) ?? 0
  return Math.max(1, Math.min(128, Math.floor(16384 / ((size * (a.width + 2 * pad)) / a.width))))
}

/** `size x size x 3` RGB bytes of each image at `positions`, as `decodeImage` would give them. */
export async function decodeStrip(a: ImageArray, positions: readonly number[], size: number): Promise<Buffer[]> {
  const pad = stripPadding(a, size)
  if (pad === undefined) throw new Error('strips apply to upscaling only')
  const { width: w, height: h, channels: c } = a
  const k = positions.length
  const tile = w + 2 * pad
  const strip = Buffer.alloc(h * tile * k * c)
  const plane = h * w * c
  positions.forEach((position, i) => {
    const src = a.pixels.subarray(position * plane, (position + 1) * plane)
    for (let y = 0; y < h; y++) {
      const row = (y * tile * k + i * tile) * c
      for (let x = 0; x < tile; x++) {
        const from = (y * w + Math.min(w - 1, Math.max(0, x - pad))) * c
        for (let ch = 0; ch < c; ch++) strip[row + x * c + ch] = src[from + ch]
      }
    }
  })
  const outTile = (size * tile) / w
  const offset = (size * pad) / w
  const out = await sharp(strip, { raw: { width: tile * k, height: h, channels: c } })
    .resize({ width: outTile * k, height: size, fit: 'fill' })
    .removeAlpha()
    .toColourspace('srgb')
    .raw({ depth: 'uchar' })
    .toBuffer()
  return positions.map((_, i) => {
    const img = Buffer.alloc(size * size * 3)
    for (let y = 0; y < size; y++) {
      const from = (y * outTile * k + i * outTile + offset) * 3
      out.copy(img, y * size * 3, from, from + size * 3)
    }
    return img
  })
}
