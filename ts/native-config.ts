/**
 * The one conversion from validated configs (camelCase, presets resolved) to the engine's JSON
 * config (snake_case, the fields of `PretrainConfig` / `FinetuneConfig` in cass-core), with the
 * geometry checks the schemas cannot express.
 */
import path from 'node:path'

import { type FinetuneConfig, type PretrainConfig, RESNETS, VITS } from './config.js'
import { ConfigError } from './errors.js'

function nativeResnet(cnn: PretrainConfig['cnn'], numClasses: number) {
  const r = typeof cnn === 'string' ? { ...RESNETS[cnn], baseWidth: 64, strideIn1x1: false, bnEps: 1e-5 } : cnn
  return {
    block: r.block === 'basic' ? 'Basic' : 'Bottleneck',
    layers: [...r.layers],
    base_width: r.baseWidth,
    num_classes: numClasses,
    in_channels: 3,
    stride_in_1x1: r.strideIn1x1,
    bn_eps: r.bnEps,
  }
}

function nativeVit(vit: PretrainConfig['vit'], imageSize: number, numClasses: number) {
  const v = typeof vit === 'string' ? { ...VITS[vit], patchSize: 16, mlpRatio: 4 } : vit
  if (imageSize % v.patchSize !== 0) {
    throw new ConfigError(
      `invalid config at \`vit.patchSize\`: ${v.patchSize} does not divide imageSize ${imageSize}`,
      'vit.patchSize',
      [],
    )
  }
  if (v.embedDim % v.numHeads !== 0) {
    throw new ConfigError(
      `invalid config at \`vit.numHeads\`: ${v.numHeads} does not divide embedDim ${v.embedDim}`,
      'vit.numHeads',
      [],
    )
  }
  return {
    image_size: imageSize,
    patch_size: v.patchSize,
    embed_dim: v.embedDim,
    depth: v.depth,
    num_heads: v.numHeads,
    mlp_ratio: v.mlpRatio,
    num_classes: numClasses,
    in_channels: 3,
  }
}

function nativeSchedule(s: PretrainConfig['schedule']) {
  switch (s.kind) {
    case 'cosine-wave':
      return { kind: 'cosine-wave', t_max: s.tMax, min_lr: s.minLr }
    case 'cosine':
      return { kind: 'cosine', warmup: s.warmup, min_lr: s.minLr }
    case 'constant':
      return { kind: 'constant' }
  }
}

const nativeAdam = (a: PretrainConfig['adam']) => ({ beta1: a.beta1, beta2: a.beta2, eps: a.eps, weight_decay: a.weightDecay })

const nativeAugment = (a: PretrainConfig['augment']) => ({
  enabled: a.enabled,
  p_jitter_perspective: a.pJitterPerspective,
  p_perspective: a.pPerspective,
  perspective_distortion: a.perspectiveDistortion,
  p_jitter_rotate: a.pJitterRotate,
  rotate_degrees: a.rotateDegrees,
  brightness: a.brightness,
  contrast: a.contrast,
  saturation: a.saturation,
  p_vflip: a.pVflip,
  p_hflip: a.pHflip,
  crop_scale: a.cropScale,
  mean: a.mean,
  std: a.std,
})

export function toNativePretrainConfig(c: PretrainConfig): string {
  return JSON.stringify({
    cnn: nativeResnet(c.cnn, c.headDim),
    vit: nativeVit(c.vit, c.imageSize, c.headDim),
    image_size: c.imageSize,
    batch_size: c.batchSize,
    epochs: c.epochs,
    max_steps: c.maxSteps ?? null,
    lr_cnn: c.lrCnn,
    lr_vit: c.lrVit,
    adam: nativeAdam(c.adam),
    schedule: nativeSchedule(c.schedule),
    augment: nativeAugment(c.augment),
    seed: c.seed,
    checkpoint_every: c.checkpointEvery ?? null,
    backend: c.device,
    cnn_weights: c.cnnWeights === undefined ? null : { path: path.resolve(c.cnnWeights), ignore_head: c.ignoreHead },
    vit_weights: c.vitWeights === undefined ? null : { path: path.resolve(c.vitWeights), ignore_head: c.ignoreHead },
    views: c.views,
    collapse_guard: c.collapseGuard,
    collapse_warning_spread: c.collapseWarningSpread,
    conv: c.conv,
  })
}

export function toNativeFinetuneConfig(c: FinetuneConfig, pretrainedDir: string | undefined): string {
  return JSON.stringify({
    arch: c.arch === 'cnn' ? 'Cnn' : 'Vit',
    init: pretrainedDir === undefined ? 'random' : { pretrained: pretrainedDir },
    cnn: nativeResnet(c.cnn, c.numClasses),
    vit: nativeVit(c.vit, c.imageSize, c.numClasses),
    num_classes: c.numClasses,
    image_size: c.imageSize,
    batch_size: c.batchSize,
    max_epochs: c.maxEpochs,
    lr: c.lr,
    adam: nativeAdam(c.adam),
    schedule: nativeSchedule(c.schedule),
    loss:
      c.loss.kind === 'cross-entropy'
        ? { kind: 'cross-entropy' }
        : { kind: c.loss.kind, alpha: c.loss.alpha, gamma: c.loss.gamma },
    class_weighting: c.classWeighting,
    patience: c.patience,
    seed: c.seed,
    augment: nativeAugment(c.augment),
    backend: c.device,
    conv: c.conv,
  })
}
