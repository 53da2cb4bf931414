/**
 * `report.html` of `cass experiment`, rendered from `results.json` alone: one page with inline CSS
 * and SVG, no script, and a Content-Security-Policy that forbids every request, so that it opens
 * offline, can be mailed as one file, and a hostile `results.json` cannot make it run or fetch
 * anything. Sections follow the paper: the table, the label-efficiency curves, pre-training, kNN,
 * confusion matrices, robustness sweeps, and where each network looked (inline PNGs: the CSP
 * allows `img-src data:` and no other source).
 */
import type { ArmRecord, ExperimentResults, KnnRecord, Network, PretrainRecord } from '../experiment/results.js'
import { METHODS, METHOD_NAMES, isMethodRef, methodLabel } from '../methods/info.js'
import { explanationsSection } from './explanations.js'
import { type ArmTable, type Summary, armTable, groupBy, isFiniteNumber, list, metricOf, summarize } from './stats.js'
import { COMPARISON_COLUMNS, type Comparison, VERDICT_RULE, compare, comparisonCells } from './verdict.js'
import { NO_VALUE, barChart, escapeHtml as esc, figure, fmt, fmtPercent, fmtSig, heatmap, linePlot } from './svg.js'

// Maps, not object literals: a start named `constructor` in a hostile file must not find Object's.
const START_LABELS = new Map<string, string>([
  ...METHOD_NAMES.map((m) => [m, METHODS[m].label] as const),
  ['imagenet', 'ImageNet'],
  ['random', 'random init'],
])
const START_COLORS = new Map<string, string>([
  ...METHOD_NAMES.map((m) => [m, METHODS[m].color] as const),
  ['imagenet', '#2ca02c'],
  ['random', '#7f7f7f'],
])
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf']

const startLabel = (s: unknown) => START_LABELS.get(String(s)) ?? (isMethodRef(s) ? methodLabel(s) : String(s))
const startColor = (s: unknown, i: number) => START_COLORS.get(String(s)) ?? PALETTE[(i + 3) % PALETTE.length]
const NETWORK_LABELS = new Map([
  ['cnn', 'CNN'],
  ['vit', 'ViT'],
])
const netLabel = (n: unknown) => NETWORK_LABELS.get(String(n)) ?? String(n)
const seconds = (x: unknown) => (isFiniteNumber(x) ? `${fmtSig(x)} s` : NO_VALUE)
const sum = (xs: unknown[]) => {
  const finite = xs.filter(isFiniteNumber)
  return finite.length ? finite.reduce((a, b) => a + b, 0) : NaN
}

const CSS = `body{font:14px/1.45 system-ui,sans-serif;color:#1d1d1f;max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}dt{color:#666}dd{margin:0}
.how{background:#f4f6fa;border-left:3px solid #1f77b4;padding:8px 12px}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f4f6fa;text-align:center}td.label{text-align:left}
td.best{background:#eaf4ea}.n{color:#888;font-size:11px;margin-left:4px}
.plots{display:flex;flex-wrap:wrap;gap:16px}figure.plot{margin:0;padding:8px;border:1px solid #eee;border-radius:4px;max-width:540px}
figcaption{font-weight:600;margin-bottom:4px}svg{display:block;max-width:100%;height:auto}
svg text{font-size:11px;fill:#333}svg .axis-label{font-size:12px;fill:#555}svg text.on-dark{fill:#fff}
.axis{stroke:#888}.grid{stroke:#eee}.tick{stroke:#888}.line{fill:none;stroke-width:2}.err{stroke-width:1.2;fill:none}
.missing{fill:#f0f0f0;stroke:#fff}.no-data{color:#a00;font-style:italic;padding:24px}
.legend{list-style:none;padding:0;margin:4px 0;display:flex;flex-wrap:wrap;gap:4px 14px}
.swatch{display:inline-block;width:18px;border-top:3px solid;margin-right:6px;vertical-align:middle}.swatch.dashed{border-top-style:dashed}
.note{color:#555;max-width:900px}
table.explain td{text-align:center;vertical-align:top}table.explain img{image-rendering:pixelated;display:block;margin:0 auto}
.right{color:#2a7a2a}.wrong{color:#a00}`

