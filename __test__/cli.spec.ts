import { spawn, spawnSync } from 'node:child_process'
import http from 'node:http'
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'
import sharp from 'sharp'

import { type DemoArm, formatTable, runDemo, summarise } from '../ts/demo.js'
import { parsePretrainConfig } from '../ts/config.js'
import { rng, tempDir, tinyPretrain } from './helpers.js'

const root = path.resolve(__dirname, '..')
const writeJson = (dir: string, value: unknown) => {
  const file = path.join(dir, `${Math.random().toString(36).slice(2)}.json`)
  writeFileSync(file, JSON.stringify(value))
  return file
}
const cass = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'ts', 'cli.ts'), ...args], { encoding: 'utf8', cwd: root })
/** `cass ARGS` as a child process, its stderr collected in `child.stderr` (for signal tests). */
const cassChild = (args: string[], env: NodeJS.ProcessEnv = process.env) =>
  spawn(process.execPath, ['--import', 'tsx', path.join(root, 'ts', 'cli.ts'), ...args], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'pipe'],
    env,
  })

test('help and usage errors have documented exit codes', (t) => {
  const help = cass('--help')
  t.is(help.status, 0)
  for (const c of ['pretrain', 'finetune', 'evaluate', 'embed', 'predict', 'demo']) t.regex(help.stdout, new RegExp(`cass ${c}`))
  t.is(cass('pretrain', '--help').status, 0)
  const unknown = cass('frobnicate')
  t.is(unknown.status, 2)
  t.regex(unknown.stderr, /unknown command/)
  // Names of Object.prototype are not commands either (they used to exit 0 silently).
  const inherited = cass('toString')
  t.is(inherited.status, 2)
  t.regex(inherited.stderr, /unknown command "toString"/)
  const missing = cass('pretrain', '--out', '/tmp/x')
  t.is(missing.status, 2)
  t.regex(missing.stderr, /pretrain needs --data PATH \(see cass pretrain --help\)/)
  const bad = cass('pretrain', '--data', '/tmp', '--out', '/tmp/x', '--batch-size', '1')
  t.is(bad.status, 2)
  t.regex(bad.stderr, /batchSize/)
  const flag = cass('pretrain', '--no-such-flag')
  t.is(flag.status, 2)
  // A config file that is valid JSON but not an object used to be taken as an empty config.
  const dir = tempDir('usage')
  for (const body of ['42', 'null', '[1]']) {
    writeFileSync(path.join(dir, 'c.json'), body)
    const r = cass('pretrain', '--data', dir, '--out', path.join(dir, 'o'), '--config', path.join(dir, 'c.json'))
    t.is(r.status, 2, body)
    t.regex(r.stderr, /must hold a JSON object/)
  }
  // A patch size that does not divide the image: refused before any data is read (the folder
  // here holds no images, so reaching the data would fail differently).
  const geometry = cass('pretrain', '--data', dir, '--out', path.join(dir, 'g'), '--config', writeJson(dir, { imageSize: 30 }))
  t.is(geometry.status, 2)
  t.regex(geometry.stderr, /vit\.patchSize/)
  // --out naming a file: refused before any data is read.
  writeFileSync(path.join(dir, 'file'), 'x')
  const onFile = cass('pretrain', '--data', dir, '--out', path.join(dir, 'file'))
  t.is(onFile.status, 2)
  t.regex(onFile.stderr, /--out .* is a file, not a folder/)
  // A missing --keras-package: one line naming the file, no stack trace.
  const out = cass('weights', 'import', '--keras-package', path.join(dir, 'missing.tgz'), '--out', path.join(dir, 'w'))
  t.is(out.status, 1)
  t.is(out.stderr.trim().split('\n').length, 1, out.stderr)
  t.notRegex(out.stderr, /\n\s+at /)
})

/** 24 striped 20 px PNGs in two class folders under `dir/data`. */
function stripesPng(dir: string): { images: Promise<void> } {
  const next = rng(9)
  const writes: Promise<unknown>[] = []
  for (let i = 0; i < 24; i++) {
    const cls = i % 2
    const raw = Buffer.alloc(20 * 20 * 3)
    for (let p = 0; p < 400; p++) {
      const on = cls ? ((p % 20) >> 2) % 2 : ((p / 20) >> 2) % 2
      raw.fill(Math.floor((on ? 200 : 50) + 30 * next()), p * 3, p * 3 + 3)
    }
    mkdirSync(path.join(dir, 'data', `c${cls}`), { recursive: true })
    writes.push(
      sharp(raw, { raw: { width: 20, height: 20, channels: 3 } })
        .png()
        .toFile(path.join(dir, 'data', `c${cls}`, `${i}.png`)),
    )
  }
  return { images: Promise.all(writes).then(() => undefined) }
}

