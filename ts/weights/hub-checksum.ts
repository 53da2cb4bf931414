/**
 * The checksum a Hub ETag names, computed over a downloaded file: the LFS sha256 (64 hex), or
 * for a small file kept in git its blob id (40 hex: SHA-1 of `blob <size>\0` and the bytes).
 */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'

const SHA256 = /^[0-9a-f]{64}$/

/** What kind of checksum `etag` is, and that checksum of `file` (`size` bytes). */
export async function checksumOf(
  file: string,
  etag: string,
  size: number,
  signal: AbortSignal | undefined,
): Promise<{ kind: 'sha256' | 'git blob id'; actual: string }> {
  const kind = SHA256.test(etag) ? 'sha256' : 'git blob id'
  const hash = createHash(kind === 'sha256' ? 'sha256' : 'sha1')
  if (kind === 'git blob id') hash.update(`blob ${size}\0`)
  for await (const chunk of createReadStream(file, { signal })) hash.update(chunk as Buffer)
  return { kind, actual: hash.digest('hex') }
}
