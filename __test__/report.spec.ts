import { execFileSync, spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, readFileSync, readdirSync, truncateSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'
import puppeteer, { type Page } from 'puppeteer-core'
import sharp from 'sharp'

import type { Metrics } from '../ts/events.js'
import type { ArmRecord, ExperimentResults, KnnRecord, PretrainRecord } from '../ts/experiment/results.js'
import { renderReport } from '../ts/report/render.js'
import { summarize } from '../ts/report/stats.js'
import { runCapped } from './capped.js'
import { tempDir } from './helpers.js'

const root = path.resolve(__dirname, '..')
const fixture = path.join(__dirname, 'fixtures', 'experiment-results.json')
const cass = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'ts', 'cli.ts'), ...args], { encoding: 'utf8', cwd: root })

const metrics = (
  macroF1: number | null,
  balancedAccuracy: number | null,
  confusion: unknown[][] = [
    [3, 1],
    [0, 4],
  ],
) =>
  ({
    numSamples: 8,
    accuracy: 0.875,
    balancedAccuracy,
    macroF1,
    microF1Sigmoid05: 0.8,
    macroAuroc: null,
    aurocPerClass: [null, null],
    perClass: [],
    confusion,
  }) as unknown as Metrics

const arm = (
  start: string,
  network: string,
  fraction: number,
  seed: number,
  f1: number | null,
  bacc = f1,
  extra: Partial<ArmRecord> = {},
) => ({ start, network, fraction, labelled: 10, seed, bestEpoch: 3, trainSec: 1, test: metrics(f1, bacc), ...extra }) as ArmRecord

const run = (extra: Partial<Record<keyof PretrainRecord, unknown>>) =>
  ({
    method: 'cass',
    networks: ['cnn'],
    status: 'completed',
    batchSize: 4,
    epochs: 1,
    wallSec: 3,
    dir: 'p',
    config: {},
    perEpoch: [],
    ...extra,
  }) as PretrainRecord

function tiny(parts: Partial<ExperimentResults> = {}): ExperimentResults {
  return {
    version: 1,
    startedAt: '2025-01-01T00:00:00Z',
    updatedAt: '2025-01-01T01:00:00Z',
    dataset: { name: 'tiny', source: 'mem', classes: 2, classNames: ['a', 'b'], pretrain: 10, pool: 10, val: 4, test: 8 },
    settings: { methods: ['cass', 'dino'], networks: ['cnn'], fractions: [0.1, 1], seeds: 3, preset: 'cpu-small', device: 'cpu' },
    pretraining: [],
    arms: [],
    knn: [],
    ...parts,
  }
}

/** The main table's cell of (network, start, fraction, metric): whether it is marked best, and its text. */
function cell(html: string, network: string, start: string, fraction: number, metric: string) {
  const re = new RegExp(
    `<td data-network="${network}" data-start="${start}" data-fraction="${fraction}" data-metric="${metric}"( class="best")?>(.*?)</td>`,
  )
  const m = re.exec(html)
  if (!m) throw new Error(`no cell ${network}/${start}/${fraction}/${metric}`)
  return { best: m[1] !== undefined, text: m[2].replace(/<[^>]+>/g, '') }
}

test('summarize: mean and sample standard deviation; NaN and null seeds are left out of both and of n', (t) => {
  const s = summarize([0.8, 0.9, 1.0])
  t.is(s.n, 3)
  t.true(Math.abs(s.mean - 0.9) < 1e-12)
  t.true(Math.abs(s.std - 0.1) < 1e-12) // n - 1: the population std would be 0.0816
  const holes = summarize([NaN, null, 2, undefined, 4, Infinity, '3'])
  t.deepEqual([holes.mean, holes.n], [3, 2])
  t.true(Math.abs(holes.std - Math.SQRT2) < 1e-12)
  t.true(Number.isNaN(summarize([5]).std))
  t.is(summarize([]).n, 0)
})

