/**
 * Writing a user-named output file without harming what is at the path: the file is staged
 * beside it, fsynced and renamed over it, and only a missing path or a regular file may be
 * replaced. A rename would silently turn a device node, a FIFO or a symlink into a regular file
 * (as root, `--out /dev/null` would break the machine), so those are refused, and so is a
 * symlink at the final component: the caller names the real file.
 */
import { closeSync, fsyncSync, lstatSync, openSync, renameSync, rmSync, writeSync } from 'node:fs'
import path from 'node:path'

import { IoError } from '../errors.js'

/** Throws unless `file` is missing or a regular file (not a link to one). */
export function checkReplaceable(file: string): void {
  let st
  try {
    st = lstatSync(file)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return
    throw new IoError(`${file}: cannot check the output path (${(e as Error).message})`, file)
  }
  if (st.isSymbolicLink()) {
    throw new IoError(`${file} is a symbolic link: name the file it points to, or another path, to write the output`, file)
  }
  if (!st.isFile()) {
    const what = st.isDirectory() ? 'a folder' : st.isFIFO() ? 'a FIFO' : st.isSocket() ? 'a socket' : 'a device or special file'
    throw new IoError(`${file} is ${what}: refusing to replace it with the output (name a regular file)`, file)
  }
}

/** Stage, fsync, rename: a reader sees the old file or the new one, never half of either. */
export function writeOutputFile(file: string, bytes: Uint8Array | string): void {
  checkReplaceable(file)
  const staged = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`)
  try {
    const fd = openSync(staged, 'wx')
    try {
      const data = typeof bytes === 'string' ? Buffer.from(bytes) : bytes
      let at = 0
      while (at < data.length) at += writeSync(fd, data, at, data.length - at)
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    checkReplaceable(file)
    renameSync(staged, file)
  } catch (e) {
    rmSync(staged, { force: true })
    if (e instanceof IoError) throw e
    throw new IoError(`${file}: cannot write the output (${(e as Error).message})`, file)
  }
}
