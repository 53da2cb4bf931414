/**
 * The one conversion from validated configs (presets resolved, every check passed) to the
 * binding's typed options (`PretrainOptions` / `FinetuneOptions` in `index.d.ts`, converted to
 * the engine's configs by `crates/cass-node/src/options.rs`). The camelCase fields are the same on
 * both sides, so most pass through; this resolves the named architectures, the head widths and
 * the weight paths.
 */
import path from 'node:path'

import type * as Binding from '../index.js'
import { type FinetuneConfig, type PretrainConfig, RESNETS, type RunSettings, VITS } from './config.js'
import type { DinoConfig } from './dino-config.js'

function nativeResnet(cnn: PretrainConfig['cnn']): Binding.ResNetOptions {
  const r = typeof cnn === 'string' ? { ...RESNETS[cnn], baseWidth: 64, strideIn1x1: false, bnEps: 1e-5 } : cnn
  return { ...r, layers: [...r.layers] }
}

function nativeVit(vit: PretrainConfig['vit']): Binding.VitOptions {
  return typeof vit === 'string' ? { ...VITS[vit], patchSize: 16, mlpRatio: 4 } : vit
}

/** The CNN and ViT shapes a config names (presets resolved), as the binding takes them. */
export function networkShapes(c: Pick<PretrainConfig, 'cnn' | 'vit'>): { cnn: Binding.ResNetOptions; vit: Binding.VitOptions } {
  return { cnn: nativeResnet(c.cnn), vit: nativeVit(c.vit) }
}

/**
 * Every field of a validated config must have its field in the binding's options: a field the
 * binding lacks would be dropped silently when the object crosses. These fail to compile then.
 */
type Unsent<Zod, Sent> = Exclude<keyof Zod, keyof Sent>
const allPretrainFieldsCross: [Unsent<PretrainConfig, Binding.PretrainOptions & Binding.RunOptions>] extends [never]
  ? true
  : false = true
const allRunFieldsCross: [Unsent<Binding.RunOptions, PretrainConfig>] extends [never] ? true : false = true
const allFinetuneFieldsCross: [Unsent<FinetuneConfig, Binding.FinetuneOptions>] extends [never] ? true : false = true
const allAugmentFieldsCross: [Unsent<PretrainConfig['augment'], Binding.AugmentOptions>] extends [never] ? true : false = true
const allDinoFieldsCross: [Unsent<DinoConfig, Binding.DinoOptions & Binding.RunOptions>] extends [never] ? true : false = true
void [allRunFieldsCross, allPretrainFieldsCross, allFinetuneFieldsCross, allAugmentFieldsCross, allDinoFieldsCross]

/** The shared run settings of any method's validated config, as the binding's `run` object. */
export function toNativeRun(c: RunSettings): Binding.RunOptions {
  return {
    batchSize: c.batchSize,
    epochs: c.epochs,
    maxSteps: c.maxSteps,
    seed: c.seed,
    checkpointEvery: c.checkpointEvery,
    device: c.device,
    accumulate: c.accumulate,
    collapseWarningSpread: c.collapseWarningSpread,
  }
}

export function toNativePretrainConfig(c: PretrainConfig): Binding.PretrainOptions {
  return {
    ...c,
    run: toNativeRun(c),
    ...networkShapes(c),
    augment: { ...c.augment },
    collapseGuard: c.collapseGuard ?? undefined,
    cnnWeights: c.cnnWeights === undefined ? undefined : path.resolve(c.cnnWeights),
    vitWeights: c.vitWeights === undefined ? undefined : path.resolve(c.vitWeights),
  }
}

/** `start`: a pre-training checkpoint (`pretrained`), a weights file (`weights`), or random weights. */
export function toNativeFinetuneConfig(
  c: FinetuneConfig,
  start: { pretrained?: string; weights?: string; classNames?: string[] } = {},
): Binding.FinetuneOptions {
  return {
    ...c,
    ...networkShapes(c),
    augment: { ...c.augment },
    pretrained: start.pretrained,
    weights: start.weights,
    classNames: start.classNames,
  }
}

export function toNativeDinoConfig(c: DinoConfig): Binding.DinoOptions {
  return {
    ...c,
    run: toNativeRun(c),
    ...networkShapes(c),
    augment: { ...c.augment },
    globalCropScale: [...c.globalCropScale],
    localCropScale: [...c.localCropScale],
    clipGrad: c.clipGrad ?? undefined,
  }
}