test('the table shows mean ± std over seeds and marks the best start per network and fraction by macro-F1', (t) => {
  const html = renderReport(
    tiny({
      arms: [
        ...[0.8, 0.9, 1.0].map((f1, seed) => arm('cass', 'cnn', 0.1, seed, f1, 0.5)),
        // Better balanced accuracy, worse macro-F1: the winner is chosen by macro-F1.
        ...[0.5, 0.6].map((f1, seed) => arm('dino', 'cnn', 0.1, seed, f1, 0.99)),
        arm('random', 'cnn', 0.1, 0, 0.2),
        ...[0.9, 0.92].map((f1, seed) => arm('cass', 'cnn', 1, seed, f1)),
        ...[0.95, 0.97].map((f1, seed) => arm('dino', 'cnn', 1, seed, f1)),
        arm('random', 'cnn', 1, 0, 0.3),
        // A sweep arm is not in the table, however good.
        arm('random', 'cnn', 1, 1, 0.999, 0.999, { sweep: { kind: 'batch-size', value: 8 } }),
      ],
    }),
  )
  const cass01 = cell(html, 'cnn', 'cass', 0.1, 'macroF1')
  t.true(cass01.best)
  t.regex(cass01.text, /^0\.900 ± 0\.100n=3 ★$/)
  const dino01 = cell(html, 'cnn', 'dino', 0.1, 'macroF1')
  t.false(dino01.best)
  t.regex(dino01.text, /^0\.550 ± 0\.071n=2$/)
  t.regex(cell(html, 'cnn', 'dino', 0.1, 'balancedAccuracy').text, /^0\.990 ± 0\.000n=2$/)
  t.true(cell(html, 'cnn', 'dino', 1, 'macroF1').best)
  t.false(cell(html, 'cnn', 'cass', 1, 'macroF1').best)
  const random1 = cell(html, 'cnn', 'random', 1, 'macroF1')
  t.false(random1.best)
  t.is(random1.text, '0.300n=1') // one seed: no std to show
  t.is((html.match(/class="best"/g) ?? []).length, 2)
  const rows = /<table data-table="main">.*?<tbody>(.*?)<\/tbody>/.exec(html)?.[1] ?? ''
  t.deepEqual(
    [...rows.matchAll(/<tr><td class="label">CNN<\/td><td class="label">([^<]+)<\/td>/g)].map((m) => m[1]),
    ['CASS', 'DINO', 'random init'],
  )
})

test('strings from results.json are escaped: a hostile file cannot inject markup', (t) => {
  const attack = '<script>alert(1)</script>'
  const results = tiny({
    dataset: {
      name: attack,
      source: '"><img src=x onerror=alert(1)>',
      classes: 2,
      classNames: ['<b>a</b>', "b' onload='x"],
      pretrain: 1,
      pool: 1,
      val: 1,
      test: 1,
    },
    settings: {
      methods: ['cass'],
      networks: ['cnn', '"onmouseover="x' as 'cnn'],
      fractions: [1],
      seeds: 1,
      preset: '<i>p</i>',
      device: 'cpu',
    },
    arms: [arm('cass', 'cnn', 1, 0, 0.9), arm('<i>evil</i>', '"onmouseover="x', 1, 0, 0.8)],
    pretraining: [
      run({
        dir: '</svg><script>x()</script>',
        backend: { name: '<b>gpu</b>', reason: '"><img src=x>' },
        perEpoch: [{ epoch: 1, meanLoss: 1, sec: 3, spread: { cnn: 1 } }],
      }),
    ],
    knn: [{ start: '<u>s</u>', network: 'cnn', k: 5, accuracy: 0.5, macroF1: 0.5 } as unknown as KnnRecord],
  })
  const html = renderReport(results)
  for (const raw of ['<script', '<img', '<b>a', '<b>gpu', '<i>p', '<i>evil', '<u>s', "b' onload='x", '"onmouseover="'])
    t.false(html.includes(raw), raw)
  t.true(html.includes('&lt;script&gt;alert(1)&lt;/script&gt;'))
  t.true(html.includes('data-plot="f1-&quot;onmouseover=&quot;x"'))
  t.true(html.includes('&lt;i&gt;evil&lt;/i&gt;'))
  // Defence in depth: the page forbids scripts and requests even if something slipped through
  // (images only from data: URIs, which make no request).
  t.regex(
    html,
    /<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">/,
  )
})

