/**
 * Random mutations of valid `.npz`, IDX, CSV and DICOM sources thrown at the readers for a bounded
 * time: each load succeeds or rejects with an Error whose message names the source (or, for a
 * DICOM file, says what is wrong in it), never a crash, a hang or a bare internal error (a
 * RangeError from reading past a buffer's end, say).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { deflateRawSync, gzipSync } from 'node:zlib'

import test from 'ava'

import { loadDataset } from '../ts/data/dataset.js'
import { DicomError } from '../ts/data/dicom/parse.js'
import { readDicomFile } from '../ts/data/dicom/read.js'
import { idx, npy, zip } from './arrays.js'
import { dicomFile, monochrome, pydicomCorpus } from './dicom-files.js'
import { rng, tempDir } from './helpers.js'

function mutate(next: () => number, valid: Buffer): Buffer {
  const b = Buffer.from(valid)
  const pick = (n: number) => Math.floor(next() * n)
  switch (pick(4)) {
    case 0:
      for (let k = 1 + pick(8); k > 0; k--) b[pick(b.length)] = pick(256)
      return b
    case 1:
      return b.subarray(0, pick(b.length + 1))
    case 2: {
      const at = pick(b.length + 1)
      const junk = Buffer.from(Array.from({ length: 1 + pick(64) }, () => pick(256)))
      return Buffer.concat([b.subarray(0, at), junk, b.subarray(at)])
    }
    default:
      return Buffer.from(Array.from({ length: pick(256) }, () => pick(256)))
  }
}

async function fuzz(
  t: import('ava').ExecutionContext,
  name: string,
  valid: Buffer,
  write: (bytes: Buffer) => string,
  ms: number,
): Promise<number> {
  const next = rng(name.length * 31)
  const root = tempDir(`fuzz-${name}`)
  const started = Date.now()
  let tried = 0
  while (Date.now() - started < ms) {
    const source = write(mutate(next, valid))
    try {
      await loadDataset(source, { size: 8, cacheDir: path.join(root, 'cache'), concurrency: 2 })
    } catch (e) {
      t.true(e instanceof Error, `${name}: threw ${String(e)}`)
      const message = (e as Error).message
      t.false(e instanceof RangeError || e instanceof TypeError, `${name}: an internal ${(e as Error).name} leaked: ${message}`)
      // Every message names the source (file or folder) it is about.
      t.true(message.includes(path.basename(source)), `${name}: the message does not name ${source}: ${message}`)
    }
    tried++
  }
  return tried
}

test('npz, IDX and CSV readers give clear errors on random and mutated files', async (t) => {
  const dir = tempDir('fuzz-src')
  const gray = new Uint8Array(4 * 6 * 6).fill(120)
  const labels = new Uint8Array(new BigInt64Array([0n, 1n, 0n, 1n]).buffer)
  const npz = zip([
    ['train_images.npy', npy([4, 6, 6], '|u1', gray)],
    ['train_labels.npy', npy([4, 1], '<i8', labels)],
  ])
  const n1 = await fuzz(
    t,
    'npz',
    npz,
    (b) => {
      const f = path.join(dir, 'a.npz')
      writeFileSync(f, b)
      return f
    },
    1500,
  )
  const mnist = path.join(dir, 'mnist')
  mkdirSync(mnist)
  writeFileSync(path.join(mnist, 'train-labels-idx1-ubyte'), idx([4], Uint8Array.from([0, 1, 0, 1])))
  const n2 = await fuzz(
    t,
    'idx',
    gzipSync(idx([4, 6, 6], gray)),
    (b) => {
      writeFileSync(path.join(mnist, 'train-images-idx3-ubyte.gz'), b)
      return mnist
    },
    1500,
  )
  const csvDir = path.join(dir, 'csv')
  mkdirSync(csvDir)
  const n3 = await fuzz(
    t,
    'csv',
    Buffer.from('image,A,B\nx,1,0\ny,0,1\n'),
    (b) => {
      const f = path.join(csvDir, 'labels.csv')
      writeFileSync(f, b)
      return f
    },
    1000,
  )
  t.true(n1 > 20 && n2 > 20 && n3 > 20, `${n1} npz, ${n2} idx, ${n3} csv cases`)
})

test('the DICOM reader gives clear errors on mutated files of every transfer syntax', async (t) => {
  const corpus = pydicomCorpus()
  const seeds: [string, Buffer][] = [
    'CT_small.dcm',
    'MR_small_implicit.dcm',
    'MR_small_bigendian.dcm',
    'MR_small_RLE.dcm',
    'MR_small_jpeg_ls_lossless.dcm',
    'MR_small_jp2klossless.dcm',
    'SC_rgb_small_odd_jpeg.dcm',
    'SC_rgb_jpeg_gdcm.dcm',
    'SC_rgb_rle_2frame.dcm',
    'JPEGLSNearLossless_08.dcm',
  ].map((f) => [f, readFileSync(path.join(corpus, f))])
  // A deflated data set (the corpus's is 512 x 512): a small one written here.
  const plain = monochrome({ rows: 8, columns: 8, pixels: Array.from({ length: 64 }, (_, i) => i * 9), patientId: 'P' })
  seeds.push(['deflated', dicomFile('1.2.840.10008.1.2.1.99', deflateRawSync(plain.subarray(128 + 4 + 28)))])
  const dir = tempDir('fuzz-dicom')
  const next = rng(2024)
  const counts = new Map<string, { ok: number; bad: number }>()
  const started = Date.now()
  let k = 0
  while (Date.now() - started < 6000) {
    const [name, valid] = seeds[k++ % seeds.length]
    const file = path.join(dir, `case-${k}.dcm`)
    writeFileSync(file, mutate(next, valid))
    const c = counts.get(name) ?? { ok: 0, bad: 0 }
    counts.set(name, c)
    try {
      const r = await readDicomFile(file, 8)
      t.true(r.images.every((img) => img.length === 8 * 8 * 3))
      c.ok++
    } catch (e) {
      c.bad++
      t.true(e instanceof DicomError, `${name}: threw ${(e as Error).constructor.name}: ${(e as Error).message}`)
      t.false(/undefined|NaN|\[object/.test((e as Error).message), `${name}: an unclear message: ${(e as Error).message}`)
    }
  }
  t.log([...counts.entries()].map(([n, c]) => `${n} ${c.ok} read, ${c.bad} refused`).join('; '))
  t.true([...counts.values()].every((c) => c.ok + c.bad > 10))
})
