/**
 * Validated configuration. Every user-facing config is a zod schema with defaults; a preset
 * supplies the base values, user fields override them, and the merged object is validated
 * BEFORE any native call, so a bad value is reported with its field path. A config is parsed
 * once: the schemas also check the geometry (patch size against image size), so the conversion
 * to the binding's options (`native-config.ts`) cannot fail.
 */
import { z } from 'zod'

import { ConfigError } from './errors.js'
import { LIMITS, bounded, checkStepImages, deviceSchema, int, positive, probability, runFields } from './run-config.js'

export { LIMITS, type DeviceName, type RunSettings, checkStepImages, deviceSchema, runFields } from './run-config.js'

export const resnetSchema = z.strictObject({
  /** Residual block: `basic` (ResNet-18/34) or `bottleneck` (ResNet-50). */
  block: z.enum(['basic', 'bottleneck']),
  /** Blocks per stage. */
  layers: z.tuple([
    bounded(1, LIMITS.blocksPerStage),
    bounded(1, LIMITS.blocksPerStage),
    bounded(1, LIMITS.blocksPerStage),
    bounded(1, LIMITS.blocksPerStage),
  ]),
  /** Width of the stem and first stage (64 in the standard nets). */
  baseWidth: bounded(1, LIMITS.width / 32).default(64),
  /** Original ResNet v1 (stride on the first 1x1 of a downsampling bottleneck). */
  strideIn1x1: z.boolean().default(false),
  /** BatchNorm epsilon. */
  bnEps: positive.default(1e-5),
})
export type ResNetOptions = z.infer<typeof resnetSchema>

export const vitSchema = z.strictObject({
  patchSize: bounded(1, LIMITS.imageSize).default(16),
  embedDim: bounded(1, LIMITS.width),
  depth: bounded(1, LIMITS.depth),
  numHeads: bounded(1, LIMITS.width),
  mlpRatio: positive.max(LIMITS.mlpRatio).default(4),
})
export type VitOptions = z.infer<typeof vitSchema>

/** Named architectures (timm names), or a custom shape. */
export const RESNETS = {
  resnet18: { block: 'basic', layers: [2, 2, 2, 2] },
  resnet34: { block: 'basic', layers: [3, 4, 6, 3] },
  resnet50: { block: 'bottleneck', layers: [3, 4, 6, 3] },
} as const
export const VITS = {
  'vit-tiny': { embedDim: 192, depth: 12, numHeads: 3 },
  'vit-small': { embedDim: 384, depth: 12, numHeads: 6 },
  'vit-base': { embedDim: 768, depth: 12, numHeads: 12 },
} as const

export const cnnSchema = z.union([z.enum(['resnet18', 'resnet34', 'resnet50']), resnetSchema])
export const vitArchSchema = z.union([z.enum(['vit-tiny', 'vit-small', 'vit-base']), vitSchema])

export const scheduleSchema = z.discriminatedUnion('kind', [
  /** The authors' per-iteration cosine wave (T_max iterations down, T_max up). */
  z.strictObject({ kind: z.literal('cosine-wave'), tMax: int(1).default(16), minLr: z.number().min(0).default(1e-6) }),
  /** Linear warm-up, then one cosine decay over the run. */
  z.strictObject({ kind: z.literal('cosine'), warmup: int(0).default(0), minLr: z.number().min(0).default(1e-6) }),
  z.strictObject({ kind: z.literal('constant') }),
])

export const adamSchema = z.strictObject({
  beta1: probability.default(0.9),
  beta2: probability.default(0.999),
  eps: positive.default(1e-8),
  weightDecay: z.number().min(0).default(0),
})

export const augmentSchema = z.strictObject({
  enabled: z.boolean().default(true),
  pJitterPerspective: probability.default(0.3),
  pPerspective: probability.default(0.5),
  perspectiveDistortion: probability.default(0.2),
  pJitterRotate: probability.default(0.3),
  rotateDegrees: z.number().min(0).max(180).default(10),
  brightness: probability.default(0.2),
  contrast: probability.default(0.2),
  saturation: probability.default(0.2),
  pVflip: probability.default(0.3),
  pHflip: probability.default(0.3),
  /** Probability of turning an image grey (after the colour jitter); DINO uses 0.2. */
  pGrayscale: probability.default(0),
  /** Random resized crop: area fraction [min, max] (aspect 3/4 to 4/3), before the other transforms; [1, 1] is off. */
  cropScale: z.tuple([probability, probability]).default([1, 1]),
  mean: z.tuple([z.number(), z.number(), z.number()]).default([0.485, 0.456, 0.406]),
  std: z.tuple([positive, positive, positive]).default([0.229, 0.224, 0.225]),
})

