/**
 * An experiment's identity: the data and settings that make its results what they are. A rerun
 * in the same folder continues it only when they match, and names every difference otherwise.
 */
import { existsSync } from 'node:fs'
import path from 'node:path'

import { ConfigError } from '../errors.js'
import { readResults } from '../report/write.js'
import type { ExperimentResults } from './results.js'

/**
 * The results of an earlier run of this experiment in the folder (read bounded and checked, as
 * `cass report` reads them), or undefined; an experiment with other data or settings is refused.
 */
export function readPrevious(
  file: string,
  settings: ExperimentResults['settings'],
  source: string,
): ExperimentResults | undefined {
  if (!existsSync(file)) return undefined
  let prev: ExperimentResults
  try {
    prev = readResults(file)
  } catch (e) {
    throw new ConfigError(`invalid argument at \`outDir\`: ${(e as Error).message}`, 'outDir', [])
  }
  const differ = differences({ ...prev.settings, source: prev.dataset?.source }, { ...settings, source } as Record<
    string,
    unknown
  >)
  if (differ.length > 0) {
    throw new ConfigError(
      `invalid argument at \`outDir\`: ${path.dirname(file)} holds an experiment with other data or settings (${differ.slice(0, 4).join('; ')}${differ.length > 4 ? `; and ${differ.length - 4} more` : ''}); give another --out to keep both, or remove it`,
      'outDir',
      differ,
    )
  }
  return prev
}

/** `path: there X, here Y` for every leaf (an array is one leaf) where `before` and `now` differ. */
function differences(before: unknown, now: unknown, at = ''): string[] {
  const isMap = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x)
  if (isMap(before) && isMap(now)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(now)])]
    return keys.flatMap((k) => differences(before[k], now[k], at ? `${at}.${k}` : k))
  }
  const [a, b] = [JSON.stringify(before) ?? 'unset', JSON.stringify(now) ?? 'unset']
  return a === b ? [] : [`${at}: ${a.slice(0, 80)} there, ${b.slice(0, 80)} here`]
}
