/**
 * `mkdir -p` that names the real reason it failed. Node's recursive `mkdirSync` reports ENOENT
 * when a parent cannot be created on a read-only file system (measured here: `--out` on a
 * read-only mount said "ENOENT: no such file or directory"), which sends users looking for a
 * missing folder. On failure the nearest existing ancestor is found and the next level is made
 * without `recursive`, which surfaces the kernel's own answer (EROFS, EACCES, ENOTDIR, ...).
 */
import { existsSync, mkdirSync } from 'node:fs'
import path from 'node:path'

import { IoError } from '../errors.js'

const REASONS: Record<string, string> = {
  EROFS: 'the file system is read-only',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOTDIR: 'a part of the path is a file, not a folder',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
}

/** Creates `dir` and its parents; an IoError naming the folder and the real cause otherwise. */
export function makeDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true })
    return
  } catch (e) {
    let code = (e as NodeJS.ErrnoException).code ?? 'EIO'
    if (code === 'ENOENT') {
      let parent = path.resolve(dir)
      while (!existsSync(path.dirname(parent)) && path.dirname(parent) !== parent) parent = path.dirname(parent)
      try {
        mkdirSync(parent)
      } catch (inner) {
        code = (inner as NodeJS.ErrnoException).code ?? code
      }
    }
    const why = REASONS[code] ?? (e as Error).message
    throw new IoError(`cannot create the folder ${dir}: ${why} (${code})`, dir)
  }
}
