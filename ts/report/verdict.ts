/**
 * Whether a start (CASS, DINO, ImageNet weights) beat random init, in words that respect seed
 * noise. The demo's table, `cass experiment`'s table and the report all take their verdicts and
 * their wording from here, so the three always agree.
 *
 * The rule. The comparison is paired: seed k of a start and seed k of random init fine-tune on the
 * same labelled images (`sampleFraction` with the seed, in `experiment/run.ts`), so the per-seed
 * gains d_k = start_k - random_k cancel the label sample's share of the noise. With n paired
 * seeds, mean gain m and its standard error se = sd(d) / sqrt(n):
 *
 * - `better` when every d_k > 0 AND m > 3 se;
 * - `worse` (random init better) when every d_k < 0 AND m < -3 se;
 * - otherwise `within noise`; one seed has no spread to compare with, so one seed is always
 *   `within noise (1 seed)`.
 *
 * Why 3: at the protocol's 3 seeds, m / se follows Student's t with 2 degrees of freedom under
 * pure noise, whose one-sided 5 % point is 2.92; so 3 se is a one-sided paired t-test at about
 * 5 %. The share of pure-noise draws (normal gains of mean 0, 200,000 per row) that it calls
 * `better`: 2 seeds 10.2 %, 3 seeds 4.8 %, 5 seeds 1.8 %, 10 seeds 0.09 % (2 se would say it in
 * 9.2 % at 3 seeds). Asking every seed to win changes nothing at 3 seeds and makes the rule
 * stricter with many (a t-test alone at 3 se: 0.72 % at 10 seeds): one losing seed of ten keeps a
 * cell `within noise`, by design. On the demo of `bench/results/2026-11-26-vm-demo-mnist.json` it
 * calls the CNN's +0.032 and +0.022 (seeds 0.068, -0.032, 0.059 and -0.007, 0.021, 0.052)
 * `within noise` and the ViT's +0.124 and +0.186 (m / se 3.1 and 14) `CASS better`.
 *
 * Why not a paired bootstrap: three paired gains have 10 distinct resamples, and the percentile
 * interval excludes 0 exactly when all three share a sign, whatever their size: a sign test in
 * disguise that calls [+0.001, +0.002, +0.09] a finding, and at 3 seeds under pure noise says
 * `better` in 12.5 % of draws.
 */
import type { ArmRecord, ExperimentResults, Network, StartName } from '../experiment/results.js'
import { METHODS, METHOD_NAMES, isMethodRef, methodLabel } from '../methods/info.js'

/** How many standard errors the mean paired gain must exceed. */
export const NOISE_FACTOR = 3

/** The rule in one sentence, printed under every table that shows verdicts. */
export const VERDICT_RULE = `Verdicts are paired over seeds (seed k of both starts fine-tunes on the same labelled images): one side is "better" only when it wins on every seed and the mean paired gain is more than ${NOISE_FACTOR} standard errors from 0; otherwise "within noise", as always with one seed.`

export type VerdictKind = 'better' | 'worse' | 'within noise'

export interface PairedVerdict {
  kind: VerdictKind
  /** Paired seeds that went in (both macro-F1s finite). */
  n: number
  /** Seeds where the start beat random init, and where it lost (a tie is neither). */
  wins: number
  losses: number
  /** Mean paired gain, start minus random init. */
  gain: number
  /** Standard error of the mean gain (sample sd / sqrt n); NaN below two seeds. */
  stdError: number
}

/** The verdict of paired gains (start minus random init, one per seed); non-finite gains are left out. */
export function pairedVerdict(gains: readonly number[]): PairedVerdict {
  const d = gains.filter((x) => Number.isFinite(x))
  const n = d.length
  const gain = n ? d.reduce((a, b) => a + b, 0) / n : NaN
  const stdError = n >= 2 ? Math.sqrt(d.reduce((a, x) => a + (x - gain) ** 2, 0) / (n - 1) / n) : NaN
  const wins = d.filter((x) => x > 0).length
  const losses = d.filter((x) => x < 0).length
  let kind: VerdictKind = 'within noise'
  if (n >= 2 && wins === n && gain > NOISE_FACTOR * stdError) kind = 'better'
  else if (n >= 2 && losses === n && -gain > NOISE_FACTOR * stdError) kind = 'worse'
  return { kind, n, wins, losses, gain, stdError }
}

const START_NAMES = new Map<string, string>([
  ...METHOD_NAMES.map((m) => [m, METHODS[m].label] as const),
  ['imagenet', 'ImageNet'],
  ['random', 'random init'],
])
const NETWORK_NAMES = new Map([
  ['cnn', 'CNN'],
  ['vit', 'ViT'],
])
const startName = (s: unknown) => START_NAMES.get(String(s)) ?? (isMethodRef(s) ? methodLabel(s) : String(s))

/** The verdict in the words every table uses: `CASS better`, `random init better`, `within noise`. */
export function verdictText(v: PairedVerdict, start: StartName | string): string {
  if (v.kind === 'better') return `${startName(start)} better`
  if (v.kind === 'worse') return 'random init better'
  return v.n === 1 ? 'within noise (1 seed)' : 'within noise'
}

export interface Range {
  mean: number
  min: number
  max: number
}

/** One (network, label fraction, start) against random init over the seeds both finished. */
export interface Comparison {
  network: Network
  start: StartName
  fraction: number
  /** Labelled images of a seed (every seed draws the same count). */
  labelled: number
  /** Paired seeds (their count is `verdict.n`). */
  seeds: number[]
  /** Test macro-F1 over the paired seeds: the start's and random init's. */
  ours: Range
  random: Range
  verdict: PairedVerdict
}