function definitions(pairs: [string, unknown][]): string {
  const show = (v: unknown) =>
    Array.isArray(v) ? v.map(String).join(', ') || NO_VALUE : v == null || v === '' ? NO_VALUE : String(v)
  return `<dl>${pairs.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(show(v))}</dd>`).join('')}</dl>`
}

/** The patients line of the dataset section, when the images carried patients (groups). */
function patientsPerSplit(p: unknown, count: (x: unknown) => string): [string, unknown][] {
  if (typeof p !== 'object' || p === null) return []
  const q = p as Record<string, unknown>
  return [
    [
      'patients per split',
      `pre-training ${count(q.pretrain)}, labelled pool ${count(q.pool)}, validation ${count(q.val)}, test ${count(q.test)} (a patient's images are in one split)`,
    ],
  ]
}

const methodsTitle = (r: ExperimentResults) => list(r.settings?.methods).map(startLabel).join(' vs ') || 'Experiment'

function header(r: ExperimentResults): string {
  const d = r.dataset ?? ({} as ExperimentResults['dataset'])
  const s = r.settings ?? ({} as ExperimentResults['settings'])
  const count = (x: unknown) => (isFiniteNumber(x) ? x.toLocaleString('en-US') : NO_VALUE)
  return `<h1>${esc(methodsTitle(r))}: ${esc(d.name ?? 'experiment')}</h1>
<p class="note">Started ${esc(r.startedAt ?? NO_VALUE)}, last arm finished ${esc(r.updatedAt ?? NO_VALUE)}.</p>
<h2>Dataset</h2>${definitions([
    ['name', d.name],
    ['source', d.source],
    ['classes', d.classes],
    ['class names', list(d.classNames)],
    [
      'images per split',
      `pre-training ${count(d.pretrain)}, labelled pool ${count(d.pool)}, validation ${count(d.val)}, test ${count(d.test)}`,
    ],
    ...patientsPerSplit(d.patients, count),
  ])}
<h2>Settings</h2>${definitions([
    ['methods', list(s.methods).map(startLabel)],
    ['networks', list(s.networks).map(netLabel)],
    ['label fractions', list(s.fractions).map(fmtPercent)],
    ['seeds', s.seeds],
    ['preset', s.preset],
    ['device', s.device],
    ['batch-size sweep', list(s.batchSizes)],
    ['epochs sweep', list(s.epochsSweep)],
  ])}
<p class="how"><b>How to read:</b> each cell is the mean ± sample standard deviation over seeds (n = seeds that finished) of a
metric on the test split; higher is better. ★ marks the start with the best mean macro-F1 for a network and label fraction
(the highest mean only: whether a difference exceeds the seeds' noise is the next table's verdict).
CASS pre-trains the CNN and the ViT together; DINO pre-trains each alone; random init has no pre-training.</p>`
}

function meanStd(s: Summary): string {
  if (s.n === 0) return NO_VALUE
  return `${fmt(s.mean)}${isFiniteNumber(s.std) ? ` ± ${fmt(s.std)}` : ''}<span class="n">n=${s.n}</span>`
}

function mainTable(t: ArmTable): string {
  if (t.networks.length === 0 || t.fractions.length === 0) return `<p class="no-data">No fine-tuned arms yet.</p>`
  const head =
    `<tr><th rowspan="2">network</th><th rowspan="2">start</th>${t.fractions.map((f) => `<th colspan="2">${esc(fmtPercent(f))} labels</th>`).join('')}</tr>` +
    `<tr>${t.fractions.map(() => '<th>macro-F1</th><th>bal. accuracy</th>').join('')}</tr>`
  const rows = t.networks.flatMap((n) =>
    (t.starts.get(n) ?? []).map((s) => {
      const cells = t.fractions.map((f) => {
        const c = t.cell(n, s, f)
        const best = c.macroF1.n > 0 && t.best(n, f).includes(s)
        const where = `data-network="${esc(n)}" data-start="${esc(s)}" data-fraction="${esc(f)}"`
        const f1 = best ? `<strong>${meanStd(c.macroF1)} ★</strong>` : meanStd(c.macroF1)
        return `<td ${where} data-metric="macroF1"${best ? ' class="best"' : ''}>${f1}</td><td ${where} data-metric="balancedAccuracy">${meanStd(c.balancedAccuracy)}</td>`
      })
      return `<tr><td class="label">${esc(netLabel(n))}</td><td class="label">${esc(startLabel(s))}</td>${cells.join('')}</tr>`
    }),
  )
  return `<table data-table="main"><thead>${head}</thead><tbody>${rows.join('')}</tbody></table>`
}

