/**
 * `npm run bench:predict`: answering with a loaded model on the CPU, ours (`loadModel` ->
 * `Model.predict`) against onnxruntime-node running the ONNX file we export of the same
 * checkpoint, in the same process, alternated round by round.
 *
 *   npm run bench:predict -- [--rounds 5] [--quick] [--out bench/results/FILE.json]
 *
 * For each network (cpu-small's CNN at 32 px, ResNet-18 and ViT-Ti at 224 px; random-init
 * classifiers, since speed does not depend on the weights' values):
 * - latency: one image per call, calls one after another: p50 and p99 of the per-call times
 *   over all rounds (with fewer than 100 calls p99 is the slowest call);
 * - batch 64: one call of 64 images, images/s;
 * - 64 concurrent: 64 single-image calls started together, images/s (ours batches them on the
 *   engine thread; onnxruntime-node runs concurrent `run`s of one session as they come).
 * Both sides start from the same 8-bit RGB images at the model's size: ours takes them as they
 * are; for onnxruntime they are converted to float32 NCHW in [0, 1] in JavaScript (what a user
 * of the file has to do), inside the timed region. onnxruntime uses its default threads (one per
 * physical core), ours burn's CPU backend (one per core).
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'

import { InferenceSession, Tensor } from 'onnxruntime-node'

import { type FinetuneInput, exportWeights, finetune, loadModel } from '../ts/index.js'

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
  },
})
const rounds = values.quick ? 2 : Number(values.rounds)

interface Case {
  name: string
  config: FinetuneInput
  size: number
  /** Sequential single-image calls per round. */
  singles: number
}
const CASES: Case[] = [
  { name: 'cpu-small CNN 32 px', config: { preset: 'cpu-small', arch: 'cnn' }, size: 32, singles: 40 },
  { name: 'ResNet-18 224 px', config: { arch: 'cnn', cnn: 'resnet18', imageSize: 224 }, size: 224, singles: 12 },
  { name: 'ViT-Ti 224 px', config: { arch: 'vit', vit: 'vit-tiny', imageSize: 224 }, size: 224, singles: 12 },
]

let seed = 99
const randomImages = (count: number, size: number) =>
  new Uint8Array(count * size * size * 3).map(() => {
    seed = (seed * 1103515245 + 12345) >>> 0
    return seed >>> 24
  })

/** 8-bit HWC RGB -> float32 NCHW in [0, 1]. */
function toNchw(pixels: Uint8Array, count: number, size: number): Float32Array {
  const plane = size * size
  const out = new Float32Array(count * 3 * plane)
  for (let i = 0; i < count; i++) {
    const src = i * plane * 3
    const dst = i * 3 * plane
    for (let p = 0; p < plane; p++) {
      out[dst + p] = pixels[src + p * 3] / 255
      out[dst + plane + p] = pixels[src + p * 3 + 1] / 255
      out[dst + 2 * plane + p] = pixels[src + p * 3 + 2] / 255
    }
  }
  return out
}

interface Runner {
  /** Answers `count` images (HWC RGB bytes at the model's size). */
  predict(pixels: Uint8Array, count: number): Promise<unknown>
  close(): Promise<void>
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]
}
const spread = (xs: number[]) => ({ min: Math.min(...xs), median: quantile(xs, 0.5), max: Math.max(...xs) })

interface Side {
  latencyMs: number[]
  batch64: number[]
  concurrent64: number[]
}

async function measure(r: Runner, c: Case, side: Side) {
  const bytes = c.size * c.size * 3
  const one = randomImages(1, c.size)
  const batch = randomImages(64, c.size)
  for (let k = 0; k < c.singles; k++) {
    const t0 = performance.now()
    await r.predict(one, 1)
    side.latencyMs.push(performance.now() - t0)
  }
  let t0 = performance.now()
  await r.predict(batch, 64)
  side.batch64.push(64 / ((performance.now() - t0) / 1000))
  t0 = performance.now()
  await Promise.all(Array.from({ length: 64 }, (_, i) => r.predict(batch.subarray(i * bytes, (i + 1) * bytes), 1)))
  side.concurrent64.push(64 / ((performance.now() - t0) / 1000))
}

