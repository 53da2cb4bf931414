/**
 * What several `cass` commands share: the usage error, the data flags and their loading, flag
 * parsers, Ctrl-C handling and the step log.
 */
import { appendFileSync, readFileSync } from 'node:fs'

import { type LoadedDataset, type SourceFormat, loadDataset } from '../data/dataset.js'
import { type ProgressEvent, inspectCheckpoint } from '../index.js'

/** Bad flags or arguments: printed without a stack, exit code 2. */
export class UsageError extends Error {}

export const DATA_OPTIONS = {
  data: { type: 'string' },
  format: { type: 'string' },
  'cache-dir': { type: 'string' },
  'image-root': { type: 'string' },
  strict: { type: 'boolean', default: false },
} as const

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
    parsed = JSON.parse(readFileSync(file, 'utf8'))
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
  if (format && !['folder', 'csv', 'npz', 'idx'].includes(format))
    throw new UsageError(`--format must be folder, csv, npz or idx`)
  const tty = process.stderr.isTTY
  const ds = await loadDataset(data, {
    size,
    format,
    strict: values.strict as boolean,
    cacheDir: values['cache-dir'] as string | undefined,
    imageRoot: values['image-root'] as string | undefined,
    seed,
    onProgress: (done, total) => tty && process.stderr.write(`\r\x1b[2Kdecoding ${done}/${total}`),
  })
  if (tty && ds.decoded > 0) process.stderr.write('\n')
  process.stderr.write(
    `data: ${ds.count} images (${ds.format}, ${ds.classes.length} classes, train ${ds.splits.train.indices.length} / val ${ds.splits.val.indices.length} / test ${ds.splits.test.indices.length}${ds.sourceSplits ? ', splits from the source' : ', seeded stratified splits'}), ${ds.decoded ? `${ds.decoded} decoded` : 'cache reused'}, ${ds.skipped.length} skipped\n`,
  )
  for (const s of ds.skipped.slice(0, 5)) process.stderr.write(`  skipped ${s.name}: ${s.reason}\n`)
  if (ds.skipped.length > 5) process.stderr.write(`  ... and ${ds.skipped.length - 5} more\n`)
  return ds
}

/** Ctrl-C -> cancel at the next step; a second Ctrl-C exits at once. */
export function interruptible(): AbortSignal {
  const controller = new AbortController()
  process.once('SIGINT', () => {
    process.stderr.write('\ncass: stopping at the next step (Ctrl-C again to quit now)...\n')
    controller.abort()
    process.once('SIGINT', () => process.exit(130))
  })
  return controller.signal
}

/** Appends step, epoch and warning events to `file`, one JSON object per line. */
export function metricsLog(file: string) {
  return (e: ProgressEvent) => {
    if (e.type === 'step')
      appendFileSync(
        file,
        `${JSON.stringify({ type: 'step', step: e.step, epoch: e.epoch, loss: e.loss, parts: Object.fromEntries(e.parts), lr: e.lr, imagesPerSec: e.imagesPerSec, stepSec: e.stepSec })}\n`,
      )
    else if (e.type === 'epoch' || e.type === 'warning') appendFileSync(file, `${JSON.stringify(e)}\n`)
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