/** What a comparison reads of an arm: `results.json`'s arms and the demo's both have it. */
export type ScoredArm = Pick<ArmRecord, 'network' | 'start' | 'fraction' | 'labelled' | 'seed'> & { macroF1: unknown }

const finite = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x)

// Reduce, not Math.min(...v): a hand-made results.json may hold more arms than a call has arguments.
const range = (v: number[]): Range => ({
  mean: v.reduce((a, b) => a + b, 0) / v.length,
  min: v.reduce((a, b) => Math.min(a, b)),
  max: v.reduce((a, b) => Math.max(a, b)),
})

/**
 * `ours` (one start's arms at a network and fraction) against `random` (random init's there),
 * paired by seed; undefined when no seed has a finite macro-F1 on both sides. A seed that appears
 * twice (a hand-edited file) counts once.
 */
export function compare(ours: readonly ScoredArm[], random: readonly ScoredArm[]): Comparison | undefined {
  const baseline = new Map<string, number>()
  for (const a of random) if (finite(a.macroF1) && !baseline.has(String(a.seed))) baseline.set(String(a.seed), a.macroF1)
  const pairs: { arm: ScoredArm; ours: number; random: number }[] = []
  const seen = new Set<string>()
  for (const a of [...ours].sort((x, y) => Number(x.seed) - Number(y.seed))) {
    const seed = String(a.seed)
    const r = baseline.get(seed)
    if (seen.has(seed) || r === undefined || !finite(a.macroF1)) continue
    seen.add(seed)
    pairs.push({ arm: a, ours: a.macroF1, random: r })
  }
  if (pairs.length === 0) return undefined
  const first = pairs[0].arm
  return {
    network: first.network,
    start: first.start,
    fraction: first.fraction,
    labelled: first.labelled,
    seeds: pairs.map((p) => p.arm.seed),
    ours: range(pairs.map((p) => p.ours)),
    random: range(pairs.map((p) => p.random)),
    verdict: pairedVerdict(pairs.map((p) => p.ours - p.random)),
  }
}

const rank = <T>(order: readonly T[], x: T) => (order.includes(x) ? order.indexOf(x) : order.length)

/**
 * Every (network, label fraction, start) of `arms` against random init: networks CNN then ViT,
 * fractions ascending, starts CASS, DINO, ImageNet. Cells without a paired seed are left out.
 */
export function compareWithRandom(arms: readonly ScoredArm[]): Comparison[] {
  const key = (a: ScoredArm) => JSON.stringify([a.network, a.fraction, a.start])
  const groups = new Map<string, ScoredArm[]>()
  for (const a of arms) {
    const group = groups.get(key(a))
    if (group) group.push(a)
    else groups.set(key(a), [a])
  }
  const networks = [...new Set(arms.map((a) => a.network))].sort((a, b) => rank(['cnn', 'vit'], a) - rank(['cnn', 'vit'], b))
  const fractions = [...new Set(arms.map((a) => a.fraction))].sort((a, b) => a - b)
  const startOrder: StartName[] = [...METHOD_NAMES, 'imagenet']
  const starts = [...new Set(arms.map((a) => a.start))]
    .filter((s) => s !== 'random')
    .sort((a, b) => rank(startOrder, a) - rank(startOrder, b))
  const out: Comparison[] = []
  for (const network of networks)
    for (const fraction of fractions)
      for (const start of starts) {
        const at = (s: StartName) => groups.get(key({ network, fraction, start: s } as ScoredArm)) ?? []
        const c = compare(at(start), at('random'))
        if (c) out.push(c)
      }
  return out
}

/** An experiment's main (non-sweep) arms against random init: what `cass experiment` prints. */
export function comparisonsOf(results: ExperimentResults): Comparison[] {
  return compareWithRandom(results.arms.filter((a) => a.sweep == null).map((a) => ({ ...a, macroF1: a.test?.macroF1 })))
}

/** The columns of a verdict table, the same in the terminal and in the report. */
export const COMPARISON_COLUMNS = [
  'network',
  'labels',
  'seeds',
  'start',
  'start macro-F1',
  'random init macro-F1',
  'paired gain ± s.e.',
  'seeds won',
  'verdict',
]

const f3 = (x: number) => x.toFixed(3)
const signed = (x: number) => `${x >= 0 ? '+' : ''}${f3(x)}`

/** A comparison's cells as text, in `COMPARISON_COLUMNS` order: mean (min-max) over seeds, gain ± se. */
export function comparisonCells(c: Comparison): string[] {
  const v = c.verdict
  const spread = (r: Range) => (v.n > 1 ? `${f3(r.mean)} (${f3(r.min)}-${f3(r.max)})` : f3(r.mean))
  return [
    NETWORK_NAMES.get(String(c.network)) ?? String(c.network),
    `${finite(c.fraction) ? +(c.fraction * 100).toPrecision(3) : String(c.fraction)} % (${String(c.labelled)})`,
    String(v.n),
    startName(c.start),
    spread(c.ours),
    spread(c.random),
    v.n > 1 ? `${signed(v.gain)} ± ${f3(v.stdError)}` : signed(v.gain),
    `${v.wins}/${v.n}`,
    verdictText(v, c.start),
  ]
}

/** The comparisons as a Markdown table with the rule beneath (the demo's and `cass experiment`'s output). */
export function formatComparisons(cells: readonly Comparison[]): string {
  const row = (xs: string[]) => `| ${xs.join(' | ')} |`
  return [
    row(COMPARISON_COLUMNS),
    row(COMPARISON_COLUMNS.map(() => '---')),
    ...cells.map((c) => row(comparisonCells(c))),
    '',
    VERDICT_RULE,
  ].join('\n')
}
