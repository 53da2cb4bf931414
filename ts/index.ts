/**
 * cass-ssl: CASS (Cross Architectural Self-Supervision) from Node.
 *
 * `pretrain` trains a CNN and a ViT together without labels; `finetune` adapts one of them to a
 * few labels; `evaluate` and `embed` use the result. Long jobs run on an engine thread and
 * return a {@link Job}: await it, watch `onProgress`, cancel it with `job.cancel()` or an
 * `AbortSignal` (a cancelled pre-training leaves a resumable checkpoint).
 */
import path from 'node:path'

import { type DeviceName, type FinetuneInput, LIMITS, parseFinetuneConfig } from './config.js'
import { toNativeFinetuneConfig } from './native-config.js'
import { toFinetuneResult, toMetrics } from './binding.js'
import { ConfigError, fromNative } from './errors.js'
import type { Embeddings, FinetuneResult, Metrics } from './events.js'
import { Job, type JobOptions, startJob } from './job.js'
import {
  type Images,
  type LabelledSamples,
  checkImages,
  checkIndices,
  checkLabelled,
  checkFinetuneOutDir,
  checkOutDir,
} from './inputs.js'
import { checkReplaceable } from './io/output-file.js'
import { native } from './native.js'
import { exportOnnx } from './onnx/checkpoint.js'
import { weightsReporter } from './progress.js'
import { parseWeightsReference, resolveWeights } from './weights/resolve.js'

// The public API, named one by one: helpers the API and CLI share (config merging, the
// conversion to the binding's options, engine error decoding) stay internal.
export {
  type DeviceName,
  type FinetuneConfig,
  type FinetuneInput,
  LIMITS,
  PRESETS,
  type PresetName,
  type PretrainConfig,
  type PretrainInput,
  RESNETS,
  type ResNetOptions,
  VITS,
  type VitOptions,
  adamSchema,
  augmentSchema,
  deviceSchema,
  finetuneSchema,
  lossSchema,
  parseFinetuneConfig,
  parsePretrainConfig,
  pretrainSchema,
  resnetSchema,
  scheduleSchema,
  vitSchema,
} from './config.js'
export { DINO_PRESETS, type DinoConfig, type DinoInput, dinoSchema, parseDinoConfig } from './dino-config.js'
export { type DinoOptions, pretrainDino } from './dino.js'
export { type PretrainOptions, pretrain } from './pretrain.js'
export { VICREG_PRESETS, type VicregConfig, type VicregInput, parseVicregConfig, vicregSchema } from './vicreg-config.js'
export { type VicregOptions, pretrainVicreg } from './vicreg.js'
export { BackendError, CassError, ConfigError, DataError, IoError } from './errors.js'
export type {
  CheckpointEvent,
  DeviceEvent,
  Embeddings,
  EpochEvent,
  FinetuneResult,
  Metrics,
  PerClassMetrics,
  PretrainResult,
  ProgressEvent,
  StepEvent,
  WarningEvent,
} from './events.js'
export { Job, type JobOptions } from './job.js'
export { ONNX_OPSET, type OnnxNetworkSpec, buildOnnx } from './onnx/export.js'
export {
  EXPLAIN_METHODS,
  type ExplainMethod,
  type ExplainOptions,
  type Explanation,
  type LoadModelOptions,
  MAX_BATCH,
  Model,
  type ModelInfo,
  type ModelInput,
  type Prediction,
  type RunOptions,
  loadModel,
} from './model.js'
export { type AddonChoice, addonChoice } from './native.js'
export {
  type CacheImages,
  type Images,
  type InMemoryImages,
  type LabelledSamples,
  type PretrainRunOptions,
  checkPretrainOutDir,
} from './inputs.js'
export { type LoadOptions, type LoadedDataset, type SourceFormat, type Split, loadDataset } from './data/dataset.js'
export { sampleFraction, stratifiedSplit } from './data/splits.js'
export {
  MAX_DOWNLOAD_BYTES,
  type HubOptions,
  type HubReference,
  type WeightsEvent,
  hubCacheDir,
  hubDownload,
} from './weights/hub.js'
export {
  IMAGENET_NPM_PACKAGE,
  PAPER_VIT_WEIGHTS,
  type ResolveOptions,
  pretrainedWeightsWarning,
  resolvePretrainWeights,
  resolveWeights,
} from './weights/resolve.js'

