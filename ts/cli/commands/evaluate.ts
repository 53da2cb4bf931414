/** `cass evaluate`: the metrics of a fine-tuned checkpoint on one split. */
import { parseArgs } from 'node:util'

import { evaluate } from '../../index.js'
import { DATA_OPTIONS, UsageError, checkpointImageSize, load, need, outputFile } from '../shared.js'
import { writeOutputFile } from '../../io/output-file.js'

export const usage = `cass evaluate --checkpoint DIR --data PATH [--split test|val|train] [--out FILE.json]
`

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...DATA_OPTIONS,
      checkpoint: { type: 'string' },
      split: { type: 'string', default: 'test' },
      out: { type: 'string' },
      device: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help) return void process.stdout.write(usage)
  const checkpoint = need(values.checkpoint, '--checkpoint DIR', 'evaluate')
  if (values.out) outputFile(values.out)
  const size = checkpointImageSize(checkpoint)
  const ds = await load('evaluate', values, size)
  const split = values.split as 'train' | 'val' | 'test'
  if (!['train', 'val', 'test'].includes(split)) throw new UsageError('--split must be train, val or test')
  const data = ds.splits[split]
  if (data.indices.length === 0) throw new UsageError(`the data has no ${split} split`)
  const metrics = await evaluate({ checkpoint, images: { cacheFile: ds.cacheFile }, data, device: values.device as never })
  const text = `${JSON.stringify({ split, classes: ds.classes, metrics }, null, 2)}\n`
  if (values.out) writeOutputFile(values.out, text)
  process.stdout.write(text)
}
