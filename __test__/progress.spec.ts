import { spawn } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'
import sharp from 'sharp'

import type { ProgressEvent, StepEvent } from '../ts/events.js'
import type { AddonChoice } from '../ts/native.js'
import { runExperiment } from '../ts/experiment/run.js'
import { GPU_WARMUP, progressInterval, progressReporter } from '../ts/progress.js'
import { rng, tempDir, tinyPretrain } from './helpers.js'

const root = path.resolve(__dirname, '..')

/** `count` striped 20 px PNGs in two class folders under `dir/data`. */
async function stripesPng(dir: string, count: number): Promise<string> {
  const next = rng(9)
  const writes: Promise<unknown>[] = []
  for (let i = 0; i < count; i++) {
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
  await Promise.all(writes)
  return path.join(dir, 'data')
}

const step = (n: number): StepEvent => ({
  type: 'step',
  step: n,
  totalSteps: 100,
  epoch: 0,
  loss: 0.5,
  parts: [],
  spread: {},
  lr: 1e-3,
  imagesPerSec: 42.25,
  stepSec: 0.1,
  etaSec: 75,
})

test('off a terminal, progress is a plain line with step, epoch, loss, images/s and ETA: at the first step, then once per interval', (t) => {
  let clock = 0
  const written: string[] = []
  const show = progressReporter('pretrain', {
    stream: { write: (s: string) => written.push(s) },
    everySec: 0.5,
    now: () => clock,
  })
  // A step every 0.1 s for 1.2 s: lines at 0, 0.5 and 1.0 s.
  for (let i = 1; i <= 13; i++, clock += 100) show(step(i))
  t.deepEqual(written, [
    'pretrain epoch 1 step 1/100 loss 0.5000 lr 1.00e-3 42.3 img/s eta 1m15s\n',
    'pretrain epoch 1 step 6/100 loss 0.5000 lr 1.00e-3 42.3 img/s eta 1m15s\n',
    'pretrain epoch 1 step 11/100 loss 0.5000 lr 1.00e-3 42.3 img/s eta 1m15s\n',
  ])
  // Epoch ends are printed as they come, between the periodic lines.
  show({ type: 'epoch', epoch: 0, meanLoss: 0.25, valLoss: null, best: false })
  t.is(written.at(-1), 'pretrain epoch 1 mean loss 0.2500\n')
  // A label function names the unit running now (the experiment's units share one reporter).
  let unit = 'arm 1/2:'
  const named: string[] = []
  const shared = progressReporter(() => unit, { stream: { write: (s: string) => named.push(s) }, everySec: 0 })
  shared(step(1))
  unit = 'arm 2/2:'
  shared(step(1))
  t.deepEqual(
    named.map((l) => l.split(' epoch')[0]),
    ['arm 1/2:', 'arm 2/2:'],
  )
})

test('on a terminal, every step rewrites one live line with a bar', (t) => {
  const written: string[] = []
  const show = progressReporter('finetune', { stream: { isTTY: true, write: (s: string) => written.push(s) }, everySec: 30 })
  for (let i = 1; i <= 3; i++) show(step(i * 50 - 50 || 1))
  t.is(written.length, 3)
  t.true(written.every((l) => l.startsWith('\r\x1b[2Kfinetune [') && !l.endsWith('\n')))
  t.regex(written[1], /\[#{10}\.{10}\] epoch 1 step 50\/100 /)
  t.regex(written[2], /\[#{20}\] epoch 1 step 100\/100 /)
})

test('on a GPU, the device line is followed by a word on the one-time kernel compilation; on the CPU it is not', (t) => {
  const addon: AddonChoice = { build: 'default', from: 'cass-ssl', reason: 'no CUDA package' }
  for (const [backend, lines] of [
    ['cpu', 1],
    ['cuda', 2],
    ['wgpu', 2],
  ] as const) {
    const written: string[] = []
    progressReporter('pretrain', { stream: { write: (s: string) => written.push(s) } })({
      type: 'device',
      backend,
      reason: 'asked for',
      addon,
    })
    t.is(written.length, lines, backend)
    t.is(written[0], `pretrain device ${backend} (asked for)\n`)
    if (lines === 2) t.is(written[1], `pretrain ${GPU_WARMUP}\n`)
  }
  t.regex(GPU_WARMUP, /one-time/)
})

test('the plain-line interval: CASS_PROGRESS_SECONDS when positive, else 30 s', (t) => {
  t.is(progressInterval({}), 30)
  t.is(progressInterval({ CASS_PROGRESS_SECONDS: '0.2' }), 0.2)
  for (const bad of ['', '0', '-1', 'soon', 'Infinity']) t.is(progressInterval({ CASS_PROGRESS_SECONDS: bad }), 30, bad)
})

test("an experiment logs its units' progress: pre-training steps and epochs, fine-tuning steps without the epochs", async (t) => {
  const dir = tempDir('progress-experiment')
  const data = await stripesPng(dir, 24)
  const tiny = { cnn: tinyPretrain.cnn, vit: tinyPretrain.vit, imageSize: 16, batchSize: 4 }
  const lines: string[] = []
  await runExperiment({
    data,
    outDir: path.join(dir, 'exp'),
    cacheDir: path.join(dir, 'cache'),
    methods: ['cass'],
    networks: ['cnn'],
    fractions: [1],
    seeds: 1,
    preset: 'cpu-small',
    sizes: { pretrainImages: 0, pretrainEpochs: 1, poolImages: 0, finetuneMaxEpochs: 2, valImages: 0, testImages: 0 },
    pretrain: { ...tiny, headDim: 16 },
    finetune: tiny,
    k: 3,
    log: (s) => lines.push(s),
    progressEverySec: 0,
  })
  const pre = lines.filter((l) => l.startsWith('cass experiment: [pre-training 1/1] pretrain/cass: '))
  t.regex(pre[0], /: epoch 1 step \d+\/\d+ loss \d+\.\d{4} lr \S+ \d+\.\d img\/s eta \S+$/)
  t.true(pre.some((l) => /: epoch 1 mean loss \d+\.\d{4}$/.test(l)))
  for (const arm of ['[arm 1/2] cass cnn 100 % seed 0', '[arm 2/2] random cnn 100 % seed 0']) {
    const own = lines.filter((l) => l.startsWith(`cass experiment: ${arm}: `))
    t.true(own.length > 0 && own.every((l) => /: epoch [12] step \d+\/\d+ loss .* img\/s eta /.test(l)), own.join('\n'))
  }
  // The second arm's ETA comes from the first arm's time, not "after the first unit".
  t.regex(
    lines.find((l) => l.startsWith('cass experiment: [arm 2/2]'))!,
    /\(ETA \d+ s\)$/,
  )
})

test('a non-TTY cass experiment prints plain progress lines during a long pre-training', async (t) => {
  const dir = tempDir('progress-cli')
  const data = await stripesPng(dir, 64)
  // stderr is a pipe, as under nohup or in CI; a line every 0.2 s instead of every 30 s.
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      path.join(root, 'ts', 'cli.ts'),
      'experiment',
      ...['--data', data, '--out', path.join(dir, 'exp'), '--cache-dir', path.join(dir, 'cache')],
      ...['--methods', 'cass', '--archs', 'cnn', '--fractions', '1', '--seeds', '1', '--pretrain-epochs', '10000'],
    ],
    { cwd: root, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CASS_PROGRESS_SECONDS: '0.2' } },
  )
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const line =
    /^cass experiment: \[pre-training 1\/1\] pretrain\/cass: epoch (\d+) step (\d+)\/(\d+) loss (\d+\.\d{4}) lr \S+ (\d+\.\d) img\/s eta (\S+)$/gm
  const progress = () => [...stderr.matchAll(line)]
  for (let i = 0; i < 1200 && progress().length < 4; i++) await new Promise((r) => setTimeout(r, 100))
  child.kill('SIGTERM')
  const code = await new Promise<number | null>((r) => child.on('exit', r))
  t.is(code, 130, stderr)
  const found = progress()
  t.true(found.length >= 4, stderr)
  // Lines of one unit in order, each with its numbers, the run's total of steps in every one.
  const steps = found.map((m) => Number(m[2]))
  t.true(
    steps.every((s, i) => i === 0 || s > steps[i - 1]),
    steps.join(' '),
  )
  t.true(found.every((m) => Number(m[5]) > 0 && m[3] === found[0][3]))
  // Plain lines: no carriage return, no terminal escapes.
  t.false(/[\r\x1b]/.test(stderr))
})
