/** `cass predict`: a fine-tuned network's class for every image of a dataset, as CSV or JSON lines. */
import { parseArgs } from 'node:util'

import { writeOutputFile } from '../../io/output-file.js'
import { inspectCheckpoint, loadModel } from '../../index.js'
import { CachedPixels } from '../cached-pixels.js'
import { DATA_OPTIONS, UsageError, int, interruptible, load, need, outputFile } from '../shared.js'

export const usage = `cass predict --checkpoint DIR --data PATH [--out FILE.csv|FILE.jsonl] [options]

  One row per image: its name, its label when the data has one, the predicted class and one
  score per class (softmax for cross-entropy, one-vs-rest sigmoid for the focal losses).
  Images are decoded and resized as the training data was; unlabelled folders work.

  --checkpoint DIR    a fine-tuning output folder (or its best/ folder)
  --data PATH         a folder, CSV, .npz or IDX file, as for pretrain
  --out FILE          .jsonl for JSON lines, anything else CSV (default: CSV on stdout)
  --split S           all (default), train, val or test
  --batch-size N      images per engine call (default 32)
  --device D          cpu, cuda, wgpu or auto (default)
  plus the data options of pretrain
`

/** A CSV field: quoted, quotes doubled, and a leading = + - @ neutralised for spreadsheets. */
const csvField = (s: string) => `"${(/^[=+\-@\t\r]/.test(s) ? `'${s}` : s).replaceAll('"', '""')}"`

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...DATA_OPTIONS,
      checkpoint: { type: 'string' },
      out: { type: 'string' },
      split: { type: 'string', default: 'all' },
      'batch-size': { type: 'string' },
      device: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help) return void process.stdout.write(usage)
  const checkpoint = need(values.checkpoint, '--checkpoint DIR', 'predict')
  const out = values.out === undefined ? undefined : outputFile(values.out)
  const split = values.split as string
  if (!['all', 'train', 'val', 'test'].includes(split)) throw new UsageError('--split must be all, train, val or test')
  const batchSize = int(values['batch-size'], 'batch-size') ?? 32
  const device = values.device as 'cpu' | 'cuda' | 'wgpu' | 'auto' | undefined
  if (inspectCheckpoint(checkpoint).kind === 'pretrain') {
    throw new UsageError(
      `--checkpoint ${checkpoint} is a pre-training checkpoint: its networks have no classifier (fine-tune one, or use cass embed)`,
    )
  }
  const model = await loadModel(checkpoint, { device, maxBatch: Math.min(Math.max(batchSize, 1), 1024) })
  const signal = interruptible()
  try {
    const info = model.info
    const ds = await load('predict', values, info.imageSize)
    const indices = split === 'all' ? ds.names.map((_, i) => i) : ds.splits[split as 'train'].indices
    const classes = info.classNames.length ? info.classNames : Array.from({ length: info.numClasses }, (_, i) => String(i))
    const labelled = ds.labels.some((l) => l >= 0)
    const jsonl = out?.endsWith('.jsonl') ?? false
    const lines: string[] = []
    if (!jsonl) {
      lines.push(
        ['image', ...(labelled ? ['label'] : []), 'predicted', ...classes.map((c) => `score_${c}`)].map(csvField).join(','),
      )
    }
    const side = info.imageSize
    const cache = new CachedPixels(ds.cacheFile, side)
    const tty = process.stderr.isTTY
    let lastReport = Date.now()
    try {
      for (let start = 0; start < indices.length; start += batchSize) {
        if (signal.aborted) {
          process.stderr.write(`predict: stopped after ${start} of ${indices.length} images; nothing written\n`)
          process.exit(130)
        }
        const chunk = indices.slice(start, start + batchSize)
        const pixels = cache.read(chunk)
        const predictions = await model.predict({ pixels, count: chunk.length, height: side, width: side }, { batchSize })
        predictions.forEach((p, k) => {
          const i = chunk[k]
          const label = ds.labels[i] >= 0 ? (ds.classes[ds.labels[i]] ?? String(ds.labels[i])) : ''
          if (jsonl) {
            lines.push(
              JSON.stringify({
                image: ds.names[i],
                ...(labelled ? { label } : {}),
                predicted: p.className,
                scores: Object.fromEntries(classes.map((c, j) => [c, p.scores[j]])),
              }),
            )
          } else {
            lines.push(
              [
                csvField(ds.names[i]),
                ...(labelled ? [csvField(label)] : []),
                csvField(p.className),
                ...Array.from(p.scores, (s) => String(s)),
              ].join(','),
            )
          }
        })
        const done = Math.min(start + batchSize, indices.length)
        if (tty) process.stderr.write(`\r\x1b[2Kpredict ${done}/${indices.length}`)
        else if (Date.now() - lastReport > 30_000 || done === indices.length) {
          process.stderr.write(`predict ${done}/${indices.length}\n`)
          lastReport = Date.now()
        }
      }
    } finally {
      cache.close()
    }
    if (tty) process.stderr.write('\n')
    const text = `${lines.join('\n')}\n`
    if (out === undefined) process.stdout.write(text)
    else {
      writeOutputFile(out, text)
      process.stderr.write(`${JSON.stringify({ out, images: indices.length, classes })}\n`)
    }
  } finally {
    await model.close()
  }
}