test('explanations from a hostile results.json: only strict base64 becomes an image, every text is escaped', (t) => {
  const evil = '"><script>alert(1)</script>'
  const html = renderReport({
    ...tiny(),
    explanations: {
      method: 'gradcam',
      seed: 1,
      size: 1e9,
      images: [
        {
          index: 0,
          name: evil,
          label: evil,
          png: `AAAA" onerror="alert(1)`,
          maps: { cnn: { start: evil, predicted: evil, score: 1, correct: true, png: 'AAAA' } },
        },
      ],
    },
  } as ExperimentResults)
  t.false(html.includes('<script>'))
  t.false(html.includes('onerror'))
  t.is((html.match(/<img /g) ?? []).length, 1, 'the well-formed picture only')
  t.true(html.includes('width="384"'), 'the displayed size is capped')
  t.true(html.includes('img-src data:'))
})

test('NaN and null numbers render as "–" and never reach an SVG attribute', (t) => {
  const html = renderReport(
    tiny({
      arms: [
        arm('cass', 'cnn', 1, 0, 0.9, 0.8, {
          test: metrics(0.9, 0.8, [
            [5, null],
            [NaN, 4],
          ]),
        }),
        arm('cass', 'cnn', 1, 1, null, null),
        arm('dino', 'cnn', 1, 0, NaN, Infinity),
        arm('dino', 'cnn', 1, 1, null, null),
        arm('random', 'cnn', NaN, 0, 0.5),
      ],
      pretraining: [
        run({
          wallSec: NaN,
          perEpoch: [
            { epoch: 1, meanLoss: NaN, sec: 1, spread: { cnn: null } },
            { epoch: 2, meanLoss: 0.5, sec: 1, spread: {} },
          ],
        }),
        run({ method: 'dino', wallSec: null, dir: 'q' }),
      ],
      knn: [{ start: 'cass', network: 'cnn', k: 5, accuracy: null as unknown as number, macroF1: NaN }],
    }),
  )
  t.false(/NaN|Infinity|undefined/.test(html))
  t.false(/="[^"]*null[^"]*"/.test(html))
  t.regex(cell(html, 'cnn', 'cass', 1, 'macroF1').text, /^0\.900n=1/) // the null seed is not counted
  t.is(cell(html, 'cnn', 'dino', 1, 'macroF1').text, '–')
  t.is(cell(html, 'cnn', 'dino', 1, 'balancedAccuracy').text, '–')
  t.regex(html, /<td>–<\/td><td>–<\/td><\/tr><\/tbody><\/table>/) // the kNN row
  // Wall times are unknown: the chart says so instead of drawing a zero.
  t.regex(html, /<figure class="plot" data-plot="pretrain-time" data-empty="true">.*?<p class="no-data">no data<\/p>/)
  // The confusion matrix keeps its finite cells and draws the others as missing.
  const confusion = /data-plot="confusion-cnn">(.*?)<\/figure>/.exec(html)?.[1] ?? ''
  t.is((confusion.match(/class="mark"/g) ?? []).length, 2)
  t.is((confusion.match(/class="missing"/g) ?? []).length, 2)
})

test('an experiment with no results yet shows "no data" in every plot, never an empty SVG', (t) => {
  const html = renderReport(tiny())
  const plots = html.match(/<figure [^>]*data-plot="[^"]*"[^>]*>/g) ?? []
  t.true(plots.length >= 4, plots.join('\n'))
  for (const p of plots) t.true(p.includes('data-empty="true"'), p)
  t.false(html.includes('<svg'))
  t.regex(html, /No fine-tuned arms yet/)
})

