/**
 * Reads `DIR/results.json` and publishes `DIR/report.html`: what `cass report` does, and what the
 * experiment runner calls after each arm so that the report is never behind the results.
 */
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs'
import path from 'node:path'

import type { ExperimentResults } from '../experiment/results.js'
import { renderReport } from './render.js'

/** Far above any real experiment (thousands of arms are a few MiB); a larger file is not ours. */
export const MAX_RESULTS_BYTES = 64 * 1024 * 1024

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
    fd = openSync(file, 'r')
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
  return parsed as unknown as ExperimentResults
}

/** Stage, fsync, rename: a reader (or a browser refresh) sees the old report or the new one, never half. */
export function writeFileAtomic(file: string, text: string): void {
  const staged = `${file}.tmp-${process.pid}`
  try {
    const fd = openSync(staged, 'w')
    try {
      writeSync(fd, text)
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(staged, file)
  } catch (e) {
    rmSync(staged, { force: true })
    throw e
  }
}

/** Renders `dir/results.json` into `dir/report.html`; returns the report's path. */
export function writeReport(dir: string): string {
  const results = readResults(path.join(dir, 'results.json'))
  const out = path.join(dir, 'report.html')
  writeFileAtomic(out, renderReport(results))
  return out
}