export interface FinetuneOptions extends JobOptions {
  /** Must name `arch` (`cnn` or `vit`); `numClasses` defaults to 1 + the largest label. */
  config: FinetuneInput
  /** A pre-training output (or checkpoint) directory; omit for random initialisation. */
  from?: string
  /**
   * Or start from weights of this network: `imagenet` (the Keras ImageNet ResNet-50, the paper's
   * CNN start), `hf:owner/name[@revision]` or a timm-named safetensors file. Fetched (or taken
   * from the cache) before the engine starts; the file's classifier is left out.
   */
  weights?: string
  /** Where fetched weights are cached, under `weights/` (default `~/.cache/cass-ssl`). */
  cacheDir?: string
  images: Images
  train: LabelledSamples
  val: LabelledSamples
  /** Output directory; the best weights go to `<outDir>/best`. */
  outDir: string
  /**
   * The classes' names in label order (e.g. a dataset's `classes`), kept in the checkpoint so a
   * loaded model answers with names. One per class.
   */
  classNames?: string[]
  /** Replace a fine-tuned network already in `outDir` (without it, that is an error). */
  overwrite?: boolean
}

/** Fine-tunes one network with early stopping on validation loss. */
export function finetune(options: FinetuneOptions): Job<FinetuneResult> {
  const train = checkLabelled(options.train, 'train')
  const val = checkLabelled(options.val, 'val')
  const input = { ...options.config }
  input.numClasses ??= Math.max(1, ...train.labels, ...val.labels) + 1
  const config = parseFinetuneConfig(input)
  // The engine finds the checkpoint in an output folder (see inspectCheckpoint).
  const from = options.from === undefined ? undefined : path.resolve(options.from)
  if (from !== undefined && options.weights !== undefined) {
    throw new ConfigError('invalid argument at `weights`: start from `from` or from `weights`, not both', 'weights', [])
  }
  const field = config.arch === 'cnn' ? 'cnnWeights' : 'vitWeights'
  if (options.weights !== undefined) parseWeightsReference(options.weights, field) // a bad reference fails here
  const images = checkImages(options.images)
  const outDir = checkOutDir(options.outDir)
  checkFinetuneOutDir(outDir, options)
  return startJob(
    options,
    async (token, onEvent) => {
      const weights =
        options.weights === undefined
          ? undefined
          : await resolveWeights(options.weights, field, {
              cacheDir: options.cacheDir,
              signal: options.signal,
              onProgress: weightsReporter(),
            })
      const engineConfig = toNativeFinetuneConfig(config, { pretrained: from, weights, classNames: options.classNames })
      return native().startFinetune(engineConfig, images, train, val, outDir, token, onEvent)
    },
    toFinetuneResult,
  )
}

export interface EvaluateOptions {
  /** A fine-tuning output directory or its `best` directory. */
  checkpoint: string
  images: Images
  data: LabelledSamples
  batchSize?: number
  device?: DeviceName
}

/** Every metric of a fine-tuned network on labelled samples. */
/** An inference batch size: an integer from 1 to `LIMITS.batchSize`, 32 when not given. */
function checkBatchSize(value: number | undefined): number {
  if (value === undefined) return 32
  if (!Number.isInteger(value) || value < 1 || value > LIMITS.batchSize) {
    throw new ConfigError(
      `invalid argument at \`batchSize\`: expected an integer from 1 to ${LIMITS.batchSize}, got ${value}`,
      'batchSize',
      [],
    )
  }
  return value
}

export async function evaluate(options: EvaluateOptions): Promise<Metrics> {
  const data = checkLabelled(options.data, 'data')
  const images = checkImages(options.images)
  const batchSize = checkBatchSize(options.batchSize)
  try {
    return toMetrics(await native().startEvaluate(path.resolve(options.checkpoint), images, data, batchSize, options.device))
  } catch (e) {
    throw fromNative(e)
  }
}

