/** `cass experiment`: the paper's comparison (CASS, DINO, random init) on the user's data, with a report. */
import path from 'node:path'
import { parseArgs } from 'node:util'

import { type FinetuneInput, PRESETS, type PresetName, type PretrainInput } from '../../config.js'
import { type ExperimentOptions, runExperiment } from '../../experiment/run.js'
import type { MethodName, Network } from '../../experiment/results.js'
import { METHOD_NAMES, isMethodRef } from '../../methods/info.js'
import { comparisonsOf, formatComparisons } from '../../report/verdict.js'
import {
  DICOM_USAGE,
  UsageError,
  dataOptions,
  fractionsFlag,
  int,
  interruptible,
  need,
  outputFolder,
  readConfig,
} from '../shared.js'

export const usage = `cass experiment --data PATH [--methods cass,dino,vicreg] [--archs cnn,vit]
                [--fractions 0.01,0.1,1] [--seeds 3] [--preset cpu-small|paper] [--out DIR]

  Pre-trains each method on the training images without labels (CASS once for both networks,
  DINO and VICReg once per network; --methods defaults to cass,dino), fine-tunes each network from each method and from random weights at
  each label fraction and seed (the same labelled images for every start), evaluates on the test
  split, probes frozen features with kNN, and writes DIR/results.json and DIR/report.html (open
  it in a browser; \`cass report DIR\` re-renders it), and prints each start against random init
  with a verdict that respects seed noise. Stopped (Ctrl-C) or killed, the same command continues
  where it stopped.

  --format F, --cache-dir DIR   as for cass pretrain
${DICOM_USAGE}  --device cpu|cuda|wgpu|auto   (default auto, as for cass pretrain)
  --batch-sizes 8,16,32         robustness sweep: pre-train again at these batch sizes
  --epochs-sweep 1,3            robustness sweep: pre-train again for these epochs
  --pretrain-images N           unlabelled images (default 0: every training image)
  --pretrain-epochs N           (default: the preset's)
  --pool N, --val N, --test N   labelled pool, validation and test images (0: all)
  --max-epochs N                fine-tuning epochs (default: the preset's; early stopping)
  --seeds-at-full N             seeds at fraction 1, where every seed sees the same images
                                (default: --seeds)
  --k N                         neighbours of the kNN probe (default 20)
  --method-config NAME=FILE.json
                                a method's config fields (the API's names: cass as for cass
                                pretrain, dino and vicreg as for their configs, finetune for
                                every fine-tuning) over the preset; or a variant METHOD@TAG's fields over
                                its method's, to list in --methods (cass,cass@hinge,dino);
                                repeatable, part of the experiment's identity
  --imagenet-cnn REF, --imagenet-vit REF
                                also fine-tune from these weights, the paper's start (imagenet,
                                hf:owner/name or a timm-named file); the network must have the
                                file's shape (--preset paper)
`

function listFlag<T extends string>(v: string, flag: string, allowed: readonly T[]): T[] {
  const items = v.split(',').map((s) => s.trim())
  const bad = items.find((s) => !allowed.includes(s as T))
  if (bad !== undefined || items.length === 0)
    throw new UsageError(`--${flag} takes a comma-separated list of ${allowed.join(', ')}, not "${v}"`)
  return [...new Set(items)] as T[]
}

/**
 * `--method-config NAME=FILE` flags as the experiment's overrides: `cass` (the pre-training
 * config), `dino`, or `finetune`; each file a JSON object, read bounded.
 */
function methodConfigs(
  flags: string[],
): Pick<ExperimentOptions, 'pretrain' | 'dino' | 'finetune' | 'variants' | 'methodConfigs'> {
  const out: Record<string, Record<string, unknown>> = {}
  const names = [...METHOD_NAMES, 'finetune']
  for (const flag of flags) {
    const at = flag.indexOf('=')
    const name = flag.slice(0, at)
    if (at < 1 || !(names.includes(name) || (name.includes('@') && isMethodRef(name))))
      throw new UsageError(
        `--method-config takes NAME=FILE.json with NAME one of ${names.join(', ')} or a variant METHOD@TAG (tag: a-z, 0-9, -), not "${flag}"`,
      )
    if (Object.hasOwn(out, name)) throw new UsageError(`--method-config names ${name} twice`)
    out[name] = readConfig(flag.slice(at + 1))
  }
  const variants = Object.fromEntries(Object.entries(out).filter(([name]) => name.includes('@')))
  const others = Object.fromEntries(
    Object.entries(out).filter(([name]) => !['cass', 'dino', 'finetune'].includes(name) && !name.includes('@')),
  )
  return {
    ...(out.cass ? { pretrain: out.cass as PretrainInput } : {}),
    ...(out.dino ? { dino: out.dino as ExperimentOptions['dino'] } : {}),
    ...(out.finetune ? { finetune: out.finetune as FinetuneInput } : {}),
    ...(Object.keys(variants).length ? { variants } : {}),
    ...(Object.keys(others).length ? { methodConfigs: others } : {}),
  }
}

