/**
 * The one table of self-supervised methods: the experiment's planner and runner, the report's
 * labels and colours, the CLI's lists and `cass pretrain --method` all read it. A method is one
 * entry: its label and colour, whether a run trains both networks, its config parser (a preset
 * plus overrides, validated) and its API call. The calls are imported when a job starts, so the
 * report and the planner read this table without loading the native addon.
 */
import { parsePretrainConfig } from '../config.js'
import { parseDinoConfig } from '../dino-config.js'
import type { PretrainResult } from '../events.js'
import type { PretrainRunOptions } from '../inputs.js'
import type { Job } from '../job.js'
import { parseVicregConfig } from '../vicreg-config.js'

/** What every method's API call takes besides its config (`cacheDir`: CASS's ImageNet weights). */
export type PretrainCall = PretrainRunOptions & { cacheDir?: string }

/** A method's API call: `pretrain`, `pretrainDino`, ... with its own input type. */
type Start = (options: PretrainCall & { config: never }) => Job<PretrainResult>

export interface MethodInfo {
  /** How tables and plots name it. */
  label: string
  /** Its colour in the report's plots. */
  color: string
  /**
   * Whether one pre-training trains every network at once (CASS: a CNN and a ViT together), or
   * one run trains one backbone (DINO, as in its paper).
   */
  together: boolean
  /** The validated config of an input (a preset name plus overrides), or a `ConfigError`. */
  parse: (input: never) => unknown
  /** The method's API call, imported when a job starts. */
  start: () => Promise<Start>
}

export const METHODS = {
  cass: {
    label: 'CASS',
    color: '#1f77b4',
    together: true,
    parse: parsePretrainConfig,
    start: async () => (await import('../pretrain.js')).pretrain,
  },
  dino: {
    label: 'DINO',
    color: '#ff7f0e',
    together: false,
    parse: parseDinoConfig,
    start: async () => (await import('../dino.js')).pretrainDino,
  },
  vicreg: {
    label: 'VICReg',
    color: '#2ca02c',
    together: false,
    parse: parseVicregConfig,
    start: async () => (await import('../vicreg.js')).pretrainVicreg,
  },
} as const satisfies Record<string, MethodInfo>

/** A pre-training method; `random` and `imagenet` are the fine-tuning starts without one. */
export type MethodName = keyof typeof METHODS

export const METHOD_NAMES = Object.keys(METHODS) as MethodName[]

export const isMethod = (x: unknown): x is MethodName => typeof x === 'string' && Object.hasOwn(METHODS, x)

/**
 * A method as an experiment names it: the method, or a named variant `method@tag` whose config
 * differs (`cass@hinge`), so that several settings of one method are compared in one report.
 */
export type MethodRef = MethodName | `${MethodName}@${string}`

const TAG = /^[a-z0-9][a-z0-9-]{0,31}$/

/** Whether `x` names a method or a well-formed variant of one (tag: a-z, 0-9, `-`, up to 32). */
export function isMethodRef(x: unknown): x is MethodRef {
  if (typeof x !== 'string') return false
  const [base, tag, ...rest] = x.split('@')
  return isMethod(base) && rest.length === 0 && (tag === undefined || TAG.test(tag))
}

/** The method a reference runs. */
export const baseOf = (ref: MethodRef): MethodName => ref.split('@')[0] as MethodName

/** `CASS`, `CASS@hinge`. */
export const methodLabel = (ref: MethodRef): string => {
  const [base, tag] = ref.split('@')
  return `${METHODS[base as MethodName].label}${tag ? `@${tag}` : ''}`
}

/** The networks each pre-training run of `method` trains, given the experiment's networks. */
export function runsOf<N extends string>(method: MethodRef, networks: readonly N[]): N[][] {
  return METHODS[baseOf(method)].together ? [[...networks]] : networks.map((n) => [n])
}

/** A pre-training run's folder under the experiment's: `pretrain/cass`, `pretrain/dino-vit`, `pretrain/cass@hinge`, plus a sweep suffix. */
export function pretrainDir(method: MethodRef, networks: readonly string[], suffix = ''): string {
  return `pretrain/${METHODS[baseOf(method)].together ? method : `${method}-${networks.join('-')}`}${suffix}`
}