/** Each start against random init, paired by seed, with the verdict of `verdict.ts` (the demo's and `cass experiment`'s too). */
function againstRandom(t: ArmTable): string {
  const scored = (arms: ArmRecord[]) => arms.map((a) => ({ ...a, macroF1: metricOf(a, 'macroF1') }))
  const rows = t.networks.flatMap((n) =>
    t.fractions.flatMap((f) =>
      (t.starts.get(n) ?? [])
        .filter((s) => s !== 'random')
        .map((s) => compare(scored(t.cell(n, s, f).arms), scored(t.cell(n, 'random', f).arms)))
        .filter((c): c is Comparison => c !== undefined),
    ),
  )
  const heading = '<h2>Against random init, beyond seed noise</h2>'
  if (rows.length === 0) return `${heading}<p class="no-data">No start has a seed paired with random init yet.</p>`
  const label = new Set([0, 3, 8])
  const body = rows
    .map(
      (c) =>
        `<tr data-network="${esc(c.network)}" data-start="${esc(c.start)}" data-fraction="${esc(c.fraction)}" data-verdict="${esc(c.verdict.kind)}">${comparisonCells(
          c,
        )
          .map((x, i) => `<td${label.has(i) ? ' class="label"' : ''}>${esc(x)}</td>`)
          .join('')}</tr>`,
    )
    .join('')
  return `${heading}<p class="note">Test macro-F1, mean (min-max) over the seeds both starts finished. ${esc(VERDICT_RULE)}</p>
<table data-table="verdicts"><thead><tr>${COMPARISON_COLUMNS.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${body}</tbody></table>`
}

function labelCurves(t: ArmTable): string {
  if (t.networks.length === 0) return figure('f1', 'Macro-F1 against label fraction', null)
  return t.networks
    .map((n) =>
      linePlot({
        name: `f1-${n}`,
        title: `${netLabel(n)}: test macro-F1 against label fraction`,
        xLabel: 'labelled fraction of the pool (log scale)',
        yLabel: 'macro-F1',
        logX: true,
        xTicks: t.fractions,
        xFormat: fmtPercent,
        series: (t.starts.get(n) ?? []).map((s, i) => ({
          label: startLabel(s),
          color: startColor(s, i),
          points: t.fractions.map((f) => {
            const c = t.cell(n, s, f).macroF1
            return { x: f, y: c.mean, err: c.std }
          }),
        })),
      }),
    )
    .join('')
}

function runLabel(r: PretrainRecord): string {
  const what = `${startLabel(r.method)} ${list(r.networks).map(netLabel).join('+')}`
  const sweep = r.sweep != null ? ` · ${String(r.sweep)} sweep: batch ${fmtSig(r.batchSize)}, ${fmtSig(r.epochs)} ep.` : ''
  return `${what}${sweep}${r.status === 'cancelled' ? ' (cancelled)' : ''}`
}

function pretrainingSection(r: ExperimentResults, t: ArmTable): string {
  const runs = list<PretrainRecord>(r.pretraining).filter((p) => p && typeof p === 'object')
  const epochs = (p: PretrainRecord) =>
    list<PretrainRecord['perEpoch'][number]>(p.perEpoch).filter((e) => e && typeof e === 'object')
  const loss = linePlot({
    name: 'pretrain-loss',
    title: 'Pre-training loss per epoch (each method has its own loss scale)',
    xLabel: 'epoch',
    yLabel: 'mean loss',
    series: runs.map((p, i) => ({
      label: runLabel(p),
      color: PALETTE[i % PALETTE.length],
      dashed: p.sweep != null,
      points: epochs(p).map((e) => ({ x: e.epoch, y: e.meanLoss })),
    })),
  })
  const networks = [...new Set([...t.networks, ...runs.flatMap((p) => list<Network>(p.networks))])]
  const spread = networks.map((n) =>
    linePlot({
      name: `spread-${n}`,
      title: `${netLabel(n)}: output spread per epoch (about 1: spread out, 0: collapsed)`,
      xLabel: 'epoch',
      yLabel: 'output spread',
      yInclude: [0],
      series: runs
        .map((p, i) => ({
          label: runLabel(p),
          color: PALETTE[i % PALETTE.length],
          dashed: p.sweep != null,
          points: epochs(p).map((e) => ({ x: e.epoch, y: (e.spread as Record<string, unknown> | undefined)?.[n] as number })),
        }))
        .filter((s) => s.points.some((q) => isFiniteNumber(q.y))),
    }),
  )
  const table = runs.length
    ? `<table data-table="pretraining"><thead><tr><th>run</th><th>status</th><th>batch size</th><th>epochs</th><th>wall time</th><th>device</th><th>folder</th></tr></thead><tbody>${runs
        .map(
          (p) =>
            `<tr><td class="label">${esc(runLabel(p))}</td><td class="label">${esc(p.status)}</td><td>${esc(fmtSig(p.batchSize))}</td><td>${esc(fmtSig(p.epochs))}</td><td>${esc(seconds(p.wallSec))}</td><td class="label" title="${esc(p.backend?.reason ?? '')}">${esc(p.backend?.name ?? 'not recorded')}</td><td class="label">${esc(p.dir)}</td></tr>`,
        )
        .join('')}</tbody></table>`
    : ''
  return `<h2>Pre-training</h2>${table}<div class="plots">${loss}${spread.join('')}</div>${wallTime(runs)}`
}

