/**
 * The validated config of a VICReg run (Bardes, Ponce and LeCun, ICLR 2022): one backbone per
 * run, from the same architectures as CASS, two views of every image, an expander and the loss
 * `invariance * mse + variance * hinge + covariance * off-diagonal`. `paper` follows the paper's
 * expander (8192-8192-8192) and weights (25 / 25 / 1) at the CASS paper's networks, input size
 * and batch; `cpu-small` trains in minutes on 2 cores with the `cpu-small` networks of CASS, so
 * the three methods compare on the same networks. The optimizer is AdamW, not the paper's LARS
 * (the engine's `vicreg_config.rs` says why).
 */
import { z } from 'zod'

import {
  CPU_SMALL_CNN,
  CPU_SMALL_VIT,
  type DeepPartial,
  LIMITS,
  type PresetName,
  augmentSchema,
  checkStepImages,
  checkVitGeometry,
  cnnSchema,
  merge,
  parseWith,
  presetOf,
  runFields,
  vitArchSchema,
} from './config.js'
import { ConfigError } from './errors.js'
import { int, positive, probability } from './run-config.js'

export const vicregSchema = z
  .strictObject({
    /** The backbone this run trains (one per run). */
    arch: z.enum(['cnn', 'vit']),
    cnn: cnnSchema,
    vit: vitArchSchema,
    /** The expander's layer widths: BatchNorm and ReLU between them, none after the last. */
    expander: z.array(int(1).max(16384)).min(1).max(8),
    imageSize: int(8).max(LIMITS.imageSize),
    ...runFields,
    /** Peak learning rate, after `warmupEpochs` of linear warm-up; a cosine to `minLr` follows. */
    lr: positive,
    minLr: z.number().min(0).default(1e-6),
    warmupEpochs: int(0).default(10),
    /** AdamW: betas, epsilon and the decoupled weight decay (not on biases and norm scales). */
    adam: z
      .strictObject({
        beta1: probability.default(0.9),
        beta2: probability.default(0.999),
        eps: positive.default(1e-8),
        weightDecay: z.number().min(0).default(1e-6),
      })
      .default({ beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-6 }),
    /** `lambda`, `mu`, `nu` of the paper: the invariance, variance and covariance terms' weights. */
    weights: z
      .strictObject({
        invariance: positive.default(25),
        variance: z.number().min(0).default(25),
        covariance: z.number().min(0).default(1),
      })
      .default({ invariance: 25, variance: 25, covariance: 1 }),
    /** The augmentation of each of the two views. */
    augment: augmentSchema.default(augmentSchema.parse({})),
    conv: z.enum(['auto', 'native', 'batched']).default('auto'),
  })
  .superRefine((c, ctx) => {
    checkStepImages(c, ctx)
    if (c.arch === 'vit') checkVitGeometry(c, ctx)
  })
export type VicregConfig = z.infer<typeof vicregSchema>
export type VicregInput = DeepPartial<z.input<typeof vicregSchema>> & { preset?: PresetName }

export const VICREG_PRESETS: Record<PresetName, Omit<z.input<typeof vicregSchema>, 'arch'>> = {
  // The paper's expander and loss weights at the CASS paper's networks, input size and batch.
  paper: {
    cnn: 'resnet50',
    vit: 'vit-base',
    expander: [8192, 8192, 8192],
    imageSize: 384,
    batchSize: 16,
    epochs: 100,
    lr: 1e-3,
    seed: 0,
  },
  'cpu-small': {
    cnn: CPU_SMALL_CNN,
    vit: CPU_SMALL_VIT,
    expander: [512, 512, 512],
    imageSize: 32,
    batchSize: 16,
    epochs: 5,
    // The rate CASS's and DINO's cpu-small runs peak at.
    lr: 1e-3,
    // Runs of one epoch are common here: a warm-up would take all of it.
    warmupEpochs: 0,
    seed: 0,
  },
}

/** Resolves a preset plus overrides into a validated VICReg config (`arch` is required). */
export function parseVicregConfig(input: VicregInput): VicregConfig {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ConfigError('invalid vicreg config at `(root)`: expected an object', '(root)', [])
  }
  const { preset: _p, ...rest } = input
  return parseWith(vicregSchema, merge(VICREG_PRESETS[presetOf(input)], rest), 'vicreg')
}
