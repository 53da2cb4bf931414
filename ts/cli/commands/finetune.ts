/** `cass finetune`: fine-tunes one network on a fraction of the labels, then tests it. */
import path from 'node:path'
import { parseArgs } from 'node:util'

import { sampleFraction } from '../../data/splits.js'
import { checkFinetuneOutDir } from '../../inputs.js'
import { type FinetuneInput, evaluate, finetune, inspectCheckpoint, parseFinetuneConfig } from '../../index.js'
import { progressReporter } from '../../progress.js'
import { DATA_OPTIONS, UsageError, dataOptions, int, interruptible, load, need, outputFolder, readConfig } from '../shared.js'
import { writeInputRecord } from '../../io/input-record.js'
import { writeOutputFile } from '../../io/output-file.js'

export const usage = `cass finetune --data PATH --arch cnn|vit --labels F --out DIR (--from DIR | --weights REF | --init random) [options]

  --from DIR          a pre-training output directory
  --weights REF       or start from weights of the network: imagenet, hf:owner/name or a
                      timm-named file (the paper's start; the network must have its shape)
  --init random       start from random weights instead (the baseline)
  --arch cnn|vit      which network
  --labels F          fraction of the training labels: 0.01, 0.1, 1 ... (stratified, seeded)
  --preset, --config, --epochs N (max epochs), --batch-size N, --device, --seed N
  --out DIR           best checkpoint in DIR/best, test metrics in DIR/metrics.json
  --overwrite         replace a fine-tuned network already in --out (else that is an error)
  plus the data options of pretrain
`

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...DATA_OPTIONS,
      out: { type: 'string' },
      from: { type: 'string' },
      weights: { type: 'string' },
      init: { type: 'string' },
      arch: { type: 'string' },
      labels: { type: 'string', default: '1' },
      preset: { type: 'string' },
      config: { type: 'string' },
      epochs: { type: 'string' },
      'batch-size': { type: 'string' },
      device: { type: 'string' },
      seed: { type: 'string' },
      overwrite: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help) return void process.stdout.write(usage)
  const out = outputFolder(need(values.out, '--out DIR', 'finetune'))
  checkFinetuneOutDir(out, { overwrite: values.overwrite }) // before minutes of decoding
  const starts = [values.from, values.weights, values.init].filter((v) => v !== undefined).length
  if (starts === 0 || (values.init !== undefined && values.init !== 'random'))
    throw new UsageError('finetune needs --from DIR, --weights REF or --init random')
  if (starts > 1) throw new UsageError('give one of --from, --weights and --init')
  const fraction = Number(values.labels)
  if (!(fraction > 0 && fraction <= 1)) throw new UsageError(`--labels must be a fraction in (0, 1], got "${values.labels}"`)
  const base = readConfig(values.config)
  const input = {
    ...base,
    ...(values.preset ? { preset: values.preset } : {}),
    ...(values.arch ? { arch: values.arch } : {}),
    ...(values.epochs ? { maxEpochs: int(values.epochs, 'epochs') } : {}),
    ...(values['batch-size'] ? { batchSize: int(values['batch-size'], 'batch-size') } : {}),
    ...(values.device ? { device: values.device } : {}),
    ...(values.seed ? { seed: int(values.seed, 'seed') } : {}),
  } as FinetuneInput
  const config = parseFinetuneConfig({ numClasses: 2, ...input })
  const ds = await load('finetune', values, config.imageSize, config.seed)
  input.numClasses ??= ds.classes.length
  const { train, val, test } = ds.splits
  const picked = sampleFraction(train.indices, ds.labels, fraction, config.seed, ds.groups)
  const r = await finetune({
    config: input,
    from: values.from,
    weights: values.weights,
    cacheDir: values['cache-dir'] as string | undefined,
    images: { cacheFile: ds.cacheFile },
    train: { indices: picked, labels: picked.map((i) => ds.labels[i]) },
    val: val.indices.length ? val : train,
    outDir: out,
    overwrite: values.overwrite,
    // Kept in the checkpoint: `cass predict` and a loaded model answer with these names.
    classNames: input.numClasses === ds.classes.length ? ds.classes : undefined,
    signal: interruptible(),
    onProgress: progressReporter(`finetune ${config.arch} ${fraction * 100}%`),
  })
  const testSet = test.indices.length ? test : val
  const metrics = await evaluate({
    checkpoint: r.checkpoint,
    images: { cacheFile: ds.cacheFile },
    data: testSet,
    device: config.device,
  })
  const result = {
    arch: config.arch,
    labels: fraction,
    labelledImages: picked.length,
    // The method of the checkpoint started from (`cass`, `dino`), the weights, or `random`.
    init: values.from
      ? inspectCheckpoint(values.from).method.replace(/-pretrain$/, '')
      : values.weights
        ? `weights ${values.weights}`
        : 'random',
    bestEpoch: r.bestEpoch,
    bestValLoss: r.bestValLoss,
    split: test.indices.length ? 'test' : 'val',
    classes: ds.classes,
    metrics,
  }
  writeOutputFile(path.join(out, 'metrics.json'), `${JSON.stringify(result, null, 2)}\n`)
  writeInputRecord(out, dataOptions(values).dicom)
  process.stdout.write(
    `${JSON.stringify({ checkpoint: r.checkpoint, macroF1: metrics.macroF1, balancedAccuracy: metrics.balancedAccuracy, accuracy: metrics.accuracy })}\n`,
  )
  if (r.status === 'cancelled') process.exit(130)
}
