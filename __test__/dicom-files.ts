/**
 * Small DICOM files written byte by byte for the specs (explicit VR little endian unless told):
 * valid ones with chosen attributes, and hostile ones whose lengths lie.
 */
import { execFileSync } from 'node:child_process'

export type El = [group: number, element: number, vr: string, value: Buffer]

const LONG = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV'])

export const us = (...v: number[]) => {
  const b = Buffer.alloc(2 * v.length)
  v.forEach((x, i) => b.writeUInt16LE(x, 2 * i))
  return b
}
/** Text padded to an even length, as DICOM wants. */
export const str = (s: string, pad = ' ') => Buffer.from(s.length % 2 ? s + pad : s, 'latin1')

/** One element; `length` overrides the declared length (to make it lie). */
export function element([group, el, vr, value]: El, length = value.length): Buffer {
  const long = LONG.has(vr)
  const h = Buffer.alloc(long ? 12 : 8)
  h.writeUInt16LE(group, 0)
  h.writeUInt16LE(el, 2)
  h.write(vr, 4, 'latin1')
  if (long) h.writeUInt32LE(length >>> 0, 8)
  else h.writeUInt16LE(length, 6)
  return Buffer.concat([h, value])
}

/** Preamble, `DICM`, the meta group with `transferSyntax`, then `body` (already encoded). */
export function dicomFile(transferSyntax: string, body: Buffer): Buffer {
  const meta = element([0x0002, 0x0010, 'UI', str(transferSyntax, '\0')])
  return Buffer.concat([Buffer.alloc(128), Buffer.from('DICM'), meta, body])
}

export interface ImageSpec {
  rows: number
  columns: number
  bits?: 8 | 16
  signed?: boolean
  photometric?: string
  frames?: number
  patientId?: string
  rescale?: [slope: number, intercept: number]
  window?: [center: number, width: number]
  transferSyntax?: string
  /** Samples, `rows * columns * frames` of them. */
  pixels: number[]
}

/** A native explicit-VR-little-endian monochrome image. */
export function monochrome(spec: ImageSpec): Buffer {
  const bits = spec.bits ?? 16
  const data = Buffer.alloc(spec.pixels.length * (bits / 8))
  spec.pixels.forEach((v, i) => {
    if (bits === 8) data[i] = v & 0xff
    else if (spec.signed) data.writeInt16LE(v, 2 * i)
    else data.writeUInt16LE(v, 2 * i)
  })
  const els: El[] = [
    ...(spec.patientId !== undefined ? [[0x0010, 0x0020, 'LO', str(spec.patientId)] as El] : []),
    [0x0028, 0x0002, 'US', us(1)],
    [0x0028, 0x0004, 'CS', str(spec.photometric ?? 'MONOCHROME2')],
    ...(spec.frames ? [[0x0028, 0x0008, 'IS', str(String(spec.frames))] as El] : []),
    [0x0028, 0x0010, 'US', us(spec.rows)],
    [0x0028, 0x0011, 'US', us(spec.columns)],
    [0x0028, 0x0100, 'US', us(bits)],
    [0x0028, 0x0101, 'US', us(bits)],
    [0x0028, 0x0102, 'US', us(bits - 1)],
    [0x0028, 0x0103, 'US', us(spec.signed ? 1 : 0)],
    ...(spec.window
      ? ([
          [0x0028, 0x1050, 'DS', str(String(spec.window[0]))],
          [0x0028, 0x1051, 'DS', str(String(spec.window[1]))],
        ] as El[])
      : []),
    ...(spec.rescale
      ? ([
          [0x0028, 0x1052, 'DS', str(String(spec.rescale[1]))],
          [0x0028, 0x1053, 'DS', str(String(spec.rescale[0]))],
        ] as El[])
      : []),
    [0x7fe0, 0x0010, bits === 8 ? 'OB' : 'OW', data],
  ]
  return dicomFile(spec.transferSyntax ?? '1.2.840.10008.1.2.1', Buffer.concat(els.map((e) => element(e))))
}

/** The folder of pydicom's test files (the wheel CI installs: parity/requirements-dicom.txt). */
export function pydicomCorpus(): string {
  try {
    return execFileSync(
      'python3',
      ['-c', 'import os, pydicom; print(os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files"))'],
      { encoding: 'utf8' },
    ).trim()
  } catch {
    throw new Error('pydicom is not installed: python3 -m pip install -r parity/requirements-dicom.txt')
  }
}
