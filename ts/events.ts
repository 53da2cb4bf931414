/** What running jobs report (progress events) and return (results and metrics). */
import type { AddonChoice } from './native.js'

/** Before the first step: the backend the job runs on and why (for `auto`, what it passed over). */
export interface DeviceEvent {
  type: 'device'
  backend: 'cpu' | 'cuda' | 'wgpu'
  reason: string
  /** Which native build runs the job (the default one, or the CUDA package) and why. */
  addon: AddonChoice
}

export interface StepEvent {
  type: 'step'
  step: number
  totalSteps: number
  epoch: number
  loss: number
  /**
   * Named loss parts: `cass`, `guard` (with a collapse guard), and the output spread of each
   * network, `cnn_spread` / `vit_spread` (about 1 for spread-out outputs, 0 when collapsed).
   */
  parts: [string, number][]
  /**
   * Output spread of each network a pre-training trains (CASS: both; DINO: its backbone; none
   * for fine-tuning): about 1 for spread-out outputs, 0 when collapsed.
   */
  spread: { cnn?: number | null; vit?: number | null }
  lr: number
  /** Mean images per second since the job (or resume) started. */
  imagesPerSec: number
  /** Wall time of this step, data wait included. */
  stepSec: number
  etaSec: number
}
export interface EpochEvent {
  type: 'epoch'
  epoch: number
  meanLoss: number
  valLoss: number | null
  best: boolean
}
export interface CheckpointEvent {
  type: 'checkpoint'
  path: string
  step: number
}
/** Something to act on; the run goes on. `collapse`: an output spread stayed low for an epoch. */
export interface WarningEvent {
  type: 'warning'
  code: string
  message: string
  step: number
}
export type ProgressEvent = DeviceEvent | StepEvent | EpochEvent | CheckpointEvent | WarningEvent

export interface PretrainResult {
  status: 'completed' | 'cancelled'
  steps: number
  totalSteps: number
  /** Directory of the checkpoint (`<outDir>/checkpoint`). */
  checkpoint: string
  /** Loss of every step of the run (including steps done before a resume). */
  losses: number[]
  epochMeanLosses: number[]
}

export interface PerClassMetrics {
  precision: number
  recall: number
  f1: number
  support: number
}

/** Every metric the CASS spec lists, named as there. */
export interface Metrics {
  numSamples: number
  accuracy: number
  /** Mean per-class recall. */
  balancedAccuracy: number
  macroF1: number
  /** The authors' metric: micro-F1 over (sample, class) pairs with sigmoid(logit) > 0.5. */
  microF1Sigmoid05: number
  macroAuroc: number | null
  aurocPerClass: (number | null)[]
  perClass: PerClassMetrics[]
  /** `confusion[true][predicted]`. */
  confusion: number[][]
}

export interface FinetuneResult {
  status: 'completed' | 'cancelled'
  bestEpoch: number
  bestValLoss: number
  /** Metrics of the best-validation weights on the validation samples. */
  valMetrics: Metrics
  history: { epoch: number; trainLoss: number; valLoss: number }[]
  /** Directory of the best checkpoint (`<outDir>/best`). */
  checkpoint: string
}

export interface Embeddings {
  dim: number
  count: number
  /** Row-major `[count, dim]`. */
  features: Float32Array
}
