/** Array sources written by hand, as the specs need them: IDX files, `.npy` arrays, `.npz` zips. */
import { deflateRawSync, constants as zlibConstants } from 'node:zlib'

/** An IDX file of unsigned bytes. */
export function idx(dims: number[], data: Uint8Array): Buffer {
  const head = Buffer.alloc(4 + 4 * dims.length)
  head[2] = 0x08
  head[3] = dims.length
  dims.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i))
  return Buffer.concat([head, Buffer.from(data)])
}

/** A `.npy` array (format 1.0). */
export function npy(shape: number[], descr: string, data: Uint8Array): Buffer {
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`
  header += ' '.repeat((64 - ((10 + header.length + 1) % 64)) % 64) + '\n'
  const pre = Buffer.alloc(10)
  pre.write('\x93NUMPY', 0, 'latin1')
  pre[6] = 1
  pre.writeUInt16LE(header.length, 8)
  return Buffer.concat([pre, Buffer.from(header, 'latin1'), Buffer.from(data)])
}

/** An entry already deflated (raw deflate, zip method 8) that declares `size` bytes inflated. */
export interface Deflated {
  deflated: Buffer
  size: number
}

/**
 * Raw deflate data of `size` zero bytes (a multiple of 1 MiB), about a thousandth of that on
 * disk: one sync-flushed block of 1 MiB of zeros, repeated, then an empty final block. Built
 * without ever holding `size` bytes, so a spec can write a 1 GiB entry in a millisecond.
 */
export function deflatedZeros(size: number): Deflated {
  const block = deflateRawSync(Buffer.alloc(2 ** 20), { finishFlush: zlibConstants.Z_SYNC_FLUSH })
  const last = deflateRawSync(Buffer.alloc(0))
  return { deflated: Buffer.concat([...Array.from({ length: size / 2 ** 20 }, () => block), last]), size }
}

/** A zip with stored (uncompressed) entries, as `numpy.savez` writes, or deflated ones. */
export function zip(entries: [string, Buffer | Deflated][]): Buffer {
  const locals: Buffer[] = []
  const central: Buffer[] = []
  let offset = 0
  for (const [name, entry] of entries) {
    const n = Buffer.from(name)
    const data = Buffer.isBuffer(entry) ? entry : entry.deflated
    const size = Buffer.isBuffer(entry) ? entry.length : entry.size
    const method = Buffer.isBuffer(entry) ? 0 : 8
    const local = Buffer.alloc(30)
    local.writeUInt32LE(0x04034b50, 0)
    local.writeUInt16LE(method, 8)
    local.writeUInt32LE(data.length, 18)
    local.writeUInt32LE(size, 22)
    local.writeUInt16LE(n.length, 26)
    const cd = Buffer.alloc(46)
    cd.writeUInt32LE(0x02014b50, 0)
    cd.writeUInt16LE(method, 10)
    cd.writeUInt32LE(data.length, 20)
    cd.writeUInt32LE(size, 24)
    cd.writeUInt16LE(n.length, 28)
    cd.writeUInt32LE(offset, 42)
    locals.push(local, n, data)
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
  return Buffer.concat([...locals, cdBuf, end])
}
