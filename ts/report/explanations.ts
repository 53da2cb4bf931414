/**
 * The report's "Where each network looked" grid: per test image the image as the networks saw
 * it, then each network's Grad-CAM overlay with its prediction. Pictures are inline PNG data
 * URIs (the page's CSP allows `img-src data:` and nothing else). `results.json` may be hostile:
 * only strict base64 is put into a URI, and every text is escaped.
 */
import type { ExperimentResults } from '../experiment/results.js'
import { isFiniteNumber, list } from './stats.js'
import { escapeHtml as esc, fmtSig } from './svg.js'

/** Base64 of at most 1 MiB of PNG, and nothing else, may become an image. */
const BASE64 = /^[A-Za-z0-9+/]{1,1398104}={0,2}$/

const picture = (png: unknown, alt: string, size: number) =>
  typeof png === 'string' && BASE64.test(png)
    ? `<img src="data:image/png;base64,${png}" alt="${esc(alt)}" width="${size}" height="${size}">`
    : '<span class="no-data">no picture</span>'

export function explanationsSection(r: ExperimentResults): string {
  const e = r.explanations as unknown
  if (typeof e !== 'object' || e === null) return ''
  const x = e as Record<string, unknown>
  const images = list<Record<string, unknown>>(x.images).filter((i) => typeof i === 'object' && i !== null)
  if (images.length === 0) return ''
  const networks = [...new Set(images.flatMap((i) => Object.keys(typeof i.maps === 'object' && i.maps ? i.maps : {})))]
  // The pictures are the networks' input size; shown at least 96 px with sharp pixels.
  const size = isFiniteNumber(x.size) && x.size > 0 ? Math.max(96, Math.min(384, x.size)) : 96
  const head = `<tr><th>image</th>${networks.map((n) => `<th>${esc(n.toUpperCase())}</th>`).join('')}</tr>`
  const rows = images.map((img) => {
    const maps = (typeof img.maps === 'object' && img.maps ? img.maps : {}) as Record<string, Record<string, unknown>>
    const cells = networks.map((n) => {
      const m = Object.hasOwn(maps, n) ? maps[n] : undefined
      if (!m || typeof m !== 'object') return '<td></td>'
      const verdict = m.correct === true ? 'right' : 'wrong'
      const score = isFiniteNumber(m.score) ? ` ${fmtSig(m.score)}` : ''
      return `<td>${picture(m.png, `${n} Grad-CAM`, size)}<div class="${verdict}">${esc(m.predicted)}${esc(score)} (${verdict}, from ${esc(m.start)})</div></td>`
    })
    return `<tr><td>${picture(img.png, String(img.name), size)}<div>${esc(img.name)}: ${esc(img.label)}</div></td>${cells.join('')}</tr>`
  })
  return `<h2>Where each network looked</h2><p class="note">Grad-CAM of each network's best start (highest mean test macro-F1 at the largest label fraction, its seed-0 fine-tuning) on ${images.length} test images drawn with a fixed seed, right and wrong predictions of the first network both shown where the test split has them. Red is where the predicted class's evidence is strongest. <code>cass explain</code> draws these for any checkpoint and image.</p><table class="explain">${head}${rows.join('')}</table>`
}
