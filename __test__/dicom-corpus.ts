/**
 * pydicom's test corpus through cass-ssl's DICOM reader, against pydicom's own output
 * (parity/dicom_reference.py): every file is decoded and equal, lossy and within tolerance,
 * skipped by both with a reason, or a mismatch. `npx tsx __test__/dicom-corpus.ts` prints the table.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import path from 'node:path'

import { readRegularFile } from '../ts/data/decode.js'
import { DicomError, parseDicom } from '../ts/data/dicom/parse.js'
import { describeImage, isLossy, renderFrame } from '../ts/data/dicom/pixels.js'
import { WINDOW_PRESETS } from '../ts/data/dicom/window.js'
import { tempDir } from './helpers.js'

/** Lossy syntaxes: values after the modality LUT within this many grey levels of pydicom's. */
export const LOSSY_TOLERANCE = 2

interface Reference {
  status: 'decoded' | 'skipped'
  reason?: string
  path: string
  transferSyntax?: string
  lossy?: boolean
  /** Whether pydicom's pillow decoder gave a second reference (lossy syntaxes). */
  pillow?: boolean
  photometric?: string
  frames?: number
  compared?: number[]
  shape?: [number, number, number, number]
}

export interface CorpusRow {
  file: string
  outcome: 'equal' | 'lossy-within-tolerance' | 'skipped-by-both' | 'decoded-here-only' | 'mismatch'
  detail: string
}

/** Runs the reference script into a temporary folder and reads its index. */
export function pydicomReference(): { dir: string; pydicom: string; files: Record<string, Reference> } {
  const dir = tempDir('dicom-ref')
  execFileSync('python3', [path.join(__dirname, '..', 'parity', 'dicom_reference.py'), dir], { stdio: 'inherit' })
  const index = JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8')) as {
    pydicom: string
    files: Record<string, Reference>
  }
  return { dir, pydicom: index.pydicom, files: index.files }
}

const f64 = (file: string) => {
  const b = readFileSync(file)
  return new Float64Array(b.buffer, b.byteOffset, b.length / 8)
}

/** Largest absolute difference, and how many elements differ. */
function diff(a: ArrayLike<number>, b: ArrayLike<number>): { max: number; count: number } {
  if (a.length !== b.length) return { max: Infinity, count: Math.abs(a.length - b.length) }
  let max = 0
  let count = 0
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i])
    if (d > 0) count++
    if (d > max || Number.isNaN(d)) max = Number.isNaN(d) ? Infinity : d
  }
  return { max, count }
}

export async function compareFile(name: string, ref: Reference, dir: string): Promise<CorpusRow> {
  let ours: { modality: number[]; auto: number[]; lung: number[] } | undefined
  let error: string | undefined
  try {
    const file = parseDicom(await readRegularFile(ref.path, 1 << 30))
    const img = describeImage(file, 100_000_000)
    const frames = ref.compared ?? [0]
    ours = { modality: [], auto: [], lung: [] }
    for (const k of frames) {
      const auto = await renderFrame(file, img, k, { kind: 'auto' })
      for (const v of auto.modality) ours.modality.push(v)
      // The reference's 8-bit images are grey for monochrome (one channel), RGB for colour.
      const step = auto.channels === 1 ? 3 : 1
      for (let i = 0; i < auto.rgb.length; i += step) ours.auto.push(auto.rgb[i])
      if (auto.channels === 1) {
        const lung = await renderFrame(file, img, k, { kind: 'window', window: WINDOW_PRESETS.lung })
        for (let i = 0; i < lung.rgb.length; i += 3) ours.lung.push(lung.rgb[i])
      }
    }
  } catch (e) {
    if (!(e instanceof DicomError) && !(e instanceof Error && /not a regular file|byte limit/.test(e.message))) throw e
    error = (e as Error).message
  }
  if (ref.status === 'skipped') {
    if (error !== undefined) return { file: name, outcome: 'skipped-by-both', detail: `pydicom: ${ref.reason}; here: ${error}` }
    return { file: name, outcome: 'decoded-here-only', detail: `pydicom: ${ref.reason}` }
  }
  if (!ours) return { file: name, outcome: 'mismatch', detail: `pydicom decodes it (${ref.transferSyntax}); here: ${error}` }
  const base = path.join(dir, name)
  const lossy = isLossy(ref.transferSyntax!)
  const m = diff(ours.modality, f64(`${base}.modality.f64`))
  // Lossy: pydicom's two decoders differ; within the tolerance of either is agreement.
  const pillow = ref.pillow ? diff(ours.modality, f64(`${base}.modality-pillow.f64`)) : undefined
  const a = diff(ours.auto, readFileSync(`${base}.auto.u8`))
  const l = ours.lung.length ? diff(ours.lung, readFileSync(`${base}.lung.u8`)) : { max: 0, count: 0 }
  const what = `${ref.transferSyntax} ${ref.photometric} ${ref.shape!.slice(1).join('x')}, frames ${ref.compared!.join(',')} of ${ref.frames}`
  const detail =
    `${what}; modality max diff ${m.max} (${m.count} values)` +
    (pillow ? ` [pillow's decoder: ${pillow.max} (${pillow.count})]` : '') +
    `, 8-bit auto ${a.max} (${a.count}), lung ${l.max} (${l.count})`
  if (m.max === 0 && a.max === 0 && l.max === 0) return { file: name, outcome: 'equal', detail }
  if (lossy && Math.min(m.max, pillow?.max ?? Infinity) <= LOSSY_TOLERANCE)
    return { file: name, outcome: 'lossy-within-tolerance', detail }
  return { file: name, outcome: 'mismatch', detail }
}

export async function compareCorpus(): Promise<{ pydicom: string; rows: CorpusRow[] }> {
  const ref = pydicomReference()
  const rows: CorpusRow[] = []
  for (const [name, r] of Object.entries(ref.files)) rows.push(await compareFile(name, r, ref.dir))
  return { pydicom: ref.pydicom, rows }
}

if (require.main === module) {
  void compareCorpus().then(({ pydicom, rows }) => {
    process.stdout.write(`pydicom ${pydicom}\n| file | outcome | detail |\n|---|---|---|\n`)
    for (const r of rows) process.stdout.write(`| ${r.file} | ${r.outcome} | ${r.detail} |\n`)
  })
}
