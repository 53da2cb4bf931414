import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs'
import path from 'node:path'
import { deflateRawSync, gzipSync, constants as zlibConstants } from 'node:zlib'

import test from 'ava'
import sharp from 'sharp'

import { DataError } from '../ts/index.js'
import { CacheWriter, readCacheIndex, removeOrphans } from '../ts/data/cache.js'
import { loadDataset } from '../ts/data/dataset.js'
import { sampleFraction, stratifiedSplit } from '../ts/data/splits.js'
import { deflatedZeros, idx, npy, zip } from './arrays.js'
import { runCapped } from './capped.js'
import { rng, tempDir } from './helpers.js'

/** The writable memory a reader's child process gets: a 1 GiB entry does not fit. */
const MEMORY_CAP = 768 * 2 ** 20

async function png(file: string, seed: number, opts: { channels?: 1 | 3 | 4; bits16?: boolean; size?: number } = {}) {
  const size = opts.size ?? 12
  const channels = opts.channels ?? 3
  const next = rng(seed)
  const raw = Buffer.from(Array.from({ length: size * size * channels }, () => Math.floor(next() * 256)))
  let img = sharp(raw, { raw: { width: size, height: size, channels } })
  if (opts.bits16) img = img.toColourspace('rgb16')
  mkdirSync(path.dirname(file), { recursive: true })
  const ext = path.extname(file)
  const out = ext === '.jpg' ? img.jpeg() : ext === '.webp' ? img.webp() : ext === '.tif' ? img.tiff() : img.png()
  await out.toFile(file)
}

function treeHash(dir: string): string {
  const h = createHash('sha256')
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(d, e.name)
      if (e.isDirectory()) walk(p)
      else h.update(`${p}:${statSync(p).mtimeMs}:`).update(readFileSync(p))
    }
  }
  walk(dir)
  return h.digest('hex')
}

test('image folder with class sub-folders and mixed formats; cache reused, changed file re-read', async (t) => {
  const root = tempDir('folder')
  const src = path.join(root, 'src')
  await png(path.join(src, 'benign', 'a.png'), 1)
  await png(path.join(src, 'benign', 'b.jpg'), 2)
  await png(path.join(src, 'benign', 'c.png'), 3, { channels: 1 })
  await png(path.join(src, 'malignant', 'd.png'), 4, { channels: 4 })
  await png(path.join(src, 'malignant', 'e.tif'), 5)
  await png(path.join(src, 'malignant', 'f.webp'), 6)
  await png(path.join(src, 'malignant', 'g.png'), 7, { bits16: true })
  const before = treeHash(src)
  const cacheDir = path.join(root, 'cache')
  const ds = await loadDataset(src, { size: 8, cacheDir })
  t.is(ds.format, 'folder')
  t.deepEqual(ds.classes, ['benign', 'malignant'])
  t.is(ds.count, 7)
  t.is(ds.decoded, 7)
  t.deepEqual(ds.labels, [0, 0, 0, 1, 1, 1, 1])
  t.is(ds.skipped.length, 0)
  const header = readCacheIndex(ds.cacheFile)!
  t.is(header.height, 8)
  t.is(statSync(ds.cacheFile).size, 64 + 7 * 8 * 8 * 3 + Buffer.byteLength(JSON.stringify(header.index)))

  const again = await loadDataset(src, { size: 8, cacheDir })
  t.is(again.decoded, 0, 'second load decodes nothing')
  t.is(again.cacheFile, ds.cacheFile)

  const changed = path.join(src, 'benign', 'a.png')
  await png(changed, 99)
  utimesSync(changed, new Date(), new Date(Date.now() + 5000))
  const third = await loadDataset(src, { size: 8, cacheDir })
  t.is(third.decoded, 7, 'a changed file invalidates the cache')
  t.not(third.cacheFile, ds.cacheFile)
  // Only our own write above changed the source: the pipeline never writes to it.
  const fourth = treeHash(src)
  t.not(before, fourth)
  await loadDataset(src, { size: 16, cacheDir })
  t.is(treeHash(src), fourth)
})

