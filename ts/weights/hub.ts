/**
 * Weight files from the Hugging Face Hub (`hf:owner/name[@revision]`), cached in the Hub's own
 * layout so that Python's `huggingface_hub` and this package share one copy:
 *
 *     $HF_HUB_CACHE (default $HF_HOME/hub; HF_HOME defaults to ~/.cache/huggingface)
 *       models--{owner}--{name}/blobs/{sha256}                  the file, named by its LFS sha256
 *       models--{owner}--{name}/snapshots/{commit}/{filename}   a relative symlink to the blob
 *       models--{owner}--{name}/refs/{revision}                 the commit the revision named
 *
 * The Hub answers a HEAD on `{endpoint}/{repo}/resolve/{revision}/{filename}` with the commit
 * (`x-repo-commit`), the LFS sha256 (`x-linked-etag`) and size (`x-linked-size`), and a redirect
 * to a CDN for the body. The body goes to `blobs/{sha256}.incomplete`; a dropped connection is
 * resumed from there with a `Range` request (also by the next run), the whole file is checked
 * against the size and sha256, then published by a rename.
 *
 * A server that goes quiet is given up on: nothing received for `HF_HUB_DOWNLOAD_TIMEOUT`
 * seconds (30 by default; waiting for an answer or between bytes of a body), or a body arriving
 * slower than `CASS_SSL_DOWNLOAD_MIN_RATE` bytes per second (1024) on average over
 * `CASS_SSL_DOWNLOAD_RATE_WINDOW` seconds (60), is a `download-stalled` error; within one call a
 * stalled body is retried like a dropped connection, from where it stopped. The `HubOptions`
 * fields of the same meaning win over the variables.
 *
 * Environment (as `huggingface_hub` reads it): `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`,
 * `HF_HUB_OFFLINE=1` (cache only, no network), `HF_TOKEN` (sent as a Bearer token to the endpoint
 * only, never to a redirect target on another host, never printed: a token that is not printable
 * ASCII without spaces is refused without showing it, and any text that would carry it, such as
 * a server's error message, shows `[HF_TOKEN]` instead).
 */
