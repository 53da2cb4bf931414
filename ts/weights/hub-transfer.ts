/**
 * One file's transfer from the Hub: the HEAD that names the commit, checksum and size, the body
 * streamed into `blobs/{etag}.incomplete` (resumed with a Range request after a dropped or
 * stalled connection), and the size and checksum verified before the rename that publishes it.
 */
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import { DataError } from '../errors.js'
import { makeDir } from '../io/make-dir.js'
import { checksumOf } from './hub-checksum.js'
import type { HubOptions } from './hub.js'
import { DroppedConnection, STALL_SETTINGS, type StallLimits, Stalled, Watchdog, seconds } from './stall.js'

/** Largest file a download accepts (checked against the size the Hub reports, before any byte). */
export const MAX_DOWNLOAD_BYTES = 4 * 1024 ** 3

/** A commit id, as `x-repo-commit` and `refs/` files give it. */
export const COMMIT = /^[0-9a-f]{40}$/
const MAX_REDIRECTS = 10

export const shown = (url: string) => {
  const u = new URL(url)
  return `${u.origin}${u.pathname}`
}

export const mib = (n: number) => `${(n / 1024 ** 2).toFixed(1)} MiB`

export function unreachable(url: string, err: unknown): DataError {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause
  const why = cause?.code ?? cause?.message ?? (err as Error).message
  return new DataError(
    `cannot reach ${shown(url)} (${why}). Set HF_HUB_OFFLINE=1 to use files already in the cache, HF_ENDPOINT for a mirror, or pass a local .safetensors file instead of the hf: reference`,
    'offline',
    url,
  )
}

/** One request, following redirects by hand: a relative `location` is resolved against the
 *  current URL, and the Authorization header is dropped when the origin changes. `stop` ends
 *  the walk at a redirect that already carries what the caller needs. */
export async function request(
  method: 'HEAD' | 'GET',
  url: string,
  headers: Record<string, string>,
  user: AbortSignal | undefined,
  watch: Watchdog,
  stop: (res: Response) => boolean = () => false,
): Promise<Response> {
  let current = url
  let sent = headers
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    let res: Response
    try {
      res = await fetch(current, { method, headers: sent, redirect: 'manual', signal: watch.signal })
    } catch (e) {
      if (user?.aborted) throw user.reason
      if (watch.reason !== undefined) throw new Stalled(`${shown(current)}: ${watch.reason}`)
      throw unreachable(current, e)
    }
    watch.kick()
    const location = res.headers.get('location')
    if (res.status < 300 || res.status >= 400 || location === null || stop(res)) return res
    await res.body?.cancel()
    const next = new URL(location, current)
    if (next.origin !== new URL(current).origin) {
      const { authorization: _dropped, ...rest } = sent
      sent = rest
    }
    current = next.href
  }
  throw new DataError(`more than ${MAX_REDIRECTS} redirects from ${shown(url)}`, 'download-failed', url)
}

export async function httpError(res: Response, url: string, label: string): Promise<DataError> {
  await res.body?.cancel()
  const hubMessage = res.headers.get('x-error-message')
  const detail = hubMessage ? `: ${hubMessage}` : ''
  if (res.status === 401 || res.status === 403 || res.status === 404) {
    return new DataError(
      `${label}: ${shown(url)} answered ${res.status}${detail}. Check the repository name and revision; a private or gated repository needs HF_TOKEN`,
      'not-found',
      url,
    )
  }
  return new DataError(`${label}: ${shown(url)} answered ${res.status} ${res.statusText}${detail}`, 'download-failed', url)
}

