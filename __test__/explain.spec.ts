import { spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'
import sharp from 'sharp'

import { jet, overlay } from '../ts/explain/overlay.js'

import { CassError, type InMemoryImages, finetune, loadModel, pretrain } from '../ts/index.js'
import { stripes, tempDir, tinyClassifiers } from './helpers.js'

const SIDE = 16
const root = tempDir('explain')
const { images, labels } = stripes(24, SIDE, 33)
const some = (from: number, count: number): InMemoryImages => ({
  pixels: images.pixels.subarray(from * SIDE * SIDE * 3, (from + count) * SIDE * SIDE * 3),
  count,
  height: SIDE,
  width: SIDE,
})

const cli = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, '..', 'ts', 'cli.ts'), ...args], { encoding: 'utf8' })

const trained = tinyClassifiers(root, images, labels, { arches: ['cnn', 'vit'], maxEpochs: 1 })

test('each network explains its own prediction: maps in [0, 1] at the input size, the predicted class and its score', async (t) => {
  await trained
  for (const arch of ['cnn', 'vit'] as const) {
    const model = await loadModel(path.join(root, arch), { device: 'cpu' })
    const input = some(0, 10)
    const predictions = await model.predict(input)
    for (const method of ['gradcam', 'gradcam++', 'layercam'] as const) {
      const maps = await model.explain(input, { method, batchSize: 4 })
      t.is(maps.length, 10)
      maps.forEach((m, i) => {
        t.is(m.map.length, SIDE * SIDE)
        t.true(
          m.map.every((v) => v >= 0 && v <= 1),
          `${arch} ${method} image ${i}`,
        )
        t.is(m.method, method)
        t.is(m.classIndex, predictions[i].classIndex)
        t.is(m.className, predictions[i].className)
        t.true(Math.abs((m.score ?? Number.NaN) - predictions[i].scores[predictions[i].classIndex]) < 1e-5)
      })
    }
    // A class by name for every image, or one per image; concurrent calls batch without change.
    const named = await model.explain(input, { target: 'horizontal' })
    t.true(named.every((m) => m.classIndex === 1 && m.className === 'horizontal'))
    const perImage = await model.explain(some(0, 2), { target: [0, 'horizontal'] })
    t.deepEqual(
      perImage.map((m) => m.classIndex),
      [0, 1],
    )
    const alone = await Promise.all([0, 1, 2].map((i) => model.explain(some(i, 1))))
    const together = await model.explain(some(0, 3))
    alone.forEach(([m], i) => t.deepEqual(Array.from(m.map), Array.from(together[i].map)))
    await model.close()
  }
})

