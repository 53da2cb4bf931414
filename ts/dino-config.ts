/**
 * The validated config of a DINO run (Caron et al. 2021), the CASS paper's baseline: one
 * backbone per run, from the same architectures as CASS. `paper` follows DINO's published
 * defaults at the CASS paper's input size and batch; `cpu-small` trains in minutes on 2 cores
 * with the `cpu-small` networks of CASS, so the two methods compare on the same networks.
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

const areaRange = z.tuple([positive.max(1), positive.max(1)])

export const dinoSchema = z
  .strictObject({
    /** The backbone this run trains (DINO trains one per run). */
    arch: z.enum(['cnn', 'vit']),
    cnn: cnnSchema,
    vit: vitArchSchema,
    /** Projection head: `outDim` outputs (65536 in DINO), hidden and bottleneck widths. */
    outDim: int(1).max(LIMITS.width),
    hiddenDim: int(1).max(LIMITS.width),
    bottleneckDim: int(1).max(LIMITS.width),
    imageSize: int(8).max(LIMITS.imageSize),
    ...runFields,
    /** Peak learning rate per 256 images: the run peaks at `baseLr * batchSize * accumulate / 256`. */
    baseLr: positive,
    minLr: z.number().min(0).default(1e-6),
    warmupEpochs: int(0).default(10),
    adam: z
      .strictObject({ beta1: probability.default(0.9), beta2: probability.default(0.999), eps: positive.default(1e-8) })
      .default({ beta1: 0.9, beta2: 0.999, eps: 1e-8 }),
    /** AdamW weight decay: cosine from `weightDecay` to `weightDecayEnd` over the run. */
    weightDecay: z.number().min(0).default(0.04),
    weightDecayEnd: z.number().min(0).default(0.4),
    /** Teacher EMA momentum at the start; it rises to 1 by a cosine. */
    momentumTeacher: probability.default(0.996),
    teacherTemp: positive.default(0.04),
    warmupTeacherTemp: positive.default(0.04),
    warmupTeacherTempEpochs: int(0).default(0),
    studentTemp: positive.default(0.1),
    centerMomentum: probability.default(0.9),
    /** Per-parameter gradient-norm clipping; `null` turns it off. */
    clipGrad: positive.nullable().default(3),
    freezeLastLayerEpochs: int(0).default(1),
    globalCropScale: areaRange.default([0.4, 1]),
    localCrops: int(0).max(64).default(8),
    localCropScale: areaRange.default([0.05, 0.4]),
    localCropSize: int(1).max(LIMITS.imageSize),
    /** Augmentation of every crop (its `cropScale` is replaced by the crop's own range). */
    augment: augmentSchema.default(augmentSchema.parse({})),
    conv: z.enum(['auto', 'native', 'batched']).default('auto'),
  })
  .superRefine((c, ctx) => {
    checkStepImages(c, ctx)
    if (c.arch !== 'vit') return
    checkVitGeometry(c, ctx)
    const patch = typeof c.vit === 'string' ? 16 : c.vit.patchSize
    if (c.localCrops > 0 && c.localCropSize % patch !== 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['localCropSize'],
        message: `${c.localCropSize} is not a whole number of the ViT's ${patch}-pixel patches`,
      })
    }
  })
export type DinoConfig = z.infer<typeof dinoSchema>
export type DinoInput = DeepPartial<z.input<typeof dinoSchema>> & { preset?: PresetName }

export const DINO_PRESETS: Record<PresetName, Omit<z.input<typeof dinoSchema>, 'arch'>> = {
  // DINO's defaults (`main_dino.py`) at the CASS paper's networks, input size and batch; local
  // crops at 96/224 of the input, rounded to whole ViT patches.
  paper: {
    cnn: 'resnet50',
    vit: 'vit-base',
    outDim: 65536,
    hiddenDim: 2048,
    bottleneckDim: 256,
    imageSize: 384,
    batchSize: 16,
    epochs: 100,
    baseLr: 5e-4,
    localCropSize: 160,
    seed: 0,
  },
  'cpu-small': {
    cnn: CPU_SMALL_CNN,
    vit: CPU_SMALL_VIT,
    outDim: 1024,
    hiddenDim: 256,
    bottleneckDim: 64,
    imageSize: 32,
    batchSize: 16,
    epochs: 5,
    // Peaks at 1e-3 at batch 16, the rate CASS's cpu-small runs at.
    baseLr: 0.016,
    warmupEpochs: 1,
    // Runs of one epoch are common here: a frozen first epoch would never train the last layer.
    freezeLastLayerEpochs: 0,
    localCrops: 2,
    localCropSize: 16,
    seed: 0,
  },
}

/** Resolves a preset plus overrides into a validated DINO config (`arch` is required). */
export function parseDinoConfig(input: DinoInput): DinoConfig {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ConfigError('invalid dino config at `(root)`: expected an object', '(root)', [])
  }
  const { preset: _p, ...rest } = input
  return parseWith(dinoSchema, merge(DINO_PRESETS[presetOf(input)], rest), 'dino')
}