const unquote = (etag: string | null) => etag?.replace(/^W\//, '').replace(/^"|"$/g, '') ?? null

export interface FileMetadata {
  commit: string
  /** The LFS sha256 (or the git blob id of a small file). */
  etag: string
  size: number | null
}

export async function headMetadata(
  url: string,
  headers: Record<string, string>,
  label: string,
  opts: HubOptions,
  limits: StallLimits,
) {
  const watch = new Watchdog(limits.idleMs, opts.signal)
  let res: Response
  try {
    res = await request('HEAD', url, headers, opts.signal, watch, (r) => r.headers.has('x-repo-commit'))
    if (res.status >= 400) throw await httpError(res, url, label)
  } catch (e) {
    if (!(e instanceof Stalled)) throw e
    throw new DataError(
      `${label}: gave up on ${e.message} while resolving the revision; ${STALL_SETTINGS}`,
      'download-stalled',
      url,
    )
  } finally {
    watch.stop()
  }
  const commit = res.headers.get('x-repo-commit')
  const etag = unquote(res.headers.get('x-linked-etag') ?? res.headers.get('etag'))
  const linkedSize = res.headers.get('x-linked-size') ?? (res.status === 200 ? res.headers.get('content-length') : null)
  if (commit === null || !COMMIT.test(commit) || etag === null || !/^[0-9a-f]{40,64}$/.test(etag)) {
    throw new DataError(
      `${label}: ${shown(url)} did not answer like the Hugging Face Hub (no x-repo-commit or etag); check HF_ENDPOINT`,
      'download-failed',
      url,
    )
  }
  const size = linkedSize === null ? null : Number(linkedSize)
  if (size !== null && !(Number.isSafeInteger(size) && size >= 0)) {
    throw new DataError(`${label}: ${shown(url)} reported an invalid size ${JSON.stringify(linkedSize)}`, 'download-failed', url)
  }
  return { commit, etag, size } satisfies FileMetadata
}

/** Streams the body of `url` onto `partial`, resuming from the bytes already there. */
async function fetchInto(
  url: string,
  headers: Record<string, string>,
  partial: string,
  meta: FileMetadata,
  limit: number,
  label: string,
  opts: HubOptions,
  limits: StallLimits,
): Promise<void> {
  let have = existsSync(partial) ? statSync(partial).size : 0
  if (meta.size !== null && have > meta.size) {
    rmSync(partial, { force: true })
    have = 0
  }
  if (meta.size !== null && have === meta.size) return
  const watch = new Watchdog(limits.idleMs, opts.signal)
  try {
    await fetchBody(
      url,
      have > 0 ? { ...headers, range: `bytes=${have}-` } : headers,
      partial,
      have,
      meta,
      limit,
      label,
      opts,
      limits,
      watch,
    )
  } finally {
    watch.stop()
  }
}

async function fetchBody(
  url: string,
  headers: Record<string, string>,
  partial: string,
  have: number,
  meta: FileMetadata,
  limit: number,
  label: string,
  opts: HubOptions,
  limits: StallLimits,
  watch: Watchdog,
): Promise<void> {
  const res = await request('GET', url, headers, opts.signal, watch)
  let start: number
  if (res.status === 206) {
    const range = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')
    start = range ? Number(range[1]) : -1
    if (start !== have) {
      // A range we did not ask for: start over rather than stitch mismatched bytes.
      await res.body?.cancel()
      rmSync(partial, { force: true })
      throw new DroppedConnection(`the server answered the range request with ${res.headers.get('content-range')}`)
    }
  } else if (res.status === 200) {
    start = 0
  } else if (res.status === 416) {
    await res.body?.cancel()
    rmSync(partial, { force: true })
    throw new DroppedConnection('the server refused to resume; starting over')
  } else {
    throw await httpError(res, url, label)
  }
  if (res.body === null) throw new DroppedConnection('empty response body')
  if (start > 0) opts.onProgress?.({ type: 'status', ref: label, message: `resuming at ${mib(start)}` })
  const fd = openSync(partial, start === 0 ? 'w' : 'a')
  let received = start
  let lastEvent = 0
  // The rate is averaged over consecutive windows, each starting where the last one ended.
  let windowStart = Date.now()
  let windowBytes = received
  try {
    const reader = res.body.getReader()
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>
      try {
        chunk = await reader.read()
      } catch (e) {
        if (opts.signal?.aborted) throw opts.signal.reason
        if (watch.reason !== undefined) throw new Stalled(`${shown(url)}: ${watch.reason} at ${mib(received)}`)
        throw new DroppedConnection(`connection lost at ${mib(received)}: ${(e as Error).message}`)
      }
      if (chunk.done) break
      watch.kick()
      received += chunk.value.length
      if (received > limit) {
        await reader.cancel()
        rmSync(partial, { force: true })
        throw new DataError(
          `${label}: ${shown(url)} sent more than ${meta.size === null ? `the ${mib(limit)} limit` : `the ${meta.size} bytes it reported`}`,
          meta.size === null ? 'too-large' : 'download-failed',
          url,
        )
      }
      writeSync(fd, chunk.value) // before the rate check: what did arrive is kept for the resume
      const now = Date.now()
      if (now - windowStart >= limits.windowMs) {
        const rate = ((received - windowBytes) * 1000) / (now - windowStart)
        if (rate < limits.minBytesPerSecond) {
          const why = `${rate.toFixed(0)} B/s on average over ${seconds(limits.windowMs)}, below the minimum of ${limits.minBytesPerSecond} B/s`
          watch.stall(why)
          await reader.cancel().catch(() => {})
          throw new Stalled(`${shown(url)}: ${why} at ${mib(received)}`)
        }
        windowStart = now
        windowBytes = received
      }
      if (Date.now() - lastEvent >= 100) {
        lastEvent = Date.now()
        opts.onProgress?.({ type: 'download', ref: label, received, total: meta.size, done: false })
      }
    }
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  opts.onProgress?.({ type: 'download', ref: label, received, total: meta.size, done: true })
}

/** Downloads into `blobs/{etag}` (resuming, retrying, verifying), published by a rename. */
export async function downloadBlob(
  url: string,
  headers: Record<string, string>,
  blob: string,
  meta: FileMetadata,
  label: string,
  opts: HubOptions,
  limits: StallLimits,
): Promise<void> {
  makeDir(path.dirname(blob))
  const partial = `${blob}.incomplete`
  const retries = opts.retries ?? 3
  const limit = meta.size ?? opts.maxBytes ?? MAX_DOWNLOAD_BYTES
  for (let attempt = 0; ; attempt++) {
    try {
      await fetchInto(url, headers, partial, meta, limit, label, opts, limits)
      break
    } catch (e) {
      if (!(e instanceof DroppedConnection)) throw e
      if (attempt >= retries) {
        if (e instanceof Stalled) {
          throw new DataError(
            `${label}: gave up on ${e.message}; run again to resume from ${partial}. ${STALL_SETTINGS}`,
            'download-stalled',
            url,
          )
        }
        throw new DataError(
          `${label}: download of ${shown(url)} failed (${e.message}); run again to resume from ${partial}`,
          'download-failed',
          url,
        )
      }
      opts.onProgress?.({ type: 'status', ref: label, message: `${e.message}; retrying (${attempt + 1}/${retries})` })
      await sleep(200 * (attempt + 1), undefined, { signal: opts.signal })
    }
  }
  const size = statSync(partial).size
  if (meta.size !== null && size !== meta.size) {
    rmSync(partial, { force: true })
    throw new DataError(`${label}: got ${size} bytes from ${shown(url)}, the Hub reported ${meta.size}`, 'download-failed', url)
  }
  // Every ETag the Hub gives is a checksum: the LFS sha256 (64 hex), or for a small file kept in
  // git its blob id (40 hex). Both are verified; a 40-hex one used to skip the check.
  opts.onProgress?.({ type: 'status', ref: label, message: 'verifying the checksum' })
  const { kind, actual } = await checksumOf(partial, meta.etag, size, opts.signal)
  if (actual !== meta.etag) {
    rmSync(partial, { force: true })
    throw new DataError(
      `${label}: checksum mismatch for ${shown(url)}: expected ${kind} ${meta.etag}, got ${actual}; the partial file was deleted, run again to download it anew`,
      'checksum-mismatch',
      url,
    )
  }
  renameSync(partial, blob)
}
