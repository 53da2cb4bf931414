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
import { copyFileSync, existsSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import { ConfigError, DataError } from '../errors.js'
import { makeDir } from '../io/make-dir.js'
import { hubToken, redact } from './hub-token.js'
import { COMMIT, type FileMetadata, MAX_DOWNLOAD_BYTES, downloadBlob, headMetadata, mib, shown } from './hub-transfer.js'
import { stallLimits } from './stall.js'

export { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_MIN_BYTES_PER_SECOND, DEFAULT_RATE_WINDOW_MS } from './stall.js'

export { MAX_DOWNLOAD_BYTES } from './hub-transfer.js'

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

export interface HubReference {
  /** `owner/name`. */
  repo: string
  /** Branch, tag or commit (default `main`). */
  revision: string
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/
const REVISION = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/

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

/** Writes `file` by a rename, so a reader never sees half of it. */
function publish(file: string, write: (tmp: string) => void) {
  makeDir(path.dirname(file))
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`)
  rmSync(tmp, { force: true })
  write(tmp)
  renameSync(tmp, file)
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
