/**
 * Giving up on a Hub server that goes quiet or too slow: the limits (options, else the
 * environment, else the defaults) and the watchdog that ends a request through its signal.
 */
import { ConfigError } from '../errors.js'
import type { Env, HubOptions } from './hub.js'

/** How long a silent server is waited for (huggingface_hub's own default is 10 s). */
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000
/** The slowest body accepted, on average over {@link DEFAULT_RATE_WINDOW_MS}. */
export const DEFAULT_MIN_BYTES_PER_SECOND = 1024
export const DEFAULT_RATE_WINDOW_MS = 60_000

/** Raised while a body is streaming: the connection broke, the bytes so far are kept. */
export class DroppedConnection extends Error {}

/** The server went quiet or too slow (see {@link Watchdog}); retried like a dropped connection. */
export class Stalled extends DroppedConnection {}

export interface StallLimits {
  idleMs: number
  minBytesPerSecond: number
  windowMs: number
}

export const seconds = (ms: number) => `${Number((ms / 1000).toFixed(3))} s`
export const STALL_SETTINGS =
  'HF_HUB_DOWNLOAD_TIMEOUT (seconds without a byte), CASS_SSL_DOWNLOAD_MIN_RATE (bytes per second) and CASS_SSL_DOWNLOAD_RATE_WINDOW (seconds) set these limits'

/** The stall limits from `opts`, else the environment, else the defaults; each checked. */
export function stallLimits(opts: HubOptions, env: Env): StallLimits {
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
export class Watchdog {
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
