/**
 * The types a loaded `Model` takes and answers with (`model.ts`): its options, what it is, its
 * inputs, predictions and explanations.
 */
import type * as Binding from '../index.js'
import type { DeviceName } from './config.js'
import type { DicomOptions } from './data/dataset.js'
import type { InMemoryImages } from './inputs.js'

export interface LoadModelOptions {
  /** Where the network runs (default `auto`: CUDA, else a wgpu GPU, else the CPU). */
  device?: DeviceName
  /** Which network of a pre-training checkpoint (`cnn` or `vit`); a fine-tuned one has one. */
  arch?: 'cnn' | 'vit'
  /** Most images the engine computes together, across concurrent calls (default 32). */
  maxBatch?: number
  /**
   * How long a batch, once it has a call, waits for more, in milliseconds (default 0: it takes
   * what is queued already and never holds a call back; under load, calls queue while the
   * previous batch computes, so batches fill by themselves).
   */
  batchWaitMs?: number
}

/** What a loaded model is and how it takes its input. */
export interface ModelInfo {
  arch: 'cnn' | 'vit'
  /** `finetune`: a classifier; `pretrain`: a backbone of a self-supervised run (embeddings only). */
  kind: 'finetune' | 'pretrain'
  /** The method that wrote the checkpoint, e.g. `cass-finetune`, `dino-pretrain`. */
  method: string
  /** Pre-training: steps done; fine-tuning: the epoch whose weights were kept. */
  step: number
  /** Side of the square input; every image is resized to it as training did. */
  imageSize: number
  /** Normalisation applied to inputs in [0, 1], per channel in `channelOrder`. */
  mean: [number, number, number]
  std: [number, number, number]
  channelOrder: 'rgb' | 'bgr'
  /** How scores are read from the logits: as the fine-tuning loss defined them. */
  scoring: 'softmax' | 'sigmoid' | 'none'
  numClasses: number
  /** Class names in label order (from the training data); empty when it had none. */
  classNames: string[]
  /** Width of an embedding. */
  featureDim: number
  /** The network's shape. */
  cnn?: Binding.ResNetOptions
  vit?: Binding.VitOptions
}

/**
 * Images for `predict` and `embed`: a file path, an encoded image (`Buffer`/`Uint8Array` of a
 * PNG, JPEG, ...), a list of either, or decoded RGB pixels of any size.
 */
export type ModelInput = string | Uint8Array | readonly (string | Uint8Array)[] | InMemoryImages

export interface Prediction {
  /** One score per class: softmax probabilities (cross-entropy) or one-vs-rest sigmoids (focal losses). */
  scores: Float32Array
  /** The class with the highest score. */
  classIndex: number
  /** Its name from the training data, or its index as a string when the data named none. */
  className: string
}

export interface RunOptions {
  /** Images per call to the engine (default 32); calls are pipelined with decoding. */
  batchSize?: number
  /**
   * DICOM files among the inputs (paths ending `.dcm` or `.dicom`, and any path or encoded
   * buffer with the DICM preamble): the window to 8 bits,
   * as the training data was windowed (`window: 'lung'` or `'C,W'`, or three `windows` as the
   * channels). Default: the window its run recorded (`input.json`, written by `cass pretrain`,
   * `cass finetune` and `cass experiment`), else the file's own, else its 0.5-99.5
   * percentiles. A multi-frame file gives its middle frame.
   */
  dicom?: Pick<DicomOptions, 'window' | 'windows'>
}

/**
 * How `explain` finds where the network looked: `gradcam` (Selvaraju et al. 2017),
 * `gradcam++` (Chattopadhay et al. 2018) and `layercam` (Jiang et al. 2021) for either network,
 * on the CNN's last stage or the ViT's patch tokens at its last block; `attention-rollout`
 * (Abnar and Zuidema 2020) for the ViT only, which needs no class.
 */
export type ExplainMethod = 'gradcam' | 'gradcam++' | 'layercam' | 'attention-rollout'
export const EXPLAIN_METHODS: readonly ExplainMethod[] = ['gradcam', 'gradcam++', 'layercam', 'attention-rollout']

export interface ExplainOptions extends RunOptions {
  /** Default `gradcam`. */
  method?: ExplainMethod
  /**
   * The class to explain (index or name), for every image or one per image; default: each
   * image's predicted class. Class-activation maps only.
   */
  target?: number | string | readonly (number | string)[]
  /** Rollout: how the heads' attention is fused (default `mean`). */
  headFusion?: 'mean' | 'max' | 'min'
  /** Rollout: the share of each block's weakest attention links dropped, in [0, 1) (default 0). */
  discardRatio?: number
  /**
   * CNN class maps: the ResNet stage explained, 1 to 4. Default: the deepest stage whose grid is
   * at least 4 x 4 (the last at 224 px, 7 x 7; the second at 32 px, where the last is 1 x 1 and
   * its map would be flat).
   */
  stage?: 1 | 2 | 3 | 4
}

export interface Explanation {
  /** The heat map, `height x width` row-major at the network's input size, in [0, 1]. */
  map: Float32Array
  width: number
  height: number
  method: ExplainMethod
  /**
   * The class the map explains (class-activation maps) or the predicted class (a rollout of a
   * classifier); `null` for a backbone without a classifier.
   */
  classIndex: number | null
  className: string | null
  /** That class's score, as `predict` reports it; `null` without a classifier. */
  score: number | null
}
