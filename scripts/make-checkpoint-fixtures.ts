/**
 * Writes small checkpoints in the current on-disk format, for the engine's tests that old
 * checkpoints keep loading (`crates/cass-core/src/checkpoint/compat_tests.rs`):
 *
 *   node --import tsx scripts/make-checkpoint-fixtures.ts crates/cass-core/fixtures/checkpoints/NAME
 *
 * A CASS pre-training (both tiny networks, 1 epoch on 16 striped 16 px images) and a CNN
 * fine-tuned from it; only the checkpoint folders are kept (`pretrain/`, `finetune/`).
 */
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

import { finetune, pretrain } from '../ts/index.js'

async function main() {
  const out = process.argv[2]
  if (!out) throw new Error('usage: make-checkpoint-fixtures.ts OUT_DIR')
  const work = mkdtempSync(path.join(tmpdir(), 'cass-fixture-'))
  const side = 16
  const count = 16
  const pixels = new Uint8Array(count * side * side * 3)
  const labels: number[] = []
  for (let i = 0; i < count; i++) {
    const vertical = i % 2 === 0
    labels.push(vertical ? 0 : 1)
    for (let y = 0; y < side; y++)
      for (let x = 0; x < side; x++)
        pixels.fill(
          ((vertical ? x : y) >> 1) % 2 ? 230 : 20,
          ((i * side + y) * side + x) * 3,
          ((i * side + y) * side + x + 1) * 3,
        )
  }
  const images = { pixels, count, height: side, width: side }
  const tiny = {
    cnn: { block: 'basic' as const, layers: [1, 1, 1, 1] as [number, number, number, number], baseWidth: 4 },
    vit: { patchSize: 4, embedDim: 16, depth: 1, numHeads: 2 },
  }
  await pretrain({
    config: { preset: 'cpu-small', ...tiny, headDim: 16, imageSize: side, batchSize: 4, epochs: 1, device: 'cpu' },
    images,
    outDir: path.join(work, 'pre'),
  })
  await finetune({
    config: {
      arch: 'cnn',
      numClasses: 2,
      ...tiny,
      imageSize: side,
      batchSize: 4,
      maxEpochs: 1,
      augment: { enabled: false },
      device: 'cpu',
    },
    from: path.join(work, 'pre'),
    images,
    train: { indices: [...Array(8).keys()], labels: labels.slice(0, 8) },
    val: { indices: [...Array(8).keys()].map((i) => i + 8), labels: labels.slice(8) },
    outDir: path.join(work, 'ft'),
    classNames: ['vertical', 'horizontal'],
  })
  cpSync(path.join(work, 'pre', 'checkpoint'), path.join(out, 'pretrain'), { recursive: true })
  cpSync(path.join(work, 'ft', 'best'), path.join(out, 'finetune'), { recursive: true })
  rmSync(work, { recursive: true })
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
