/**
 * `input.json` beside a run's checkpoint: how its source images became the network's input,
 * where that is more than the checkpoint itself knows. Today: the DICOM window (`--window`,
 * `--windows`), so a model loaded from the run windows new DICOM files as its training data
 * was, unless a call says otherwise. Written by `cass pretrain`, `cass finetune` and each
 * arm of `cass experiment`; read, bounded and checked, by `loadModel`.
 */
import { existsSync } from 'node:fs'
import path from 'node:path'

import type { DicomOptions } from '../data/dataset.js'
import { DataError } from '../errors.js'
import { readRegularFileSync } from './read-file.js'
import { writeOutputFile } from './output-file.js'

export interface InputRecord {
  dicom?: Pick<DicomOptions, 'window' | 'windows'>
}

const FILE = 'input.json'

/** Writes `outDir/input.json` when there is something to record. */
export function writeInputRecord(outDir: string, dicom: DicomOptions | undefined): void {
  const kept = {
    ...(dicom?.window !== undefined ? { window: dicom.window } : {}),
    ...(dicom?.windows !== undefined ? { windows: dicom.windows } : {}),
  }
  if (Object.keys(kept).length) writeOutputFile(path.join(outDir, FILE), `${JSON.stringify({ dicom: kept }, null, 2)}\n`)
}

/**
 * The record of the run `checkpoint` belongs to (the output folder, or its `best/` or
 * `checkpoint/` folder), or an empty one where there is none. A record that is not a small
 * regular file of JSON is an error naming it: a model must not quietly window differently.
 */
export function readInputRecord(checkpoint: string): InputRecord {
  const dir = path.resolve(checkpoint)
  const inside = ['best', 'checkpoint'].includes(path.basename(dir))
  const file = [path.join(dir, FILE), ...(inside ? [path.join(path.dirname(dir), FILE)] : [])].find((f) => existsSync(f))
  if (!file) return {}
  let parsed: unknown
  try {
    parsed = JSON.parse(readRegularFileSync(file, 64 * 1024, 'input.json').toString('utf8'))
  } catch (e) {
    throw new DataError(`${file}: cannot read the run's input record (${(e as Error).message})`, 'bad-checkpoint', file)
  }
  const d = (parsed as { dicom?: Record<string, unknown> } | null)?.dicom
  if (d === undefined) return {}
  if (typeof d !== 'object' || d === null || [d.window, d.windows].some((w) => w !== undefined && typeof w !== 'string'))
    throw new DataError(`${file}: "dicom" must hold string window and windows settings`, 'bad-checkpoint', file)
  return {
    dicom: {
      ...(typeof d.window === 'string' ? { window: d.window } : {}),
      ...(typeof d.windows === 'string' ? { windows: d.windows } : {}),
    },
  }
}