test('train/val/test folders are used as the source splits; unlabelled folders work', async (t) => {
  const root = tempDir('splits')
  for (const [split, n] of [
    ['train', 4],
    ['val', 2],
    ['test', 2],
  ] as const) {
    for (let i = 0; i < n; i++) await png(path.join(root, 'src', split, i % 2 ? 'b' : 'a', `${i}.png`), i)
  }
  const ds = await loadDataset(path.join(root, 'src'), { size: 8, cacheDir: path.join(root, 'cache') })
  t.true(ds.sourceSplits)
  t.deepEqual([ds.splits.train.indices.length, ds.splits.val.indices.length, ds.splits.test.indices.length], [4, 2, 2])
  for (let i = 0; i < 3; i++) await png(path.join(root, 'unlabelled', `${i}.png`), 10 + i)
  const un = await loadDataset(path.join(root, 'unlabelled'), { size: 8, cacheDir: path.join(root, 'cache') })
  t.deepEqual(un.labels, [-1, -1, -1])
  t.is(un.splits.train.indices.length, 3)
})

test('bad data: truncated image, missing CSV file, unknown one-hot row, decompression bomb; skip or --strict', async (t) => {
  const root = tempDir('bad')
  const imgs = path.join(root, 'imgs')
  await png(path.join(imgs, 'ok1.png'), 1)
  await png(path.join(imgs, 'ok2.jpg'), 2)
  await png(path.join(imgs, 'big.png'), 3, { size: 64 })
  const good = readFileSync(path.join(imgs, 'ok2.jpg'))
  writeFileSync(path.join(imgs, 'trunc.jpg'), good.subarray(0, Math.floor(good.length / 2)))
  const csv = path.join(root, 'labels.csv')
  writeFileSync(csv, 'image,MEL,NV,UNK\nok1,1,0,0\nok2,0,1,0\nmissing,1,0,0\ntrunc,0,1,0\nbig,1,0,0\nweird,1,1,0\n')
  const ds = await loadDataset(csv, { size: 8, imageRoot: imgs, cacheDir: path.join(root, 'cache'), maxPixels: 32 * 32 })
  t.is(ds.format, 'csv')
  t.deepEqual(ds.classes, ['MEL', 'NV'], 'the never-used UNK column is dropped')
  t.is(ds.count, 2)
  const reasons = Object.fromEntries(ds.skipped.map((s) => [s.name, s.reason]))
  t.regex(reasons.missing, /not found/)
  t.regex(reasons.weird, /exactly one class/)
  t.regex(reasons.big, /decompression-bomb/)
  t.truthy(reasons.trunc)
  t.is(ds.skipped.length, 4)
  const err = await t.throwsAsync(
    loadDataset(csv, { size: 8, imageRoot: imgs, cacheDir: path.join(root, 'cache2'), strict: true }),
    { instanceOf: DataError },
  )
  t.regex(err.message, /missing|weird/)
})

test('--strict after a lenient run fails on what the shared cache skipped', async (t) => {
  const root = tempDir('strict-cache')
  const dir = path.join(root, 'imgs', 'c0')
  await png(path.join(dir, 'ok.png'), 1)
  await png(path.join(dir, 'ok2.png'), 2)
  const good = readFileSync(path.join(dir, 'ok.png'))
  writeFileSync(path.join(dir, 'torn.png'), good.subarray(0, Math.floor(good.length / 2)))
  const cacheDir = path.join(root, 'cache')
  const lenient = await loadDataset(path.join(root, 'imgs'), { size: 8, cacheDir })
  t.is(lenient.count, 2)
  t.is(lenient.skipped.length, 1)
  const err = await t.throwsAsync(loadDataset(path.join(root, 'imgs'), { size: 8, cacheDir, strict: true }), {
    instanceOf: DataError,
  })
  t.regex(err.message, /torn\.png/)
  t.is(err.code, 'bad-image')
})

