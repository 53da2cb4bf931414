/**
 * What the API takes besides configs (images, labelled samples, an output folder), checked
 * before any native call; each check throws a ConfigError naming the argument.
 */
import { existsSync } from 'node:fs'
import path from 'node:path'

import { ConfigError, fromNative } from './errors.js'
import type { JobOptions } from './job.js'
import { native } from './native.js'

/** Decoded RGB images held in memory: `count * height * width * 3` bytes, row-major (HWC). */
export interface InMemoryImages {
  pixels: Uint8Array
  count: number
  height: number
  width: number
}

/** A dataset cache file (images back to back plus an index), memory-mapped by the engine. */
export interface CacheImages {
  cacheFile: string
}

export type Images = InMemoryImages | CacheImages

/** What every pre-training call takes besides its config (CASS, DINO, VICReg). */
export interface PretrainRunOptions extends JobOptions {
  images: Images
  /** Which images to train on (default: all). */
  indices?: number[]
  /** Output directory; the checkpoint goes to `<outDir>/checkpoint`. */
  outDir: string
  /** Continue from the checkpoint in `outDir` if there is one. */
  resume?: boolean
  /**
   * Replace a pre-training run already in `outDir`. Without it (or `resume`), a run there is an
   * error: starting afresh would overwrite its checkpoint.
   */
  overwrite?: boolean
}

/** Labelled samples: `indices[k]` (into the images) has class `labels[k]`. */
export interface LabelledSamples {
  indices: number[]
  labels: number[]
}

export function checkImages(images: Images, field = 'images') {
  if (typeof images !== 'object' || images === null) {
    throw new ConfigError(
      `invalid argument at \`${field}\`: expected { pixels, count, height, width } or { cacheFile }`,
      field,
      [],
    )
  }
  if ('cacheFile' in images) {
    if (typeof images.cacheFile !== 'string' || images.cacheFile === '') {
      throw new ConfigError(`invalid argument at \`${field}.cacheFile\`: expected a file path`, `${field}.cacheFile`, [])
    }
    return { cacheFile: images.cacheFile }
  }
  for (const k of ['count', 'height', 'width'] as const) {
    if (!Number.isInteger(images[k]) || images[k] <= 0) {
      throw new ConfigError(`invalid argument at \`${field}.${k}\`: expected a positive integer`, `${field}.${k}`, [])
    }
  }
  if (!(images.pixels instanceof Uint8Array)) {
    throw new ConfigError(`invalid argument at \`${field}.pixels\`: expected a Uint8Array`, `${field}.pixels`, [])
  }
  const want = images.count * images.height * images.width * 3
  if (images.pixels.length !== want) {
    throw new ConfigError(
      `invalid argument at \`${field}.pixels\`: expected ${want} bytes (count x height x width x 3), got ${images.pixels.length}`,
      `${field}.pixels`,
      [],
    )
  }
  return { pixels: images.pixels, count: images.count, height: images.height, width: images.width }
}

export function checkIndices(indices: unknown, field: string): number[] | undefined {
  if (indices === undefined) return undefined
  if (!Array.isArray(indices) || !indices.every((i) => Number.isInteger(i) && i >= 0)) {
    throw new ConfigError(`invalid argument at \`${field}\`: expected an array of non-negative integers`, field, [])
  }
  return indices
}

export function checkLabelled(s: LabelledSamples, field: string) {
  const indices = checkIndices(s?.indices, `${field}.indices`) ?? []
  if (!Array.isArray(s.labels) || !s.labels.every((l) => Number.isInteger(l) && l >= 0)) {
    throw new ConfigError(`invalid argument at \`${field}.labels\`: expected an array of class indices`, `${field}.labels`, [])
  }
  if (s.labels.length !== indices.length) {
    throw new ConfigError(
      `invalid argument at \`${field}.labels\`: ${s.labels.length} labels for ${indices.length} indices`,
      `${field}.labels`,
      [],
    )
  }
  return { indices, labels: s.labels }
}

/** The output folder argument, resolved; anything but a non-empty string is a ConfigError. */
export function checkOutDir(outDir: unknown): string {
  if (typeof outDir !== 'string' || outDir === '') {
    throw new ConfigError('invalid argument at `outDir`: expected a directory path', 'outDir', [])
  }
  return path.resolve(outDir)
}

/**
 * Refuses (`output-in-use`) an output folder a running job holds, before anything in it is
 * touched: a second run with `--overwrite` used to truncate the live run's step log first.
 */
export function checkOutputFree(outDir: string): void {
  // No lock file (or no folder, or a file named as one: the output checks say so): nothing holds it.
  if (!existsSync(path.join(path.resolve(outDir), '.lock'))) return
  try {
    native().checkOutputFree(path.resolve(outDir))
  } catch (e) {
    throw fromNative(e)
  }
}

/**
 * Refuses to start a fresh fine-tuning over an earlier one in `outDir` (its best checkpoint
 * would be replaced) unless `overwrite` says so.
 */
export function checkFinetuneOutDir(outDir: string, options: { overwrite?: boolean }): void {
  checkOutputFree(outDir)
  if (options.overwrite) return
  if (existsSync(path.join(path.resolve(outDir), 'best', 'state.json'))) {
    throw new ConfigError(
      `invalid argument at \`outDir\`: ${outDir} already holds a fine-tuned network; replace it (overwrite: true, --overwrite) or choose another folder`,
      'outDir',
      [],
    )
  }
}

/**
 * Refuses to start a fresh pre-training over an existing run in `outDir` (its checkpoint would be
 * replaced) unless `resume` or `overwrite` says what to do with it. Cheap: call it before
 * decoding data.
 */
export function checkPretrainOutDir(outDir: string, options: { resume?: boolean; overwrite?: boolean }): void {
  checkOutputFree(outDir)
  if (options.resume || options.overwrite) return
  if (existsSync(path.join(path.resolve(outDir), 'checkpoint', 'state.json'))) {
    throw new ConfigError(
      `invalid argument at \`outDir\`: ${outDir} already holds a pre-training run; resume it (resume: true, --resume) or replace it (overwrite: true, --overwrite)`,
      'outDir',
      [],
    )
  }
}
