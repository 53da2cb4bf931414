/**
 * Markup helpers of the report: escaping, number formatting and the three kinds of inline SVG plot
 * it draws (lines with error bars, bars, a heat map). Hand-built so that the report stays one file
 * that opens offline; every drawn data mark has class `mark` so a test can find it.
 */
import { isFiniteNumber } from './stats.js'

/** Text from `results.json` may be hostile: everything the report shows goes through this. */
export function escapeHtml(value: unknown): string {
  return String(value).replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string,
  )
}

export const NO_VALUE = '–'

/** The most marks one line plot draws: a series beyond its share is thinned (see {@link linePlot}). */
export const MAX_PLOT_POINTS = 4000
/** The largest confusion matrix drawn, in classes (a 100 x 100 map is 10,000 cells). */
export const MAX_HEATMAP_CLASSES = 100

/** Smallest and largest of `xs`, by a loop: `Math.min(...xs)` overflows the stack on a long array. */
function extent(xs: Iterable<number>): [number, number] {
  let [lo, hi] = [Infinity, -Infinity]
  for (const x of xs) {
    if (x < lo) lo = x
    if (x > hi) hi = x
  }
  return [lo, hi]
}

const ordinal = (k: number) => {
  const tens = k % 100
  const suffix = tens >= 11 && tens <= 13 ? 'th' : (['th', 'st', 'nd', 'rd'][k % 10] ?? 'th')
  return `${k}${suffix}`
}

/** Every `k`-th point of a sorted series and its last, so that it keeps at most `max` points. */
function thin(points: Point[], max: number): { points: Point[]; every: number } {
  if (points.length <= max) return { points, every: 1 }
  const every = Math.ceil(points.length / Math.max(1, max - 1))
  const kept = points.filter((_, i) => i % every === 0)
  if (kept[kept.length - 1] !== points[points.length - 1]) kept.push(points[points.length - 1])
  return { points: kept, every }
}

/** A number with `digits` decimals, or an en dash for NaN, null, infinities and non-numbers. */
export const fmt = (x: unknown, digits = 3): string => (isFiniteNumber(x) ? x.toFixed(digits) : NO_VALUE)

/** About three significant digits, without exponents for the ranges a report shows. */
export function fmtSig(x: unknown): string {
  if (!isFiniteNumber(x)) return NO_VALUE
  const abs = Math.abs(x)
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3
  return x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 })
}

export const fmtPercent = (f: unknown): string => (isFiniteNumber(f) ? `${+(f * 100).toPrecision(3)}%` : NO_VALUE)

/** Coordinates are rounded to 0.1 px, and a non-finite one (which callers filter out) cannot reach an attribute. */
const px = (v: number): string => (Number.isFinite(v) ? String(Math.round(v * 10) / 10) : '0')

/** About `count` round tick values, the first at or below `min` and the last at or above `max`. */
export function niceTicks(min: number, max: number, count = 5): number[] {
  const raw = (max - min) / count
  if (!(raw > 0 && Number.isFinite(raw))) return [min]
  const magnitude = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => raw <= s) ?? 10 * magnitude
  const ticks: number[] = []
  const last = Math.ceil(max / step - 1e-9) * step
  for (let t = Math.floor(min / step + 1e-9) * step; t <= last + step * 1e-9; t += step) ticks.push(+t.toPrecision(12))
  return ticks
}

/** Tick labels with as many decimals as the step needs, so that 0.6 and 0.65 read alike (0.60, 0.65). */
const tickFormat = (ticks: number[]) => {
  const step = ticks.length > 1 ? ticks[1] - ticks[0] : 1
  const decimals = Math.min(6, Math.max(0, Math.ceil(-Math.log10(step) - 1e-9)))
  return (v: number) => (Math.abs(v) >= 1000 ? fmtSig(v) : v.toFixed(decimals))
}

const W = 520
const H = 300
const M = { top: 16, right: 16, bottom: 46, left: 58 }

