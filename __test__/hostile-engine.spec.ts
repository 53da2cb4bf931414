/**
 * Hostile inputs that reach the engine: configs inside every field's limit whose whole cannot
 * be allocated, weights files that are devices or FIFOs, outputs that are not regular files.
 * Each used to abort, hang or replace something; each must now be a named error.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { lstatSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
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

test('fine-tuning into a folder that holds a fine-tuned network is refused unless told to overwrite', async (t) => {
  const { images, labels } = stripes(8, 16)
  const out = tempDir('ft-twice')
  const run = (overwrite?: boolean) =>
    finetune({
      config: {
        arch: 'cnn',
        cnn: tinyPretrain.cnn,
        vit: tinyPretrain.vit,
        imageSize: 16,
        batchSize: 4,
        maxEpochs: 1,
        numClasses: 2,
        device: 'cpu',
      },
      images,
      train: { indices: [0, 1, 2, 3], labels: labels.slice(0, 4) },
      val: { indices: [4, 5, 6, 7], labels: labels.slice(4) },
      outDir: out,
      overwrite,
    })
  await run()
  const before = readFileSync(path.join(out, 'best', 'state.json'), 'utf8')
  const err = t.throws(() => run(), { instanceOf: ConfigError })
  t.regex(err.message, /already holds a fine-tuned network/)
  t.is(readFileSync(path.join(out, 'best', 'state.json'), 'utf8'), before)
  await run(true)
})

test('a folder whose lock a running job holds is refused before anything in it changes', async (t) => {
  const dir = tempDir('held')
  const lock = path.join(dir, '.lock')
  writeFileSync(lock, '1')
  const log = path.join(dir, 'metrics.jsonl')
  writeFileSync(log, '{"type":"step","step":1}\n')
  // util-linux flock holds the OS lock the engine's jobs hold; -o keeps it off the child.
  const holder = spawn('flock', ['-o', lock, 'sleep', '30'])
  try {
    for (let i = 0; i < 100; i++) {
      if (spawnSync('flock', ['-n', lock, 'true']).status !== 0) break
      await new Promise((r) => setTimeout(r, 20))
    }
    const { images } = stripes(4, 16)
    const err = t.throws(() => pretrain({ config: tinyPretrain, images, outDir: dir, overwrite: true }), {
      instanceOf: CassError,
    })
    t.is(err.code, 'output-in-use')
    const cli = spawnSync(
      process.execPath,
      ['--import', 'tsx', path.join(__dirname, '..', 'ts', 'cli.ts'), 'pretrain', '--data', dir, '--out', dir, '--overwrite'],
      {
        encoding: 'utf8',
      },
    )
    t.is(cli.status, 1, cli.stderr)
    t.regex(cli.stderr, /output-in-use/)
    t.is(readFileSync(log, 'utf8'), '{"type":"step","step":1}\n') // the live run's log is untouched
  } finally {
    holder.kill('SIGKILL')
  }
})
