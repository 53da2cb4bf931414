/** `cass explain`: where a network looked, as PNG overlays, raw maps (.npy) and an index. */
import path from 'node:path'
import { parseArgs } from 'node:util'

import { overlay, rgbPng } from '../../explain/overlay.js'
import { EXPLAIN_METHODS, type ExplainMethod, type ExplainOptions, inspectCheckpoint, loadModel } from '../../index.js'
import { makeDir } from '../../io/make-dir.js'
import { npy } from '../../io/npy.js'
import { writeOutputFile } from '../../io/output-file.js'
import { CachedPixels } from '../cached-pixels.js'
import { DATA_OPTIONS, UsageError, int, interruptible, load, need, outputFolder } from '../shared.js'

export const usage = `cass explain --checkpoint DIR --data PATH --out DIR [options]

  Heat maps of where a network looked, per image: DIR/NNNNN.png (the image at the network's
  input size with the map blended over it in the jet colours, at half weight), DIR/NNNNN.npy
  (the map itself, float32 [size, size] in [0, 1]) and DIR/index.json (per image: its name,
  label, the class explained or predicted and its score). NNNNN is the image's position in
  the dataset.

  --checkpoint DIR      a fine-tuning output folder; or a pre-training one with --arch vit and
                        --method attention-rollout (a backbone has no class to explain)
  --data PATH           a folder, CSV, .npz, IDX or DICOM source, as for pretrain
  --out DIR             where the files go (created; files of the same names are replaced)
  --method M            gradcam (default), gradcam++, layercam, or attention-rollout (ViT)
  --target CLASS        the class to explain, by name or index (default: the predicted one)
  --head-fusion F       rollout: mean (default), max or min over the heads
  --discard-ratio R     rollout: share of the weakest attention links dropped, 0 <= R < 1
  --stage S             CNN: the ResNet stage explained, 1-4 (default: the deepest whose grid
                        is at least 4 x 4: the last at 224 px, the second at 32 px)
  --arch cnn|vit        which network of a pre-training checkpoint
  --split S             all (default), train, val or test
  --limit N             the first N images of the split only
  --scale K             overlays enlarged K times (nearest neighbour; default 1)
  --device D            cpu, cuda, wgpu or auto (default)
  plus the data options of pretrain
`

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...DATA_OPTIONS,
      checkpoint: { type: 'string' },
      out: { type: 'string' },
      method: { type: 'string', default: 'gradcam' },
      target: { type: 'string' },
      'head-fusion': { type: 'string' },
      'discard-ratio': { type: 'string' },
      stage: { type: 'string' },
      arch: { type: 'string' },
      split: { type: 'string', default: 'all' },
      limit: { type: 'string' },
      scale: { type: 'string' },
      device: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help) return void process.stdout.write(usage)
  const checkpoint = need(values.checkpoint, '--checkpoint DIR', 'explain')
  const out = outputFolder(need(values.out, '--out DIR', 'explain'))
  const method = values.method as ExplainMethod
  if (!EXPLAIN_METHODS.includes(method)) throw new UsageError(`--method must be ${EXPLAIN_METHODS.join(', ')}`)
  const split = values.split as string
  if (!['all', 'train', 'val', 'test'].includes(split)) throw new UsageError('--split must be all, train, val or test')
  const limit = int(values.limit, 'limit')
  const scale = int(values.scale, 'scale') ?? 1
  if (scale > 16) throw new UsageError('--scale must be at most 16')
  const fusion = values['head-fusion']
  if (fusion !== undefined && !['mean', 'max', 'min'].includes(fusion))
    throw new UsageError('--head-fusion must be mean, max or min')
  const ratio = values['discard-ratio'] === undefined ? undefined : Number(values['discard-ratio'])
  if (ratio !== undefined && !(ratio >= 0 && ratio < 1)) throw new UsageError('--discard-ratio must be at least 0 and below 1')
  const stage = int(values.stage, 'stage')
  if (stage !== undefined && stage > 4) throw new UsageError('--stage must be 1, 2, 3 or 4')
  const arch = values.arch as 'cnn' | 'vit' | undefined
  if (arch !== undefined && arch !== 'cnn' && arch !== 'vit') throw new UsageError('--arch must be cnn or vit')
  if (inspectCheckpoint(checkpoint).kind === 'pretrain' && method !== 'attention-rollout') {
    throw new UsageError(
      `--checkpoint ${checkpoint} is a pre-training checkpoint: its networks have no class to explain with ${method} (fine-tune one, or use --arch vit --method attention-rollout)`,
    )
  }
  const model = await loadModel(checkpoint, { device: values.device as never, ...(arch ? { arch } : {}) })
  const signal = interruptible()
  try {
    const info = model.info
    const target = values.target === undefined ? undefined : /^\d+$/.test(values.target) ? Number(values.target) : values.target
    const options: ExplainOptions = {
      method,
      ...(target !== undefined ? { target } : {}),
      ...(fusion !== undefined ? { headFusion: fusion as 'mean' } : {}),
      ...(ratio !== undefined ? { discardRatio: ratio } : {}),
      ...(stage !== undefined ? { stage: stage as 1 } : {}),
    }
    const ds = await load('explain', values, info.imageSize)
    const all = split === 'all' ? ds.names.map((_, i) => i) : ds.splits[split as 'train'].indices
    const indices = all.slice(0, limit ?? all.length)
    makeDir(out)
    const side = info.imageSize
    const cache = new CachedPixels(ds.cacheFile, side)
    const rows: object[] = []
    const width = String(Math.max(5, String(ds.names.length - 1).length))
    const chunkSize = 16
    try {
      for (let start = 0; start < indices.length; start += chunkSize) {
        if (signal.aborted) {
          process.stderr.write(`explain: stopped after ${start} of ${indices.length} images; index.json not written\n`)
          process.exit(130)
        }
        const chunk = indices.slice(start, start + chunkSize)
        const pixels = cache.read(chunk)
        const maps = await model.explain({ pixels, count: chunk.length, height: side, width: side }, options)
        for (const [k, e] of maps.entries()) {
          const i = chunk[k]
          const stem = String(i).padStart(Number(width), '0')
          const rgb = pixels.subarray(k * side * side * 3, (k + 1) * side * side * 3)
          writeOutputFile(path.join(out, `${stem}.png`), await rgbPng(overlay(rgb, e.map), side, side, scale))
          writeOutputFile(path.join(out, `${stem}.npy`), npy(e.map, [side, side]))
          const label = ds.labels[i] >= 0 ? (ds.classes[ds.labels[i]] ?? String(ds.labels[i])) : null
          rows.push({
            image: ds.names[i],
            ...(label !== null ? { label } : {}),
            overlay: `${stem}.png`,
            map: `${stem}.npy`,
            class: e.className,
            score: e.score,
          })
        }
        process.stderr.write(`explain ${Math.min(start + chunkSize, indices.length)}/${indices.length}\n`)
      }
    } finally {
      cache.close()
    }
    const index = { method, arch: info.arch, checkpoint: path.resolve(checkpoint), size: side, ...options, images: rows }
    writeOutputFile(path.join(out, 'index.json'), `${JSON.stringify(index, null, 2)}\n`)
    process.stdout.write(`${JSON.stringify({ out, images: rows.length, method, arch: info.arch })}\n`)
  } finally {
    await model.close()
  }
}
