import { execFileSync } from 'node:child_process'
import { cpSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'
import sharp from 'sharp'

import { writeInputRecord } from '../ts/io/input-record.js'
import { CassError, type InMemoryImages, embed, evaluate, loadModel } from '../ts/index.js'
import { monochrome } from './dicom-files.js'
import { stripes, tempDir, tinyClassifiers, tinyPretrain } from './helpers.js'

const SIDE = 16
const root = tempDir('model')
const { images, labels } = stripes(32, SIDE, 21)
const val = { indices: [...Array(16).keys()].map((i) => i + 16), labels: labels.slice(16) }

/** One image of `images` as its own in-memory set. */
const one = (i: number): InMemoryImages => ({
  pixels: images.pixels.subarray(i * SIDE * SIDE * 3, (i + 1) * SIDE * SIDE * 3),
  count: 1,
  height: SIDE,
  width: SIDE,
})
const png = (i: number) =>
  sharp(Buffer.from(one(i).pixels), { raw: { width: SIDE, height: SIDE, channels: 3 } })
    .png()
    .toBuffer()

const trained = tinyClassifiers(root, images, labels, { arches: ['cnn'], maxEpochs: 2, dirOf: () => 'ft' })

test('a loaded classifier says what it is and predicts the classes evaluate counts', async (t) => {
  await trained
  const model = await loadModel(path.join(root, 'ft'), { device: 'cpu' })
  t.like(model.info, {
    arch: 'cnn',
    kind: 'finetune',
    method: 'cass-finetune',
    imageSize: SIDE,
    numClasses: 2,
    scoring: 'softmax',
  })
  t.deepEqual(model.info.classNames, ['vertical', 'horizontal'])
  t.deepEqual(model.info.cnn?.layers, tinyPretrain.cnn?.layers)
  const valImages: InMemoryImages = { ...images, pixels: images.pixels.subarray(16 * SIDE * SIDE * 3), count: 16 }
  const predictions = await model.predict(valImages)
  t.is(predictions.length, 16)
  const metrics = await evaluate({ checkpoint: path.join(root, 'ft'), images, data: val, device: 'cpu' })
  const confusion = [
    [0, 0],
    [0, 0],
  ]
  predictions.forEach((p, k) => {
    t.is(p.className, ['vertical', 'horizontal'][p.classIndex])
    // Cross-entropy (the preset's loss) reads logits as one distribution over the classes.
    t.true(Math.abs(p.scores[0] + p.scores[1] - 1) < 1e-6)
    confusion[val.labels[k]][p.classIndex]++
  })
  t.deepEqual(confusion, metrics.confusion)
  await model.close()
})

test('paths, encoded buffers and pixels of another size answer alike; 64 concurrent calls equal one batch', async (t) => {
  await trained
  const model = await loadModel(path.join(root, 'ft'), { device: 'cpu', maxBatch: 16 })
  const dir = tempDir('model-inputs')
  const files = await Promise.all(
    [0, 1, 2, 3].map(async (i) => {
      const f = path.join(dir, `${i}.png`)
      writeFileSync(f, await png(i))
      return f
    }),
  )
  const fromPixels = await model.predict({ ...images, pixels: images.pixels.subarray(0, 4 * SIDE * SIDE * 3), count: 4 })
  const fromFiles = await model.predict(files)
  const fromBuffers = await model.predict(await Promise.all([0, 1, 2, 3].map(png)))
  for (let i = 0; i < 4; i++) {
    t.deepEqual(Array.from(fromFiles[i].scores), Array.from(fromPixels[i].scores))
    t.deepEqual(Array.from(fromBuffers[i].scores), Array.from(fromPixels[i].scores))
  }
  // A 32 px image is resized to 16 px by the decoder, as a dataset's would be.
  const big = await sharp(Buffer.from(one(0).pixels), { raw: { width: SIDE, height: SIDE, channels: 3 } })
    .resize(32, 32)
    .raw()
    .toBuffer()
  const [resized] = await model.predict({ pixels: big, count: 1, height: 32, width: 32 })
  t.is(resized.scores.length, 2)

  const batch = await model.predict({ ...images, count: 32 })
  const single = await Promise.all(Array.from({ length: 64 }, (_, i) => model.predict(one(i % 32))))
  single.forEach(([p], i) => {
    const want = batch[i % 32].scores
    p.scores.forEach((s, c) => t.true(Math.abs(s - want[c]) < 1e-5, `image ${i} class ${c}`))
  })
  await model.close()
})

test('a backbone embeds as embed() does, refuses to predict, and a closed model says so', async (t) => {
  await trained
  const model = await loadModel(path.join(root, 'pre'), { arch: 'vit', device: 'cpu' })
  t.is(model.info.kind, 'pretrain')
  t.is(model.info.scoring, 'none')
  const got = await model.embed({ ...images, count: 3, pixels: images.pixels.subarray(0, 3 * SIDE * SIDE * 3) })
  const want = await embed({ checkpoint: path.join(root, 'pre'), arch: 'vit', images, indices: [0, 1, 2], device: 'cpu' })
  t.is(got.dim, model.info.featureDim)
  t.is(got.count, 3)
  got.features.forEach((v, i) => t.true(Math.abs(v - want.features[i]) <= 1e-5 * Math.max(1, Math.abs(want.features[i]))))
  const noHead = await t.throwsAsync(model.predict(one(0)), { instanceOf: CassError })
  t.is(noHead.code, 'no-classifier')
  await model.close()
  t.true(model.closed)
  const closed = await t.throwsAsync(model.embed(one(0)), { instanceOf: CassError })
  t.is(closed.code, 'model-closed')
  await model.close() // twice is harmless
})

test('hostile inputs to a model are named errors: a FIFO, a folder, bytes that are no image', async (t) => {
  await trained
  const model = await loadModel(path.join(root, 'ft'), { device: 'cpu' })
  const dir = tempDir('model-hostile')
  const fifo = path.join(dir, 'pipe.png')
  execFileSync('mkfifo', [fifo])
  for (const input of [fifo, dir, Buffer.from('not an image at all')]) {
    const err = await t.throwsAsync(model.predict(input as string), { instanceOf: CassError })
    t.is(err.code, 'bad-image')
  }
  await t.throwsAsync(model.predict({ pixels: new Uint8Array(5), count: 1, height: 2, width: 2 }), { message: /input\.pixels/ })
  await t.throwsAsync(loadModel(path.join(root, 'ft'), { maxBatch: 0 }), { message: /maxBatch/ })
  await t.throwsAsync(loadModel(dir), { instanceOf: CassError, message: /no checkpoint/ })
  await model.close()
})

test('a DICOM path answers as the same pixels do: the window maps the stored values to 8 bits first', async (t) => {
  await trained
  const model = await loadModel(path.join(root, 'ft'), { device: 'cpu' })
  const dir = tempDir('model-dicom')
  // Image 0's first channel, stored as 8-bit MONOCHROME2 with the window 128/256, which is the
  // identity on 0-255 (DICOM's linear window: (x - 127.5) / 255 + 0.5).
  const grey = Array.from({ length: SIDE * SIDE }, (_, p) => one(0).pixels[p * 3])
  const file = path.join(dir, 'scan.dcm')
  writeFileSync(file, monochrome({ rows: SIDE, columns: SIDE, bits: 8, window: [128, 256], pixels: grey }))
  const rgb = new Uint8Array(grey.flatMap((v) => [v, v, v]))
  const [fromDicom] = await model.predict(file)
  const [fromPixels] = await model.predict({ pixels: rgb, count: 1, height: SIDE, width: SIDE })
  t.deepEqual(Array.from(fromDicom.scores), Array.from(fromPixels.scores))
  // The same file as an encoded buffer is recognised by its preamble.
  const [fromBuffer] = await model.predict(readFileSync(file))
  t.deepEqual(Array.from(fromBuffer.scores), Array.from(fromPixels.scores))
  // Another window gives other pixels, so other scores; a bad window is named.
  const [lung] = await model.predict(file, { dicom: { window: 'lung' } })
  t.notDeepEqual(Array.from(lung.scores), Array.from(fromPixels.scores))
  await t.throwsAsync(model.predict(file, { dicom: { window: 'liver' } }), { message: /dicom\.window/ })
  const [maps] = await model.explain(file)
  t.is(maps.map.length, SIDE * SIDE)
  await model.close()

  // A run that recorded its window (input.json, as cass finetune writes it) applies it by default.
  const run = path.join(dir, 'ft-lung')
  cpSync(path.join(root, 'ft'), run, { recursive: true })
  writeInputRecord(run, { window: 'lung', frames: 'all' })
  t.deepEqual(JSON.parse(readFileSync(path.join(run, 'input.json'), 'utf8')), { dicom: { window: 'lung' } })
  const recorded = await loadModel(path.join(run, 'best'), { device: 'cpu' })
  const [byRecord] = await recorded.predict(file)
  t.deepEqual(Array.from(byRecord.scores), Array.from(lung.scores))
  const [byCall] = await recorded.predict(file, { dicom: { window: '128,256' } })
  t.deepEqual(Array.from(byCall.scores), Array.from(fromPixels.scores), "the call's window wins")
  await recorded.close()
  writeFileSync(path.join(run, 'input.json'), '{"dicom": {"window": 7}}')
  const bad = await t.throwsAsync<CassError>(loadModel(run, { device: 'cpu' }))
  t.is(bad?.code, 'bad-checkpoint')
  t.regex(bad?.message ?? '', /input\.json/)
})