function wallTime(runs: PretrainRecord[]): string {
  const main = runs.filter((p) => p.sweep == null)
  const byMethod = [...groupBy(main, (p) => String(p.method))]
  const bars = byMethod.map(([m, rs], i) => ({
    label: startLabel(m),
    value: sum(rs.map((p) => p.wallSec)),
    color: startColor(m, i),
  }))
  const chart = barChart({
    name: 'pretrain-time',
    title: 'Pre-training wall time per method (main runs)',
    yLabel: 'seconds',
    bars,
  })
  const total = (m: string) => sum(main.filter((p) => p.method === m).map((p) => p.wallSec))
  const cass = total('cass')
  // Every other method against CASS: one backbone per run, so its time is the sum of its runs.
  const others = [...new Set(main.map((p) => p.method))].filter((m) => m !== 'cass' && isFiniteNumber(total(m)) && total(m) > 0)
  const against = others.map((m) => {
    const parts = main
      .filter((p) => p.method === m)
      .map((p) => `${list(p.networks).map(netLabel).join('+')} ${seconds(p.wallSec)}`)
      .join(' + ')
    const runs = main.filter((p) => p.method === m).length
    return `${startLabel(m)}: ${runs > 1 ? `${parts} = ` : ''}${seconds(total(m))}, <b>CASS / ${startLabel(m)} = ${fmt(cass / total(m), 2)}×</b>.`
  })
  const ratio =
    isFiniteNumber(cass) && against.length > 0
      ? `CASS trains both networks in one run: ${seconds(cass)}. A method that trains one backbone per run (DINO, VICReg) takes the sum of its runs. ${against.join(' ')}`
      : 'A time ratio needs a CASS pre-training run and one of another method.'
  const cancelled = main.some((p) => p.status === 'cancelled') ? ' A cancelled run counts only the time it ran.' : ''
  return `<h3>Wall time</h3><div class="plots">${chart}</div><p class="note">${ratio}${cancelled} A resumed run counts this process's share only.</p>`
}

function knnTable(r: ExperimentResults, t: ArmTable): string {
  const rows = list<KnnRecord>(r.knn).filter((k) => k && typeof k === 'object')
  if (rows.length === 0) return `<h2>kNN on frozen embeddings</h2><p class="no-data">No kNN results.</p>`
  const rank = (xs: unknown[], x: unknown) => (xs.includes(x) ? xs.indexOf(x) : xs.length)
  const starts = [...new Set([...t.starts.values()].flat())]
  const sorted = [...rows].sort(
    (a, b) =>
      rank(t.networks, a.network) - rank(t.networks, b.network) ||
      rank(starts, a.start) - rank(starts, b.start) ||
      (Number(a.k) || 0) - (Number(b.k) || 0),
  )
  const body = sorted
    .map(
      (k) =>
        `<tr><td class="label">${esc(netLabel(k.network))}</td><td class="label">${esc(startLabel(k.start))}</td><td>${esc(fmtSig(k.k))}</td><td>${fmt(k.accuracy)}</td><td>${fmt(k.macroF1)}</td></tr>`,
    )
    .join('')
  return `<h2>kNN on frozen embeddings</h2><p class="note">Cosine k-nearest neighbours on the pre-trained embeddings, before any fine-tuning.</p>
<table data-table="knn"><thead><tr><th>network</th><th>start</th><th>k</th><th>accuracy</th><th>macro-F1</th></tr></thead><tbody>${body}</tbody></table>`
}

