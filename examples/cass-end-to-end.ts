/**
 * CASS end to end in one file: pre-train a CNN and a ViT together without labels, fine-tune
 * each on 10 % of the labels, and compare with the same fine-tuning from random weights.
 *
 *   node --import tsx examples/cass-end-to-end.ts
 *
 * The images are generated here (two classes of noisy stripe textures) so that the example
 * runs anywhere in about a minute on 2 cores; swap in your own decoded images (count x height
 * x width x 3 RGB bytes) and labels.
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

import { finetune, pretrain } from '../ts/index.js'

const size = 32
const count = 256
const pixels = new Uint8Array(count * size * size * 3)
const labels: number[] = []
let state = 7
const noise = () => ((state = (state * 1103515245 + 12345) >>> 0) >>> 24) / 255 - 0.5
for (let i = 0; i < count; i++) {
  const cls = i % 2
  labels.push(cls)
  for (let p = 0; p < size * size; p++) {
    const [x, y] = [p % size, Math.floor(p / size)]
    const on = cls === 0 ? (x >> 2) % 2 : ((x + y) >> 2) % 2
    for (let c = 0; c < 3; c++)
      pixels[p * 3 + c + i * size * size * 3] = Math.max(0, Math.min(255, (on ? 180 : 70) + 80 * noise()))
  }
}
const images = { pixels, count, height: size, width: size }
const train = [...Array(192).keys()]
const val = [...Array(64).keys()].map((i) => i + 192)
const labelled = train.filter((i) => i % 10 === 0) // 10 % of the training labels

async function main() {
  const out = mkdtempSync(path.join(tmpdir(), 'cass-example-'))

  // 1. Self-supervised: both networks see the same augmented view and learn to agree.
  const pre = await pretrain({
    config: { preset: 'cpu-small', epochs: 3 },
    images,
    indices: train,
    outDir: path.join(out, 'pre'),
    onProgress: (e) => e.type === 'epoch' && console.log(`pretrain epoch ${e.epoch + 1}: CASS loss ${e.meanLoss.toFixed(4)}`),
  })
  console.log(`pre-trained ${pre.steps} steps -> ${pre.checkpoint}`)

  // 2. Fine-tune each network on the labelled 10 %, from CASS and from scratch.
  for (const arch of ['cnn', 'vit'] as const) {
    for (const from of [pre.checkpoint, undefined]) {
      const ft = await finetune({
        config: { preset: 'cpu-small', arch, maxEpochs: 10, batchSize: 8 },
        from,
        images,
        train: { indices: labelled, labels: labelled.map((i) => labels[i]) },
        val: { indices: val, labels: val.map((i) => labels[i]) },
        outDir: path.join(out, `${arch}-${from ? 'cass' : 'random'}`),
      })
      const m = ft.valMetrics
      console.log(
        `${arch} ${from ? 'CASS  ' : 'random'}: macro-F1 ${m.macroF1.toFixed(3)}  balanced acc ${m.balancedAccuracy.toFixed(3)}  (best epoch ${ft.bestEpoch + 1})`,
      )
    }
  }
}

main().catch((e: unknown) => {
  console.error(e)
  process.exit(1)
})