test('path,label CSV rows relative to an image root', async (t) => {
  const root = tempDir('csv2')
  await png(path.join(root, 'images', 'x.png'), 1)
  await png(path.join(root, 'images', 'y.png'), 2)
  const csv = path.join(root, 'list.csv')
  writeFileSync(csv, 'path,label\nx.png,tumour\ny.png,normal\n')
  const ds = await loadDataset(csv, { size: 8, imageRoot: path.join(root, 'images'), cacheDir: path.join(root, 'cache') })
  t.deepEqual(ds.classes, ['normal', 'tumour'])
  t.deepEqual(ds.labels, [1, 0])
})

test('a CSV that lists one image twice keeps it once and says so (it could land in train and test)', async (t) => {
  const root = tempDir('csv-dupes')
  await png(path.join(root, 'images', 'x.png'), 1)
  await png(path.join(root, 'images', 'y.png'), 2)
  const csv = path.join(root, 'list.csv')
  // The same file three times: by name, again, and without its extension.
  writeFileSync(csv, 'path,label\nx.png,tumour\ny.png,normal\nx.png,tumour\nx,normal\n')
  const ds = await loadDataset(csv, { size: 8, imageRoot: path.join(root, 'images'), cacheDir: path.join(root, 'cache') })
  t.deepEqual(ds.names, ['x.png', 'y.png'])
  t.deepEqual(
    ds.skipped.map((s) => s.reason),
    ['row 4: the same image as row 2; kept once', 'row 5: the same image as row 2; kept once'],
  )
})

test('symbolic links in an image folder: followed inside the folder, reported (not read) when they lead outside or nowhere', async (t) => {
  const root = tempDir('links')
  const data = path.join(root, 'data')
  await png(path.join(data, 'cat', 'a.png'), 1)
  await png(path.join(data, 'dog', 'b.png'), 2)
  await png(path.join(root, 'outside', 'secret.png'), 3)
  await png(path.join(root, 'elsewhere', 'c.png'), 4)
  // Inside: an image linked from another class, and a linked sub-folder.
  symlinkSync(path.join(data, 'cat', 'a.png'), path.join(data, 'dog', 'a-too.png'))
  mkdirSync(path.join(data, 'shared'))
  await png(path.join(data, 'shared', 'd.png'), 5)
  symlinkSync(path.join(data, 'shared'), path.join(data, 'cat', 'more'))
  // Outside, broken, and a class folder that leads outside.
  symlinkSync(path.join(root, 'outside', 'secret.png'), path.join(data, 'cat', 'secret.png'))
  symlinkSync(path.join(root, 'nowhere.png'), path.join(data, 'dog', 'broken.png'))
  symlinkSync(path.join(root, 'elsewhere'), path.join(data, 'bird'))
  const ds = await loadDataset(data, { size: 8, cacheDir: path.join(root, 'cache') })
  t.deepEqual(ds.classes, ['cat', 'dog', 'shared'])
  t.deepEqual([...ds.names].sort(), ['cat/a.png', 'cat/more/d.png', 'dog/a-too.png', 'dog/b.png', 'shared/d.png'])
  const reasons = Object.fromEntries(ds.skipped.map((s) => [s.name, s.reason]))
  t.regex(reasons['cat/secret.png'], /outside the data folder \(not read\)/)
  t.regex(reasons['dog/broken.png'], /symbolic link to nothing/)
  t.regex(reasons.bird, /outside the data folder/)
  t.is(ds.skipped.length, 3)
})

