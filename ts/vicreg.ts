/**
 * VICReg pre-training of one backbone: the baseline that asks whether CASS's gain comes from
 * pairing two architectures or from the variance and covariance terms its guard borrows. Run by
 * the same engine on the same networks and data; the checkpoint is read by `finetune`, `embed`
 * and `exportWeights` like a CASS checkpoint.
 */
import type * as Binding from '../index.js'
import { toPretrainResult } from './binding.js'
import type { PretrainResult } from './events.js'
import { type PretrainRunOptions, checkImages, checkIndices, checkOutDir, checkPretrainOutDir } from './inputs.js'
import { type Job, startJob } from './job.js'
import { networkShapes, toNativeRun } from './native-config.js'
import { native } from './native.js'
import { type VicregConfig, type VicregInput, parseVicregConfig } from './vicreg-config.js'

export interface VicregOptions extends PretrainRunOptions {
  /** Preset name plus overrides; must name `arch` (`cnn` or `vit`). Defaults to `cpu-small`. */
  config: VicregInput
}

/** Every field of the validated config must cross (a missing one fails to compile here). */
type Unsent = Exclude<keyof VicregConfig, keyof (Binding.VicregOptions & Binding.RunOptions)>
const allVicregFieldsCross: [Unsent] extends [never] ? true : false = true
void allVicregFieldsCross

export function toNativeVicregConfig(c: VicregConfig): Binding.VicregOptions {
  return { ...c, ...networkShapes(c), run: toNativeRun(c), expander: [...c.expander], augment: { ...c.augment } }
}

/** VICReg pre-training of `config.arch` on unlabelled images. */
export function pretrainVicreg(options: VicregOptions): Job<PretrainResult> {
  const config = toNativeVicregConfig(parseVicregConfig(options.config))
  const images = checkImages(options.images)
  const indices = checkIndices(options.indices, 'indices')
  const outDir = checkOutDir(options.outDir)
  checkPretrainOutDir(outDir, options)
  return startJob(
    options,
    (token, onEvent) =>
      native().startPretrainingOf({ method: 'vicreg', config }, images, indices, outDir, options.resume ?? false, token, onEvent),
    toPretrainResult,
  )
}
