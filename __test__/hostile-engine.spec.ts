/**
 * Hostile inputs that reach the engine: configs inside every field's limit whose whole cannot
 * be allocated, weights files that are devices or FIFOs, outputs that are not regular files.
 * Each used to abort, hang or replace something; each must now be a named error.
 */
import { execFileSync } from 'node:child_process'
import { lstatSync, symlinkSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'

import { CassError, ConfigError, finetune, pretrain } from '../ts/index.js'
import { stripes, tempDir, tinyPretrain } from './helpers.js'

test('a ViT 65,536 wide and one block deep is refused, not allocated (it aborted the process)', async (t) => {
  const { images } = stripes(4, 32)
  const err = await t.throwsAsync(
    pretrain({
      config: { ...tinyPretrain, imageSize: 32, vit: { embedDim: 65536, depth: 1, numHeads: 1, patchSize: 8 } },
      images,
      outDir: tempDir('giant-vit'),
    }),
    { instanceOf: ConfigError },
  )
  t.regex(err.message, /vit.*parameters/)
})

test('activations of one batch that cannot exist are refused before training', async (t) => {
  const { images, labels } = stripes(4, 16)
  const err = await t.throwsAsync(
    finetune({
      config: { arch: 'cnn', cnn: 'resnet50', imageSize: 4096, batchSize: 4096, numClasses: 2, device: 'cpu' },
      images,
      train: { indices: [0, 1], labels: labels.slice(0, 2) },
      val: { indices: [2, 3], labels: labels.slice(2) },
      outDir: tempDir('giant-batch'),
    }),
    { instanceOf: ConfigError },
  )
  t.regex(err.message, /activation/)
})

test('weights that are a FIFO or a link to /dev/zero are refused at once (they hung, or grew to 24 GB)', async (t) => {
  const dir = tempDir('hostile-weights')
  const fifo = path.join(dir, 'w.safetensors')
  execFileSync('mkfifo', [fifo])
  const zero = path.join(dir, 'zero.safetensors')
  symlinkSync('/dev/zero', zero)
  const { images } = stripes(4, 16)
  for (const file of [fifo, zero]) {
    const err = await t.throwsAsync(
      pretrain({ config: { ...tinyPretrain, cnnWeights: file }, images, outDir: tempDir('hostile-run') }),
      { instanceOf: CassError },
    )
    t.is(err.code, 'not-a-file', err.message)
  }
  t.true(lstatSync(fifo).isFIFO())
})
