/**
 * How each method of `methods/info.ts` pre-trains within an experiment: its validated config
 * (recorded in `results.json`) and the job, from the experiment's preset, the method's
 * overrides and the unit's networks, batch size and epochs.
 */
import { type DeviceName, type PresetName, type PretrainInput, parsePretrainConfig } from '../config.js'
import { type DinoInput, parseDinoConfig } from '../dino-config.js'
import { pretrainDino } from '../dino.js'
import type { ProgressEvent } from '../events.js'
import { pretrain } from '../index.js'
import { type VicregInput, parseVicregConfig } from '../vicreg-config.js'
import { pretrainVicreg } from '../vicreg.js'
import type { MethodName } from './info.js'

export interface MethodRunInput {
  preset: PresetName
  /** The method's config overrides as the user gave them (`--config`, API options). */
  overrides: unknown
  networks: string[]
  batchSize: number
  epochs: number
  device: DeviceName
}

/** What every method's job takes besides its config. */
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

const cassInput = (m: MethodRunInput): PretrainInput => ({
  preset: m.preset,
  ...(m.overrides as PretrainInput | undefined),
  batchSize: m.batchSize,
  epochs: m.epochs,
  device: m.device,
})

const dinoInput = (m: MethodRunInput) =>
  ({
    preset: m.preset,
    ...(m.overrides as Omit<DinoInput, 'arch'> | undefined),
    arch: m.networks[0],
    batchSize: m.batchSize,
    epochs: m.epochs,
    device: m.device,
  }) as DinoInput

/** A one-backbone method's input: the overrides, then the unit's network and sizes. */
const oneBackbone = <T>(m: MethodRunInput) =>
  ({
    preset: m.preset,
    ...(m.overrides as object | undefined),
    arch: m.networks[0],
    batchSize: m.batchSize,
    epochs: m.epochs,
    device: m.device,
  }) as T

/** Each method's validated config for a unit (a `ConfigError` naming the field otherwise). */
export const METHOD_CONFIG: Record<MethodName, (m: MethodRunInput) => unknown> = {
  cass: (m) => parsePretrainConfig(cassInput(m)),
  dino: (m) => parseDinoConfig(dinoInput(m)),
  vicreg: (m) => parseVicregConfig(oneBackbone<VicregInput>(m)),
}

export const METHOD_START: Record<MethodName, (m: MethodRunInput, common: CommonRun) => MethodRun> = {
  cass: (m, common) => ({ config: METHOD_CONFIG.cass(m), job: pretrain({ ...common, config: cassInput(m) }) }),
  dino: (m, common) => ({ config: METHOD_CONFIG.dino(m), job: pretrainDino({ ...common, config: dinoInput(m) }) }),
  vicreg: (m, common) => ({
    config: METHOD_CONFIG.vicreg(m),
    job: pretrainVicreg({ ...common, config: oneBackbone<VicregInput>(m) }),
  }),
}
