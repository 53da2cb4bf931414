/**
 * Do the maps point at the object? On MNIST the object is the digit's strokes: for each test
 * image, the share of a map's mass that falls on stroke pixels (grey value above 127 at the
 * network's input size), against the share a uniform map would put there (the strokes' area).
 * A map that looks at the digit scores well above its uniform share; one that looks at the
 * background scores below it.
 *
 *   node --import tsx bench/explain-focus.ts [--experiment cass-demo] [--images 500]
 *        [--cache-dir DIR] [--out bench/results/FILE.json]
 *
 * The experiment folder is one `cass demo` (or `cass experiment` on MNIST) wrote; each network's
 * best start is the one its report explains (see `ts/experiment/explanations.ts`). The images
 * are the first N of the dataset's test split, which no arm trained on.
 */
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'

import { loadDataset } from '../ts/data/dataset.js'
import { mnistDir } from '../ts/demo.js'
import { bestArm } from '../ts/experiment/explanations.js'
import { armTag } from '../ts/experiment/plan.js'
import type { ExplainMethod } from '../ts/index.js'
import { loadModel } from '../ts/index.js'
import { readResults } from '../ts/report/write.js'
import { CachedPixels } from '../ts/cli/cached-pixels.js'

const { values } = parseArgs({
  options: {
    experiment: { type: 'string', default: 'cass-demo' },
    images: { type: 'string', default: '500' },
    'cache-dir': { type: 'string' },
    out: { type: 'string' },
  },
})
const dir = path.resolve(values.experiment)
const results = readResults(path.join(dir, 'results.json'))
const n = Number(values.images)

const quantiles = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]
  return { p10: q(0.1), median: q(0.5), p90: q(0.9) }
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length

async function main() {
  const rows = []
  for (const network of results.settings.networks) {
    const arm = bestArm(results.arms, network)
    if (!arm) continue
    const model = await loadModel(path.join(dir, 'finetune', armTag(arm)), { device: 'cpu' })
    const side = model.info.imageSize
    const ds = await loadDataset(mnistDir(), { size: side, cacheDir: values['cache-dir'] })
    const indices = ds.splits.test.indices.slice(0, n)
    const cache = new CachedPixels(ds.cacheFile, side)
    const pixels = cache.read(indices)
    cache.close()
    // The CNN at each stage whose grid is finer than 1 x 1, the ViT with both of its methods.
    const runs: { method: ExplainMethod; stage?: 1 | 2 | 3 | 4 }[] =
      network === 'vit'
        ? [{ method: 'gradcam' }, { method: 'attention-rollout' }]
        : (['gradcam', 'gradcam++', 'layercam'] as const).flatMap((method) =>
            ([1, 2, 3, 4] as const).filter((s) => Math.ceil(side / 2 ** (s + 1)) > 1).map((stage) => ({ method, stage })),
          )
    for (const { method, stage } of runs) {
      const maps = await model.explain({ pixels, count: indices.length, height: side, width: side }, { method, stage })
      const share: number[] = []
      const uniform: number[] = []
      maps.forEach((m, k) => {
        let inside = 0
        let total = 0
        let strokes = 0
        for (let p = 0; p < side * side; p++) {
          const on = pixels[(k * side * side + p) * 3] > 127
          total += m.map[p]
          if (on) {
            inside += m.map[p]
            strokes++
          }
        }
        if (total > 0) {
          share.push(inside / total)
          uniform.push(strokes / (side * side))
        }
      })
      const row = {
        network,
        start: arm.start,
        fraction: arm.fraction,
        method,
        // The CNN's stage (its map's grid: 32 px / 2^(stage + 1)); the ViT's maps are on its patches.
        stage: stage ?? null,
        images: share.length,
        meanShareOnStrokes: mean(share),
        meanUniformShare: mean(uniform),
        ratio: mean(share) / mean(uniform),
        imagesAboveUniform: share.filter((s, i) => s > uniform[i]).length,
        share: quantiles(share),
      }
      rows.push(row)
      console.log(JSON.stringify(row))
    }
    await model.close()
  }
  if (values.out)
    writeFileSync(values.out, `${JSON.stringify({ experiment: dir, date: new Date().toISOString(), rows }, null, 1)}\n`)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