test('cass report DIR writes report.html atomically and refuses a missing, oversized or invalid results.json', (t) => {
  const dir = tempDir('report')
  copyFileSync(fixture, path.join(dir, 'results.json'))
  const ok = cass('report', dir)
  t.is(ok.status, 0, ok.stderr)
  const out = path.join(dir, 'report.html')
  t.is(ok.stdout.trim(), out)
  t.true(readFileSync(out, 'utf8').startsWith('<!doctype html>'))
  t.deepEqual(readdirSync(dir).sort(), ['report.html', 'results.json']) // no staged file left behind

  const usage = cass('report')
  t.is(usage.status, 2)
  t.regex(usage.stderr, /report needs one DIR/)

  const refused = (body: string | null, message: RegExp) => {
    const d = tempDir('report-bad')
    const file = path.join(d, 'results.json')
    if (body !== null) writeFileSync(file, body)
    const r = cass('report', d)
    t.is(r.status, 1, r.stderr)
    t.true(r.stderr.includes(file), r.stderr)
    t.regex(r.stderr, message)
    t.is(r.stderr.trim().split('\n').length, 1, r.stderr)
    t.false(existsSync(path.join(d, 'report.html')))
    return file
  }
  refused(null, /no such file/)
  refused('{"version": 1, "arms": [', /not valid JSON/)
  refused(JSON.stringify({ ...tiny(), version: 2 }), /results version 2 is not supported/)
  refused(JSON.stringify({ ...tiny(), arms: {} }), /"arms" must be an array/)
  // Sparse, so the test writes nothing: refused from its size, before any byte is read.
  const d = tempDir('report-big')
  writeFileSync(path.join(d, 'results.json'), '')
  truncateSync(path.join(d, 'results.json'), 64 * 1024 * 1024 + 1)
  const big = cass('report', d)
  t.is(big.status, 1)
  t.true(big.stderr.includes(`${path.join(d, 'results.json')}: larger than 64 MiB`), big.stderr)
})

const CHROMIUM = '/usr/bin/chromium'

/** Console errors, page errors and every request that is not `data:` or `about:` (aborted, and recorded). */
async function watch(page: Page) {
  const problems: string[] = []
  const requests: string[] = []
  page.on('console', (m) => void (m.type() === 'error' && problems.push(`console: ${m.text()}`)))
  page.on('pageerror', (e) => void problems.push(`page error: ${(e as Error).message}`))
  await page.setRequestInterception(true)
  page.on('request', (req) => {
    if (/^(data|about):/.test(req.url())) return void req.continue()
    requests.push(req.url())
    void req.abort()
  })
  return { problems, requests }
}

/** Every plot's name, emptiness and marks as the browser laid them out. */
const layout = (page: Page) =>
  page.evaluate(() =>
    [...document.querySelectorAll('[data-plot]')].map((plot) => {
      const marks = [...plot.querySelectorAll('.mark')]
      const svg = plot.querySelector('svg')
      const note = plot.querySelector('.no-data')?.getBoundingClientRect()
      return {
        name: plot.getAttribute('data-plot'),
        empty: plot.getAttribute('data-empty') === 'true',
        titled: !!svg?.querySelector(':scope > title')?.textContent && !!svg.getAttribute('aria-label'),
        marks: marks.length,
        visible: marks.filter((m) => {
          const box = m.getBoundingClientRect()
          return box.width > 0 && box.height > 0
        }).length,
        noteVisible: !!note && note.width > 0 && note.height > 0,
      }
    }),
  )

