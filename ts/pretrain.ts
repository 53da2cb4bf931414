/**
 * CASS pre-training from the API: the config validated, initial weights fetched (`imagenet`,
 * `hf:`) before the engine starts, the job started through the binding's one pre-training export.
 */
import { existsSync } from 'node:fs'
import path from 'node:path'

import { toPretrainResult } from './binding.js'
import { type PretrainInput, parsePretrainConfig } from './config.js'
import type { PretrainResult } from './events.js'
import { type PretrainRunOptions, checkImages, checkIndices, checkOutDir, checkPretrainOutDir } from './inputs.js'
import { type Job, startJob } from './job.js'
import { toNativePretrainConfig } from './native-config.js'
import { native } from './native.js'
import { weightsReporter } from './progress.js'
import type { WeightsEvent } from './weights/hub.js'
import { checkPretrainWeights, pretrainedWeightsWarning, resolvePretrainWeights } from './weights/resolve.js'

export interface PretrainOptions extends PretrainRunOptions {
  /** Preset name plus overrides; validated before anything runs. Defaults to `cpu-small`. */
  config?: PretrainInput
  /** Where `cnnWeights: 'imagenet'` is cached, under `weights/` (default `~/.cache/cass-ssl`). */
  cacheDir?: string
  /** Download and conversion of `imagenet` / `hf:` weights (default: progress lines on stderr). */
  onWeightsProgress?: (event: WeightsEvent) => void
}

/**
 * CASS pre-training of a CNN and a ViT on unlabelled images. `cnnWeights: 'imagenet'` and
 * `hf:` references are fetched (or taken from their caches) before the engine starts; the
 * `paper` preset without them raises a `no-pretrained-weights` warning through `onProgress`
 * (or `process.emitWarning` without a handler).
 */
export function pretrain(options: PretrainOptions): Job<PretrainResult> {
  const config = parsePretrainConfig(options.config ?? {})
  checkPretrainWeights(config)
  const images = checkImages(options.images)
  const indices = checkIndices(options.indices, 'indices')
  const outDir = checkOutDir(options.outDir)
  checkPretrainOutDir(outDir, options)
  // A resumed run takes its weights and config from the checkpoint; nothing to fetch or warn about.
  const resuming = options.resume === true && existsSync(path.join(outDir, 'checkpoint', 'state.json'))
  const warning = resuming ? undefined : pretrainedWeightsWarning(options.config)
  if (warning !== undefined) {
    if (options.onProgress) {
      try {
        options.onProgress({ type: 'warning', code: 'no-pretrained-weights', message: warning, step: 0 })
      } catch {
        // as for engine events: a throwing handler must not stop the run
      }
    } else process.emitWarning(warning, { code: 'CASS_NO_PRETRAINED_WEIGHTS' })
  }
  return startJob(
    options,
    async (token, onEvent) => {
      const resolved = resuming
        ? { ...config, cnnWeights: undefined, vitWeights: undefined }
        : await resolvePretrainWeights(config, {
            cacheDir: options.cacheDir,
            signal: options.signal,
            onProgress: options.onWeightsProgress ?? weightsReporter(),
          })
      return native().startPretrainingOf(
        { method: 'cass', config: toNativePretrainConfig(resolved) },
        images,
        indices,
        outDir,
        options.resume ?? false,
        token,
        onEvent,
      )
    },
    toPretrainResult,
  )
}