test('csv path traversal: rows outside the image root, absolute or through a symlink, are rejected unread; empty labels too', async (t) => {
  const root = tempDir('csv-escape')
  const imgs = path.join(root, 'imgs')
  await png(path.join(imgs, 'a.png'), 1)
  await png(path.join(imgs, 'b.png'), 2)
  await png(path.join(imgs, 'c.png'), 3)
  await png(path.join(root, 'other', 'secret.png'), 4)
  symlinkSync(path.join(root, 'other', 'secret.png'), path.join(imgs, 'link.png'))
  const csv = path.join(root, 'list.csv')
  const rows = ['a.png,x', 'b.png,y', '../other/secret.png,x', '../other/nothing.png,x', '/etc/passwd,x', 'link.png,y', 'c.png,']
  writeFileSync(csv, `path,label\n${rows.join('\n')}\n`)
  const ds = await loadDataset(csv, { size: 8, imageRoot: imgs, cacheDir: path.join(root, 'cache') })
  t.is(ds.count, 2)
  t.deepEqual(ds.classes, ['x', 'y'], 'an empty label is not a class')
  const reasons = Object.fromEntries(ds.skipped.map((s) => [s.name, s.reason]))
  // The same answer whether or not the outside file exists: no oracle for what lies outside.
  t.regex(reasons['../other/secret.png'], /row 4: path is outside the image root/)
  t.regex(reasons['../other/nothing.png'], /row 5: path is outside the image root/)
  t.regex(reasons['/etc/passwd'], /row 6: path is outside the image root/)
  t.regex(reasons['link.png'], /row 7: path is outside the image root/)
  t.regex(reasons['c.png'], /row 8: missing label/)
  const err = await t.throwsAsync(
    loadDataset(csv, { size: 8, imageRoot: imgs, cacheDir: path.join(root, 'cache2'), strict: true }),
    { instanceOf: DataError },
  )
  t.regex(err.message, /outside the image root/)
})

test('MNIST-style gzipped IDX files', async (t) => {
  const root = tempDir('idx')
  const dir = path.join(root, 'mnist')
  mkdirSync(dir)
  const next = rng(3)
  const imgs = Uint8Array.from({ length: 6 * 28 * 28 }, () => Math.floor(next() * 256))
  writeFileSync(path.join(dir, 'train-images-idx3-ubyte.gz'), gzipSync(idx([6, 28, 28], imgs)))
  writeFileSync(path.join(dir, 'train-labels-idx1-ubyte.gz'), gzipSync(idx([6], Uint8Array.from([0, 1, 2, 0, 1, 2]))))
  writeFileSync(path.join(dir, 't10k-images-idx3-ubyte'), idx([2, 28, 28], imgs.subarray(0, 2 * 784)))
  writeFileSync(path.join(dir, 't10k-labels-idx1-ubyte'), idx([2], Uint8Array.from([1, 2])))
  const ds = await loadDataset(dir, { size: 16, cacheDir: path.join(root, 'cache') })
  t.is(ds.format, 'idx')
  t.is(ds.count, 8)
  t.deepEqual(ds.splits.test.labels, [1, 2])
  t.is(ds.splits.train.indices.length + ds.splits.val.indices.length, 6)
  t.deepEqual(ds.classes, ['0', '1', '2'])
})

test('MedMNIST .npz (grayscale and RGB) read without Python', async (t) => {
  const root = tempDir('npz')
  const next = rng(4)
  const gray = Uint8Array.from({ length: 4 * 10 * 10 }, () => Math.floor(next() * 256))
  const rgb = Uint8Array.from({ length: 2 * 10 * 10 * 3 }, () => Math.floor(next() * 256))
  const labels = (v: number[]) => new Uint8Array(new BigInt64Array(v.map(BigInt)).buffer)
  const file = path.join(root, 'derma.npz')
  writeFileSync(
    file,
    zip([
      ['train_images.npy', npy([4, 10, 10], '|u1', gray)],
      ['train_labels.npy', npy([4, 1], '<i8', labels([0, 1, 0, 1]))],
      ['test_images.npy', npy([2, 10, 10, 3], '|u1', rgb)],
      ['test_labels.npy', npy([2, 1], '<i8', labels([1, 0]))],
    ]),
  )
  const ds = await loadDataset(file, { size: 8, cacheDir: path.join(root, 'cache') })
  t.is(ds.format, 'npz')
  t.is(ds.count, 6)
  t.deepEqual(ds.splits.test.labels, [1, 0])
  t.deepEqual(ds.classes, ['0', '1'])
})