/** The ViT's patch must tile the image and its heads must split its width. */
export function checkVitGeometry(c: { vit: z.infer<typeof vitArchSchema>; imageSize: number }, ctx: z.RefinementCtx): void {
  const v = typeof c.vit === 'string' ? { ...VITS[c.vit], patchSize: 16 } : c.vit
  if (c.imageSize % v.patchSize !== 0) {
    ctx.addIssue({
      code: 'custom',
      path: ['vit', 'patchSize'],
      message: `${v.patchSize} does not divide imageSize ${c.imageSize}`,
    })
  }
  if (v.embedDim % v.numHeads !== 0) {
    ctx.addIssue({ code: 'custom', path: ['vit', 'numHeads'], message: `${v.numHeads} does not divide embedDim ${v.embedDim}` })
  }
}

export const pretrainSchema = z
  .strictObject({
    cnn: cnnSchema,
    vit: vitArchSchema,
    /** Width of both heads, whose outputs CASS compares (1000 in the paper). */
    headDim: bounded(1, LIMITS.width),
    imageSize: bounded(8, LIMITS.imageSize),
    ...runFields,
    lrCnn: positive,
    lrVit: positive,
    adam: adamSchema.default(adamSchema.parse({})),
    schedule: scheduleSchema,
    augment: augmentSchema.default(augmentSchema.parse({})),
    /**
     * How the CNN's convolutions run: `auto` (on GPUs one batched matrix product each, on the CPU
     * the engine's own, with BatchNorm folded in evaluation and one operation with the block's
     * add and ReLU in training), `native` (the backend's) or
     * `batched`. The same convolutions either way, summed in another order; saved with the
     * checkpoint.
     */
    conv: z.enum(['auto', 'native', 'batched']).default('auto'),
    /**
     * Initial CNN weights: `imagenet` (the Keras ImageNet ResNet-50, resnet50 only),
     * `hf:owner/name[@revision]` (a Hugging Face Hub repository's `model.safetensors`) or a
     * timm-named safetensors file. `pretrain` fetches references before the engine starts.
     */
    cnnWeights: z.string().min(1).optional(),
    /**
     * Initial ViT weights: `hf:owner/name[@revision]` or a timm-named safetensors file
     * (`pos_embed` is resampled to `imageSize`).
     */
    vitWeights: z.string().min(1).optional(),
    /** Leave the weight files' classifiers out (heads of another width than `headDim`). */
    ignoreHead: z.boolean().default(false),
    /**
     * Augmented views per image: 1 is the paper (the same view through both networks); with 2,
     * each network sees its own augmentation and the loss is symmetrised,
     * `0.5 (L(cnn(x1), vit(x2)) + L(cnn(x2), vit(x1)))`. An epoch costs about twice as much.
     */
    views: z.union([z.literal(1), z.literal(2)]).default(1),
    /**
     * With two views, how the CNN's BatchNorm sees them: `joint` (one batch `[x1; x2]`, its
     * statistics over both views) or `separate` (each view a batch of its own, as VICReg's code
     * runs its branches). No effect with one view or on the ViT (LayerNorm is per image).
     */
    viewBatchNorm: z.enum(['joint', 'separate']).default('joint'),
    /**
     * Collapse guard: VICReg's variance hinge on each network's L2-normalised outputs,
     * `weight * mean_d relu(target - sqrt(D) std_batch(F(v))_d)`, added to the CASS loss.
     * `null` turns it off (the paper).
     */
    collapseGuard: z
      .strictObject({
        weight: z.number().min(0).default(1),
        target: positive.default(0.5),
        /** VICReg's covariance penalty on the same outputs, with this weight (0: off). */
        covariance: z.number().min(0).default(0),
      })
      .nullable()
      .default(null),
  })
  .superRefine((c, ctx) => {
    checkVitGeometry(c, ctx)
    checkStepImages(c, ctx)
  })
