/**
 * What several `cass` commands share: the usage error, the data flags and their loading, flag
 * parsers, Ctrl-C handling and the step log.
 */
import { appendFileSync, existsSync, statSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import { type LoadOptions, type LoadedDataset, type SourceFormat, loadDataset } from '../data/dataset.js'
import { type ProgressEvent, inspectCheckpoint } from '../index.js'
import { readRegularFileSync } from '../io/read-file.js'

/** Bad flags or arguments: printed without a stack, exit code 2. */
export class UsageError extends Error {}

export const DATA_OPTIONS = {
  data: { type: 'string' },
  format: { type: 'string' },
  'cache-dir': { type: 'string' },
  'image-root': { type: 'string' },
  strict: { type: 'boolean', default: false },
  window: { type: 'string' },
  windows: { type: 'string' },
  frames: { type: 'string' },
  'group-by': { type: 'string' },
} as const

/** The DICOM and grouping flags' usage lines, shared by every command that reads data. */
export const DICOM_USAGE = `  --window W          DICOM: one window to 8 bits: lung | mediastinum | bone | brain | subdural |
                      soft, or CENTER,WIDTH (e.g. -600,1500; CT in Hounsfield units); default: the
                      file's first window, else the image's 0.5-99.5 percentiles
  --windows A,B,C     DICOM: three windows as the three channels (e.g. brain,subdural,bone, or
                      40/80,80/200,600/2800)
  --frames middle|all DICOM: a multi-frame file gives its middle frame (default) or every frame
  --group-by COLUMN   CSV: the column naming each image's patient; a patient's images stay in one
                      split (DICOM files are grouped by their PatientID without it)
`

const FORMATS = ['folder', 'csv', 'npz', 'idx', 'dicom']

/** The data options of `values` as `loadDataset` takes them (DICOM windows, frames, the group column). */
export function dataOptions(values: Record<string, unknown>): Pick<LoadOptions, 'dicom' | 'groupBy'> {
  const frames = values.frames as string | undefined
  if (frames !== undefined && frames !== 'all' && frames !== 'middle')
    throw new UsageError(`--frames takes all or middle, not "${frames}"`)
  const dicom = {
    ...(values.window !== undefined ? { window: values.window as string } : {}),
    ...(values.windows !== undefined ? { windows: values.windows as string } : {}),
    ...(frames !== undefined ? { frames: frames as 'all' | 'middle' } : {}),
  }
  return {
    ...(Object.keys(dicom).length ? { dicom } : {}),
    ...(values['group-by'] !== undefined ? { groupBy: values['group-by'] as string } : {}),
  }
}

export function int(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isInteger(n)) throw new UsageError(`--${name} expects an integer, got "${value}"`)
  return n
}

export function need<T>(value: T | undefined, flag: string, command: string): T {
  if (value === undefined || value === '') throw new UsageError(`${command} needs ${flag} (see cass ${command} --help)`)
  return value
}