test('attention rollout: a ViT classifier and a ViT backbone; the CNN and a backbone class maps are refused by name', async (t) => {
  await trained
  const vit = await loadModel(path.join(root, 'vit'), { device: 'cpu' })
  const [rolled] = await vit.explain(some(3, 1), { method: 'attention-rollout', headFusion: 'max', discardRatio: 0.5 })
  t.is(rolled.map.length, SIDE * SIDE)
  t.is(rolled.classIndex, (await vit.predict(some(3, 1)))[0].classIndex, 'a rollout still reports the prediction')
  await t.throwsAsync(vit.explain(some(3, 1), { method: 'attention-rollout', target: 1 }), { message: /explains no class/ })
  await t.throwsAsync(vit.explain(some(3, 1), { method: 'attention-rollout', discardRatio: 1 }), { message: /discardRatio/ })
  await t.throwsAsync(vit.explain(some(3, 1), { method: 'gradcam', headFusion: 'max' }), { message: /headFusion/ })
  await t.throwsAsync(vit.explain(some(3, 1), { stage: 2 }), { message: /stages are the CNN's/ })
  await vit.close()

  const backbone = await loadModel(path.join(root, 'pre'), { arch: 'vit', device: 'cpu' })
  const [b] = await backbone.explain(some(0, 1), { method: 'attention-rollout' })
  t.is(b.classIndex, null)
  t.is(b.score, null)
  const noClass = await t.throwsAsync<CassError>(backbone.explain(some(0, 1)))
  t.is(noClass?.code, 'no-classifier')
  t.regex(noClass?.message ?? '', /attention-rollout works/)
  await backbone.close()

  const cnn = await loadModel(path.join(root, 'cnn'), { device: 'cpu' })
  await t.throwsAsync(cnn.explain(some(0, 1), { method: 'attention-rollout' }), { message: /needs a ViT/ })
  await t.throwsAsync(cnn.explain(some(0, 1), { target: 'diagonal' }), { message: /target.*vertical, horizontal/ })
  await t.throwsAsync(cnn.explain(some(0, 2), { target: [0] }), { message: /1 targets for 2 images/ })
  // @ts-expect-error a stage that does not exist
  await t.throwsAsync(cnn.explain(some(0, 1), { stage: 5 }), { message: /stages 1 to 4/ })
  const [early] = await cnn.explain(some(0, 1), { stage: 1 })
  t.is(early.map.length, SIDE * SIDE)
  // @ts-expect-error a method that does not exist
  await t.throwsAsync(cnn.explain(some(0, 1), { method: 'saliency' }), { message: /method/ })
  await cnn.close()
  await t.throwsAsync(cnn.explain(some(0, 1)), { message: /closed/ })
})

test('cass explain writes an overlay, a raw map and an index row per image', async (t) => {
  await trained
  const data = path.join(root, 'png')
  for (const [k, name] of ['vertical', 'horizontal'].entries()) {
    mkdirSync(path.join(data, name), { recursive: true })
    for (let i = k; i < 6; i += 2) {
      const png = await sharp(Buffer.from(some(i, 1).pixels), { raw: { width: SIDE, height: SIDE, channels: 3 } })
        .png()
        .toBuffer()
      writeFileSync(path.join(data, name, `${i}.png`), png)
    }
  }
  const out = path.join(root, 'maps')
  const args = ['--checkpoint', path.join(root, 'cnn'), '--data', data, '--out', out, '--limit', '4', '--scale', '2']
  const run = cli('explain', ...args, '--cache-dir', path.join(root, 'cache'), '--device', 'cpu')
  t.is(run.status, 0, run.stderr)
  const index = JSON.parse(readFileSync(path.join(out, 'index.json'), 'utf8'))
  t.is(index.method, 'gradcam')
  t.is(index.images.length, 4)
  for (const row of index.images) {
    t.true(['vertical', 'horizontal'].includes(row.class))
    t.true(row.score > 0 && row.score <= 1)
    const meta = await sharp(path.join(out, row.overlay)).metadata()
    t.deepEqual([meta.width, meta.height, meta.format], [2 * SIDE, 2 * SIDE, 'png'])
    const npy = readFileSync(path.join(out, row.map))
    t.is(npy.subarray(1, 6).toString('latin1'), 'NUMPY')
    t.regex(npy.toString('latin1', 10, 80), /'shape': \(16, 16\)/)
    const map = new Float32Array(npy.buffer.slice(npy.byteOffset + npy.length - SIDE * SIDE * 4, npy.byteOffset + npy.length))
    t.true(map.every((v) => v >= 0 && v <= 1))
  }
  const backbone = cli('explain', '--checkpoint', path.join(root, 'pre'), '--data', data, '--out', out, '--method', 'layercam')
  t.is(backbone.status, 2)
  t.regex(backbone.stderr, /no class to explain.*attention-rollout/)
})

test('the overlay is the jet map blended at half weight and rescaled to full brightness', (t) => {
  t.deepEqual(jet(0), [0, 0, 0.5])
  t.deepEqual(jet(1), [0.5, 0, 0])
  t.deepEqual(jet(0.5), [0.5, 1, 0.5])
  // A black image under a map at 1 is the jet red, rescaled so its brightest channel is 255.
  t.deepEqual(Array.from(overlay(new Uint8Array([0, 0, 0]), new Float32Array([1]))), [255, 0, 0])
  // A white pixel under a map at 0: (0.5 * [0, 0, 0.5] + 0.5 * [1, 1, 1]) / 0.75.
  t.deepEqual(Array.from(overlay(new Uint8Array([255, 255, 255]), new Float32Array([0]))), [170, 170, 255])
})