function confusionSection(r: ExperimentResults, t: ArmTable): string {
  const names = list<unknown>(r.dataset?.classNames)
  const plots = t.networks.map((n) => {
    const fractions = t.fractions.filter((f) => (t.starts.get(n) ?? []).some((s) => t.cell(n, s, f).arms.length > 0))
    const fraction = fractions[fractions.length - 1]
    const start = fraction === undefined ? undefined : t.best(n, fraction)[0]
    const arms = start === undefined ? [] : t.cell(n, start, fraction).arms
    const arm = arms.find((a) => a.seed === 0) ?? arms[0]
    const title = arm
      ? `${netLabel(n)}: ${startLabel(start)} at ${fmtPercent(fraction)} labels, seed ${fmtSig(arm.seed)}`
      : `${netLabel(n)}: confusion matrix`
    if (!arm) return figure(`confusion-${n}`, title, null)
    const matrix = list(arm.test?.confusion).map((row) => list(row))
    const labels = matrix.map((_, i) => String(names[i] ?? i))
    const caption = `Rows: true class, columns: predicted. Macro-F1 ${fmt(metricOf(arm, 'macroF1'))}, balanced accuracy ${fmt(metricOf(arm, 'balancedAccuracy'))}; shade = share of the row.`
    const field = `arms[${list(r.arms).indexOf(arm)}].test.confusion`
    return heatmap({ name: `confusion-${n}`, title, labels, matrix, caption, field })
  })
  return `<h2>Confusion matrices</h2><p class="note">The best start (highest mean macro-F1) per network at the largest label fraction.</p><div class="plots">${plots.join('') || figure('confusion', 'Confusion matrices', null)}</div>`
}

function sweepSection(r: ExperimentResults): string {
  const arms = list<ArmRecord>(r.arms).filter((a) => a && typeof a === 'object')
  const sweepArms = arms.filter((a) => a.sweep != null && typeof a.sweep === 'object')
  if (sweepArms.length === 0) return ''
  const mainRuns = new Map(
    list<PretrainRecord>(r.pretraining)
      .filter((p) => p && p.sweep == null)
      .map((p) => [p.dir, p]),
  )
  const plots = [...groupBy(sweepArms, (a) => String(a.sweep?.kind))].flatMap(([kind, kindArms]) =>
    [...groupBy(kindArms, (a) => String(a.network))].map(([network, netArms]) => {
      const fractions = [...new Set(netArms.map((a) => a.fraction))]
      const field = kind === 'epochs' ? 'epochs' : 'batchSize'
      const series = [...groupBy(netArms, (a) => JSON.stringify([a.start, a.fraction]))].map(([, group], i) => {
        const { start, fraction } = group[0]
        // The main run's own arms are the sweep's reference point, at that run's value.
        const reference = arms
          .filter((a) => a.sweep == null && String(a.network) === network && a.start === start && a.fraction === fraction)
          .map((a) => ({ a, x: mainRuns.get(a.pretrainDir as string)?.[field] }))
          .filter((p) => isFiniteNumber(p.x))
          .map((p) => ({ ...p.a, sweep: { kind: kind as 'epochs', value: p.x as number } }))
        const byValue = groupBy([...group, ...reference], (a) => String(a.sweep?.value))
        return {
          label: fractions.length > 1 ? `${startLabel(start)} · ${fmtPercent(fraction)} labels` : startLabel(start),
          color: startColor(start, i),
          points: [...byValue.values()].map((g) => {
            const s = summarize(g.map((a) => metricOf(a, 'macroF1')))
            return { x: g[0].sweep?.value as number, y: s.mean, err: s.std }
          }),
        }
      })
      const what = kind === 'epochs' ? 'pre-training epochs' : 'pre-training batch size'
      return linePlot({
        name: `sweep-${kind}-${network}`,
        title: `${netLabel(network)}: macro-F1 against ${what}${fractions.length === 1 ? ` (${fmtPercent(fractions[0])} labels)` : ''}`,
        xLabel: kind === 'epochs' ? what : `${what} (log scale)`,
        yLabel: 'macro-F1',
        logX: kind !== 'epochs',
        series,
      })
    }),
  )
  return `<h2>Robustness sweeps</h2><p class="note">Fine-tuned from pre-training runs that differ from the main run in one setting only; the main run is the point at its own value. A flat line is a method that does not depend on that setting.</p><div class="plots">${plots.join('')}</div>`
}

export function renderReport(results: ExperimentResults): string {
  const t = armTable(results)
  const title = `${methodsTitle(results)} report: ${results.dataset?.name ?? 'experiment'}`
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title><style>${CSS}</style></head>
<body>
${header(results)}
<h2>Test metrics per start and label fraction</h2>${mainTable(t)}
${againstRandom(t)}
<h2>Label efficiency</h2><div class="plots">${labelCurves(t)}</div>
${pretrainingSection(results, t)}
${knnTable(results, t)}
${confusionSection(results, t)}
${sweepSection(results)}
${explanationsSection(results)}
</body></html>
`
}
