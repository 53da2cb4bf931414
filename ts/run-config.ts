/**
 * The settings every pre-training method shares (the engine's `RunConfig`, one `validate`):
 * `runFields` is spread into each method's schema and sent to the binding as its `run` object
 * (`native-config.ts`'s `toNativeRun`); and the bounds on every size that decides an allocation.
 */
import { z } from 'zod'

/** The number kinds every config schema is built from. */
export const int = (min = 0) => z.number().int().min(min)
export const positive = z.number().positive()
export const probability = z.number().min(0).max(1)

/**
 * Upper bounds on every size that decides an allocation, checked before anything is built: a
 * typo or a hostile config (`headDim: 1e9`) must be a ConfigError, not an allocation that aborts
 * the host process. Each is far above any model this engine trains (ViT-B/16 at 384 px, batch
 * 16, a 65,536-wide DINO head).
 */
export const LIMITS = {
  width: 65536,
  depth: 256,
  blocksPerStage: 64,
  imageSize: 4096,
  batchSize: 4096,
  classes: 65536,
  mlpRatio: 16,
} as const
export const bounded = (min: number, max: number) => int(min).max(max)

export const deviceSchema = z.enum(['cpu', 'cuda', 'wgpu', 'auto'])
export type DeviceName = z.infer<typeof deviceSchema>

/** The run settings, spread into each method's schema. */
export const runFields = {
  /** Images per micro-batch (per update without `accumulate`). */
  batchSize: bounded(2, LIMITS.batchSize),
  epochs: int(1),
  /** Stop after this many optimisation steps in total. */
  maxSteps: int(1).optional(),
  seed: int(0),
  /** Also checkpoint every N steps (always at each epoch end). */
  checkpointEvery: int(1).optional(),
  device: deviceSchema.default('auto'),
  /**
   * Gradient accumulation: each update sums the gradients of this many micro-batches of
   * `batchSize` images (`batchSize * accumulate` images per step, at most the largest batch).
   * The same update as one batch of that size where nothing depends on the batch as a whole
   * (a ViT under a per-image loss); BatchNorm and batch-level loss terms still see `batchSize`.
   */
  accumulate: bounded(1, 1024).default(1),
  /** A `collapse` warning is raised when a network's output spread stays below this for an epoch. */
  collapseWarningSpread: z.number().min(0).default(0.1),
}

const runSchema = z.object(runFields)
/** The shared run settings of a validated config. */
export type RunSettings = z.infer<typeof runSchema>

/** A step gathers at most the largest batch: `batchSize * accumulate <= LIMITS.batchSize`. */
export function checkStepImages(c: { batchSize: number; accumulate: number }, ctx: z.RefinementCtx): void {
  if (c.batchSize * c.accumulate > LIMITS.batchSize) {
    ctx.addIssue({
      code: 'custom',
      path: ['accumulate'],
      message: `batchSize ${c.batchSize} times accumulate ${c.accumulate} is more than the ${LIMITS.batchSize} images one step may hold`,
    })
  }
}
