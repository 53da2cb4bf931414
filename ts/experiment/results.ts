/**
 * `results.json` of `cass experiment`: every arm of the protocol with its metrics, timings and
 * configs. The report (`report.html`, `cass report DIR`) is rendered from this file alone.
 */
import type { Metrics } from '../events.js'
import type { MethodRef } from '../methods/info.js'
import type { ExperimentSizes } from './options.js'

/** A pre-training method or a named variant of one (`methods/info.ts`); `random` and `imagenet` are the starts without one. */
export type MethodName = MethodRef
export type StartName = MethodName | 'random' | 'imagenet'
export type Network = 'cnn' | 'vit'

/** One pre-training run: CASS trains both networks at once; DINO one backbone per run. */
export interface PretrainRecord {
  method: MethodName
  /** The networks this run trained (`['cnn', 'vit']` for CASS, one for DINO). */
  networks: Network[]
  /** `completed`, or `cancelled` when the experiment was interrupted during it. */
  status: 'completed' | 'cancelled'
  batchSize: number
  epochs: number
  /** Wall time of the whole run, seconds (this process's share when it was resumed). */
  wallSec: number
  /** The backend it ran on (`device: auto` resolves per run) and why; absent in older results. */
  backend?: { name: 'cpu' | 'cuda' | 'wgpu'; reason: string }
  /** Per epoch: mean loss, wall time, and each network's output spread (about 1: spread out, 0: collapsed). */
  perEpoch: { epoch: number; meanLoss: number; sec: number; spread: Partial<Record<Network, number>> }[]
  /** Output folder of the run, relative to the experiment folder. */
  dir: string
  /** The validated pre-training config. */
  config: unknown
  /** Set when this run belongs to a robustness sweep (`--batch-sizes`, `--epochs-sweep`). */
  sweep?: 'batch-size' | 'epochs'
}

/** One fine-tuned network evaluated on the test split. */
export interface ArmRecord {
  start: StartName
  network: Network
  /** Fraction of the labelled pool used, and how many images that was. */
  fraction: number
  labelled: number
  seed: number
  bestEpoch: number
  /** Wall time of fine-tuning, seconds. */
  trainSec: number
  /** Metrics on the test split. */
  test: Metrics
  /** The pre-training run this started from (its `dir`), absent for `random` and `imagenet`. */
  pretrainDir?: string
  /** The weights an `imagenet` arm started from. */
  weights?: string
  /** Sweep arms: the pre-training batch size or epochs that differ from the main run. */
  sweep?: { kind: 'batch-size' | 'epochs'; value: number }
}

/** Accuracy of a k-nearest-neighbour classifier on frozen embeddings (cosine, k = `k`). */
export interface KnnRecord {
  start: StartName
  network: Network
  k: number
  accuracy: number
  macroF1: number
}

/** Where each network looked on a few test images (see `experiment/explanations.ts`). */
export interface ExplanationsRecord {
  method: 'gradcam'
  /** The seed that ordered the test split before images were picked. */
  seed: number
  /** Side of the pictures (the networks' input size). */
  size: number
  images: {
    /** Position in the dataset, its name and true class. */
    index: number
    name: string
    label: string
    /** The image as the networks saw it, PNG in base64. */
    png: string
    /** Per network: the start explained, its prediction, and the overlay (PNG, base64). */
    maps: Partial<Record<Network, { start: StartName; predicted: string; score: number; correct: boolean; png: string }>>
  }[]
}

export interface ExperimentResults {
  version: 1
  /** ISO time the experiment started and last finished an arm. */
  startedAt: string
  updatedAt: string
  dataset: {
    name: string
    source: string
    classes: number
    classNames?: string[]
    /** Images per split. */
    pretrain: number
    pool: number
    val: number
    test: number
    /** Patients (groups: PatientIDs, a CSV's group column) per split, when images carry them. */
    patients?: { pretrain: number; pool: number; val: number; test: number }
  }
  settings: {
    methods: MethodName[]
    networks: Network[]
    fractions: number[]
    seeds: number
    /** Seeds at fraction 1 when fewer than `seeds`. */
    seedsAtFull?: number
    preset: string
    device: string
    batchSizes?: number[]
    epochsSweep?: number[]
    /** The weights the `imagenet` start fine-tunes each network from. */
    imagenet?: Partial<Record<Network, string>>
    /** Images per split and epochs (part of the identity: a rerun with others is refused). */
    sizes?: ExperimentSizes
    /** Neighbours of the kNN probe. */
    k?: number
    format?: string
    /** How DICOM files became images (`--window`, `--windows`, `--frames`), as given. */
    dicom?: { window?: string; windows?: string; frames?: string }
    /** The CSV column patients were grouped by. */
    groupBy?: string
    /** The config overrides of each method and of fine-tuning, as given. */
    overrides?: { pretrain: unknown; dino: unknown; finetune: unknown; variants?: unknown; methods?: unknown }
  }
  pretraining: PretrainRecord[]
  arms: ArmRecord[]
  knn: KnnRecord[]
  /** Absent until the experiment's last unit ran (and in results of older versions). */
  explanations?: ExplanationsRecord
}
