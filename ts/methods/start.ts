/**
 * How each method of `methods/info.ts` is configured and run: its config parser (presets plus
 * overrides, validated) and its API call. The experiment (per unit, from its preset, the
 * method's overrides and the unit's networks, batch size and epochs) and the CLI's
 * `cass pretrain --method` read this table. A method is one line here and one in `info.ts`.
 */
import type { DeviceName, PresetName, PretrainInput } from '../config.js'
import { parsePretrainConfig } from '../config.js'
import { type DinoInput, parseDinoConfig } from '../dino-config.js'
import { pretrainDino } from '../dino.js'
import type { PretrainResult, ProgressEvent } from '../events.js'
import { pretrain } from '../index.js'
import type { Images } from '../inputs.js'
import type { Job } from '../job.js'
import { type VicregInput, parseVicregConfig } from '../vicreg-config.js'
import { pretrainVicreg } from '../vicreg.js'
import { METHODS, type MethodName } from './info.js'

/** What every method's API call takes besides its config. */
export interface PretrainCall {
  images: Images
  indices?: number[]
  outDir: string
  resume?: boolean
  overwrite?: boolean
  cacheDir?: string
  signal?: AbortSignal
  onProgress?: (e: ProgressEvent) => void
}

interface MethodEntry {
  /** The validated config of `input` (a preset name plus overrides), or a `ConfigError`. */
  parse: (input: never) => unknown
  /** The method's pre-training job. */
  pretrain: (options: PretrainCall & { config: never }) => Job<PretrainResult>
}

const ENTRIES = {
  cass: { parse: (i: PretrainInput) => parsePretrainConfig(i), pretrain },
  dino: { parse: (i: DinoInput) => parseDinoConfig(i), pretrain: pretrainDino },
  vicreg: { parse: (i: VicregInput) => parseVicregConfig(i), pretrain: pretrainVicreg },
} satisfies Record<MethodName, MethodEntry>

/** `method`'s validated config of `input`. */
export const parseMethodConfig = (method: MethodName, input: object): unknown =>
  (ENTRIES[method].parse as (i: object) => unknown)(input)

/** Starts `method`'s pre-training with `config` (its input as the user gave it). */
export const startMethod = (method: MethodName, options: PretrainCall & { config: object }): Job<PretrainResult> =>
  (ENTRIES[method].pretrain as (o: PretrainCall & { config: object }) => Job<PretrainResult>)(options)

export interface MethodRunInput {
  preset: PresetName
  /** The method's config overrides as the user gave them (`--config`, API options). */
  overrides: unknown
  networks: string[]
  batchSize: number
  epochs: number
  device: DeviceName
}

/** What every method's job takes besides its config, within an experiment. */
export interface CommonRun {
  images: { cacheFile: string }
  indices: number[]
  outDir: string
  resume: boolean
  signal?: AbortSignal
  onProgress: (e: ProgressEvent) => void
}

export interface MethodRun {
  /** The validated config. */
  config: unknown
  job: PromiseLike<{ status: 'completed' | 'cancelled' }>
}

/**
 * A unit's input to `method`: the preset, the method's overrides, then the unit's sizes and,
 * for a method that trains one backbone per run, the unit's network as `arch`.
 */
function inputOf(method: MethodName, m: MethodRunInput): object {
  return {
    preset: m.preset,
    ...(m.overrides as object | undefined),
    ...(METHODS[method].together ? {} : { arch: m.networks[0] }),
    batchSize: m.batchSize,
    epochs: m.epochs,
    device: m.device,
  }
}

/** `method`'s validated config for a unit (a `ConfigError` naming the field otherwise). */
export const methodConfig = (method: MethodName, m: MethodRunInput): unknown => parseMethodConfig(method, inputOf(method, m))

/** Starts `method`'s pre-training for a unit. */
export const startUnit = (method: MethodName, m: MethodRunInput, common: CommonRun): MethodRun => ({
  config: methodConfig(method, m),
  job: startMethod(method, { ...common, config: inputOf(method, m) }),
})