function intsFlag(v: string | undefined, flag: string): number[] | undefined {
  if (v === undefined) return undefined
  return v.split(',').map((s) => {
    const n = int(s, flag)!
    if (n < 1) throw new UsageError(`--${flag} takes positive integers, not "${v}"`)
    return n
  })
}

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      data: { type: 'string' },
      format: { type: 'string' },
      'cache-dir': { type: 'string' },
      window: { type: 'string' },
      windows: { type: 'string' },
      frames: { type: 'string' },
      'group-by': { type: 'string' },
      methods: { type: 'string', default: 'cass,dino' },
      archs: { type: 'string', default: 'cnn,vit' },
      fractions: { type: 'string', default: '0.01,0.1,1' },
      seeds: { type: 'string', default: '3' },
      'seeds-at-full': { type: 'string' },
      preset: { type: 'string', default: 'cpu-small' },
      out: { type: 'string', default: 'cass-experiment' },
      device: { type: 'string' },
      'batch-sizes': { type: 'string' },
      'epochs-sweep': { type: 'string' },
      'pretrain-images': { type: 'string', default: '0' },
      'pretrain-epochs': { type: 'string' },
      pool: { type: 'string', default: '0' },
      val: { type: 'string', default: '0' },
      test: { type: 'string', default: '0' },
      'max-epochs': { type: 'string' },
      k: { type: 'string' },
      'imagenet-cnn': { type: 'string' },
      'imagenet-vit': { type: 'string' },
      'method-config': { type: 'string', multiple: true },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help) return void process.stdout.write(usage)
  const data = need(values.data, '--data PATH', 'experiment')
  if (values.preset !== 'cpu-small' && values.preset !== 'paper') throw new UsageError('--preset must be cpu-small or paper')
  const preset = values.preset as PresetName
  const seeds = int(values.seeds, 'seeds')!
  const seedsAtFull = int(values['seeds-at-full'], 'seeds-at-full')
  if (seeds < 1 || (seedsAtFull !== undefined && seedsAtFull < 1))
    throw new UsageError('--seeds and --seeds-at-full must be at least 1')
  const count = (flag: 'pretrain-images' | 'pool' | 'val' | 'test') => {
    const n = int(values[flag], flag)!
    if (n < 0) throw new UsageError(`--${flag} must be 0 (all) or more`)
    return n
  }
  const configs = methodConfigs(values['method-config'] ?? [])
  const methods = listFlag<MethodName>(values.methods, 'methods', [
    ...METHOD_NAMES,
    ...Object.keys(configs.variants ?? {}),
  ] as MethodName[])
  // A config for a method the experiment does not run is a mistake (a typo in --methods), not a no-op.
  const configured = [
    ...(configs.pretrain ? ['cass'] : []),
    ...(configs.dino ? ['dino'] : []),
    ...Object.keys(configs.methodConfigs ?? {}),
    ...Object.keys(configs.variants ?? {}),
  ]
  const unused = configured.find((name) => !methods.includes(name as MethodName))
  if (unused) throw new UsageError(`--method-config names ${unused}, which --methods (${methods.join(',')}) does not run`)
  const signal = interruptible()
  const results = await runExperiment({
    data,
    format: values.format as never,
    ...dataOptions(values),
    cacheDir: values['cache-dir'],
    datasetName: path.basename(path.resolve(data)),
    outDir: outputFolder(values.out),
    methods,
    networks: listFlag<Network>(values.archs, 'archs', ['cnn', 'vit']),
    fractions: fractionsFlag(values.fractions),
    seeds,
    seedsAtFull,
    preset,
    device: values.device as never,
    batchSizes: intsFlag(values['batch-sizes'], 'batch-sizes'),
    epochsSweep: intsFlag(values['epochs-sweep'], 'epochs-sweep'),
    sizes: {
      pretrainImages: count('pretrain-images'),
      pretrainEpochs: int(values['pretrain-epochs'], 'pretrain-epochs') ?? (PRESETS[preset].pretrain.epochs as number),
      poolImages: count('pool'),
      valImages: count('val'),
      testImages: count('test'),
      finetuneMaxEpochs: int(values['max-epochs'], 'max-epochs') ?? (PRESETS[preset].finetune.maxEpochs as number),
    },
    k: int(values.k, 'k'),
    ...configs,
    imagenet: {
      ...(values['imagenet-cnn'] ? { cnn: values['imagenet-cnn'] } : {}),
      ...(values['imagenet-vit'] ? { vit: values['imagenet-vit'] } : {}),
    },
    signal,
  })
  // Stopped (Ctrl-C, SIGTERM): the same exit code as every other stopped command.
  if (signal.aborted) process.exit(130)
  process.stdout.write(
    `\nfine-tuning: test macro-F1, mean (min-max) over seeds, against random init\n\n${formatComparisons(comparisonsOf(results))}\n`,
  )
}
