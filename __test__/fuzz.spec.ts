/**
 * Random mutations of valid `.npz`, IDX and CSV sources thrown at `loadDataset` for a bounded
 * time: each load succeeds or rejects with an Error whose message names the source, never a crash,
 * a hang or a bare internal error (a RangeError from reading past a buffer's end, say).
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { gzipSync } from 'node:zlib'

import test from 'ava'

import { loadDataset } from '../ts/data/dataset.js'
import { idx, npy, zip } from './arrays.js'
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
