/**
 * Reading a user-named input without trusting what is at the path: it is opened without blocking
 * (a FIFO must not hang us), checked to be a regular file (a symlink to `/dev/zero` is not) and
 * bounded in size before a byte is read. The synchronous twin of `readRegularFile` in
 * data/decode.ts, for readers that parse a file in one go (archives, configs, results).
 */
import { type Stats, closeSync, constants, fstatSync, openSync, readSync } from 'node:fs'

import { IoError } from '../errors.js'

/** What a non-regular path is, for a message. */
function describe(st: Stats): string {
  if (st.isDirectory()) return 'a folder'
  if (st.isFIFO()) return 'a FIFO'
  if (st.isSocket()) return 'a socket'
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device'
  return 'not a regular file'
}

/** An open regular file and its size; the caller closes `fd`. */
export interface OpenFile {
  fd: number
  size: number
}

/**
 * Opens `file` for reading, refusing anything but a regular file of at most `maxBytes` (`what`
 * names the kind of file in the message, e.g. `a Keras package`).
 */
export function openRegularFileSync(file: string, maxBytes: number, what = 'this file'): OpenFile {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK)
  try {
    const st = fstatSync(fd)
    if (!st.isFile()) throw new IoError(`${file} is ${describe(st)}, not a regular file`, file)
    if (st.size > maxBytes) {
      throw new IoError(`${file} is ${st.size} bytes, over the ${maxBytes}-byte limit for ${what}`, file)
    }
    return { fd, size: st.size }
  } catch (e) {
    closeSync(fd)
    throw e
  }
}

/** Exactly `length` bytes at `position`, or an error naming `file` when it has fewer. */
export function readAtSync(fd: number, file: string, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length)
  let at = 0
  while (at < length) {
    const n = readSync(fd, buf, at, length - at, position + at)
    if (n === 0) throw new IoError(`${file} ends at byte ${position + at}, before the ${length} bytes at ${position}`, file)
    at += n
  }
  return buf
}

/** The whole of `file`, a regular file of at most `maxBytes` (see {@link openRegularFileSync}). */
export function readRegularFileSync(file: string, maxBytes: number, what?: string): Buffer {
  const { fd, size } = openRegularFileSync(file, maxBytes, what)
  try {
    return readAtSync(fd, file, 0, size)
  } finally {
    closeSync(fd)
  }
}
