/**
 * A trained network kept loaded in this process: `loadModel(checkpoint)` restores it once on an
 * engine thread, then `predict` and `embed` answer for new images until `close()`. The shape
 * Node users know from onnxruntime-node's `InferenceSession.create` / `run` and
 * transformers.js's `pipeline` / `dispose`.
 *
 * Inputs are decoded and resized exactly as the training data was (`data/decode.ts`), then
 * queued to the engine thread. Many concurrent calls are safe, and the engine computes the calls
 * queued at the same moment as one batch (see `crates/cass-node/src/model.rs`): a server whose
 * requests arrive one image at a time gets batches under load without any code of its own.
 */
import path from 'node:path'

import { deviceSchema } from './config.js'
import { dicomReadOptions } from './data/dataset.js'
import { type ImageSource, MAX_IMAGE_FILE_BYTES, decodeImage, readRegularFile } from './data/decode.js'
import { dicomImages, isDicomBytes } from './data/dicom/read.js'
import { ConfigError, DataError, fromNative } from './errors.js'
import type { Embeddings } from './events.js'
import type { InMemoryImages } from './inputs.js'
import { type InputRecord, readInputRecord } from './io/input-record.js'
import { native } from './native.js'
import type * as Binding from '../index.js'
import {
  EXPLAIN_METHODS,
  type ExplainOptions,
  type Explanation,
  type LoadModelOptions,
  type ModelInfo,
  type ModelInput,
  type Prediction,
  type RunOptions,
} from './model-types.js'

export * from './model-types.js'

/** The most images one engine call (and one batch) holds; the binding enforces it too. */
export const MAX_BATCH = 1024

const isInMemory = (x: ModelInput): x is InMemoryImages =>
  typeof x === 'object' && !(x instanceof Uint8Array) && !Array.isArray(x) && 'pixels' in x

/** Turns an input into one source per image, checking what can be checked without decoding. */
function sources(input: ModelInput, side: number): { count: number; at: (i: number) => ImageSource; exact?: Uint8Array } {
  if (typeof input === 'string' || input instanceof Uint8Array) return sources([input], side)
  if (Array.isArray(input)) {
    const list = input as readonly (string | Uint8Array)[]
    list.forEach((x, i) => {
      if (typeof x !== 'string' && !(x instanceof Uint8Array)) {
        throw new ConfigError(`invalid argument at \`input[${i}]\`: expected a file path or an encoded image`, `input[${i}]`, [])
      }
    })
    return {
      count: list.length,
      at: (i) => {
        const x = list[i]
        return typeof x === 'string' ? { file: path.resolve(x) } : { encoded: x }
      },
    }
  }
  if (isInMemory(input)) {
    const { pixels, count, height, width } = input
    for (const [k, v] of Object.entries({ count, height, width })) {
      if (!Number.isInteger(v) || v <= 0)
        throw new ConfigError(`invalid argument at \`input.${k}\`: expected a positive integer`, `input.${k}`, [])
    }
    const bytes = height * width * 3
    if (!(pixels instanceof Uint8Array) || pixels.length !== count * bytes) {
      throw new ConfigError(
        `invalid argument at \`input.pixels\`: expected ${count * bytes} bytes (count x height x width x 3)`,
        'input.pixels',
        [],
      )
    }
    return {
      count,
      at: (i) => ({ raw: pixels.subarray(i * bytes, (i + 1) * bytes), width, height, channels: 3 }),
      ...(height === side && width === side ? { exact: pixels } : {}),
    }
  }
  throw new ConfigError(
    'invalid argument at `input`: expected a path, an encoded image, a list of them, or { pixels, count, height, width }',
    'input',
    [],
  )
}

function checkInt(value: number | undefined, field: string, max: number, fallback: number): number {
  if (value === undefined) return fallback
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new ConfigError(`invalid argument at \`${field}\`: expected an integer from 1 to ${max}, got ${value}`, field, [])
  }
  return value
}

/** Engine answers joined over chunks: `rows x cols` values, and explanations' classes and scores. */
interface Answer {
  values: Float32Array
  rows: number
  cols: number
  classes?: number[]
  scores?: number[]
}

/** A loaded network; see the module's doc. */
export class Model {
  readonly info: ModelInfo
  readonly #native: Binding.BindingModel
  readonly #recorded: InputRecord

  /** @internal use {@link loadModel} */
  constructor(handle: Binding.BindingModel, recorded: InputRecord = {}) {
    this.#native = handle
    this.#recorded = recorded
    const i = handle.info
    this.info = {
      arch: i.arch as ModelInfo['arch'],
      kind: i.kind as ModelInfo['kind'],
      method: i.method,
      step: i.step,
      imageSize: i.imageSize,
      mean: i.mean as ModelInfo['mean'],
      std: i.std as ModelInfo['std'],
      channelOrder: i.channelOrder as ModelInfo['channelOrder'],
      scoring: i.scoring as ModelInfo['scoring'],
      numClasses: i.numClasses,
      classNames: i.classNames,
      featureDim: i.featureDim,
      ...(i.cnn ? { cnn: i.cnn } : {}),
      ...(i.vit ? { vit: i.vit } : {}),
    }
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#native.closed
  }

