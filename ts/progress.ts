/** Terminal progress: a live line on a TTY, plain periodic lines otherwise. */
import type { ProgressEvent } from './index.js'

const fmtTime = (s: number) => {
  if (!Number.isFinite(s)) return '?'
  const m = Math.floor(s / 60)
  return m > 0 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.round(s)}s`
}

export function progressReporter(label: string, stream: NodeJS.WriteStream = process.stderr) {
  const tty = stream.isTTY === true
  let lastPlain = 0
  return (e: ProgressEvent) => {
    if (e.type === 'step') {
      const frac = e.step / e.totalSteps
      const width = 20
      const bar = tty ? `[${'#'.repeat(Math.round(frac * width)).padEnd(width, '.')}] ` : ''
      const line = `${label} ${bar}epoch ${e.epoch + 1} step ${e.step}/${e.totalSteps} loss ${e.loss.toFixed(4)} lr ${e.lr.toExponential(2)} ${e.imagesPerSec.toFixed(1)} img/s eta ${fmtTime(e.etaSec)}`
      if (tty) stream.write(`\r\x1b[2K${line}`)
      else if (Date.now() - lastPlain > 5000 || e.step === e.totalSteps) {
        lastPlain = Date.now()
        stream.write(`${line}\n`)
      }
    } else if (e.type === 'epoch') {
      const val = e.valLoss === null ? '' : ` val loss ${e.valLoss.toFixed(4)}${e.best ? ' (best)' : ''}`
      stream.write(`${tty ? '\r\x1b[2K' : ''}${label} epoch ${e.epoch + 1} mean loss ${e.meanLoss.toFixed(4)}${val}\n`)
    }
  }
}