function svg(title: string, width: number, height: number, body: string): string {
  const t = escapeHtml(title)
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="${t}"><title>${t}</title>${body}</svg>`
}

/** A plot's frame; without data it says so in words instead of drawing empty axes. */
export function figure(name: string, title: string, svgMarkup: string | null, after = ''): string {
  const attrs = `class="plot" data-plot="${escapeHtml(name)}"`
  const caption = `<figcaption>${escapeHtml(title)}</figcaption>`
  if (svgMarkup === null) return `<figure ${attrs} data-empty="true">${caption}<p class="no-data">no data</p></figure>`
  return `<figure ${attrs}>${caption}${svgMarkup}${after}</figure>`
}

const legend = (items: { label: string; color: string; dashed?: boolean }[]) =>
  `<ul class="legend">${items
    .map(
      (i) =>
        `<li><span class="swatch${i.dashed ? ' dashed' : ''}" style="border-color:${escapeHtml(i.color)}"></span>${escapeHtml(i.label)}</li>`,
    )
    .join('')}</ul>`

const text = (x: number, y: number, s: string, extra = '') => `<text x="${px(x)}" y="${px(y)}"${extra}>${escapeHtml(s)}</text>`

function axes(xTicks: [number, string][], yTicks: [number, string][], xLabel: string, yLabel: string): string {
  const bottom = H - M.bottom
  const grid = yTicks
    .map(
      ([y, s]) =>
        `<line class="grid" x1="${M.left}" x2="${W - M.right}" y1="${px(y)}" y2="${px(y)}"/>${text(M.left - 6, y + 4, s, ' text-anchor="end"')}`,
    )
    .join('')
  const xs = xTicks
    .map(
      ([x, s]) =>
        `<line class="tick" x1="${px(x)}" x2="${px(x)}" y1="${bottom}" y2="${bottom + 5}"/>${text(x, bottom + 18, s, ' text-anchor="middle"')}`,
    )
    .join('')
  const frame = `<line class="axis" x1="${M.left}" x2="${W - M.right}" y1="${bottom}" y2="${bottom}"/><line class="axis" x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${bottom}"/>`
  const labels =
    text((M.left + W - M.right) / 2, H - 8, xLabel, ' text-anchor="middle" class="axis-label"') +
    text(
      14,
      (M.top + bottom) / 2,
      yLabel,
      ` text-anchor="middle" class="axis-label" transform="rotate(-90 14 ${px((M.top + bottom) / 2)})"`,
    )
  return grid + frame + xs + labels
}

export interface Point {
  x: number
  y: number
  /** Half-height of the error bar (a standard deviation); none when not finite. */
  err?: number
}
export interface Series {
  label: string
  color: string
  dashed?: boolean
  points: Point[]
}
export interface LinePlot {
  name: string
  title: string
  xLabel: string
  yLabel: string
  logX?: boolean
  /** Tick positions on x (default: the x values of the data) and their labels. */
  xTicks?: number[]
  xFormat?: (x: number) => string
  /** y range to include (e.g. [0, 1] for a metric); widened to fit the data and its error bars. */
  yInclude?: number[]
  series: Series[]
}

/**
 * Lines with error bars. A plot draws at most {@link MAX_PLOT_POINTS} marks: a series longer than
 * its share (100,000 epochs, say) is thinned to every k-th point and its last, and a note under
 * the plot says so.
 */