test('hostile .npz and IDX files: a short array, a huge label, a deflate bomb and torn gzip data are clear errors', async (t) => {
  const root = tempDir('npz-hostile')
  const labels = (v: number[]) => new Uint8Array(new BigInt64Array(v.map(BigInt)).buffer)
  const gray = new Uint8Array(4 * 10 * 10).fill(9)
  const load = (name: string, bytes: Buffer) => {
    const file = path.join(root, name)
    writeFileSync(file, bytes)
    return loadDataset(file, { size: 8, cacheDir: path.join(root, 'cache') })
  }
  // The header claims 5 images, the array holds 4: the reader used to take the archive's next
  // bytes as a fifth image.
  const short = await t.throwsAsync(load('short.npz', zip([['train_images.npy', npy([5, 10, 10], '|u1', gray)]])))
  t.regex(short.message, /train_images: holds 400 bytes of data but its shape \[5,10,10\] \(\|u1\) needs 500/)
  // A label of 2e9 used to size per-class arrays until Node ran out of heap.
  const huge = await t.throwsAsync(
    load(
      'label.npz',
      zip([
        ['train_images.npy', npy([4, 10, 10], '|u1', gray)],
        ['train_labels.npy', npy([4, 1], '<i8', labels([0, 1, 2_000_000_000, 1]))],
      ]),
    ),
  )
  t.regex(huge.message, /label 2000000000 at row 2 is not a class index in 0\.\.65535/)
  // A deflated entry that declares 500 bytes and inflates to 10 MB stops at its declared size.
  const bombEntry = deflateRawSync(Buffer.alloc(10 * 2 ** 20))
  const bomb = zip([['train_images.npy', bombEntry]])
  const cd = bomb.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]))
  bomb.writeUInt16LE(8, cd + 10) // method: deflate
  bomb.writeUInt32LE(500, cd + 24) // declared uncompressed size
  const inflated = await t.throwsAsync(load('bomb.npz', bomb))
  t.regex(inflated.message, /decompresses to more than it may/)
  // Gzipped IDX data is inflated through the same bounded, checked path.
  const dir = path.join(root, 'mnist')
  mkdirSync(dir)
  writeFileSync(path.join(dir, 'train-images-idx3-ubyte.gz'), gzipSync(Buffer.from('not gzip payload')).subarray(0, 12))
  const torn = await t.throwsAsync(loadDataset(dir, { size: 8, cacheDir: path.join(root, 'cache') }))
  t.regex(torn.message, /train-images-idx3-ubyte.gz: (corrupt compressed data|not an IDX file \(no header after decompression\))/)
  // A gzipped IDX whose data inflates past what its header declares (4 images of 28 x 28 with
  // 10 MB behind them) stops at the declared size.
  const header = Buffer.alloc(16)
  header[2] = 0x08
  header[3] = 3
  header.writeUInt32BE(4, 4)
  header.writeUInt32BE(28, 8)
  header.writeUInt32BE(28, 12)
  writeFileSync(path.join(dir, 'train-images-idx3-ubyte.gz'), gzipSync(Buffer.concat([header, Buffer.alloc(10 * 2 ** 20)])))
  const idxBomb = await t.throwsAsync(loadDataset(dir, { size: 8, cacheDir: path.join(root, 'cache') }))
  t.regex(idxBomb.message, /decompresses to more than it may/)
})

