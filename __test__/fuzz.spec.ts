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
import { rng, tempDir } from './helpers.js'

function npy(shape: number[], descr: string, data: Uint8Array): Buffer {
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`
  header += ' '.repeat((64 - ((10 + header.length + 1) % 64)) % 64) + '\n'
  const pre = Buffer.alloc(10)
  pre.write('\x93NUMPY', 0, 'latin1')
  pre[6] = 1
  pre.writeUInt16LE(header.length, 8)
  return Buffer.concat([pre, Buffer.from(header, 'latin1'), Buffer.from(data)])
}

/** A zip of stored entries, as `numpy.savez` writes. */
function zip(entries: [string, Buffer][]): Buffer {
  const parts: Buffer[] = []
  const central: Buffer[] = []
  let offset = 0
  for (const [name, data] of entries) {
    const n = Buffer.from(name)
    const local = Buffer.alloc(30)
    local.writeUInt32LE(0x04034b50, 0)
    local.writeUInt32LE(data.length, 18)
    local.writeUInt32LE(data.length, 22)
    local.writeUInt16LE(n.length, 26)
    const cd = Buffer.alloc(46)
    cd.writeUInt32LE(0x02014b50, 0)
    cd.writeUInt32LE(data.length, 20)
    cd.writeUInt32LE(data.length, 24)
    cd.writeUInt16LE(n.length, 28)
    cd.writeUInt32LE(offset, 42)
    parts.push(local, n, data)
    central.push(cd, n)
    offset += 30 + n.length + data.length
  }
  const cdBuf = Buffer.concat(central)
  const end = Buffer.alloc(22)
  end.writeUInt32LE(0x06054b50, 0)
  end.writeUInt16LE(entries.length, 8)
  end.writeUInt16LE(entries.length, 10)
  end.writeUInt32LE(cdBuf.length, 12)
  end.writeUInt32LE(offset, 16)
  return Buffer.concat([...parts, cdBuf, end])
}

function idx(dims: number[], data: Uint8Array): Buffer {
  const head = Buffer.alloc(4 + 4 * dims.length)
  head[2] = 0x08
  head[3] = dims.length
  dims.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i))
  return Buffer.concat([head, Buffer.from(data)])
}

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