export function linePlot(p: LinePlot): string {
  const finite = p.series
    .map((s) => ({ ...s, points: s.points.filter((q) => isFiniteNumber(q.x) && isFiniteNumber(q.y) && (!p.logX || q.x > 0)) }))
    .filter((s) => s.points.length > 0)
  if (finite.length === 0) return figure(p.name, p.title, null)
  const share = Math.max(2, Math.floor(MAX_PLOT_POINTS / finite.length))
  const notes: string[] = []
  const series = finite.map((s) => {
    const sorted = [...s.points].sort((a, b) => a.x - b.x)
    const { points, every } = thin(sorted, share)
    if (every > 1)
      notes.push(`${s.label}: ${sorted.length.toLocaleString('en-US')} points; every ${ordinal(every)} point is drawn`)
    return { ...s, points }
  })
  const all = series.flatMap((s) => s.points)
  const errOf = (q: Point) => (isFiniteNumber(q.err) ? Math.abs(q.err) : 0)
  const tx = (x: number) => (p.logX ? Math.log10(x) : x)
  let [x0, x1] = extent(all.map((q) => tx(q.x)))
  if (x0 === x1) [x0, x1] = [x0 - 0.5, x1 + 0.5]
  const ys = [...all.flatMap((q) => [q.y - errOf(q), q.y + errOf(q)]), ...(p.yInclude ?? [])]
  let [y0, y1] = extent(ys)
  if (y0 === y1) [y0, y1] = [y0 - 0.5, y1 + 0.5]
  const yTickValues = niceTicks(y0, y1)
  ;[y0, y1] = [yTickValues[0], yTickValues[yTickValues.length - 1]]
  const padX = (x1 - x0) * 0.05
  const sx = (x: number) => M.left + ((tx(x) - x0 + padX) / (x1 - x0 + 2 * padX)) * (W - M.left - M.right)
  const sy = (y: number) => H - M.bottom - ((y - y0) / (y1 - y0)) * (H - M.top - M.bottom)
  const xFormat = p.xFormat ?? fmtSig
  const yFormat = tickFormat(yTickValues)
  // Ticks at the data's x values only while they are few; otherwise evenly spaced ones.
  const distinctX = [...new Set(all.map((q) => q.x))]
  const xTickValues = (p.xTicks ?? (distinctX.length <= 12 ? distinctX : p.logX ? [] : niceTicks(x0, x1))).filter(
    (x) => isFiniteNumber(x) && (!p.logX || x > 0),
  )
  const body = series
    .map((s) => {
      const path = s.points.map((q, i) => `${i ? 'L' : 'M'}${px(sx(q.x))} ${px(sy(q.y))}`).join('')
      const bars = s.points
        .filter((q) => errOf(q) > 0)
        .map((q) => {
          const [x, lo, hi] = [sx(q.x), sy(q.y - errOf(q)), sy(q.y + errOf(q))]
          return `<path class="err" d="M${px(x)} ${px(lo)}V${px(hi)}M${px(x - 4)} ${px(lo)}h8M${px(x - 4)} ${px(hi)}h8" stroke="${escapeHtml(s.color)}"/>`
        })
        .join('')
      const marks = s.points
        .map(
          (q) =>
            `<circle class="mark" cx="${px(sx(q.x))}" cy="${px(sy(q.y))}" r="3.5" fill="${escapeHtml(s.color)}"><title>${escapeHtml(`${s.label}: ${xFormat(q.x)} -> ${fmtSig(q.y)}${errOf(q) ? ` ± ${fmtSig(errOf(q))}` : ''}`)}</title></circle>`,
        )
        .join('')
      const dash = s.dashed ? ' stroke-dasharray="6 4"' : ''
      return `<g><path class="line" d="${path}" stroke="${escapeHtml(s.color)}"${dash}/>${bars}${marks}</g>`
    })
    .join('')
  const grid = axes(
    xTickValues.map((x) => [sx(x), xFormat(x)]),
    yTickValues.map((y) => [sy(y), yFormat(y)]),
    p.xLabel,
    p.yLabel,
  )
  const thinned = notes.length ? `<p class="note">${escapeHtml(notes.join('. '))}.</p>` : ''
  return figure(p.name, p.title, svg(p.title, W, H, grid + body), legend(series) + thinned)
}

export interface Bar {
  label: string
  value: number
  color: string
  /** Shown above the bar instead of the plain value. */
  note?: string
}

export function barChart(p: { name: string; title: string; yLabel: string; bars: Bar[] }): string {
  const bars = p.bars.filter((b) => isFiniteNumber(b.value) && b.value >= 0)
  if (bars.length === 0) return figure(p.name, p.title, null)
  const yTicks = niceTicks(0, extent(bars.map((b) => b.value))[1] || 1)
  const top = yTicks[yTicks.length - 1]
  const sy = (y: number) => H - M.bottom - (y / top) * (H - M.top - M.bottom)
  const slot = (W - M.left - M.right) / bars.length
  const width = Math.min(80, slot * 0.6)
  const body = bars
    .map((b, i) => {
      const x = M.left + slot * (i + 0.5)
      const label = b.note ?? fmtSig(b.value)
      return `<rect class="mark" x="${px(x - width / 2)}" y="${px(sy(b.value))}" width="${px(width)}" height="${px(sy(0) - sy(b.value))}" fill="${escapeHtml(b.color)}"><title>${escapeHtml(`${b.label}: ${label}`)}</title></rect>${text(x, sy(b.value) - 5, label, ' text-anchor="middle"')}`
    })
    .join('')
  const grid = axes(
    bars.map((b, i) => [M.left + slot * (i + 0.5), b.label]),
    yTicks.map((y) => [sy(y), fmtSig(y)]),
    '',
    p.yLabel,
  )
  return figure(p.name, p.title, svg(p.title, W, H, grid + body))
}

