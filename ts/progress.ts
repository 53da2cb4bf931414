/** Terminal progress: a live line on a TTY, plain periodic lines otherwise. */
import type { ProgressEvent } from './events.js'
import type { WeightsEvent } from './weights/hub.js'

const fmtTime = (s: number) => {
  if (!Number.isFinite(s)) return '?'
  const m = Math.floor(s / 60)
  return m > 0 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.round(s)}s`
}

/**
 * Printed under the device line on a GPU. Tuned kernel choices persist in the user cache
 * directory (`~/.cache/cubecl` on Linux), or under `target/environment` inside a Cargo workspace.
 */
export const GPU_WARMUP =
  'the first steps compile GPU kernels (and tune them, in builds with autotune): one-time work per machine and shape that can take minutes; tuned choices are kept in ~/.cache/cubecl'

/** Where progress goes: `process.stderr`, or anything with `write` (a log, a test's buffer). */
export interface ProgressSink {
  isTTY?: boolean
  write(text: string): unknown
}

export interface ProgressOptions {
  /** Default: `process.stderr`. */
  stream?: ProgressSink
  /** Seconds between plain lines when the stream is not a terminal (default: `progressInterval()`). */
  everySec?: number
  /** Milliseconds clock (default `Date.now`; specs pass their own). */
  now?: () => number
}

/**
 * Seconds between plain progress lines off a terminal: `CASS_PROGRESS_SECONDS` when it is a
 * positive number, else 30 (under nohup or in CI a log then shows life twice a minute without
 * drowning the unit lines).
 */
export function progressInterval(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env.CASS_PROGRESS_SECONDS)
  return env.CASS_PROGRESS_SECONDS !== undefined && v > 0 && Number.isFinite(v) ? v : 30
}

/**
 * Progress of one job (or of several in turn: `label` may be a function, read at every line). On
 * a terminal, a live line that every step rewrites; otherwise (nohup, CI, a pipe) a plain line
 * with step, epoch, loss, images/s and ETA on the first step and then every `everySec` seconds.
 * Epoch ends, the device and warnings are printed as they come in both cases.
 */
export function progressReporter(label: string | (() => string), opts: ProgressOptions = {}) {
  const stream = opts.stream ?? process.stderr
  const tty = stream.isTTY === true
  const everyMs = (opts.everySec ?? progressInterval()) * 1000
  const now = opts.now ?? Date.now
  const name = typeof label === 'function' ? label : () => label
  let lastPlain = -Infinity
  return (e: ProgressEvent) => {
    if (e.type === 'device') {
      const addon = e.addon.build === 'cuda' ? ` [CUDA build: ${e.addon.reason}]` : ''
      stream.write(`${name()} device ${e.backend} (${e.reason})${addon}\n`)
      // On a GPU the first steps compile kernels (and, in builds with autotune, time the
      // candidates), which took minutes on an H200: say so before the progress line stalls.
      if (e.backend !== 'cpu') stream.write(`${name()} ${GPU_WARMUP}\n`)
    } else if (e.type === 'step') {
      const frac = e.step / e.totalSteps
      const width = 20
      const bar = tty ? `[${'#'.repeat(Math.round(frac * width)).padEnd(width, '.')}] ` : ''
      const line = `${name()} ${bar}epoch ${e.epoch + 1} step ${e.step}/${e.totalSteps} loss ${e.loss.toFixed(4)} lr ${e.lr.toExponential(2)} ${e.imagesPerSec.toFixed(1)} img/s eta ${fmtTime(e.etaSec)}`
      if (tty) stream.write(`\r\x1b[2K${line}`)
      else if (now() - lastPlain >= everyMs) {
        lastPlain = now()
        stream.write(`${line}\n`)
      }
    } else if (e.type === 'epoch') {
      const val = e.valLoss === null ? '' : ` val loss ${e.valLoss.toFixed(4)}${e.best ? ' (best)' : ''}`
      stream.write(`${tty ? '\r\x1b[2K' : ''}${name()} epoch ${e.epoch + 1} mean loss ${e.meanLoss.toFixed(4)}${val}\n`)
    } else if (e.type === 'warning') {
      stream.write(`${tty ? '\r\x1b[2K' : ''}${name()} warning (${e.code}): ${e.message}\n`)
    }
  }
}

/** Weight downloads and conversions: a live bar on a TTY, otherwise a line per 10 % (per 64 MiB
 *  when the size is unknown). */
export function weightsReporter(stream: { isTTY?: boolean; write(text: string): unknown } = process.stderr) {
  const tty = stream.isTTY === true
  let lastMark = -1
  const mib = (n: number) => (n / 1024 ** 2).toFixed(1)
  return (e: WeightsEvent) => {
    if (e.type === 'status') {
      stream.write(`${tty ? '\r\x1b[2K' : ''}${e.ref}: ${e.message}\n`)
      return
    }
    const frac = e.total ? Math.min(1, e.received / e.total) : undefined
    const amount = `${mib(e.received)}${e.total ? `/${mib(e.total)}` : ''} MiB`
    if (tty) {
      const width = 20
      const bar = frac === undefined ? '' : `[${'#'.repeat(Math.round(frac * width)).padEnd(width, '.')}] `
      stream.write(`\r\x1b[2K${e.ref} ${bar}${amount}${e.done ? '\n' : ''}`)
      return
    }
    const mark = frac === undefined ? Math.floor(e.received / 64 / 1024 ** 2) : Math.floor(frac * 10)
    if (e.done || mark > lastMark) {
      lastMark = e.done ? -1 : mark
      stream.write(`${e.ref} ${frac === undefined ? '' : `${Math.round(frac * 100)}% `}${amount}${e.done ? ' done' : ''}\n`)
    }
  }
}