import { createHash } from 'node:crypto'
import {
  closeSync,
  copyFileSync,
  createReadStream,
  existsSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import { ConfigError, DataError } from '../errors.js'
import { makeDir } from '../io/make-dir.js'

/** Largest file a download accepts (checked against the size the Hub reports, before any byte). */
export const MAX_DOWNLOAD_BYTES = 4 * 1024 ** 3

export type Env = Record<string, string | undefined>

/** Progress of fetching or converting weights, for a terminal line or a log. */
export type WeightsEvent =
  | { type: 'download'; ref: string; received: number; total: number | null; done: boolean }
  | { type: 'status'; ref: string; message: string }

export interface HubOptions {
  /** Where HF_* variables are read (default `process.env`). */
  env?: Env
  onProgress?: (event: WeightsEvent) => void
  signal?: AbortSignal
  /** Refuse larger files (default {@link MAX_DOWNLOAD_BYTES}). */
  maxBytes?: number
  /** Resumed attempts after a dropped or stalled connection, within one call (default 3). */
  retries?: number
  /**
   * Give up on a server that sends nothing for this long, waiting for an answer or between bytes
   * of a body (default `HF_HUB_DOWNLOAD_TIMEOUT` seconds, else {@link DEFAULT_IDLE_TIMEOUT_MS}).
   */
  idleTimeoutMs?: number
  /**
   * Give up on a body arriving slower than this, on average over `rateWindowMs` (default
   * `CASS_SSL_DOWNLOAD_MIN_RATE`, else {@link DEFAULT_MIN_BYTES_PER_SECOND}; 0 turns it off).
   */
  minBytesPerSecond?: number
  /** The window of that average (default `CASS_SSL_DOWNLOAD_RATE_WINDOW` seconds, else {@link DEFAULT_RATE_WINDOW_MS}). */
  rateWindowMs?: number
}

/** How long a silent server is waited for (huggingface_hub's own default is 10 s). */
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000
/** The slowest body accepted, on average over {@link DEFAULT_RATE_WINDOW_MS}. */
export const DEFAULT_MIN_BYTES_PER_SECOND = 1024
export const DEFAULT_RATE_WINDOW_MS = 60_000

export interface HubReference {
  /** `owner/name`. */
  repo: string
  /** Branch, tag or commit (default `main`). */
  revision: string
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/
const REVISION = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/
const COMMIT = /^[0-9a-f]{40}$/
const SHA256 = /^[0-9a-f]{64}$/
const MAX_REDIRECTS = 10

/** Parses `hf:owner/name[@revision]`; `field` names the config field in the error. */
export function parseHubReference(ref: string, field: string): HubReference {
  const bad = (why: string) =>
    new ConfigError(
      `invalid config at \`${field}\`: ${JSON.stringify(ref)} ${why} (expected hf:owner/name or hf:owner/name@revision, e.g. hf:timm/resnet50.a1_in1k)`,
      field,
      [],
    )
  if (!ref.startsWith('hf:')) throw bad('is not a Hugging Face reference')
  const body = ref.slice(3)
  const at = body.indexOf('@')
  const repo = at < 0 ? body : body.slice(0, at)
  const revision = at < 0 ? 'main' : body.slice(at + 1)
  const parts = repo.split('/')
  if (parts.length !== 2 || !parts.every((p) => NAME.test(p) && !p.includes('--') && !p.includes('..'))) {
    throw bad('does not name a repository')
  }
  if (!REVISION.test(revision) || revision.split('/').some((s) => s === '.' || s === '..')) throw bad('has an invalid revision')
  return { repo, revision }
}

/** `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub` (XDG_CACHE_HOME respected). */
export function hubCacheDir(env: Env = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE
  const home = env.HF_HOME || path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'huggingface')
  return path.join(home, 'hub')
}

const isOffline = (env: Env) => ['1', 'ON', 'YES', 'TRUE'].includes((env.HF_HUB_OFFLINE ?? '').trim().toUpperCase())
const endpointOf = (env: Env) => (env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, '')
const refLabel = (ref: HubReference) => `hf:${ref.repo}${ref.revision === 'main' ? '' : `@${ref.revision}`}`
/** A URL without its query (CDN URLs carry signatures). */
const shown = (url: string) => {
  const u = new URL(url)
  return `${u.origin}${u.pathname}`
}
const mib = (n: number) => `${(n / 1024 ** 2).toFixed(1)} MiB`

/** The cached file of `ref` (through `refs/{revision}` unless the revision is a commit), if any. */
function cachedSnapshot(repoDir: string, revision: string, filename: string): string | undefined {
  let commit = revision
  if (!COMMIT.test(revision)) {
    try {
      commit = readFileSync(path.join(repoDir, 'refs', revision), 'utf8').trim()
    } catch {
      return undefined
    }
    if (!COMMIT.test(commit)) return undefined
  }
  const file = path.join(repoDir, 'snapshots', commit, filename)
  return existsSync(file) ? file : undefined
}

/** Raised while a body is streaming: the connection broke, the bytes so far are kept. */
class DroppedConnection extends Error {}

/** The server went quiet or too slow (see {@link Watchdog}); retried like a dropped connection. */
class Stalled extends DroppedConnection {}

interface StallLimits {
  idleMs: number
  minBytesPerSecond: number
  windowMs: number
}

const seconds = (ms: number) => `${Number((ms / 1000).toFixed(3))} s`
const STALL_SETTINGS =
  'HF_HUB_DOWNLOAD_TIMEOUT (seconds without a byte), CASS_SSL_DOWNLOAD_MIN_RATE (bytes per second) and CASS_SSL_DOWNLOAD_RATE_WINDOW (seconds) set these limits'

/** The stall limits from `opts`, else the environment, else the defaults; each checked. */
function stallLimits(opts: HubOptions, env: Env): StallLimits {
  const pick = (
    option: 'idleTimeoutMs' | 'minBytesPerSecond' | 'rateWindowMs',
    variable: string,
    fallback: number,
    zeroAllowed: boolean,
  ): number => {
    const ok = (n: number) => Number.isFinite(n) && (zeroAllowed ? n >= 0 : n > 0)
    const wanted = zeroAllowed ? 'a number >= 0' : 'a number > 0'
    const given = opts[option]
    if (given !== undefined) {
      if (!ok(given))
        throw new ConfigError(`invalid option \`${option}\`: ${given} is not ${wanted}`, option, [
          `${option}: expected ${wanted}`,
        ])
      return given
    }
    const raw = env[variable]?.trim()
    if (!raw) return fallback
    const n = Number(raw)
    if (!ok(n)) {
      throw new ConfigError(
        `invalid environment variable \`${variable}\`: ${JSON.stringify(raw.slice(0, 40))} is not ${wanted}`,
        variable,
        [`${variable}: expected ${wanted}`],
      )
    }
    // The variables are in seconds, as huggingface_hub's HF_HUB_DOWNLOAD_TIMEOUT; the rate in bytes.
    return option === 'minBytesPerSecond' ? n : n * 1000
  }
  return {
    idleMs: pick('idleTimeoutMs', 'HF_HUB_DOWNLOAD_TIMEOUT', DEFAULT_IDLE_TIMEOUT_MS, false),
    minBytesPerSecond: pick('minBytesPerSecond', 'CASS_SSL_DOWNLOAD_MIN_RATE', DEFAULT_MIN_BYTES_PER_SECOND, true),
    windowMs: pick('rateWindowMs', 'CASS_SSL_DOWNLOAD_RATE_WINDOW', DEFAULT_RATE_WINDOW_MS, false),
  }
}

/**
 * Ends a request through its signal when the server goes quiet: `kick` on every answer and
 * every chunk restarts the idle timer; `stall` ends it with a reason (the rate check). undici's
 * own timeouts (five minutes of silence, no limit on a trickle of bytes) are far too patient.
 */
class Watchdog {
  readonly signal: AbortSignal
  reason: string | undefined
  readonly #controller = new AbortController()
  #timer: NodeJS.Timeout | undefined

  constructor(
    readonly idleMs: number,
    user: AbortSignal | undefined,
  ) {
    this.signal = user ? AbortSignal.any([user, this.#controller.signal]) : this.#controller.signal
    this.kick()
  }

  kick() {
    clearTimeout(this.#timer)
    // setTimeout takes at most 2^31 - 1 ms and fires at once beyond it.
    const ms = Math.min(this.idleMs, 2 ** 31 - 1)
    this.#timer = setTimeout(() => this.stall(`nothing received for ${seconds(this.idleMs)}`), ms)
  }

  stall(reason: string) {
    this.reason ??= reason
    clearTimeout(this.#timer)
    this.#controller.abort()
  }

  stop() {
    clearTimeout(this.#timer)
  }
}

function unreachable(url: string, err: unknown): DataError {
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
async function request(
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

async function httpError(res: Response, url: string, label: string): Promise<DataError> {
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

interface FileMetadata {
  commit: string
  /** The LFS sha256 (or the git blob id of a small file). */
  etag: string
  size: number | null
}

async function headMetadata(url: string, headers: Record<string, string>, label: string, opts: HubOptions, limits: StallLimits) {
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

async function sha256Of(file: string, signal: AbortSignal | undefined): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(file, { signal })) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** A small (non-LFS) file's ETag is its git blob id: SHA-1 of `blob <size>\0` and the bytes. */
async function gitBlobIdOf(file: string, size: number, signal: AbortSignal | undefined): Promise<string> {
  const hash = createHash('sha1')
  hash.update(`blob ${size}\0`)
  for await (const chunk of createReadStream(file, { signal })) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** Downloads into `blobs/{etag}` (resuming, retrying, verifying), published by a rename. */
async function downloadBlob(
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
  const kind = SHA256.test(meta.etag) ? 'sha256' : 'git blob id'
  opts.onProgress?.({ type: 'status', ref: label, message: `verifying ${kind}` })
  const actual = kind === 'sha256' ? await sha256Of(partial, opts.signal) : await gitBlobIdOf(partial, size, opts.signal)
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

/** Writes `file` by a rename, so a reader never sees half of it. */
function publish(file: string, write: (tmp: string) => void) {
  makeDir(path.dirname(file))
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`)
  rmSync(tmp, { force: true })
  write(tmp)
  renameSync(tmp, file)
}

/**
 * `HF_TOKEN`, trimmed. A header value is printable ASCII, and a token with a space or a line
 * break would be cut or rejected inside `fetch`, whose error repeats the header verbatim; so it is
 * refused here, with a message that shows no part of it.
 */
function hubToken(env: Env): string | undefined {
  const token = env.HF_TOKEN?.trim()
  if (!token) return undefined
  if (!/^[\x21-\x7e]+$/.test(token)) {
    const why = 'a token is printable ASCII without spaces or line breaks (its value is not shown)'
    throw new ConfigError(
      `invalid environment variable \`HF_TOKEN\`: ${why}; check how it was set (a token pasted with a line break, or read from a file with a stray character)`,
      'HF_TOKEN',
      [`HF_TOKEN: ${why}`],
    )
  }
  return token
}

/** `text` with every occurrence of `secret` (also JSON-escaped) replaced by `[HF_TOKEN]`. */
function redact(text: string, secret: string): string {
  return text.replaceAll(secret, '[HF_TOKEN]').replaceAll(JSON.stringify(secret).slice(1, -1), '[HF_TOKEN]')
}

/**
 * The local path of `filename` at `ref` on the Hub, downloaded into the Hub cache unless it is
 * there already. Online, a HEAD request resolves the revision (a cached file is then reused
 * without downloading); when the Hub is unreachable a cached copy is used, else the error names
 * the URL. With `HF_HUB_OFFLINE=1` only the cache is read.
 */
export async function hubDownload(ref: HubReference, filename: string, opts: HubOptions = {}): Promise<string> {
  const token = hubToken(opts.env ?? process.env)
  if (token === undefined) return download(ref, filename, opts, undefined)
  // Servers and proxies can repeat the Authorization header in an error message or a status
  // line; whatever comes back (errors, progress messages) passes through redact.
  const { onProgress } = opts
  const scrubbed: HubOptions = {
    ...opts,
    onProgress: onProgress && ((e) => onProgress(e.type === 'status' ? { ...e, message: redact(e.message, token) } : e)),
  }
  try {
    return await download(ref, filename, scrubbed, token)
  } catch (e) {
    if (e instanceof Error) {
      e.message = redact(e.message, token)
      if (e.stack !== undefined) e.stack = redact(e.stack, token)
    }
    throw e
  }
}

async function download(ref: HubReference, filename: string, opts: HubOptions, token: string | undefined): Promise<string> {
  const env = opts.env ?? process.env
  const label = refLabel(ref)
  const repoDir = path.join(hubCacheDir(env), `models--${ref.repo.replace('/', '--')}`)
  const cached = cachedSnapshot(repoDir, ref.revision, filename)
  if (isOffline(env)) {
    if (cached) return cached
    throw new DataError(
      `${label}: HF_HUB_OFFLINE is set and ${filename} is not in the Hugging Face cache (${repoDir}); download it once with network access, or pass a local .safetensors file`,
      'offline',
      repoDir,
    )
  }
  if (cached && COMMIT.test(ref.revision)) return cached
  const limits = stallLimits(opts, env)
  const url = `${endpointOf(env)}/${ref.repo}/resolve/${encodeURIComponent(ref.revision)}/${filename}`
  const headers: Record<string, string> = { 'user-agent': 'cass-ssl', 'accept-encoding': 'identity' }
  if (token) headers.authorization = `Bearer ${token}`
  let meta: FileMetadata
  try {
    meta = await headMetadata(url, headers, label, opts, limits)
  } catch (e) {
    if (cached && e instanceof DataError && (e.code === 'offline' || e.code === 'download-stalled')) {
      opts.onProgress?.({ type: 'status', ref: label, message: `${shown(url)} is unreachable; using the cached ${cached}` })
      return cached
    }
    throw e
  }
  const maxBytes = opts.maxBytes ?? MAX_DOWNLOAD_BYTES
  if (meta.size !== null && meta.size > maxBytes) {
    throw new DataError(
      `${label}: ${filename} is ${mib(meta.size)}, above the ${mib(maxBytes)} limit for downloads`,
      'too-large',
      url,
    )
  }
  const snapshot = path.join(repoDir, 'snapshots', meta.commit, filename)
  const blob = path.join(repoDir, 'blobs', meta.etag)
  const complete = (file: string) => existsSync(file) && (meta.size === null || statSync(file).size === meta.size)
  if (!complete(snapshot)) {
    if (!complete(blob)) {
      opts.onProgress?.({
        type: 'status',
        ref: label,
        message: `downloading ${filename}${meta.size === null ? '' : ` (${mib(meta.size)})`} from ${shown(url)}`,
      })
      await downloadBlob(url, headers, blob, meta, label, opts, limits)
    }
    publish(snapshot, (tmp) => {
      try {
        symlinkSync(path.relative(path.dirname(snapshot), blob), tmp)
      } catch {
        copyFileSync(blob, tmp) // no symlinks (Windows without developer mode)
      }
    })
  }
  if (ref.revision !== meta.commit) publish(path.join(repoDir, 'refs', ref.revision), (tmp) => writeFileSync(tmp, meta.commit))
  return snapshot
}