/** Blue of intensity `t` in [0, 1], from near-white to dark. */
const blue = (t: number) => {
  const mix = (a: number, b: number) => Math.round(a + (b - a) * t)
  return `rgb(${mix(247, 8)},${mix(251, 48)},${mix(255, 107)})`
}

/**
 * A confusion matrix, `matrix[true][predicted]`. Cells are shaded by their share of the row (the
 * class's recall on the diagonal), so rare classes read as clearly as common ones; the count is
 * written in each cell.
 */
export function heatmap(p: {
  name: string
  title: string
  labels: string[]
  matrix: unknown[][]
  caption?: string
  /** Where the matrix comes from (e.g. `arms[3].test.confusion`), for the note on one too large to draw. */
  field?: string
}): string {
  const n = p.matrix.length
  if (n === 0) return figure(p.name, p.title, null)
  if (n > MAX_HEATMAP_CLASSES) {
    const note = `${p.field ?? 'the confusion matrix'} has ${n} classes: too many to draw (at most ${MAX_HEATMAP_CLASSES}); the per-class metrics are in results.json.`
    return `<figure class="plot" data-plot="${escapeHtml(p.name)}" data-empty="true"><figcaption>${escapeHtml(p.title)}</figcaption><p class="no-data">${escapeHtml(note)}</p></figure>`
  }
  const cell = Math.max(8, Math.min(36, Math.floor(420 / n)))
  const short = (s: string) => (s.length > 14 ? `${s.slice(0, 13)}…` : s)
  const left = 120
  const topPad = 24
  const width = left + cell * n + 10
  const height = topPad + cell * n + 110
  const cells = p.matrix
    .map((row, r) => {
      const total = row.filter(isFiniteNumber).reduce((a, b) => a + b, 0)
      return row
        .slice(0, n)
        .map((v, c) => {
          const [x, y] = [left + c * cell, topPad + r * cell]
          if (!isFiniteNumber(v))
            return `<rect class="missing" x="${x}" y="${y}" width="${cell}" height="${cell}"/>${cell >= 18 ? text(x + cell / 2, y + cell / 2 + 4, NO_VALUE, ' text-anchor="middle"') : ''}`
          const share = total > 0 ? v / total : 0
          const ink = share > 0.5 ? 'count on-dark' : 'count'
          const label =
            cell >= 18 ? text(x + cell / 2, y + cell / 2 + 4, String(Math.round(v)), ` text-anchor="middle" class="${ink}"`) : ''
          const tip = `true ${p.labels[r] ?? r}, predicted ${p.labels[c] ?? c}: ${Math.round(v)} (${fmtPercent(share)} of the row)`
          return `<rect class="mark" x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${blue(share)}"><title>${escapeHtml(tip)}</title></rect>${label}`
        })
        .join('')
    })
    .join('')
  const rowLabels = p.labels
    .slice(0, n)
    .map((l, i) => text(left - 6, topPad + i * cell + cell / 2 + 4, short(l), ' text-anchor="end"'))
    .join('')
  const colLabels = p.labels
    .slice(0, n)
    .map((l, i) => {
      const [x, y] = [left + i * cell + cell / 2, topPad + n * cell + 8]
      return text(x, y, short(l), ` text-anchor="end" transform="rotate(-60 ${px(x)} ${px(y)})"`)
    })
    .join('')
  const axisNames =
    text(left + (cell * n) / 2, topPad - 8, 'predicted', ' text-anchor="middle" class="axis-label"') +
    text(
      10,
      topPad + (cell * n) / 2,
      'true',
      ` text-anchor="middle" class="axis-label" transform="rotate(-90 10 ${px(topPad + (cell * n) / 2)})"`,
    )
  const caption = p.caption ? `<p class="note">${escapeHtml(p.caption)}</p>` : ''
  return figure(p.name, p.title, svg(p.title, width, height, cells + rowLabels + colLabels + axisNames), caption)
}