test('pretrain -> finetune -> evaluate -> embed on an image folder', async (t) => {
  const dir = tempDir('cli')
  await stripesPng(dir).images
  const cfg = path.join(dir, 'tiny.json')
  writeFileSync(cfg, JSON.stringify({ ...tinyPretrain, epochs: 2 }))
  const cache = ['--cache-dir', path.join(dir, 'cache')]
  const pre = cass('pretrain', '--data', path.join(dir, 'data'), '--config', cfg, '--out', path.join(dir, 'pre'), ...cache)
  t.is(pre.status, 0, pre.stderr)
  t.regex(pre.stderr, /24 images \(folder, 2 classes/)
  const lines = readFileSync(path.join(dir, 'pre', 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
  t.true(lines.filter((l) => l.type === 'step').every((l) => Number.isFinite(l.loss) && l.imagesPerSec > 0))
  t.is(lines.filter((l) => l.type === 'epoch').length, 2)
  // The device comes first, in the log and on the terminal, with why auto chose it.
  t.like(lines[0], { type: 'device', backend: 'cpu' })
  t.regex(pre.stderr, /pretrain device cpu \(auto: cuda: not in this build; wgpu: not in this build\)/)
  // The same --out again: refused before any decoding, the run left as it was.
  const again = cass('pretrain', '--data', path.join(dir, 'data'), '--config', cfg, '--out', path.join(dir, 'pre'), ...cache)
  t.is(again.status, 2)
  t.regex(again.stderr, /already holds a pre-training run.*--resume.*--overwrite/)
  t.is(
    readFileSync(path.join(dir, 'pre', 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n').length,
    lines.length,
  )
  // --resume finds the checkpoint's step and drops log lines past it (a run killed after its
  // last checkpoint logged steps that the resumed run replays).
  const steps = lines.filter((l) => l.type === 'step').length
  appendFileSync(path.join(dir, 'pre', 'metrics.jsonl'), `${JSON.stringify({ type: 'step', step: steps + 3 })}\n`)
  const resumed = cass(
    'pretrain',
    '--data',
    path.join(dir, 'data'),
    '--config',
    cfg,
    '--out',
    path.join(dir, 'pre'),
    '--resume',
    ...cache,
  )
  t.is(resumed.status, 0, resumed.stderr)
  t.regex(resumed.stderr, new RegExp(`resuming .* at step ${steps}`))
  // The log keeps the lines up to the checkpoint, plus the resumed run's device line.
  const after = readFileSync(path.join(dir, 'pre', 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
  t.is(after.length, lines.length + 1)
  t.is(JSON.parse(after.at(-1)!).type, 'device')
  // Outputs that cannot be written are refused before any work.
  const file = path.join(dir, 'a-file')
  writeFileSync(file, 'keep')
  const ftFile = cass('finetune', '--data', path.join(dir, 'data'), '--init', 'random', '--arch', 'cnn', '--out', file)
  t.is(ftFile.status, 2)
  t.regex(ftFile.stderr, /is a file, not a folder/)
  const evDir = cass('evaluate', '--checkpoint', path.join(dir, 'pre'), '--data', path.join(dir, 'data'), '--out', dir)
  t.is(evDir.status, 2)
  t.regex(evDir.stderr, /is a folder, not a file/)
  t.is(readFileSync(file, 'utf8'), 'keep')

  const ftCfg = path.join(dir, 'ft.json')
  writeFileSync(
    ftCfg,
    JSON.stringify({ cnn: tinyPretrain.cnn, vit: tinyPretrain.vit, imageSize: 16, batchSize: 4, maxEpochs: 2 }),
  )
  const ft = cass(
    'finetune',
    '--data',
    path.join(dir, 'data'),
    '--from',
    path.join(dir, 'pre'),
    '--arch',
    'vit',
    '--labels',
    '0.5',
    '--config',
    ftCfg,
    '--out',
    path.join(dir, 'ft'),
    ...cache,
  )
  t.is(ft.status, 0, ft.stderr)
  const metrics = JSON.parse(readFileSync(path.join(dir, 'ft', 'metrics.json'), 'utf8'))
  t.is(metrics.arch, 'vit')
  t.is(metrics.init, 'cass')
  t.true(metrics.metrics.macroF1 >= 0 && metrics.metrics.macroF1 <= 1)

  const ev = cass('evaluate', '--checkpoint', path.join(dir, 'ft'), '--data', path.join(dir, 'data'), ...cache)
  t.is(ev.status, 0, ev.stderr)
  t.deepEqual(JSON.parse(ev.stdout).metrics, metrics.metrics)

  // predict on the same split gives the classes evaluate's confusion matrix counts, with the
  // folders' class names kept in the checkpoint.
  const pr = cass('predict', '--checkpoint', path.join(dir, 'ft'), '--data', path.join(dir, 'data'), '--split', 'test', ...cache)
  t.is(pr.status, 0, pr.stderr)
  const [header, ...rows] = pr.stdout.trim().split('\n')
  t.is(header, '"image","label","predicted","score_c0","score_c1"')
  const confusion = [
    [0, 0],
    [0, 0],
  ]
  for (const row of rows) {
    const [, label, predicted, ...scores] = row.split(',')
    confusion[Number(label.slice(2, 3))][Number(predicted.slice(2, 3))]++
    t.true(Math.abs(scores.map(Number).reduce((a, b) => a + b) - 1) < 1e-5) // softmax scores
  }
  t.deepEqual(confusion, metrics.metrics.confusion)
  // JSON lines to a file; a folder of unlabelled images works too.
  const jsonl = path.join(dir, 'p.jsonl')
  const unlabelled = cass(
    'predict',
    '--checkpoint',
    path.join(dir, 'ft'),
    '--data',
    path.join(dir, 'data', 'c0'),
    '--out',
    jsonl,
    ...cache,
  )
  t.is(unlabelled.status, 0, unlabelled.stderr)
  const answers = readFileSync(jsonl, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
  t.is(answers.length, 12)
  t.true(answers.every((a) => ['c0', 'c1'].includes(a.predicted) && a.label === undefined && Object.keys(a.scores).length === 2))
  // A pre-training checkpoint has no classifier: a usage error naming what works.
  const noHead = cass('predict', '--checkpoint', path.join(dir, 'pre'), '--data', path.join(dir, 'data'), ...cache)
  t.is(noHead.status, 2)
  t.regex(noHead.stderr, /no classifier/)
  // The fine-tuned classifier as ONNX, from the command line.
  const onnxOut = path.join(dir, 'ft.onnx')
  const ex = cass('weights', 'export', '--checkpoint', path.join(dir, 'ft'), '--out', onnxOut)
  t.is(ex.status, 0, ex.stderr)
  t.is(JSON.parse(ex.stdout).out, onnxOut)
  t.true(readFileSync(onnxOut).length > 1000)

  const em = cass(
    'embed',
    '--checkpoint',
    path.join(dir, 'pre'),
    '--arch',
    'cnn',
    '--data',
    path.join(dir, 'data'),
    '--out',
    path.join(dir, 'emb'),
    ...cache,
  )
  t.is(em.status, 0, em.stderr)
  const npy = readFileSync(path.join(dir, 'emb', 'embeddings.npy'))
  t.is(npy.toString('latin1', 1, 6), 'NUMPY')
  t.regex(npy.toString('latin1', 10, 120), /'shape': \(24, 32\)/)
  t.is(JSON.parse(readFileSync(path.join(dir, 'emb', 'index.json'), 'utf8')).names.length, 24)
})

test('SIGTERM stops a pre-training like Ctrl-C: exit 130 and a resumable checkpoint', async (t) => {
  const dir = tempDir('sigterm')
  const { images } = stripesPng(dir)
  await images
  const cfg = path.join(dir, 'long.json')
  writeFileSync(cfg, JSON.stringify({ ...tinyPretrain, epochs: 10_000 }))
  const out = path.join(dir, 'pre')
  const child = cassChild([
    'pretrain',
    '--data',
    path.join(dir, 'data'),
    '--config',
    cfg,
    '--out',
    out,
    '--cache-dir',
    path.join(dir, 'cache'),
  ])
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const log = path.join(out, 'metrics.jsonl')
  for (let i = 0; i < 600 && !(existsSync(log) && readFileSync(log, 'utf8').includes('"step"')); i++)
    await new Promise((r) => setTimeout(r, 100))
  child.kill('SIGTERM')
  const code = await new Promise<number | null>((r) => child.on('exit', r))
  t.is(code, 130, stderr)
  t.regex(stderr, /SIGTERM: stopping at the next step/)
  const state = JSON.parse(readFileSync(path.join(out, 'checkpoint', 'state.json'), 'utf8'))
  t.false(state.completed)
  t.true(state.step >= 1)
})

test('Ctrl-C while hf: weights download stops with exit 130, like any stopped command', async (t) => {
  const dir = tempDir('sigint-download')
  await stripesPng(dir).images
  // A hub that accepts connections and never answers.
  const silent = http.createServer(() => undefined)
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r))
  const { port } = silent.address() as { port: number }
  try {
    const child = cassChild(
      [
        'pretrain',
        '--data',
        path.join(dir, 'data'),
        '--out',
        path.join(dir, 'pre'),
        '--cnn-weights',
        'hf:owner/model',
        '--cache-dir',
        path.join(dir, 'cache'),
      ],
      { ...process.env, HF_ENDPOINT: `http://127.0.0.1:${port}`, HF_HOME: path.join(dir, 'hf') },
    )
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    // Wait until the data is loaded and the download has begun.
    for (let i = 0; i < 300 && !/data: \d+ images/.test(stderr); i++) await new Promise((r) => setTimeout(r, 100))
    await new Promise((r) => setTimeout(r, 500))
    child.kill('SIGINT')
    const code = await new Promise<number | null>((r) => child.on('exit', r))
    t.is(code, 130, stderr)
  } finally {
    silent.closeAllConnections()
    silent.close()
  }
})

test('SIGTERM stops an experiment like any other stopped command: exit 130', async (t) => {
  const dir = tempDir('sigterm-experiment')
  await stripesPng(dir).images
  const out = path.join(dir, 'exp')
  const child = cassChild([
    'experiment',
    '--data',
    path.join(dir, 'data'),
    '--out',
    out,
    '--cache-dir',
    path.join(dir, 'cache'),
    '--methods',
    'cass',
    '--fractions',
    '1',
    '--seeds',
    '1',
    '--pretrain-epochs',
    '10000',
  ])
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  for (let i = 0; i < 600 && !stderr.includes('[pre-training 1/'); i++) await new Promise((r) => setTimeout(r, 100))
  child.kill('SIGTERM')
  const code = await new Promise<number | null>((r) => child.on('exit', r))
  t.is(code, 130, stderr)
  t.regex(stderr, /cass experiment: stopped; run the same command again to continue/)
})

test('demo runs the experiment on real MNIST (tiny sizes), prints the paired table and writes results.json and the report', async (t) => {
  const out = tempDir('demo')
  const sizes = {
    pretrainImages: 64,
    pretrainEpochs: 1,
    finetuneImages: 200,
    finetuneMaxEpochs: 1,
    valImages: 40,
    testImages: 60,
    fractions: [0.01, 1],
    seeds: 2,
    fullLabelSeeds: 1,
  }
  const { arms, cells, results } = await runDemo({
    outDir: out,
    quiet: true,
    cacheDir: path.join(tempDir('demo-cache'), 'c'),
    sizes,
  })
  // 2 networks x (2 seeds at 1 % + 1 at 100 %) x 2 inits.
  t.is(arms.length, 12)
  t.true(arms.every((a) => a.macroF1 >= 0 && a.macroF1 <= 1 && a.metrics.numSamples === 60))
  t.true(arms.find((a) => a.labels === 0.01)!.labelledImages >= 10, 'at least one image per digit')
  // Paired: each seed gives CASS and random init the same number of labelled images, and the
  // two seeds draw different ones.
  for (const a of arms.filter((x) => x.init === 'cass')) {
    const r = arms.find((x) => x.init === 'random' && x.arch === a.arch && x.labels === a.labels && x.seed === a.seed)!
    t.is(r.labelledImages, a.labelledImages)
  }
  t.deepEqual(
    cells.map((c) => `${c.network}-${c.fraction}-${c.verdict.n}-${c.start}`),
    ['cnn-0.01-2-cass', 'cnn-1-1-cass', 'vit-0.01-2-cass', 'vit-1-1-cass'],
  )
  const saved = JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8'))
  t.is(saved.arms.length, 12)
  t.is(saved.pretraining[0].config.views, parsePretrainConfig({ preset: 'cpu-small' }).views)
  t.true(Number.isFinite(saved.pretraining[0].perEpoch[0].spread.cnn))
  t.true(saved.pretraining[0].wallSec > 0)
  t.true(existsSync(path.join(out, 'report.html')))
  // Run again: everything is done, nothing is recomputed, the same table comes back.
  const again = await runDemo({ outDir: out, quiet: true, cacheDir: path.join(tempDir('demo-cache'), 'c'), sizes })
  t.deepEqual(again.results.arms, results.arms)
})

test('demo table: paired gain per cell with its standard error, and verdicts that respect seed noise', (t) => {
  const arm = (arch: 'cnn' | 'vit', init: 'cass' | 'dino' | 'random', seed: number, macroF1: number) =>
    ({ arch, init, labels: 0.1, seed, labelledImages: 20, macroF1 }) as DemoArm
  const cells = summarise([
    arm('cnn', 'cass', 0, 0.8),
    arm('cnn', 'random', 0, 0.7),
    arm('cnn', 'cass', 1, 0.6),
    arm('cnn', 'random', 1, 0.6),
    arm('vit', 'cass', 0, 0.3),
    arm('vit', 'dino', 0, 0.503),
    arm('vit', 'random', 0, 0.5),
  ])
  t.is(cells.length, 3)
  t.true(Math.abs(cells[0].verdict.gain - 0.05) < 1e-12)
  t.deepEqual([cells[0].ours.min, cells[0].ours.max], [0.6, 0.8])
  t.true(Math.abs(cells[0].random.mean - 0.65) < 1e-12)
  // +0.1 on one seed and a tie on the other: a mean gain of 0.05 that the seeds do not support.
  t.is(cells[0].verdict.kind, 'within noise')
  // One seed: -0.2 is printed, but one seed cannot tell a method from its noise.
  t.is(cells[1].verdict.kind, 'within noise')
  t.is(cells[2].start, 'dino')
  const table = formatTable(cells)
  t.regex(
    table,
    /\| CNN \| 10 % \(20\) \| 2 \| CASS \| 0\.700 \(0\.600-0\.800\) \| 0\.650 \(0\.600-0\.700\) \| \+0\.050 ± 0\.050 \| 1\/2 \| within noise \|/,
  )
  t.regex(table, /\| ViT \| 10 % \(20\) \| 1 \| CASS \| 0\.300 \| 0\.500 \| -0\.200 \| 0\/1 \| within noise \(1 seed\) \|/)
  t.regex(table, /\| ViT \| 10 % \(20\) \| 1 \| DINO \| 0\.503 \| 0\.500 \| \+0\.003 \| 1\/1 \| within noise \(1 seed\) \|/)
})

test('weights export writes timm names that load back strictly', async (t) => {
  const dir = tempDir('export')
  const { stripes } = await import('./helpers.js')
  const { pretrain } = await import('../ts/index.js')
  const { images } = stripes(8, 16, 2)
  await pretrain({ config: { ...tinyPretrain, epochs: 1 }, images, outDir: path.join(dir, 'pre') })
  const out = path.join(dir, 'vit.safetensors')
  const r = cass('weights', 'export', '--checkpoint', path.join(dir, 'pre'), '--arch', 'vit', '--out', out)
  t.is(r.status, 0, r.stderr)
  const file = readFileSync(out)
  const header = JSON.parse(file.toString('utf8', 8, 8 + Number(file.readBigUInt64LE(0)))) as Record<string, { shape: number[] }>
  t.deepEqual(header['blocks.0.attn.qkv.weight'].shape, [48, 16])
  t.deepEqual(header['pos_embed'].shape, [1, 17, 16])
  t.truthy(header['head.weight'])
  const cnn = path.join(dir, 'cnn.safetensors')
  t.is(cass('weights', 'export', '--checkpoint', path.join(dir, 'pre'), '--arch', 'cnn', '--out', cnn).status, 0)
  const h2 = JSON.parse(readFileSync(cnn).toString('utf8', 8, 8 + Number(readFileSync(cnn).readBigUInt64LE(0)))) as Record<
    string,
    { dtype: string }
  >
  t.is(h2['layer1.0.bn1.num_batches_tracked'].dtype, 'I64')
  // Starting a new pre-training from exported weights, head included, works; a head of
  // another width needs --ignore-head.
  const again = await pretrain({
    config: { ...tinyPretrain, epochs: 1, cnnWeights: cnn, vitWeights: out },
    images,
    outDir: path.join(dir, 'again'),
  })
  t.is(again.status, 'completed')
  const err = await t.throwsAsync(
    pretrain({ config: { ...tinyPretrain, headDim: 8, epochs: 1, cnnWeights: cnn }, images, outDir: path.join(dir, 'bad') }),
  )
  t.regex(err.message, /fc\.weight/)
  const ok = await pretrain({
    config: { ...tinyPretrain, headDim: 8, epochs: 1, cnnWeights: cnn, ignoreHead: true },
    images,
    outDir: path.join(dir, 'ok'),
  })
  t.is(ok.status, 'completed')
})