  /** Class scores of every image, with the predicted class. */
  async predict(input: ModelInput, options: RunOptions = {}): Promise<Prediction[]> {
    if (this.info.scoring === 'none') {
      throw new DataError(
        `this is the ${this.info.arch} backbone of a ${this.info.method} checkpoint: it has no classifier to predict with; use embed, or fine-tune it first`,
        'no-classifier',
      )
    }
    const { values, rows, cols } = await this.#run(input, options, (pixels, n) => this.#native.run('scores', pixels, n))
    const names = this.info.classNames
    return Array.from({ length: rows }, (_, r) => {
      const scores = values.slice(r * cols, (r + 1) * cols)
      let best = 0
      for (let c = 1; c < cols; c++) if (scores[c] > scores[best]) best = c
      return { scores, classIndex: best, className: names[best] ?? String(best) }
    })
  }

  /** Pooled embeddings (`forward_features`), row-major `[count, dim]`. */
  async embed(input: ModelInput, options: RunOptions = {}): Promise<Embeddings> {
    const { values, rows, cols } = await this.#run(input, options, (pixels, n) => this.#native.run('embed', pixels, n))
    return { dim: cols, count: rows, features: values }
  }

  /**
   * Heat maps of where the network looked, one per image at its input size (see
   * {@link ExplainMethod}). A backbone without a classifier has no class to explain: only a
   * ViT's `attention-rollout` works on it.
   */
  async explain(input: ModelInput, options: ExplainOptions = {}): Promise<Explanation[]> {
    const method = options.method ?? 'gradcam'
    if (!EXPLAIN_METHODS.includes(method)) {
      throw new ConfigError(
        `invalid argument at \`method\`: expected ${EXPLAIN_METHODS.join(', ')}, got ${String(method)}`,
        'method',
        [],
      )
    }
    const rollout = method === 'attention-rollout'
    if (rollout && options.target !== undefined) {
      throw new ConfigError('invalid argument at `target`: attention-rollout explains no class', 'target', [])
    }
    const names = this.info.classNames
    const classOf = (t: number | string, field: string): number => {
      // A backbone has no classes: the engine refuses its class maps and names what works.
      if (this.info.numClasses === 0) return -1
      const k = typeof t === 'string' ? names.indexOf(t) : t
      if (!Number.isInteger(k) || k < 0 || k >= this.info.numClasses) {
        const known = names.length ? ` (classes: ${names.join(', ')})` : ''
        throw new ConfigError(
          `invalid argument at \`${field}\`: expected a class index from 0 to ${this.info.numClasses - 1} or a class name${known}, got ${JSON.stringify(t)}`,
          field,
          [],
        )
      }
      return k
    }
    const t = options.target
    const perImage = Array.isArray(t) ? (t as readonly (number | string)[]).map((x, i) => classOf(x, `target[${i}]`)) : undefined
    const one = t === undefined || Array.isArray(t) ? -1 : classOf(t as number | string, 'target')
    const native: Binding.ExplainOptions = {
      method,
      ...(options.headFusion !== undefined ? { headFusion: options.headFusion } : {}),
      ...(options.discardRatio !== undefined ? { discardRatio: options.discardRatio } : {}),
      ...(options.stage !== undefined ? { stage: options.stage } : {}),
    }
    const { values, rows, cols, classes, scores } = await this.#run(
      input,
      options,
      (pixels, n, start) => {
        const targets = perImage ? perImage.slice(start, start + n) : t === undefined ? undefined : Array(n).fill(one)
        return this.#native.explain(pixels, n, targets ? { ...native, targets } : native)
      },
      perImage?.length,
    )
    const side = this.info.imageSize
    return Array.from({ length: rows }, (_, r) => {
      const k = classes?.[r] ?? -1
      return {
        map: values.slice(r * cols, (r + 1) * cols),
        width: side,
        height: side,
        method,
        classIndex: k >= 0 ? k : null,
        className: k >= 0 ? (names[k] ?? String(k)) : null,
        score: k >= 0 ? (scores?.[r] ?? null) : null,
      }
    })
  }

  /** Frees the network (on its device too) once calls already made are answered. */
  async close(): Promise<void> {
    await this.#native.close()
  }

  /**
   * Decodes `input` chunk by chunk and hands each chunk to `call` (`start`: its first image),
   * decoding the next while the engine works; the answers are joined in order.
   */
  async #run(
    input: ModelInput,
    options: RunOptions,
    call: (pixels: Uint8Array, n: number, start: number) => Promise<Binding.ModelOutput>,
    expected?: number,
  ): Promise<Answer> {
    if (this.#native.closed) throw new DataError('this model is closed: load it again to use it', 'model-closed')
    const batch = checkInt(options.batchSize, 'batchSize', MAX_BATCH, 32)
    const side = this.info.imageSize
    const { count, at, exact } = sources(input, side)
    // The call's window, else the one the run recorded (`input.json`), else the file's own.
    const dicom = dicomReadOptions({ ...(options.dicom ?? this.#recorded.dicom), frames: 'middle' })
    // A file is read once: its bytes say whether it is DICOM (the preamble) or an image for sharp.
    const decodeOne = async (src: ImageSource): Promise<Buffer> => {
      if ('raw' in src) return decodeImage(src, side)
      const bytes = 'file' in src ? await readRegularFile(src.file, MAX_IMAGE_FILE_BYTES) : Buffer.from(src.encoded)
      const named = 'file' in src && /\.(dcm|dicom)$/i.test(src.file)
      return named || isDicomBytes(bytes)
        ? (await dicomImages(bytes, side, dicom)).images[0]
        : decodeImage({ encoded: bytes }, side)
    }
    if (expected !== undefined && expected !== count) {
      throw new ConfigError(`invalid argument at \`target\`: ${expected} targets for ${count} images`, 'target', [])
    }
    if (count === 0) return { values: new Float32Array(0), rows: 0, cols: 0 }
    const decodeChunk = async (start: number): Promise<Uint8Array> => {
      const end = Math.min(count, start + batch)
      // Pixels already at the input size pass as they are (a resize to the same size is the
      // identity: the model spec checks these answers equal those of the same images as PNGs).
      if (exact) return exact.subarray(start * side * side * 3, end * side * side * 3)
      const parts = await Promise.all(
        Array.from({ length: end - start }, (_, k) =>
          decodeOne(at(start + k)).catch((e: Error) => {
            const src = at(start + k)
            const where = 'file' in src ? src.file : `input[${start + k}]`
            throw new DataError(
              `${where}: cannot decode the image (${e.message})`,
              'bad-image',
              'file' in src ? src.file : undefined,
            )
          }),
        ),
      )
      return Buffer.concat(parts)
    }
    // Decoding the next chunk overlaps the engine's work on this one.
    const outputs: Binding.ModelOutput[] = []
    let next = decodeChunk(0)
    for (let start = 0; start < count; start += batch) {
      const pixels = await next
      const n = Math.min(batch, count - start)
      let pending: Promise<Binding.ModelOutput>
      try {
        pending = call(pixels, n, start)
      } catch (e) {
        throw fromNative(e)
      }
      if (start + batch < count) next = decodeChunk(start + batch)
      try {
        outputs.push(await pending)
      } catch (e) {
        throw fromNative(e)
      }
    }
    const cols = outputs[0].cols
    const values = outputs.length === 1 ? outputs[0].values : new Float32Array(count * cols)
    if (outputs.length > 1) {
      let offset = 0
      for (const o of outputs) {
        values.set(o.values, offset)
        offset += o.values.length
      }
    }
    const joined = <T>(pick: (o: Binding.ModelOutput) => T[] | undefined | null): T[] | undefined =>
      outputs[0] && pick(outputs[0]) ? outputs.flatMap((o) => pick(o) ?? []) : undefined
    return { values, rows: count, cols, classes: joined((o) => o.classes), scores: joined((o) => o.scores) }
  }
}

/**
 * Restores a checkpoint's network and keeps it loaded: a fine-tuned classifier, or one backbone
 * of a pre-training checkpoint (`arch` picks it). Accepts an output folder or the checkpoint
 * folder itself.
 */
export async function loadModel(checkpoint: string, options: LoadModelOptions = {}): Promise<Model> {
  if (typeof checkpoint !== 'string' || checkpoint === '') {
    throw new ConfigError('invalid argument at `checkpoint`: expected a folder path', 'checkpoint', [])
  }
  const device = options.device
  if (device !== undefined && !deviceSchema.safeParse(device).success) {
    throw new ConfigError(`invalid argument at \`device\`: expected cpu, cuda, wgpu or auto, got ${String(device)}`, 'device', [])
  }
  if (options.arch !== undefined && options.arch !== 'cnn' && options.arch !== 'vit') {
    throw new ConfigError(`invalid argument at \`arch\`: expected cnn or vit, got ${String(options.arch)}`, 'arch', [])
  }
  const maxBatch = checkInt(options.maxBatch, 'maxBatch', MAX_BATCH, 32)
  const wait = options.batchWaitMs ?? 0
  if (typeof wait !== 'number' || !(wait >= 0 && wait <= 1000)) {
    throw new ConfigError(`invalid argument at \`batchWaitMs\`: expected 0 to 1000, got ${String(wait)}`, 'batchWaitMs', [])
  }
  try {
    const recorded = readInputRecord(checkpoint)
    const handle = await native().loadModel(path.resolve(checkpoint), options.arch, device, { maxBatch, batchWaitMs: wait })
    return new Model(handle, recorded)
  } catch (e) {
    throw fromNative(e)
  }
}
