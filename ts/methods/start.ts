/**
 * Configuring and starting any method of `methods/info.ts`'s table: for a caller that holds the
 * method's input as the user gave it (`cass pretrain --method`), and for an experiment's unit
 * (its preset, the method's overrides and the unit's networks, batch size and epochs).
 */
import type { DeviceName, PresetName } from '../config.js'
import type { PretrainResult, ProgressEvent } from '../events.js'
import { METHODS, type MethodName, type PretrainCall } from './info.js'

/** `method`'s validated config of `input`. */
export const parseMethodConfig = (method: MethodName, input: object): unknown =>
  (METHODS[method].parse as (i: object) => unknown)(input)

/** Starts `method`'s pre-training with `config` (its input as the user gave it); resolves to the job's result. */
export async function startMethod(method: MethodName, options: PretrainCall & { config: object }): Promise<PretrainResult> {
  const start = await METHODS[method].start()
  return (start as (o: PretrainCall & { config: object }) => PromiseLike<PretrainResult>)(options)
}

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
