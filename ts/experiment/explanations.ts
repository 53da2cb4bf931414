/**
 * The experiment's last unit: where each network looked. For each network the start with the
 * best mean test macro-F1 at the largest label fraction is taken (its seed-0 fine-tuning), a
 * few test images are drawn with a fixed seed, half that the first network classified correctly
 * and half wrongly where the test split has both, and each network's Grad-CAM map is drawn over
 * them. The pictures go into `results.json` as small PNGs (base64), so the report stays one
 * self-contained page rendered from that file alone.
 */
import path from 'node:path'

import type { DeviceName } from '../config.js'
import { seededRandom, shuffle } from '../data/splits.js'
import type { LoadedDataset } from '../data/dataset.js'
import { overlay, rgbPng } from '../explain/overlay.js'
import { type Model, loadModel } from '../model.js'
import { CachedPixels } from '../cli/cached-pixels.js'
import { armTag } from './plan.js'
import type { ArmRecord, ExperimentResults, ExplanationsRecord, Network } from './results.js'

/** Images in the grid, and how many of them should be wrong predictions where there are some. */
const IMAGES = 6
const WRONG = 3
const SEED = 2303

/** The arm whose checkpoint explains `network`: best mean test macro-F1 at the largest fraction. */
export function bestArm(arms: readonly ArmRecord[], network: Network): ArmRecord | undefined {
  const mine = arms.filter((a) => a.network === network && !a.sweep)
  if (mine.length === 0) return undefined
  const fraction = Math.max(...mine.map((a) => a.fraction))
  const byStart = new Map<string, ArmRecord[]>()
  for (const a of mine.filter((a) => a.fraction === fraction)) byStart.set(a.start, [...(byStart.get(a.start) ?? []), a])
  let best: ArmRecord[] | undefined
  let bestF1 = -Infinity
  for (const group of byStart.values()) {
    const f1 = group.reduce((s, a) => s + a.test.macroF1, 0) / group.length
    if (f1 > bestF1) [best, bestF1] = [group, f1]
  }
  return best?.reduce((a, b) => (b.seed < a.seed ? b : a))
}

export async function explainBest(ctx: {
  out: string
  ds: LoadedDataset
  test: number[]
  results: ExperimentResults
  device: DeviceName
}): Promise<ExplanationsRecord | undefined> {
  const { ds, results } = ctx
  const chosen = results.settings.networks
    .map((network) => ({ network, arm: bestArm(results.arms, network) }))
    .filter((c): c is { network: Network; arm: ArmRecord } => c.arm !== undefined)
  if (chosen.length === 0 || ctx.test.length === 0) return undefined
  const models = new Map<Network, Model>()
  const side = (
    await Promise.all(
      chosen.map(async (c) => {
        const m = await loadModel(path.join(ctx.out, 'finetune', armTag(c.arm)), { device: ctx.device })
        models.set(c.network, m)
        return m.info.imageSize
      }),
    )
  )[0]
  const cache = new CachedPixels(ds.cacheFile, side)
  try {
    // Half right, half wrong by the first network, in a seeded order of the test split.
    const order = shuffle([...ctx.test], seededRandom(SEED))
    // Predicted a chunk at a time, only until both kinds can fill the grid: a large test split
    // (10,000 images at 224 px is 1.5 GB of pixels) is neither read whole nor predicted again.
    const first = models.get(chosen[0].network) as Model
    const right: number[] = []
    const wrong: number[] = []
    for (let at = 0; at < order.length && (right.length < IMAGES || wrong.length < IMAGES); at += 64) {
      const chunk = order.slice(at, at + 64)
      const predicted = await first.predict({ pixels: cache.read(chunk), count: chunk.length, height: side, width: side })
      chunk.forEach((i, k) => (predicted[k].classIndex === ds.labels[i] ? right : wrong).push(i))
    }
    const wrongTaken = wrong.slice(0, Math.max(WRONG, IMAGES - right.length))
    const picked = [...right.slice(0, IMAGES - wrongTaken.length), ...wrongTaken]
    const pixels = cache.read(picked)
    const input = { pixels, count: picked.length, height: side, width: side }
    const rgb = (k: number) => pixels.subarray(k * side * side * 3, (k + 1) * side * side * 3)
    const images: ExplanationsRecord['images'] = await Promise.all(
      picked.map(async (i, k) => ({
        index: i,
        name: ds.names[i],
        label: String(ds.classes[ds.labels[i]] ?? ds.labels[i]),
        png: (await rgbPng(rgb(k), side, side)).toString('base64'),
        maps: {},
      })),
    )
    for (const { network, arm } of chosen) {
      const maps = await (models.get(network) as Model).explain(input, { method: 'gradcam' })
      for (const [k, e] of maps.entries()) {
        images[k].maps[network] = {
          start: arm.start,
          predicted: e.className ?? '',
          score: e.score ?? NaN,
          correct: e.classIndex === ds.labels[picked[k]],
          png: (await rgbPng(overlay(rgb(k), e.map), side, side)).toString('base64'),
        }
      }
    }
    return { method: 'gradcam', seed: SEED, size: side, images }
  } finally {
    cache.close()
    await Promise.all([...models.values()].map((m) => m.close()))
  }
}
