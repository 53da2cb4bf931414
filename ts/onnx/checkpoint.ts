/**
 * A checkpoint's network as an ONNX file: the engine restores it (the architecture and input
 * preparation it actually trained with, imported weights' variants included), writes its weights
 * in timm's names, and `buildOnnx` turns both into the graph. A fine-tuned classifier exports its
 * logits; a pre-training backbone, which has no classifier, its pooled features.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

import { fromNative } from '../errors.js'
import { checkReplaceable, writeOutputFile } from '../io/output-file.js'
import { loadModel } from '../model.js'
import { native } from '../native.js'
import { buildOnnx } from './export.js'
import { readSafetensors } from './safetensors.js'

export interface OnnxExportOptions {
  checkpoint: string
  arch?: 'cnn' | 'vit'
  out: string
}

/** Writes `out` (atomically); resolves to its path. */
export async function exportOnnx(options: OnnxExportOptions): Promise<string> {
  const out = path.resolve(options.out)
  checkReplaceable(out) // before any work: a refused path fails fast
  const model = await loadModel(options.checkpoint, { arch: options.arch, device: 'cpu' })
  const scratch = mkdtempSync(path.join(tmpdir(), 'cass-onnx-'))
  try {
    const info = model.info
    const weights = path.join(scratch, 'weights.safetensors')
    try {
      await native().startExport(path.resolve(options.checkpoint), info.arch, weights)
    } catch (e) {
      throw fromNative(e)
    }
    const { tensors } = readSafetensors(weights)
    const bytes = buildOnnx({
      arch: info.arch,
      ...(info.cnn ? { cnn: { ...info.cnn, layers: info.cnn.layers as [number, number, number, number] } } : {}),
      ...(info.vit ? { vit: { ...info.vit, imageSize: info.imageSize } } : {}),
      output: info.kind === 'finetune' ? 'logits' : 'features',
      imageSize: info.imageSize,
      normalization: { mean: info.mean, std: info.std, channelOrder: info.channelOrder },
      tensors,
      metadata: {
        'cass.method': info.method,
        'cass.step': String(info.step),
        ...(info.kind === 'finetune'
          ? { 'cass.scoring': info.scoring, 'cass.class_names': JSON.stringify(info.classNames) }
          : {}),
      },
    })
    writeOutputFile(out, bytes)
    return out
  } finally {
    rmSync(scratch, { recursive: true, force: true })
    await model.close()
  }
}
