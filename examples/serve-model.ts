/**
 * A model loaded once and asked many times, as a server would: 1,000 single-image `predict`
 * calls, 16 in flight at a time, with the process's resident memory before and after.
 *
 *   node --expose-gc --import tsx examples/serve-model.ts [CHECKPOINT] [IMAGE.png]
 *
 * Without arguments a tiny classifier is fine-tuned here first (seconds) and generated pixels
 * are the requests; give a fine-tuning output folder and an image file to serve your own.
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

import { type ModelInput, finetune, loadModel } from '../ts/index.js'

const mib = () => {
  ;(globalThis as { gc?: () => void }).gc?.()
  return process.memoryUsage().rss / 2 ** 20
}

async function tinyClassifier(): Promise<string> {
  const size = 32
  const count = 16
  const pixels = new Uint8Array(count * size * size * 3).map((_, i) =>
    Math.floor(i / (size * size * 3)) % 2 ? (i % 7) * 30 : (i % 5) * 50,
  )
  const dir = mkdtempSync(path.join(tmpdir(), 'cass-serve-'))
  await finetune({
    config: { preset: 'cpu-small', arch: 'cnn', numClasses: 2, maxEpochs: 1, batchSize: 4, device: 'cpu' },
    images: { pixels, count, height: size, width: size },
    train: { indices: [...Array(12).keys()], labels: [...Array(12).keys()].map((i) => i % 2) },
    val: { indices: [12, 13, 14, 15], labels: [0, 1, 0, 1] },
    outDir: dir,
    classNames: ['even', 'odd'],
  })
  return dir
}

async function main() {
  const checkpoint = process.argv[2] ?? (await tinyClassifier())
  const model = await loadModel(checkpoint, { device: 'cpu' })
  const side = model.info.imageSize
  const request: ModelInput = process.argv[3] ?? {
    pixels: new Uint8Array(side * side * 3).fill(128),
    count: 1,
    height: side,
    width: side,
  }
  const answer = async () => (await model.predict(request))[0]
  for (let i = 0; i < 50; i++) await answer() // warm-up: allocator pools, first-call work
  const before = mib()
  const t0 = performance.now()
  let last = await answer()
  for (let done = 0; done < 1000; done += 16) {
    const wave = await Promise.all(Array.from({ length: Math.min(16, 1000 - done) }, answer))
    last = wave[wave.length - 1]
  }
  const seconds = (performance.now() - t0) / 1000
  const after = mib()
  console.log(
    JSON.stringify({
      calls: 1000,
      seconds: Number(seconds.toFixed(2)),
      rssMiBBefore: Math.round(before),
      rssMiBAfter: Math.round(after),
      lastAnswer: { className: last.className, scores: Array.from(last.scores) },
    }),
  )
  await model.close()
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
