/**
 * DINO pre-training of one backbone: the baseline the CASS paper compares against, run by the
 * same engine, on the same networks and data, so `cass experiment` can compare the two methods
 * on a user's own images. The checkpoint is read by `finetune`, `embed` and `exportWeights` like a
 * CASS checkpoint (it holds the teacher's backbone).
 */
import { toPretrainResult } from './binding.js'
import { type DinoInput, parseDinoConfig } from './dino-config.js'
import type { PretrainResult } from './events.js'
import { type PretrainRunOptions, checkImages, checkIndices, checkOutDir, checkPretrainOutDir } from './inputs.js'
import { type Job, startJob } from './job.js'
import { toNativeDinoConfig } from './native-config.js'
import { native } from './native.js'

export interface DinoOptions extends PretrainRunOptions {
  /** Preset name plus overrides; must name `arch` (`cnn` or `vit`). Defaults to `cpu-small`. */
  config: DinoInput
}

/** DINO pre-training of `config.arch` on unlabelled images. */
export function pretrainDino(options: DinoOptions): Job<PretrainResult> {
  const config = toNativeDinoConfig(parseDinoConfig(options.config))
  const images = checkImages(options.images)
  const indices = checkIndices(options.indices, 'indices')
  const outDir = checkOutDir(options.outDir)
  checkPretrainOutDir(outDir, options)
  return startJob(
    options,
    (token, onEvent) =>
      native().startPretrainingOf({ method: 'dino', config }, images, indices, outDir, options.resume ?? false, token, onEvent),
    toPretrainResult,
  )
}
