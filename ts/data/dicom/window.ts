/**
 * Intensity windows: from values after the modality LUT (Hounsfield units for CT) to 8 bits.
 *
 * The window function is DICOM's linear one (PS3.3 C.11.2.1.2.1), computed in the order pydicom's
 * `apply_windowing` computes it, into pydicom's output range [yMin, yMax] (the stored range after
 * the rescale); the 8-bit value is then `floor((y - yMin) / (yMax - yMin) * 255 + 0.5)`. With
 * c' = center - 0.5 and w' = width - 1:
 *   x <= c' - w'/2       -> yMin
 *   x >  c' + w'/2       -> yMax
 *   otherwise            -> ((x - c') / w' + 0.5) * (yMax - yMin) + yMin
 * LINEAR_EXACT (C.11.2.1.3.2) uses c and w as they are, SIGMOID (C.11.2.1.3.1)
 * `(yMax - yMin) / (1 + exp(-4 (x - c) / w)) + yMin`; both only for the file's own window.
 * Computing in the same order as the reference makes the 8-bit outputs equal bit for bit
 * (parity/dicom_reference.py checks it on pydicom's corpus).
 */
import { DicomError } from './parse.js'

export interface Window {
  center: number
  width: number
}

/**
 * Named windows (center/width in Hounsfield units), as radiologists' viewers and the RSNA
 * intracranial-haemorrhage entries use them.
 */
export const WINDOW_PRESETS: Readonly<Record<string, Window>> = Object.freeze({
  brain: { center: 40, width: 80 },
  subdural: { center: 80, width: 200 },
  bone: { center: 600, width: 2800 },
  lung: { center: -600, width: 1500 },
  mediastinum: { center: 50, width: 350 },
  soft: { center: 40, width: 400 },
})

/**
 * How monochrome images become 8 bits: `auto` (the file's first window, else the 0.5-99.5
 * percentiles of the image), one window for all three channels, or three windows, one per channel.
 */
export type Windowing =
  { kind: 'auto' } | { kind: 'window'; window: Window } | { kind: 'windows'; windows: [Window, Window, Window] }

/** `lung` or `C,W` (`-600,1500`); `where` names the option in the message. */
export function parseWindow(spec: string, where: string, separator = ','): Window {
  const preset = Object.hasOwn(WINDOW_PRESETS, spec) ? WINDOW_PRESETS[spec] : undefined
  if (preset) return { ...preset }
  const parts = spec.split(separator).map((s) => s.trim())
  const [center, width] = parts.map(Number)
  if (parts.length !== 2 || parts.some((p) => p === '') || !Number.isFinite(center) || !Number.isFinite(width) || width < 1)
    throw new RangeError(
      `${where}: "${spec}" is neither a preset (${Object.keys(WINDOW_PRESETS).join(', ')}) nor CENTER${separator}WIDTH with a width of at least 1`,
    )
  return { center, width }
}

/** `brain,subdural,bone`, or windows as `C/W` (`40/80,80/200,600/2800`): exactly three. */
export function parseWindows(spec: string, where: string): [Window, Window, Window] {
  const parts = spec.split(',').map((s) => s.trim())
  if (parts.length !== 3)
    throw new RangeError(`${where}: "${spec}" must name three windows (one per channel), e.g. brain,subdural,bone`)
  return parts.map((p) => parseWindow(p, where, '/')) as [Window, Window, Window]
}

/** The output range pydicom's windowing maps into (PS3.3 C.11.2.1.2: the modality output's range). */
export interface OutputRange {
  yMin: number
  yMax: number
}

export function outputRange(bitsStored: number, signed: boolean, rescale?: { slope: number; intercept: number }): OutputRange {
  let yMin = signed ? -(2 ** (bitsStored - 1)) : 0
  let yMax = signed ? 2 ** (bitsStored - 1) - 1 : 2 ** bitsStored - 1
  if (rescale) {
    yMin = yMin * rescale.slope + rescale.intercept
    yMax = yMax * rescale.slope + rescale.intercept
  }
  return { yMin, yMax }
}

export type VoiFunction = 'LINEAR' | 'LINEAR_EXACT' | 'SIGMOID'

/** `values` (after the modality LUT) through one window into 8 bits, every `stride`-th into `out`. */
export function applyWindow(
  values: Float64Array,
  window: Window,
  range: OutputRange,
  fn: VoiFunction,
  out: Uint8Array,
  offset = 0,
  stride = 1,
): void {
  const { yMin, yMax } = range
  const yRange = yMax - yMin
  if (yRange === 0) throw new DicomError('the window output range is empty (Rescale Slope 0?)')
  let center = window.center
  let width = window.width
  if (fn === 'LINEAR') {
    if (width < 1) throw new DicomError(`Window Width ${width} is below 1, which the LINEAR window function does not allow`)
    center -= 0.5
    width -= 1
  } else if (width <= 0) throw new DicomError(`Window Width ${width} is not positive`)
  const low = center - width / 2
  const high = center + width / 2
  for (let i = 0; i < values.length; i++) {
    const x = values[i]
    let y: number
    if (fn === 'SIGMOID') y = yRange / (1 + Math.exp((-4 * (x - center)) / width)) + yMin
    else if (x <= low) y = yMin
    else if (x > high) y = yMax
    else y = ((x - center) / width + 0.5) * yRange + yMin
    out[offset + i * stride] = to8((y - yMin) / yRange)
  }
}

/** [0, 1] to 0..255, rounding half up and clamping. */
export const to8 = (unit: number) => {
  const v = Math.floor(unit * 255 + 0.5)
  return v < 0 ? 0 : v > 255 ? 255 : v
}

/**
 * The `q`-th percentile (0..100) of sorted `values`, interpolated linearly between the two
 * nearest ranks exactly as numpy's default (`method='linear'`) computes it.
 */
export function percentile(sorted: Float64Array, q: number): number {
  const n = sorted.length
  const quantile = q / 100
  const virtual = n * quantile + (1 + quantile * (1 - 1 - 1)) - 1
  const below = Math.floor(virtual)
  const lo = Math.min(Math.max(below, 0), n - 1)
  const hi = Math.min(Math.max(below + 1, 0), n - 1)
  const gamma = virtual - below
  const a = sorted[lo]
  const b = sorted[hi]
  const diff = b - a
  return gamma >= 0.5 ? b - diff * (1 - gamma) : a + diff * gamma
}

/** The 0.5 and 99.5 percentiles of `values` (the image's own window when the file has none). */
export function percentileRange(values: Float64Array): { low: number; high: number } {
  const sorted = Float64Array.from(values).sort()
  return { low: percentile(sorted, 0.5), high: percentile(sorted, 99.5) }
}

/** `values` stretched from [low, high] to 0..255 (everything 0 when the image is constant). */
export function applyRange(values: Float64Array, low: number, high: number, out: Uint8Array, offset = 0, stride = 1): void {
  const span = high - low
  for (let i = 0; i < values.length; i++) {
    const t = span > 0 ? (values[i] - low) / span : 0
    out[offset + i * stride] = to8(t < 0 ? 0 : t > 1 ? 1 : t)
  }
}