async function main() {
  const root = mkdtempSync(path.join(os.tmpdir(), 'cass-bench-predict-'))
  const results: Record<string, unknown>[] = []
  try {
    for (const c of CASES) {
      const dir = path.join(root, c.name.replace(/\W+/g, '-'))
      const images = { pixels: randomImages(4, c.size), count: 4, height: c.size, width: c.size }
      await finetune({
        config: { ...c.config, numClasses: 2, batchSize: 2, maxEpochs: 1, device: 'cpu' },
        images,
        train: { indices: [0, 1], labels: [0, 1] },
        val: { indices: [2, 3], labels: [0, 1] },
        outDir: dir,
      })
      const onnxFile = await exportWeights({
        checkpoint: dir,
        format: 'onnx',
        out: path.join(root, `${path.basename(dir)}.onnx`),
      })
      const model = await loadModel(dir, { device: 'cpu', maxBatch: 64 })
      const session = await InferenceSession.create(onnxFile)
      const ours: Runner = {
        predict: (p, n) => model.predict({ pixels: p, count: n, height: c.size, width: c.size }),
        close: () => model.close(),
      }
      const ort: Runner = {
        predict: (p, n) => session.run({ pixels: new Tensor('float32', toNchw(p, n, c.size), [n, 3, c.size, c.size]) }),
        close: () => session.release(),
      }
      // One untimed pass each: first-call allocations and kernel selection.
      await measure(ours, { ...c, singles: 2 }, { latencyMs: [], batch64: [], concurrent64: [] })
      await measure(ort, { ...c, singles: 2 }, { latencyMs: [], batch64: [], concurrent64: [] })
      const sides: Record<'ours' | 'onnxruntime', Side> = {
        ours: { latencyMs: [], batch64: [], concurrent64: [] },
        onnxruntime: { latencyMs: [], batch64: [], concurrent64: [] },
      }
      for (let round = 0; round < rounds; round++) {
        // Alternate which goes first, so drift in the machine's state favours neither.
        const order = round % 2 === 0 ? (['ours', 'onnxruntime'] as const) : (['onnxruntime', 'ours'] as const)
        for (const name of order) await measure(name === 'ours' ? ours : ort, c, sides[name])
      }
      await ours.close()
      await ort.close()
      const summary = Object.fromEntries(
        Object.entries(sides).map(([k, s]) => [
          k,
          {
            latencyMs: { p50: quantile(s.latencyMs, 0.5), p99: quantile(s.latencyMs, 0.99), calls: s.latencyMs.length },
            batch64ImagesPerSec: spread(s.batch64),
            concurrent64ImagesPerSec: spread(s.concurrent64),
          },
        ]),
      )
      results.push({ case: c.name, ...summary })
      console.error(`${c.name}: done`)
    }
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
  const f = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1))
  const lines = [
    '| network | latency p50 / p99 ms, ours | onnxruntime | batch 64 img/s, ours | onnxruntime | ratio | 64 concurrent img/s, ours | onnxruntime | ratio |',
    '|---|---|---|---|---|---|---|---|---|',
  ]
  for (const r of results as { case: string; ours: Summary; onnxruntime: Summary }[]) {
    const o = r.ours
    const x = r.onnxruntime
    lines.push(
      `| ${r.case} | ${f(o.latencyMs.p50)} / ${f(o.latencyMs.p99)} | ${f(x.latencyMs.p50)} / ${f(x.latencyMs.p99)} | ${f(o.batch64ImagesPerSec.median)} (${f(o.batch64ImagesPerSec.min)}-${f(o.batch64ImagesPerSec.max)}) | ${f(x.batch64ImagesPerSec.median)} (${f(x.batch64ImagesPerSec.min)}-${f(x.batch64ImagesPerSec.max)}) | ${(o.batch64ImagesPerSec.median / x.batch64ImagesPerSec.median).toFixed(2)}x | ${f(o.concurrent64ImagesPerSec.median)} | ${f(x.concurrent64ImagesPerSec.median)} | ${(o.concurrent64ImagesPerSec.median / x.concurrent64ImagesPerSec.median).toFixed(2)}x |`,
    )
  }
  console.log(lines.join('\n'))
  const machine = `${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}`
  const out = values.out ?? path.join('bench', 'results', `${new Date().toISOString().slice(0, 10)}-vm-predict.json`)
  mkdirSync(path.dirname(out), { recursive: true })
  writeFileSync(out, `${JSON.stringify({ machine, rounds, node: process.version, results, table: lines }, null, 2)}\n`)
  console.error(`wrote ${out}`)
}

interface Summary {
  latencyMs: { p50: number; p99: number }
  batch64ImagesPerSec: { min: number; median: number; max: number }
  concurrent64ImagesPerSec: { min: number; median: number; max: number }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
