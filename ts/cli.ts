#!/usr/bin/env node
/**
 * `cass` command line. Exit codes: 0 done, 1 failed (error printed), 2 bad usage or config,
 * 130 cancelled by Ctrl-C (a resumable checkpoint was written).
 */
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'

import { CassError, ConfigError, type PretrainInput, type ProgressEvent, pretrain } from './index.js'

const HELP = `cass — CASS self-supervised training (CNN + ViT) from Node

Usage:
  cass pretrain --cache FILE --out DIR [options]

pretrain options:
  --cache FILE        dataset cache file (decoded images back to back plus an index)
  --out DIR           output directory (checkpoint in DIR/checkpoint)
  --preset NAME       paper | cpu-small (default cpu-small)
  --config FILE       JSON config (same fields as the API); flags override it
  --epochs N          number of epochs
  --batch-size N      images per step
  --device NAME       cpu | cuda | wgpu | auto
  --resume            continue from the checkpoint in --out

Exit codes: 0 done, 1 failed, 2 bad usage or config, 130 cancelled (resumable).
`

function fail(message: string, code: number): never {
  process.stderr.write(`cass: ${message}\n`)
  process.exit(code)
}

function intFlag(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isInteger(n)) fail(`--${name} expects an integer, got "${value}"`, 2)
  return n
}

function progressPrinter() {
  const tty = process.stderr.isTTY
  return (e: ProgressEvent) => {
    if (e.type === 'step') {
      const line = `epoch ${e.epoch + 1} step ${e.step}/${e.totalSteps} loss ${e.loss.toFixed(4)} lr ${e.lr.toExponential(2)} ${e.imagesPerSec.toFixed(1)} img/s eta ${Math.round(e.etaSec)}s`
      if (tty) process.stderr.write(`\r\x1b[2K${line}`)
      else if (e.step % 10 === 0 || e.step === e.totalSteps) process.stderr.write(`${line}\n`)
    } else if (e.type === 'epoch') {
      process.stderr.write(`${tty ? '\n' : ''}epoch ${e.epoch + 1} mean loss ${e.meanLoss.toFixed(4)}\n`)
    }
  }
}

async function runPretrain(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      cache: { type: 'string' },
      out: { type: 'string' },
      preset: { type: 'string' },
      config: { type: 'string' },
      epochs: { type: 'string' },
      'batch-size': { type: 'string' },
      device: { type: 'string' },
      resume: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  })
  if (values.help) {
    process.stdout.write(HELP)
    return
  }
  if (!values.cache) fail('pretrain needs --cache FILE', 2)
  if (!values.out) fail('pretrain needs --out DIR', 2)
  let config: PretrainInput = {}
  if (values.config) {
    try {
      config = JSON.parse(readFileSync(values.config, 'utf8')) as PretrainInput
    } catch (e) {
      fail(`cannot read --config ${values.config}: ${(e as Error).message}`, 2)
    }
  }
  const overrides: PretrainInput = {
    ...(values.preset ? { preset: values.preset as PretrainInput['preset'] } : {}),
    ...(values.epochs ? { epochs: intFlag(values.epochs, 'epochs') } : {}),
    ...(values['batch-size'] ? { batchSize: intFlag(values['batch-size'], 'batch-size') } : {}),
    ...(values.device ? { device: values.device as PretrainInput['device'] } : {}),
  }
  const controller = new AbortController()
  process.once('SIGINT', () => {
    process.stderr.write('\ncass: stopping at the next step (a resumable checkpoint will be written)...\n')
    controller.abort()
  })
  const result = await pretrain({
    config: { ...config, ...overrides },
    images: { cacheFile: values.cache },
    outDir: values.out,
    resume: values.resume,
    signal: controller.signal,
    onProgress: progressPrinter(),
  })
  process.stdout.write(
    `${JSON.stringify({ status: result.status, steps: result.steps, checkpoint: result.checkpoint, epochMeanLosses: result.epochMeanLosses })}\n`,
  )
  if (result.status === 'cancelled') process.exit(130)
}

async function main() {
  const [command, ...rest] = process.argv.slice(2)
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(HELP)
    return
  }
  if (command === 'pretrain') return runPretrain(rest)
  fail(`unknown command "${command}" (try: cass --help)`, 2)
}

main().catch((e: unknown) => {
  if (e instanceof ConfigError) fail(e.message, 2)
  if (e instanceof CassError) fail(`${e.message} [${e.code}]`, 1)
  if (e instanceof Error && 'code' in e && e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') fail(e.message, 2)
  fail(e instanceof Error ? (e.stack ?? e.message) : String(e), 1)
})