test('an .npz reader does not inflate entries it does not need, and bounds those it does by their .npy shape', (t) => {
  const root = tempDir('npz-unused')
  const gray = new Uint8Array(4 * 10 * 10).fill(9)
  const gib = deflatedZeros(2 ** 30)
  const file = path.join(root, 'unused.npz')
  writeFileSync(
    file,
    zip([
      ['train_images.npy', npy([4, 10, 10], '|u1', gray)],
      ['train_labels.npy', npy([4], '|u1', Uint8Array.from([0, 1, 0, 1]))],
      ['extra_a.npy', gib],
      ['extra_b.npy', gib],
      ['extra_c.npy', gib],
    ]),
  )
  t.true(statSync(file).size < 4 * 2 ** 20, 'three 1 GiB entries in a few MB')
  const read = (npz: string) =>
    runCapped(
      { readNpz: 'ts/data/arrays.ts' },
      `const r = readNpz(${JSON.stringify(npz)}); return [r.train?.count, r.train?.labels]`,
      MEMORY_CAP,
    )
  const unused = read(file)
  t.is(unused.signal, null, unused.stderr)
  t.deepEqual(unused.result, { ok: [4, [0, 1, 0, 1]] }, unused.stderr)

  // A needed entry whose .npy header says 4 images of 10 x 10 but that declares (and inflates
  // to) 1 GiB more is refused from its header, before the rest is inflated.
  const head = npy([4, 10, 10], '|u1', new Uint8Array(0))
  const liar = path.join(root, 'liar.npz')
  const padded = {
    deflated: Buffer.concat([deflateRawSync(head, { finishFlush: zlibConstants.Z_SYNC_FLUSH }), gib.deflated]),
    size: head.length + gib.size,
  }
  writeFileSync(liar, zip([['train_images.npy', padded]]))
  const lying = read(liar)
  t.is(lying.signal, null, lying.stderr)
  t.is(lying.status, 1, lying.stderr)
  t.regex(
    lying.result?.error ?? '',
    /liar\.npz:train_images: holds 1073741824 bytes of data but its shape \[4,10,10\] \(\|u1\) needs 400/,
  )

  // Labels are bounded by the images' count the same way.
  const labelsLiar = path.join(root, 'labels.npz')
  const labelsHead = npy([2 ** 30], '|u1', new Uint8Array(0))
  writeFileSync(
    labelsLiar,
    zip([
      ['train_images.npy', npy([4, 10, 10], '|u1', gray)],
      [
        'train_labels.npy',
        {
          deflated: Buffer.concat([deflateRawSync(labelsHead, { finishFlush: zlibConstants.Z_SYNC_FLUSH }), gib.deflated]),
          size: labelsHead.length + gib.size,
        },
      ],
    ]),
  )
  const labels = read(labelsLiar)
  t.is(labels.signal, null, labels.stderr)
  t.regex(labels.result?.error ?? '', /labels\.npz:train_labels: 1073741824 labels for 4 images/)

  // Special files are refused before a byte is read.
  const fifo = path.join(root, 'fifo.npz')
  execFileSync('mkfifo', [fifo])
  t.regex(read(fifo).result?.error ?? '', /fifo\.npz is a FIFO, not a regular file/)
})

test('label fractions: seeded, stratified, at least one image per class', (t) => {
  const labels = [...Array(1000).keys()].map((i) => (i < 900 ? 0 : i < 990 ? 1 : 2))
  const all = labels.map((_, i) => i)
  const one = sampleFraction(all, labels, 0.01, 77)
  const count = (s: number[], c: number) => s.filter((i) => labels[i] === c).length
  t.deepEqual([count(one, 0), count(one, 1), count(one, 2)], [9, 1, 1])
  const ten = sampleFraction(all, labels, 0.1, 77)
  t.deepEqual([count(ten, 0), count(ten, 1), count(ten, 2)], [90, 9, 1])
  t.deepEqual(sampleFraction(all, labels, 0.1, 77), ten, 'same seed, same sample')
  t.notDeepEqual(sampleFraction(all, labels, 0.1, 78), ten)
  t.is(sampleFraction(all, labels, 1, 77).length, 1000)
  const [a, b, c] = stratifiedSplit(all, labels, [0.7, 0.1, 0.2], 1)
  t.is(a.length + b.length + c.length, 1000)
  t.is(new Set([...a, ...b, ...c]).size, 1000)
  t.true(count(b, 2) >= 1 && count(c, 2) >= 1)
})

test("partial cache files: a killed writer's are removed, a live one's kept, an aborted writer leaves none", (t) => {
  const dir = tempDir('orphans')
  const file = path.join(dir, 'abc-8.cassds')
  const dead = path.join(dir, '.abc-8.cassds.tmp-4194400') // above the kernel's pid_max
  const live = path.join(dir, `.abc-8.cassds.tmp-${process.pid}`)
  writeFileSync(dead, 'half')
  writeFileSync(live, 'writing')
  removeOrphans(file)
  t.false(existsSync(dead))
  t.true(existsSync(live))
  rmSync(live)
  const w = new CacheWriter(path.join(dir, 'x-8.cassds'), 8, 8)
  w.append(new Uint8Array(8 * 8 * 3))
  w.abort()
  t.deepEqual(readdirSync(dir), [])
})