export type PretrainConfig = z.infer<typeof pretrainSchema>

export const lossSchema = z.discriminatedUnion('kind', [
  /** The authors' sigmoid focal loss: alpha scales the positive and the negative term. */
  z.strictObject({ kind: z.literal('focal'), alpha: z.number().min(0).max(1).default(1), gamma: z.number().min(0).default(2) }),
  /** RetinaNet's alpha-balanced focal loss: alpha on positives, 1 - alpha on negatives. */
  z.strictObject({
    kind: z.literal('focal-alpha-balanced'),
    alpha: z.number().min(0).max(1).default(0.25),
    gamma: z.number().min(0).default(2),
  }),
  z.strictObject({ kind: z.literal('cross-entropy') }),
])

export const finetuneSchema = z
  .strictObject({
    /** Which network to fine-tune. */
    arch: z.enum(['cnn', 'vit']),
    cnn: cnnSchema,
    vit: vitArchSchema,
    numClasses: bounded(2, LIMITS.classes),
    imageSize: bounded(8, LIMITS.imageSize),
    batchSize: bounded(2, LIMITS.batchSize),
    maxEpochs: int(1),
    lr: positive,
    adam: adamSchema.default(adamSchema.parse({})),
    schedule: scheduleSchema,
    loss: lossSchema,
    classWeighting: z.enum(['min-max-counts', 'inverse-frequency', 'none']),
    patience: int(1),
    seed: int(0),
    augment: augmentSchema.default(augmentSchema.parse({})),
    device: deviceSchema.default('auto'),
    /**
     * How the CNN's convolutions run: `auto` (on GPUs one batched matrix product each, on the CPU
     * the engine's own, with BatchNorm folded in evaluation and one operation with the block's
     * add and ReLU in training), `native` (the backend's) or
     * `batched`. The same convolutions either way, summed in another order; saved with the
     * checkpoint.
     */
    conv: z.enum(['auto', 'native', 'batched']).default('auto'),
  })
  .superRefine(checkVitGeometry)
export type FinetuneConfig = z.infer<typeof finetuneSchema>

export type DeepPartial<T> = T extends readonly unknown[] ? T : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> } : T
export type PresetName = 'paper' | 'cpu-small'
export type PretrainInput = DeepPartial<z.input<typeof pretrainSchema>> & { preset?: PresetName }
export type FinetuneInput = DeepPartial<z.input<typeof finetuneSchema>> & { preset?: PresetName }

export const CPU_SMALL_CNN: z.input<typeof resnetSchema> = { block: 'basic', layers: [1, 1, 1, 1], baseWidth: 16 }
export const CPU_SMALL_VIT: z.input<typeof vitSchema> = { patchSize: 8, embedDim: 96, depth: 4, numHeads: 4 }

/** Presets: `paper` is the CASS paper's setting; `cpu-small` trains in minutes on 2 cores. */
export const PRESETS: Record<
  PresetName,
  { pretrain: z.input<typeof pretrainSchema>; finetune: Omit<z.input<typeof finetuneSchema>, 'arch'> }