export interface EmbedOptions {
  /** A fine-tuned checkpoint, or a pre-training one (then `arch` picks the network). */
  checkpoint: string
  arch?: 'cnn' | 'vit'
  images: Images
  indices?: number[]
  batchSize?: number
  device?: DeviceName
}

/** Pooled embeddings (`forward_features`) of images. */
export async function embed(options: EmbedOptions): Promise<Embeddings> {
  const images = checkImages(options.images)
  const indices = checkIndices(options.indices, 'indices')
  const batchSize = checkBatchSize(options.batchSize)
  try {
    return await native().startEmbed(path.resolve(options.checkpoint), options.arch, images, indices, batchSize, options.device)
  } catch (e) {
    throw fromNative(e)
  }
}

export interface ExportOptions {
  /** A pre-training output (or checkpoint) directory, or a fine-tuning one. */
  checkpoint: string
  /** Which network of a pre-training checkpoint. */
  arch?: 'cnn' | 'vit'
  /**
   * The file to write. `safetensors` (default): timm names, `timm.create_model(...).load_state_dict`
   * reads it. `onnx`: the network as an ONNX graph (opset 17, dynamic batch), input RGB in [0, 1]
   * at the model's size with the normalisation inside the graph; a fine-tuned classifier's
   * output is its logits, a backbone's its pooled features.
   */
  out: string
  format?: 'safetensors' | 'onnx'
}

/** Exports a network as timm-compatible safetensors or as ONNX. Resolves to the written path. */
export async function exportWeights(options: ExportOptions): Promise<string> {
  const format = options.format ?? 'safetensors'
  if (format !== 'safetensors' && format !== 'onnx') {
    throw new ConfigError(`invalid argument at \`format\`: expected safetensors or onnx, got ${String(format)}`, 'format', [])
  }
  if (format === 'onnx') return exportOnnx(options)
  checkReplaceable(path.resolve(options.out))
  try {
    return await native().startExport(path.resolve(options.checkpoint), options.arch, path.resolve(options.out))
  } catch (e) {
    throw fromNative(e)
  }
}

/** What a checkpoint holds, found from an output folder of `pretrain` or `finetune` or from the
 * checkpoint folder itself. */
export interface CheckpointInfo {
  /** The folder holding `state.json` and the weights. */
  dir: string
  /** `pretrain`: both networks, resumable; `finetune`: one network and its classifier. */
  kind: 'pretrain' | 'finetune'
  /** The method that wrote it (e.g. `cass-pretrain`). */
  method: string
  /** Input side the networks were trained at. */
  imageSize: number
  networks: ('cnn' | 'vit')[]
  /** Pre-training: steps done and whether the run completed. */
  step?: number
  completed?: boolean
  /** Fine-tuning: the epoch whose weights were kept. */
  bestEpoch?: number
}

/** Says what the checkpoint at `dir` holds; a `CassError` (code `no-checkpoint`) when there is none. */
export function inspectCheckpoint(dir: string): CheckpointInfo {
  try {
    const c = native().inspectCheckpoint(path.resolve(dir))
    return {
      dir: c.dir,
      kind: c.kind as CheckpointInfo['kind'],
      method: c.method,
      imageSize: c.imageSize,
      networks: c.networks as CheckpointInfo['networks'],
      ...(c.step != null ? { step: c.step } : {}),
      ...(c.completed != null ? { completed: c.completed } : {}),
      ...(c.bestEpoch != null ? { bestEpoch: c.bestEpoch } : {}),
    }
  } catch (e) {
    throw fromNative(e)
  }
}

/**
 * Which backend a job given `device` would run on, and why, found by running a tiny computation
 * there (for `auto`: CUDA, else a wgpu GPU adapter, else the CPU). A device that does not work
 * throws the `BackendError` a job would.
 */
export function probeDevice(device: DeviceName = 'auto'): { backend: 'cpu' | 'cuda' | 'wgpu'; reason: string } {
  try {
    const c = native().probeDevice(device)
    return { backend: c.backend as 'cpu' | 'cuda' | 'wgpu', reason: c.reason }
  } catch (e) {
    throw fromNative(e)
  }
}

/** Compute backends compiled into the installed addon. */
export function availableBackends(): string[] {
  return native().availableBackends()
}
