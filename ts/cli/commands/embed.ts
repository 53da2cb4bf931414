/** `cass embed`: the embeddings of a dataset, as a float32 .npy and an index of image names. */
import path from 'node:path'
import { parseArgs } from 'node:util'

import { embed } from '../../index.js'
import { DATA_OPTIONS, UsageError, checkpointImageSize, load, need, outputFolder } from '../shared.js'
import { makeDir } from '../../io/make-dir.js'
import { npy } from '../../io/npy.js'
import { writeOutputFile } from '../../io/output-file.js'

export const usage = `cass embed --checkpoint DIR --data PATH --out DIR [--arch cnn|vit] [--split all|train|val|test]

  Writes DIR/embeddings.npy (float32 [n, dim]) and DIR/index.json (image names).
`

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...DATA_OPTIONS,
      checkpoint: { type: 'string' },
      arch: { type: 'string' },
      split: { type: 'string', default: 'all' },
      out: { type: 'string' },
      device: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help) return void process.stdout.write(usage)
  const checkpoint = need(values.checkpoint, '--checkpoint DIR', 'embed')
  const out = outputFolder(need(values.out, '--out DIR', 'embed'))
  const ds = await load('embed', values, checkpointImageSize(checkpoint))
  const split = values.split as string
  const indices = split === 'all' ? undefined : ds.splits[split as 'train']?.indices
  if (split !== 'all' && !indices) throw new UsageError('--split must be all, train, val or test')
  const e = await embed({
    checkpoint,
    arch: values.arch as 'cnn' | 'vit' | undefined,
    images: { cacheFile: ds.cacheFile },
    indices,
    device: values.device as never,
  })
  makeDir(out)
  writeOutputFile(path.join(out, 'embeddings.npy'), npy(e.features, [e.count, e.dim]))
  const names = (indices ?? ds.names.map((_, i) => i)).map((i) => ds.names[i])
  writeOutputFile(path.join(out, 'index.json'), `${JSON.stringify({ names, dim: e.dim }, null, 2)}\n`)
  process.stdout.write(`${JSON.stringify({ count: e.count, dim: e.dim, out })}\n`)
}