> = {
  paper: {
    pretrain: {
      cnn: 'resnet50',
      vit: 'vit-base',
      headDim: 1000,
      imageSize: 384,
      batchSize: 16,
      epochs: 100,
      lrCnn: 1e-3,
      lrVit: 1e-3,
      schedule: { kind: 'cosine-wave', tMax: 16, minLr: 1e-6 },
      seed: 0,
    },
    finetune: {
      cnn: 'resnet50',
      vit: 'vit-base',
      numClasses: 2,
      imageSize: 384,
      batchSize: 16,
      maxEpochs: 50,
      lr: 3e-4,
      schedule: { kind: 'cosine-wave', tMax: 16, minLr: 1e-6 },
      loss: { kind: 'focal', alpha: 1, gamma: 2 },
      classWeighting: 'min-max-counts',
      patience: 5,
      seed: 77,
    },
  },
  'cpu-small': {
    pretrain: {
      cnn: CPU_SMALL_CNN,
      vit: CPU_SMALL_VIT,
      headDim: 128,
      imageSize: 32,
      batchSize: 16,
      epochs: 5,
      lrCnn: 1e-3,
      lrVit: 1e-3,
      schedule: { kind: 'cosine-wave', tMax: 16, minLr: 1e-6 },
      seed: 0,
      // From random weights the paper's single view collapses within an epoch. Two views and
      // the guard (variance hinge plus VICReg's covariance penalty) gave frozen features a
      // better kNN accuracy than random weights on MNIST, Fashion-MNIST and an 8x8-digits set,
      // for both networks; the hinge alone, or one view, did not (README, "Choosing cpu-small").
      views: 2,
      collapseGuard: { weight: 1, target: 0.5, covariance: 1 },
    },
    finetune: {
      cnn: CPU_SMALL_CNN,
      vit: CPU_SMALL_VIT,
      numClasses: 2,
      imageSize: 32,
      batchSize: 16,
      maxEpochs: 10,
      // Cross-entropy rather than the paper's focal loss. Measured with `cass demo` (the same
      // CASS weights, the demo's former `--reuse-pretrain`, `--loss focal`): the authors' focal loss (alpha 1,
      // gamma 2) gave a lower macro-F1 in 6 of the 8 few-label cells (CNN 1 %: 0.393 against
      // 0.429 from CASS weights, 0.311 against 0.398 from random ones) and a mean over all 12
      // cells of 0.566 against 0.574. CASS beat random init with either loss.
      lr: 1e-3,
      schedule: { kind: 'cosine', warmup: 0, minLr: 1e-6 },
      loss: { kind: 'cross-entropy' },
      classWeighting: 'none',
      patience: 5,
      seed: 77,
    },
  },
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/** Deep merge where `over` wins; arrays and a change of union kind replace wholesale. */
export function merge(base: unknown, over: unknown): unknown {
  if (over === undefined) return base
  if (!isPlainObject(base) || !isPlainObject(over)) return over
  if ('kind' in over && base.kind !== over.kind) return over
  const out: Record<string, unknown> = { ...base }
  // defineProperty, not assignment: a JSON key `__proto__` (JSON.parse makes it an own key)
  // assigned here would set the object's prototype and vanish from the strict schemas' sight.
  for (const [k, v] of Object.entries(over)) {
    Object.defineProperty(out, k, {
      value: merge(Object.hasOwn(base, k) ? base[k] : undefined, v),
      enumerable: true,
      writable: true,
      configurable: true,
    })
  }
  return out
}

export function parseWith<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const result = schema.safeParse(value)
  if (!result.success) {
    const issue = result.error.issues[0]
    const field = issue.path.map(String).join('.') || '(root)'
    const all = result.error.issues.map((i) => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`)
    throw new ConfigError(`invalid ${what} config at \`${field}\`: ${issue.message}`, field, all)
  }
  return result.data
}

export function presetOf(input: { preset?: unknown }): PresetName {
  const name = input.preset ?? 'cpu-small'
  if (name !== 'paper' && name !== 'cpu-small') {
    throw new ConfigError(
      `invalid config at \`preset\`: unknown preset ${JSON.stringify(name)} (use "paper" or "cpu-small")`,
      'preset',
      [],
    )
  }
  return name
}

/** Resolves a preset plus overrides into a validated pre-training config. */
export function parsePretrainConfig(input: PretrainInput = {}): PretrainConfig {
  if (!isPlainObject(input)) throw new ConfigError('invalid pretrain config at `(root)`: expected an object', '(root)', [])
  const { preset: _p, ...rest } = input
  return parseWith(pretrainSchema, merge(PRESETS[presetOf(input)].pretrain, rest), 'pretrain')
}

/** Resolves a preset plus overrides into a validated fine-tuning config. */
export function parseFinetuneConfig(input: FinetuneInput): FinetuneConfig {
  if (!isPlainObject(input)) throw new ConfigError('invalid finetune config at `(root)`: expected an object', '(root)', [])
  const { preset: _p, ...rest } = input
  return parseWith(finetuneSchema, merge(PRESETS[presetOf(input)].finetune, rest), 'finetune')
}
