import { spawnSync } from 'node:child_process'
import { lstatSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'

import { IoError } from '../ts/index.js'
import { loadDataset } from '../ts/data/dataset.js'
import { makeDir } from '../ts/io/make-dir.js'
import { writeOutputFile } from '../ts/io/output-file.js'
import { tempDir } from './helpers.js'

test('a folder that cannot be made names the real cause, not ENOENT', (t) => {
  const root = tempDir('make-dir')
  writeFileSync(path.join(root, 'file'), 'x')
  const err = t.throws(() => makeDir(path.join(root, 'file', 'sub', 'deeper')), { instanceOf: IoError })
  t.regex(err.message, /a part of the path is a file, not a folder \(ENOTDIR\)/)
  makeDir(path.join(root, 'a', 'b')) // and the ordinary case works
})

// Node's recursive mkdir reports ENOENT on a read-only file system; a read-only tmpfs shows it.
// Mounting needs root (CI and this machine run as root); elsewhere the test says why it skips.
const ro = tempDir('read-only')
const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro', 'tmpfs', ro]).status === 0
// Unmounted whether or not the test ran (a --match run skips it).
test.after.always(() => void (mounted && spawnSync('umount', [ro])))
;(mounted ? test : test.skip)('a read-only file system is reported as such (it read ENOENT) [needs root to mount]', (t) => {
  const err = t.throws(() => makeDir(path.join(ro, 'out', 'run')), { instanceOf: IoError })
  t.regex(err.message, /read-only \(EROFS\)/)
})

test('outputs are written over a missing path or a regular file only: a FIFO, a symlink or a folder is refused and kept', (t) => {
  const root = tempDir('output-file')
  const fifo = path.join(root, 'fifo.json')
  spawnSync('mkfifo', [fifo])
  const target = path.join(root, 'target.json')
  writeFileSync(target, 'keep')
  const link = path.join(root, 'link.json')
  symlinkSync(target, link)
  for (const [file, why] of [
    [fifo, /a FIFO/],
    [link, /symbolic link/],
    [root, /a folder/],
  ] as const) {
    t.throws(() => writeOutputFile(file, 'new'), { instanceOf: IoError, message: why })
  }
  t.true(lstatSync(fifo).isFIFO())
  t.true(lstatSync(link).isSymbolicLink())
  t.is(readFileSync(target, 'utf8'), 'keep')
  writeOutputFile(target, 'replaced')
  t.is(readFileSync(target, 'utf8'), 'replaced')
  writeOutputFile(path.join(root, 'new.json'), 'fresh')
  t.deepEqual(
    readdirSync(root).filter((n) => n.includes('.tmp-')),
    [],
  )
})

test('a config or a CSV that is a FIFO is refused at once, not waited on', async (t) => {
  const root = tempDir('fifo-inputs')
  const fifo = path.join(root, 'config.json')
  spawnSync('mkfifo', [fifo])
  const cli = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      path.join(__dirname, '..', 'ts', 'cli.ts'),
      'pretrain',
      '--data',
      root,
      '--out',
      path.join(root, 'o'),
      '--config',
      fifo,
    ],
    { encoding: 'utf8', timeout: 60_000 },
  )
  t.is(cli.status, 2, cli.stderr)
  t.regex(cli.stderr, /cannot read --config .*FIFO, not a regular file/)
  const csv = path.join(root, 'rows.csv')
  spawnSync('mkfifo', [csv])
  await t.throwsAsync(loadDataset(csv, { size: 8, cacheDir: path.join(root, 'cache') }), { message: /not a regular file/ })
  await t.throwsAsync(loadDataset(csv, { size: 8, format: 'csv', cacheDir: path.join(root, 'cache') }), {
    message: /not a regular file/,
  })
})
