import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'

import { IoError } from '../ts/index.js'
import { makeDir } from '../ts/io/make-dir.js'
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
;(mounted ? test : test.skip)('a read-only file system is reported as such (it read ENOENT) [needs root to mount]', (t) => {
  t.teardown(() => void spawnSync('umount', [ro]))
  const err = t.throws(() => makeDir(path.join(ro, 'out', 'run')), { instanceOf: IoError })
  t.regex(err.message, /read-only \(EROFS\)/)
})
