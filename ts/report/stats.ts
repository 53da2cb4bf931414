/**
 * The numbers of the report, kept apart from its markup: means and sample standard deviations over
 * seeds, and the arms of `results.json` grouped the way the paper's table reads them.
 */
import type { ArmRecord, ExperimentResults, Network, StartName } from '../experiment/results.js'
import { METHOD_NAMES } from '../methods/info.js'

export interface Summary {
  mean: number
  /** Sample standard deviation (n - 1); NaN below two values. */
  std: number
  /** How many finite values went in. */
  n: number
}

export const isFiniteNumber = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x)

/**
 * Mean and sample standard deviation of the finite values. A seed whose metric is NaN or null
 * (a diverged run) is left out and not counted in n, so the report never averages a NaN in.
 */
export function summarize(values: readonly unknown[]): Summary {
  const xs = values.filter(isFiniteNumber)
  const n = xs.length
  if (n === 0) return { mean: NaN, std: NaN, n: 0 }
  const mean = xs.reduce((a, b) => a + b, 0) / n
  const std = n < 2 ? NaN : Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1))
  return { mean, std, n }
}

export function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>()
  for (const item of items) {
    const k = key(item)
    const group = groups.get(k)
    if (group) group.push(item)
    else groups.set(k, [item])
  }
  return groups
}

/** Items of a field that should be an array; a hostile or truncated file may hold anything there. */
export const list = <T>(x: unknown): T[] => (Array.isArray(x) ? (x as T[]) : [])

/** The distinct values of `seen`, those in `preferred` first and in its order. */
const ordered = <T>(preferred: readonly T[], seen: Iterable<T>): T[] => {
  const all = new Set(seen)
  return [...new Set([...preferred.filter((p) => all.has(p)), ...all])]
}

const KNOWN_STARTS: StartName[] = [...METHOD_NAMES, 'imagenet', 'random']

/** The report's view of the arms: the main (non-sweep) ones, indexed by network, start and fraction. */
export interface ArmTable {
  networks: Network[]
  /** Starts with at least one arm, per network: methods in the settings' order, then the baselines. */
  starts: Map<Network, StartName[]>
  /** Label fractions of the settings and of the arms, ascending. */
  fractions: number[]
  cell(network: Network, start: StartName, fraction: number): { macroF1: Summary; balancedAccuracy: Summary; arms: ArmRecord[] }
  /** Starts with the highest mean macro-F1 at (network, fraction); every tied start wins. */
  best(network: Network, fraction: number): StartName[]
}

const key = (...parts: unknown[]) => JSON.stringify(parts)

export const metricOf = (arm: ArmRecord, metric: 'macroF1' | 'balancedAccuracy'): unknown =>
  arm.test && typeof arm.test === 'object' ? arm.test[metric] : undefined

export function armTable(results: ExperimentResults): ArmTable {
  const arms = list<ArmRecord>(results.arms).filter((a) => a && typeof a === 'object' && a.sweep == null)
  const settings = results.settings ?? ({} as ExperimentResults['settings'])
  const networks = ordered(
    list<Network>(settings.networks),
    arms.map((a) => a.network),
  )
  const preferredStarts = [...list<StartName>(settings.methods), ...KNOWN_STARTS]
  const starts = new Map(
    networks.map((n) => [
      n,
      ordered(
        preferredStarts,
        arms.filter((a) => a.network === n).map((a) => a.start),
      ),
    ]),
  )
  const fractions = [...new Set([...list(settings.fractions), ...arms.map((a) => a.fraction)])]
    .filter((f): f is number => isFiniteNumber(f) && f > 0)
    .sort((a, b) => a - b)
  const groups = groupBy(arms, (a) => key(a.network, a.start, a.fraction))
  const cell = (network: Network, start: StartName, fraction: number) => {
    const group = groups.get(key(network, start, fraction)) ?? []
    return {
      macroF1: summarize(group.map((a) => metricOf(a, 'macroF1'))),
      balancedAccuracy: summarize(group.map((a) => metricOf(a, 'balancedAccuracy'))),
      arms: group,
    }
  }
  const best = (network: Network, fraction: number) => {
    const means = (starts.get(network) ?? []).map((s) => [s, cell(network, s, fraction).macroF1.mean] as const)
    const top = Math.max(...means.map(([, m]) => m).filter(isFiniteNumber))
    return means.filter(([, m]) => m === top).map(([s]) => s)
  }
  return { networks, starts, fractions, cell, best }
}