test('in Chromium: the fixture report draws every plot, makes no request and logs no error', async (t) => {
  if (!existsSync(CHROMIUM))
    return t.fail(`${CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium), as .ci/run does`)
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  })
  try {
    const page = await browser.newPage()
    await page.setViewport({ width: 1200, height: 900 })
    const seen = await watch(page)
    await page.setContent(renderReport(JSON.parse(readFileSync(fixture, 'utf8'))), { waitUntil: 'load' })
    const plots = await layout(page)
    // The fixture: 2 networks x 3 starts x 3 fractions, 9 pre-training runs (3 main + 6 batch-size
    // sweep, 33 epochs in all, 22 of them training each network), 2 methods' wall time, 10 x 10 confusion, 2 starts x 3 batch sizes.
    const marks = Object.fromEntries(plots.map((p) => [p.name, p.marks]))
    t.deepEqual(marks, {
      'f1-cnn': 9,
      'f1-vit': 9,
      'pretrain-loss': 33,
      'spread-cnn': 22,
      'spread-vit': 22,
      'pretrain-time': 2,
      'confusion-cnn': 100,
      'confusion-vit': 100,
      'sweep-batch-size-cnn': 6,
      'sweep-batch-size-vit': 6,
    })
    for (const p of plots) {
      t.false(p.empty, `${p.name} is empty`)
      t.true(p.titled, `${p.name} has no <title> or aria-label`)
      t.is(p.visible, p.marks, `${p.name}: ${p.marks - p.visible} marks have an empty box`)
    }
    t.is(await page.$$eval('table[data-table="main"] tbody tr', (rows) => rows.length), 6)
    t.deepEqual(await page.$$eval('td.best', (cells) => cells.length), 6)
    t.is(await page.evaluate(() => document.querySelectorAll('svg:not([aria-label])').length), 0)
    t.deepEqual(seen.problems, [])
    t.deepEqual(seen.requests, [])

    // Where each network looked: every inline PNG decodes and has a box on screen.
    const png = (shade: number) =>
      sharp(Buffer.alloc(8 * 8 * 3, shade), { raw: { width: 8, height: 8, channels: 3 } })
        .png()
        .toBuffer()
        .then((b) => b.toString('base64'))
    const map = async (correct: boolean) => ({ start: 'cass', predicted: 'b', score: 0.7, correct, png: await png(200) })
    const explanations = {
      method: 'gradcam' as const,
      seed: 1,
      size: 8,
      images: await Promise.all(
        [true, false].map(async (correct, index) => ({
          index,
          name: `img${index}.png`,
          label: 'b',
          png: await png(40),
          maps: { cnn: await map(correct), vit: await map(!correct) },
        })),
      ),
    }
    await page.setContent(renderReport({ ...tiny(), explanations }), { waitUntil: 'load' })
    const pictures = await page.$$eval('table.explain img', (imgs) =>
      imgs.map((i) => {
        const box = i.getBoundingClientRect()
        return { loaded: (i as HTMLImageElement).naturalWidth, width: box.width, height: box.height }
      }),
    )
    t.is(pictures.length, 6)
    t.true(
      pictures.every((p) => p.loaded === 8 && p.width >= 96 && p.height >= 96),
      JSON.stringify(pictures),
    )
    t.deepEqual(seen.problems, [])
    t.deepEqual(seen.requests, [])

    // An empty experiment: the "no data" notes are on screen.
    await page.setContent(renderReport(tiny()), { waitUntil: 'load' })
    const empty = await layout(page)
    t.true(empty.length > 0 && empty.every((p) => p.empty && p.noteVisible && p.marks === 0))
    t.deepEqual(seen.problems, [])

    // The watch itself catches a request, so the empty list above means something.
    const probe = await browser.newPage()
    const caught = await watch(probe)
    await probe.setContent('<img src="http://127.0.0.1:9/pixel.png">', { waitUntil: 'load' })
    t.deepEqual(caught.requests, ['http://127.0.0.1:9/pixel.png'])
  } finally {
    await browser.close()
  }
})

test('the pre-training table says which device each run had, with the reason on hover', (t) => {
  const html = renderReport(
    tiny({
      pretraining: [run({ backend: { name: 'cuda', reason: 'auto: CUDA device 0 works' } }), run({ method: 'dino', dir: 'q' })],
    }),
  )
  t.true(html.includes('<td class="label" title="auto: CUDA device 0 works">cuda</td>'))
  t.true(html.includes('<td class="label" title="">not recorded</td>'))
})

test('the dataset section says how many patients each split holds when images carried patients', (t) => {
  const base = tiny()
  const html = renderReport(tiny({ dataset: { ...base.dataset, patients: { pretrain: 110, pool: 110, val: 10, test: 30 } } }))
  t.true(
    html.includes(
      '<dt>patients per split</dt><dd>pre-training 110, labelled pool 110, validation 10, test 30 (a patient&#39;s images are in one split)</dd>',
    ),
  )
  t.false(renderReport(base).includes('patients per split'))
})