export function readConfig(file: string | undefined): Record<string, unknown> {
  if (!file) return {}
  let parsed: unknown
  try {
    // A config is a few kB; a FIFO, a device or a huge file is refused before it is read.
    parsed = JSON.parse(readRegularFileSync(file, 1 << 20, 'a config file').toString('utf8'))
  } catch (e) {
    throw new UsageError(`cannot read --config ${file}: ${(e as Error).message}`)
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new UsageError(`--config ${file} must hold a JSON object of config fields, not ${JSON.stringify(parsed)}`)
  return parsed as Record<string, unknown>
}

/** Loads `--data` for a network of input `size`, printing a summary (and up to 5 skipped images) on stderr. */
export async function load(command: string, values: Record<string, unknown>, size: number, seed = 0): Promise<LoadedDataset> {
  const data = need(values.data as string | undefined, '--data PATH', command)
  const format = values.format as SourceFormat | undefined
  if (format && !FORMATS.includes(format)) throw new UsageError(`--format must be folder, csv, npz, idx or dicom`)
  const tty = process.stderr.isTTY
  const ds = await loadDataset(data, {
    size,
    format,
    strict: values.strict as boolean,
    cacheDir: values['cache-dir'] as string | undefined,
    imageRoot: values['image-root'] as string | undefined,
    seed,
    ...dataOptions(values),
    onProgress: (done, total) => tty && process.stderr.write(`\r\x1b[2Kdecoding ${done}/${total}`),
  })
  if (tty && ds.decoded > 0) process.stderr.write('\n')
  process.stderr.write(
    `data: ${ds.count} images (${ds.format}, ${ds.classes.length} classes, train ${ds.splits.train.indices.length} / val ${ds.splits.val.indices.length} / test ${ds.splits.test.indices.length}${ds.sourceSplits ? ', splits from the source' : ', seeded stratified splits'}${ds.patients ? `; patients: train ${ds.patients.train} / val ${ds.patients.val} / test ${ds.patients.test}` : ''}), ${ds.decoded ? `${ds.decoded} decoded` : 'cache reused'}, ${ds.skipped.length} skipped\n`,
  )
  for (const s of ds.skipped.slice(0, 5)) process.stderr.write(`  skipped ${s.name}: ${s.reason}\n`)
  if (ds.skipped.length > 5) process.stderr.write(`  ... and ${ds.skipped.length - 5} more\n`)
  return ds
}

/** Ctrl-C -> cancel at the next step; a second Ctrl-C exits at once. */
export function interruptible(): AbortSignal {
  const controller = new AbortController()
  // SIGTERM (what servers and containers send) stops the same way as Ctrl-C: at the next step,
  // with a resumable checkpoint; a second signal exits at once.
  const stop = (signal: NodeJS.Signals) => {
    process.stderr.write(`\ncass: ${signal}: stopping at the next step (again to quit now)...\n`)
    controller.abort()
    for (const s of ['SIGINT', 'SIGTERM'] as const) {
      process.removeListener(s, stop)
      process.once(s, () => process.exit(130))
    }
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  return controller.signal
}

/**
 * Keeps the step log of a resumed run in step with its checkpoint: lines of steps after the
 * checkpoint's step (logged by a run killed before its next checkpoint) would appear twice.
 */
export function truncateMetricsLog(file: string, step: number): void {
  if (!existsSync(file)) return
  const kept = readRegularFileSync(file, 1 << 30, 'a step log')
    .toString('utf8')
    .split('\n')
    .filter((line) => {
      if (line === '') return false
      try {
        const e = JSON.parse(line) as { step?: number; type?: string; epoch?: number }
        return e.step === undefined || e.step <= step
      } catch {
        return false // a line torn by the kill
      }
    })
  writeFileSync(file, kept.length ? `${kept.join('\n')}\n` : '')
}

/** `--out` must be a folder (or not exist yet): checked before any work, so none is lost. */
export function outputFolder(out: string): string {
  if (existsSync(out) && !statSync(out).isDirectory()) throw new UsageError(`--out ${out} is a file, not a folder`)
  return out
}

/** `--out` must be a file whose folder exists: checked before any work, so none is lost. */
export function outputFile(out: string): string {
  if (existsSync(out) && statSync(out).isDirectory()) throw new UsageError(`--out ${out} is a folder, not a file`)
  const dir = path.dirname(path.resolve(out))
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`--out ${out}: folder ${dir} does not exist`)
  return out
}

/** Appends device, step, epoch and warning events to `file`, one JSON object per line. */
export function metricsLog(file: string) {
  return (e: ProgressEvent) => {
    if (e.type === 'step')
      appendFileSync(
        file,
        `${JSON.stringify({ type: 'step', step: e.step, epoch: e.epoch, loss: e.loss, parts: Object.fromEntries(e.parts), lr: e.lr, imagesPerSec: e.imagesPerSec, stepSec: e.stepSec })}\n`,
      )
    else if (e.type === 'device' || e.type === 'epoch' || e.type === 'warning') appendFileSync(file, `${JSON.stringify(e)}\n`)
  }
}

/** `--fractions 0.01,0.1,1`. */
export function fractionsFlag(v: string): number[] {
  const f = v.split(',').map(Number)
  if (f.some((x) => !(x > 0 && x <= 1))) throw new UsageError(`--fractions takes label fractions in (0, 1], not "${v}"`)
  return f
}

/** `--collapse-guard off` or `W,T[,C]` (variance weight, variance target, covariance weight). */
export function collapseGuardFlag(v: string): { weight: number; target: number; covariance: number } | null {
  if (v === 'off' || v === 'none') return null
  const parts = v.split(',').map(Number)
  if (parts.length < 2 || parts.length > 3 || parts.some((x) => !Number.isFinite(x)))
    throw new UsageError(`--collapse-guard takes "off" or WEIGHT,TARGET[,COVARIANCE] (e.g. 1,0.5,1), not "${v}"`)
  return { weight: parts[0], target: parts[1], covariance: parts[2] ?? 0 }
}

/** The input size a checkpoint was trained at. */
export function checkpointImageSize(dir: string): number {
  return inspectCheckpoint(dir).imageSize
}
