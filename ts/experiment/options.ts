/**
 * What `cass experiment` takes (`ExperimentOptions`), the seed its splits derive from, and each
 * method's config overrides as a unit runs them.
 */
import type { DeviceName, FinetuneInput, PresetName, PretrainInput } from '../config.js'
import type { DicomOptions, SourceFormat } from '../data/dataset.js'
import type { DinoInput } from '../dino-config.js'
import { ConfigError } from '../errors.js'
import { baseOf } from '../methods/info.js'
import type { MethodName, Network } from './results.js'

export interface ExperimentSizes {
  /** Unlabelled images for pre-training (0: every training image). */
  pretrainImages: number
  pretrainEpochs: number
  /** The labelled pool the label fractions are drawn from. */
  poolImages: number
  finetuneMaxEpochs: number
  valImages: number
  testImages: number
}

export interface ExperimentOptions {
  data: string
  format?: SourceFormat
  /** How DICOM files become images (windows, frames). */
  dicom?: DicomOptions
  /** A CSV's patient column: a patient's images stay in one split. */
  groupBy?: string
  datasetName?: string
  outDir: string
  methods: MethodName[]
  networks: Network[]
  fractions: number[]
  seeds: number
  /** Seeds at fraction 1 (default: `seeds`): there every seed sees the same labelled images. */
  seedsAtFull?: number
  preset: PresetName
  device?: DeviceName
  sizes: ExperimentSizes
  /** Robustness sweeps: other pre-training batch sizes and epoch counts. */
  batchSizes?: number[]
  epochsSweep?: number[]
  /**
   * Also fine-tune from these weights (the `imagenet` start, the paper's): per network, `imagenet`
   * (the Keras ImageNet ResNet-50), `hf:owner/name` or a timm-named file. The fine-tuning config
   * must give the network the file's shape (e.g. `--preset paper`).
   */
  imagenet?: Partial<Record<Network, string>>
  /**
   * Named variants `method@tag` listed in `methods` (e.g. `cass@hinge`): each one's config
   * fields, over its method's overrides.
   */
  variants?: Record<string, Record<string, unknown>>
  /** Overrides of each method's and of fine-tuning's preset config. */
  pretrain?: PretrainInput
  dino?: Omit<DinoInput, 'arch'>
  /** Overrides of any other method's preset config, by method name (e.g. `vicreg`). */
  methodConfigs?: Partial<Record<MethodName, Record<string, unknown>>>
  finetune?: FinetuneInput
  /** Neighbours of the kNN probe. */
  k?: number
  signal?: AbortSignal
  cacheDir?: string
  /** Progress lines (default: stderr). */
  log?: (line: string) => void
  /**
   * Seconds between plain progress lines (step, epoch, loss, images/s, ETA) during a unit when
   * the lines do not go to a terminal (default: `CASS_PROGRESS_SECONDS`, else 30).
   */
  progressEverySec?: number
}

/** The seed the experiment's splits and its arms' seeds derive from. */
export const SEED = 77

/**
 * A method's config overrides: its base method's (`pretrain` for CASS, `dino`), then, for a
 * variant `method@tag`, the variant's own fields over them.
 */
export function overridesOf(opts: ExperimentOptions, ref: MethodName): Record<string, unknown> | undefined {
  const base = ({ ...opts.methodConfigs, cass: opts.pretrain, dino: opts.dino } as Record<string, unknown>)[baseOf(ref)] as
    Record<string, unknown> | undefined
  if (ref === baseOf(ref)) return base
  const own = opts.variants?.[ref]
  if (own === undefined)
    throw new ConfigError(`invalid argument at \`variants\`: the variant ${ref} has no config (give its fields)`, 'variants', [])
  return { ...base, ...own }
}