// ---- the report's time and memory are bounded in the shape of results.json --------------------

/** `cass report` on `results` in a child process whose writable memory is capped at 768 MiB. */
function reportCapped(name: string, results: string) {
  const dir = tempDir(`report-${name}`)
  writeFileSync(path.join(dir, 'results.json'), results)
  const run = runCapped(
    { writeReport: 'ts/report/write.ts' },
    `const out = writeReport(${JSON.stringify(dir)}); return require('node:fs').statSync(out).size`,
    768 * 2 ** 20,
    60_000,
  )
  return { ...run, dir }
}

test('2,000 distinct network/fraction pairs are refused, naming the field, without growing past the cap', (t) => {
  const arms = Array.from({ length: 2000 }, (_, i) => arm('cass', `net${i}`, (i + 1) / 2001, 0, 0.5))
  const run = reportCapped('pairs', JSON.stringify(tiny({ arms })))
  t.is(run.signal, null, run.stderr)
  t.is(run.status, 1, run.stderr)
  t.regex(run.result?.error ?? '', /results\.json: "arms" name 2001 distinct networks; a report shows at most 16/)
})

test('100,000 epoch points are thinned to what a plot can show, with no stack overflow', (t) => {
  const perEpoch = Array.from({ length: 100_000 }, (_, i) => ({ epoch: i + 1, meanLoss: 1 / (i + 1), spread: { cnn: 0.5 } }))
  const out = reportCapped('epochs', JSON.stringify(tiny({ pretraining: [run({ perEpoch })] })))
  t.is(out.signal, null, out.stderr)
  t.is(out.status, 0, `${out.result?.error} ${out.stderr}`)
  t.true((out.result?.ok as number) < 2 * 2 ** 20, `report of ${out.result?.ok} bytes`)
  const html = readFileSync(path.join(out.dir, 'report.html'), 'utf8')
  t.regex(html, /100,000 points; every \d+(st|nd|rd|th) point is drawn/)
})

test('a 3000 x 3000 confusion matrix is not drawn: the report says so and names the field', (t) => {
  const row = `[${Array(3000).fill(1).join(',')}]`
  const confusion = `[${Array(3000).fill(row).join(',')}]`
  const results = JSON.stringify(tiny({ arms: [arm('cass', 'cnn', 1, 0, 0.5)] })).replace(
    '"confusion":[[3,1],[0,4]]',
    `"confusion":${confusion}`,
  )
  const run = reportCapped('confusion', results)
  t.is(run.signal, null, run.stderr)
  t.is(run.status, 0, `${run.result?.error} ${run.stderr}`)
  const html = readFileSync(path.join(run.dir, 'report.html'), 'utf8')
  t.regex(html, /arms\[0\]\.test\.confusion has 3000 classes: too many to draw \(at most 100\)/)
  t.true(html.length < 2 * 2 ** 20)
})

test('values nested deeper than the results format goes are refused, with no stack overflow', (t) => {
  const deep = `${'['.repeat(200_000)}${']'.repeat(200_000)}`
  const results = JSON.stringify(tiny()).replace('"name":"tiny"', `"name":${deep}`)
  const run = reportCapped('deep', results)
  t.is(run.signal, null, run.stderr)
  t.is(run.status, 1, run.stderr)
  t.regex(run.result?.error ?? '', /results\.json: "dataset\.name" is nested deeper than 32 levels/)
})

test('a results.json that is a FIFO is refused at once, not waited on', (t) => {
  const dir = tempDir('report-fifo')
  execFileSync('mkfifo', [path.join(dir, 'results.json')])
  const out = runCapped(
    { writeReport: 'ts/report/write.ts' },
    `return writeReport(${JSON.stringify(dir)})`,
    768 * 2 ** 20,
    20_000,
  )
  t.is(out.signal, null, 'ended by the timeout: the open waited for a writer')
  t.regex(out.result?.error ?? '', /results\.json: not a regular file/)
})
