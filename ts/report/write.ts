/**
 * Reads `DIR/results.json` and publishes `DIR/report.html`: what `cass report` does, and what the
 * experiment runner calls after each arm so that the report is never behind the results.
 */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs'
import path from 'node:path'

import type { ExperimentResults } from '../experiment/results.js'
import { renderReport } from './render.js'
import { writeOutputFile } from '../io/output-file.js'

/** Far above any real experiment (thousands of arms are a few MiB); a larger file is not ours. */
export const MAX_RESULTS_BYTES = 64 * 1024 * 1024

/**
 * What a report draws grows with the product of these (the main table is networks x starts x
 * fractions cells, a sweep plot compares every series with every arm), so each is bounded, far
 * above a real experiment (2 networks, 4 starts, 5 fractions, 10 seeds and a few sweeps make a
 * few hundred arms and a dozen pre-training runs). Points per plot and the size of a confusion
 * matrix are bounded where they are drawn (report/svg.ts).
 */
export const RESULTS_LIMITS = {
  arms: 20_000,
  pretraining: 256,
  knn: 10_000,
  networks: 16,
  starts: 16,
  fractions: 64,
  /** results.json is at most 4 levels deep (arms[i].test.confusion[r][c]); 32 leaves room. */
  depth: 32,
}

/** `results.json` missing, too large, not JSON, or not of a version this report knows. */
export class ResultsFileError extends Error {
  readonly path: string
  constructor(file: string, problem: string) {
    super(`${file}: ${problem}`)
    this.path = file
  }
}

/** At most `limit` bytes, decided on the open file, so a file that grows after a size check is still refused. */
function readBounded(file: string, limit: number): Buffer {
  let fd: number
  try {
    // Non-blocking: opening a FIFO for reading would otherwise wait for a writer forever.
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    throw new ResultsFileError(
      file,
      code === 'ENOENT' ? 'no such file (is this the folder of a `cass experiment`?)' : (e as Error).message,
    )
  }
  try {
    const stat = fstatSync(fd)
    if (!stat.isFile()) throw new ResultsFileError(file, 'not a regular file')
    const tooLarge = () => new ResultsFileError(file, `larger than ${MAX_RESULTS_BYTES / 1024 / 1024} MiB; refusing to read it`)
    if (stat.size > limit) throw tooLarge()
    // One byte more than the size, to notice a file that grew since fstat.
    const buffer = Buffer.alloc(Math.min(stat.size, limit) + 1)
    let length = 0
    while (length < buffer.length) {
      const n = readSync(fd, buffer, length, buffer.length - length, null)
      if (n === 0) break
      length += n
    }
    if (length > limit) throw tooLarge()
    return buffer.subarray(0, length)
  } finally {
    closeSync(fd)
  }
}

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x)

/**
 * The parsed `results.json`. Only the frame is checked (version, sections of the right kind): the
 * renderer copes with any value inside, and a report of a half-written experiment is still useful.
 */
export function readResults(file: string): ExperimentResults {
  const text = readBounded(file, MAX_RESULTS_BYTES).toString('utf8')
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (e) {
    throw new ResultsFileError(file, `not valid JSON (${(e as Error).message})`)
  }
  if (!isObject(parsed)) throw new ResultsFileError(file, 'expected a JSON object of experiment results')
  if (parsed.version !== 1)
    throw new ResultsFileError(
      file,
      `results version ${JSON.stringify(parsed.version) ?? 'missing'} is not supported (this cass reads version 1)`,
    )
  for (const field of ['dataset', 'settings'])
    if (!isObject(parsed[field])) throw new ResultsFileError(file, `"${field}" must be an object`)
  for (const field of ['pretraining', 'arms', 'knn'])
    if (!Array.isArray(parsed[field])) throw new ResultsFileError(file, `"${field}" must be an array`)
  checkDepth(file, parsed)
  checkSizes(file, parsed)
  return parsed as unknown as ExperimentResults
}

/**
 * Refuses values nested deeper than {@link RESULTS_LIMITS}.depth, walking with an explicit stack:
 * the renderer (and `String()` of an array) recurses on depth, so a file of 200,000 nested
 * brackets would overflow the stack there.
 */
function checkDepth(file: string, root: Record<string, unknown>): void {
  // Each entry: a value, its depth, and the field it is under (two levels, e.g. dataset.name).
  const stack: [unknown, number, string][] = Object.entries(root).map(([k, v]) => [v, 1, k])
  while (stack.length > 0) {
    const [value, depth, field] = stack.pop()!
    if (typeof value !== 'object' || value === null) continue
    if (depth > RESULTS_LIMITS.depth)
      throw new ResultsFileError(file, `"${field}" is nested deeper than ${RESULTS_LIMITS.depth} levels; results.json is not`)
    const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v] as const) : Object.entries(value)
    for (const [k, v] of entries) {
      const under = depth >= 2 ? field : Array.isArray(value) ? `${field}[${k}]` : `${field}.${k}`
      stack.push([v, depth + 1, under])
    }
  }
}

function checkSizes(file: string, r: Record<string, unknown>): void {
  const tooMany = (field: string, what: string, n: number, limit: number) =>
    new ResultsFileError(
      file,
      `"${field}" ${field.includes('.') ? 'lists' : 'name'} ${n} ${what}; a report shows at most ${limit}`,
    )
  for (const field of ['arms', 'pretraining', 'knn'] as const) {
    const n = (r[field] as unknown[]).length
    if (n > RESULTS_LIMITS[field]) throw tooMany(field, 'entries', n, RESULTS_LIMITS[field])
  }
  const settings = r.settings as Record<string, unknown>
  const arms = (r.arms as unknown[]).filter(isObject)
  for (const [field, setting, what] of [
    ['network', 'networks', 'networks'],
    ['start', 'methods', 'starts'],
    ['fraction', 'fractions', 'label fractions'],
  ] as const) {
    const limit = RESULTS_LIMITS[what === 'label fractions' ? 'fractions' : what]
    const listed = Array.isArray(settings[setting]) ? (settings[setting] as unknown[]) : []
    if (new Set(listed).size > limit) throw tooMany(`settings.${setting}`, `distinct ${what}`, new Set(listed).size, limit)
    const all = new Set([...listed, ...arms.map((a) => a[field])])
    if (all.size > limit) throw tooMany('arms', `distinct ${what}`, all.size, limit)
  }
}

/** Stage, fsync, rename: a reader (or a browser refresh) sees the old report or the new one, never half. */
export function writeFileAtomic(file: string, text: string): void {
  writeOutputFile(file, text)
}

/** Renders `dir/results.json` into `dir/report.html`; returns the report's path. */
export function writeReport(dir: string): string {
  const results = readResults(path.join(dir, 'results.json'))
  const out = path.join(dir, 'report.html')
  writeFileAtomic(out, renderReport(results))
  return out
}
