/**
 * Heat maps as pictures: a map in [0, 1] through the jet colour map, blended over the image at
 * half weight and rescaled so the brightest channel is 255, as pytorch-grad-cam's
 * `show_cam_on_image(img, mask, use_rgb=True, image_weight=0.5)` presents them. Jet is the
 * standard piecewise-linear one (blue at 0, through cyan, yellow, to red at 1), the curve
 * OpenCV's `COLORMAP_JET` table samples.
 */
import sharp from 'sharp'

const clamp01 = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v)

/** The jet colour of `v` in [0, 1], channels in [0, 1]. */
export function jet(v: number): [number, number, number] {
  const x = clamp01(v)
  return [clamp01(1.5 - Math.abs(4 * x - 3)), clamp01(1.5 - Math.abs(4 * x - 2)), clamp01(1.5 - Math.abs(4 * x - 1))]
}

/**
 * The image (`rgb`, `width x height x 3` bytes) with `map` (`width x height`, in [0, 1]) blended
 * over it; 8-bit RGB of the same size.
 */
export function overlay(rgb: Uint8Array, map: Float32Array, imageWeight = 0.5): Uint8Array {
  if (rgb.length !== map.length * 3) throw new Error(`overlay: ${rgb.length} image bytes for a map of ${map.length} pixels`)
  const mixed = new Float32Array(rgb.length)
  let max = 0
  for (let p = 0; p < map.length; p++) {
    // The map is quantised to 8 bits first, as the colour map is applied to uint8(255 * mask).
    const colour = jet(Math.round(clamp01(map[p]) * 255) / 255)
    for (let c = 0; c < 3; c++) {
      const v = (1 - imageWeight) * colour[c] + (imageWeight * rgb[p * 3 + c]) / 255
      mixed[p * 3 + c] = v
      if (v > max) max = v
    }
  }
  const out = new Uint8Array(rgb.length)
  for (let i = 0; i < mixed.length; i++) out[i] = Math.round((255 * mixed[i]) / (max || 1))
  return out
}

/** A PNG of 8-bit RGB pixels, enlarged `scale` times with nearest neighbours (small inputs stay legible). */
export async function rgbPng(rgb: Uint8Array, width: number, height: number, scale = 1): Promise<Buffer> {
  let img = sharp(Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength), { raw: { width, height, channels: 3 } })
  if (scale > 1) img = img.resize(width * scale, height * scale, { kernel: 'nearest' })
  return img.png().toBuffer()
}
