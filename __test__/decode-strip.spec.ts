import test from 'ava'

import type { ImageArray } from '../ts/data/arrays.js'
import { decodeImage } from '../ts/data/decode.js'
import { decodeStrip, stripLength, stripPadding } from '../ts/data/decode-strip.js'
import { rng } from './helpers.js'

/** Noise images: every pixel differs from its neighbours, the hardest case for a resize. */
function noise(count: number, height: number, width: number, channels: 1 | 3, seed: number): ImageArray {
  const next = rng(seed)
  const pixels = Uint8Array.from({ length: count * height * width * channels }, () => Math.floor(next() * 256))
  return { pixels, count, height, width, channels }
}

for (const [h, w, c, size] of [
  [28, 28, 1, 32],
  [28, 28, 3, 32],
  [28, 28, 1, 64],
  [28, 28, 3, 224],
  [30, 30, 1, 32],
  [32, 32, 3, 32],
  [20, 24, 3, 32],
  [28, 28, 1, 97],
] as const) {
  test(`strips resize ${h}x${w}x${c} to ${size} px exactly as one call per image`, async (t) => {
    const a = noise(12, h, w, c, h * 1000 + size)
    const positions = [0, 3, 4, 5, 11, 7]
    const strips = await decodeStrip(a, positions, size)
    const plane = h * w * c
    for (const [i, p] of positions.entries()) {
      const alone = await decodeImage(
        { raw: a.pixels.subarray(p * plane, (p + 1) * plane), width: w, height: h, channels: c },
        size,
      )
      t.true(strips[i].equals(alone), `image ${p}`)
    }
  })
}

test('downscaling keeps one call per image; strips stay under 16,384 output pixels', (t) => {
  t.is(stripPadding({ width: 64, height: 64 }, 32), undefined)
  t.is(stripPadding({ width: 28, height: 40 }, 32), undefined, 'the height shrinks')
  t.is(stripPadding({ width: 28, height: 28 }, 32), 7, 'whole output pixels: 7 source columns are 8 output ones')
  t.true(stripLength({ width: 28, height: 28 }, 224) * 224 * (28 + 2 * 4) <= 16384 * 28)
  t.is(stripLength({ width: 28, height: 28 }, 32), 128)
})
