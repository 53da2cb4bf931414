/**
 * DICOM as a data source: pydicom's corpus against pydicom (values after the modality LUT, the
 * 8-bit windows), the window function and presets, a DICOM folder through `loadDataset`
 * (frames, PatientIDs, the cache key), and hostile files (lengths that lie, sizes over the
 * limits, unknown syntaxes, FIFOs) as skipped rows with a reason.
 */
import { execFileSync } from 'node:child_process'
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { deflateRawSync } from 'node:zlib'

import test from 'ava'

import { loadDataset } from '../ts/data/dataset.js'
import { readDicomFile } from '../ts/data/dicom/read.js'
import { DicomError, parseDicom } from '../ts/data/dicom/parse.js'
import { describeImage, renderFrame } from '../ts/data/dicom/pixels.js'
import { WINDOW_PRESETS, applyWindow, outputRange, parseWindow, parseWindows, percentile } from '../ts/data/dicom/window.js'
import { ConfigError, DataError } from '../ts/index.js'
import { compareCorpus } from './dicom-corpus.js'
import { type El, dicomFile, element, monochrome, pydicomCorpus, str, us } from './dicom-files.js'
import { tempDir } from './helpers.js'

test('pydicom corpus: lossless files equal pydicom exactly, lossy within 2 grey levels, the rest skipped by both with a reason', async (t) => {
  const { pydicom, rows } = await compareCorpus()
  const by = (o: string) => rows.filter((r) => r.outcome === o)
  t.log(`pydicom ${pydicom}: ${rows.length} files`)
  for (const o of ['equal', 'lossy-within-tolerance', 'skipped-by-both', 'decoded-here-only', 'mismatch'])
    t.log(
      `${o}: ${by(o).length} ${by(o)
        .map((r) => r.file)
        .join(', ')}`,
    )
  t.deepEqual(
    by('mismatch').map((r) => `${r.file}: ${r.detail}`),
    [],
  )
  t.true(rows.length >= 80, `${rows.length} files in the corpus`)
  // Every transfer syntax the issue names is among the equal or within-tolerance files.
  const decoded = [...by('equal'), ...by('lossy-within-tolerance')].map((r) => r.detail)
  for (const ts of ['', '.1', '.2', '.1.99', '.5', '.4.50', '.4.51', '.4.70', '.4.80', '.4.81', '.4.90', '.4.91'].map(
    (s) => `.1.2${s} `,
  ))
    t.true(
      decoded.some((d) => d.startsWith(`1.2.840.10008${ts}`)),
      `no file of transfer syntax 1.2.840.10008${ts.trim()} decoded`,
    )
  t.true(by('equal').length >= 45, `${by('equal').length} equal`)
  const reason = (f: string) => rows.find((r) => r.file === f)?.detail ?? ''
  t.regex(reason('MR_truncated.dcm'), /here: the file ends inside element \(7FE0,0010\)/)
  t.regex(reason('rtplan.dcm'), /here: no Pixel Data/)
  t.regex(reason('badVR.dcm'), /here: Number of Frames \(0028,0008\) is "1A", not an integer/)
})

test('the window function: PS3.3 C.11.2.1.2.1 into 8 bits, presets, percentiles as numpy computes them', (t) => {
  const out = new Uint8Array(5)
  // Window 40/80 on CT values: below c - 0.5 - (w-1)/2 -> 0, above c - 0.5 + (w-1)/2 -> 255.
  const range = outputRange(16, true, { slope: 1, intercept: -1024 })
  // ((40 - 39.5) / 79 + 0.5) * 255 = 129.1; ((78 - 39.5) / 79 + 0.5) * 255 = 251.8
  applyWindow(Float64Array.from([-1000, 0, 40, 78, 1000]), { center: 40, width: 80 }, range, 'LINEAR', out)
  t.deepEqual([...out], [0, 0, 129, 252, 255])
  t.deepEqual(parseWindow('lung', 'w'), { center: -600, width: 1500 })
  t.deepEqual(parseWindow('-600,1500', 'w'), { center: -600, width: 1500 })
  t.deepEqual(parseWindows('brain,subdural,bone', 'w'), [WINDOW_PRESETS.brain, WINDOW_PRESETS.subdural, WINDOW_PRESETS.bone])
  t.deepEqual(parseWindows('40/80,80/200,600/2800', 'w')[2], { center: 600, width: 2800 })
  t.throws(() => parseWindow('liver', 'window'), {
    message: /"liver" is neither a preset \(brain, subdural, bone, lung, mediastinum, soft\)/,
  })
  t.throws(() => parseWindow('40,0', 'window'), { message: /width of at least 1/ })
  t.throws(() => parseWindows('brain,bone', 'windows'), { message: /three windows/ })
  // numpy.percentile([1..10], [0.5, 99.5]) = [1.045, 9.955]
  const sorted = Float64Array.from({ length: 10 }, (_, i) => i + 1)
  t.is(percentile(sorted, 0.5), 1.045)
  t.is(percentile(sorted, 99.5), 9.955)
})

test('MONOCHROME1 is inverted after the window; --windows puts three windows in the three channels', async (t) => {
  const pixels = [0, 1024, 1064, 2024, 3024, 1100]
  const base = { rows: 2, columns: 3, rescale: [1, -1024] as [number, number], pixels, patientId: 'P1' }
  const render = async (bytes: Buffer, windowing: Parameters<typeof renderFrame>[3]) => {
    const file = parseDicom(bytes)
    return (await renderFrame(file, describeImage(file, 1e8), 0, windowing)).rgb
  }
  const brain = { kind: 'window', window: WINDOW_PRESETS.brain } as const
  const m2 = await render(monochrome(base), brain)
  const m1 = await render(monochrome({ ...base, photometric: 'MONOCHROME1' }), brain)
  t.deepEqual(
    [...m1],
    [...m2].map((v) => 255 - v),
  )
  // HU -1024, 0, 40, 1000, 2000, 76: brain (40/80) saturates all but 0 and 40 and 76.
  t.deepEqual(
    [...m2].filter((_, i) => i % 3 === 0),
    [0, 0, 129, 255, 255, 245],
  )
  const three = await render(monochrome(base), {
    kind: 'windows',
    windows: [WINDOW_PRESETS.brain, WINDOW_PRESETS.subdural, WINDOW_PRESETS.bone],
  })
  const channel = (c: number) => [...three].filter((_, i) => i % 3 === c)
  t.deepEqual(channel(0), [0, 0, 129, 255, 255, 245])
  t.notDeepEqual(channel(1), channel(0))
  t.notDeepEqual(channel(2), channel(1))
})

test('a DICOM folder by class: frames middle or all, PatientIDs in the summary, windows in the cache key', async (t) => {
  const root = tempDir('dicom-folder')
  const src = path.join(root, 'src')
  const write = (cls: string, name: string, bytes: Buffer) => {
    mkdirSync(path.join(src, cls), { recursive: true })
    writeFileSync(path.join(src, cls, name), bytes)
  }
  const img = (seed: number, patientId: string, frames = 1) =>
    monochrome({
      rows: 6,
      columns: 6,
      frames,
      patientId,
      rescale: [1, -1024],
      pixels: Array.from({ length: 36 * frames }, (_, i) => 900 + ((i * 37 + seed * 11) % 400)),
    })
  for (let p = 0; p < 10; p++) {
    write('benign', `p${p}-a.dcm`, img(p, `B${p}`))
    write('benign', `p${p}-b.dcm`, img(p + 50, `B${p}`))
    write('malignant', `q${p}-a.dcm`, img(p + 100, `M${p}`))
    write('malignant', `q${p}-b.dcm`, img(p + 150, `M${p}`))
  }
  write('malignant', 'cine.dcm', img(7, 'M0', 5))
  // A file with the preamble and no extension is DICOM too; a truncated one is a skipped row.
  write('benign', 'NOEXT', img(3, 'B0'))
  write('benign', 'torn.dcm', img(4, 'B1').subarray(0, 300))
  const cacheDir = path.join(root, 'cache')
  const ds = await loadDataset(src, { size: 8, cacheDir })
  t.is(ds.format, 'dicom')
  t.deepEqual(ds.classes, ['benign', 'malignant'])
  t.is(ds.count, 42)
  t.deepEqual(
    ds.skipped.map((s) => s.name),
    [path.join('benign', 'torn.dcm')],
  )
  t.regex(ds.skipped[0].reason, /the file ends inside/)
  t.truthy(ds.patients)
  const patients = ds.patients!
  t.is(patients.train + patients.val + patients.test, 20)
  // No patient in two splits.
  const splitsOf = new Map<string, Set<string>>()
  for (const s of ['train', 'val', 'test'] as const)
    for (const i of ds.splits[s].indices) splitsOf.set(ds.groups![i]!, (splitsOf.get(ds.groups![i]!) ?? new Set()).add(s))
  t.deepEqual(
    [...splitsOf.entries()].filter(([, s]) => s.size > 1),
    [],
  )
  const all = await loadDataset(src, { size: 8, cacheDir, dicom: { frames: 'all' } })
  t.is(all.count, 46)
  t.true(all.names.includes(path.join('malignant', 'cine.dcm#5')))
  t.not(all.cacheFile, ds.cacheFile)
  const lung = await loadDataset(src, { size: 8, cacheDir, dicom: { window: 'lung' } })
  t.not(lung.cacheFile, ds.cacheFile)
  t.is(lung.decoded, 42)
  t.is((await loadDataset(src, { size: 8, cacheDir, dicom: { window: 'lung' } })).decoded, 0)
  await t.throwsAsync(loadDataset(src, { size: 8, cacheDir, dicom: { window: 'liver' } }), {
    instanceOf: ConfigError,
    message: /dicom\.window/,
  })
  await t.throwsAsync(loadDataset(src, { size: 8, cacheDir, strict: true }), { instanceOf: DataError, message: /torn\.dcm/ })
})

test('CSV rows pointing at .dcm files, grouped by a patient column', async (t) => {
  const root = tempDir('dicom-csv')
  const rows = ['path,patient,label']
  for (let i = 0; i < 24; i++) {
    const f = `img${i}.dcm`
    writeFileSync(
      path.join(root, f),
      monochrome({ rows: 4, columns: 4, bits: 8, pixels: Array.from({ length: 16 }, (_, k) => (k * i) % 256) }),
    )
    rows.push(`${f},pt${i % 8},${i % 2 ? 'b' : 'a'}`)
  }
  writeFileSync(path.join(root, 'labels.csv'), `${rows.join('\n')}\n`)
  const ds = await loadDataset(path.join(root, 'labels.csv'), { size: 8, cacheDir: path.join(root, 'cache'), groupBy: 'patient' })
  t.is(ds.count, 24)
  t.deepEqual(ds.classes, ['a', 'b'])
  t.is(ds.patients!.train + ds.patients!.val + ds.patients!.test, 8)
  await t.throwsAsync(
    loadDataset(path.join(root, 'labels.csv'), { size: 8, cacheDir: path.join(root, 'cache'), groupBy: 'ward' }),
    {
      message: /no column "ward" to group by \(its columns: path, patient, label\)/,
    },
  )
})

/** Writes `bytes` as a .dcm file and reads it; resolves to the error message (or 'ok'). */
async function readError(bytes: Buffer, opts: { maxPixels?: number } = {}): Promise<string> {
  const file = path.join(tempDir('dicom-hostile'), 'x.dcm')
  writeFileSync(file, bytes)
  try {
    await readDicomFile(file, 8, undefined, opts.maxPixels)
    return 'ok'
  } catch (e) {
    if (!(e instanceof DicomError)) throw e
    return e.message
  }
}

test('hostile files: lengths that lie, sizes over the limits, fragments past the end, unknown syntaxes, deep nesting', async (t) => {
  const tiny = { rows: 2, columns: 2, pixels: [1, 2, 3, 4] }
  // Rows x Columns over the pixel limit: refused before the pixel data is looked at.
  t.regex(
    await readError(monochrome({ ...tiny, rows: 60000, columns: 60000 }), { maxPixels: 1e8 }),
    /60000 x 60000 is larger than 100000000 pixels/,
  )
  // Number of Frames that the pixel data cannot hold.
  t.regex(
    await readError(monochrome({ ...tiny, frames: 1000 })),
    /the pixel data holds 8 bytes; 1000 frame\(s\) of 2 x 2 x 1 at 16 bits need 8000/,
  )
  // An element whose length runs past the end.
  const lying = dicomFile('1.2.840.10008.1.2.1', element([0x0010, 0x0010, 'UT', Buffer.from('ab')], 0x7fffffff))
  t.regex(
    await readError(lying),
    /the file ends inside element \(0010,0010\) at byte \d+: its length is 2147483647 bytes, 2 left/,
  )
  // An unknown transfer syntax is a reason, not a crash.
  t.regex(
    await readError(monochrome({ ...tiny, transferSyntax: '1.2.840.10008.1.2.4.100' })),
    /transfer syntax 1\.2\.840\.10008\.1\.2\.4\.100 is not supported/,
  )
  // Encapsulated pixel data: a fragment that says more than the file holds; no delimiter.
  const header: El[] = [
    [0x0028, 0x0002, 'US', us(1)],
    [0x0028, 0x0004, 'CS', str('MONOCHROME2')],
    [0x0028, 0x0010, 'US', us(2)],
    [0x0028, 0x0011, 'US', us(2)],
    [0x0028, 0x0100, 'US', us(8)],
    [0x0028, 0x0101, 'US', us(8)],
    [0x0028, 0x0103, 'US', us(0)],
  ]
  const item = (length: number, value = Buffer.alloc(0)) => {
    const b = Buffer.alloc(8)
    b.writeUInt16LE(0xfffe, 0)
    b.writeUInt16LE(0xe000, 2)
    b.writeUInt32LE(length >>> 0, 4)
    return Buffer.concat([b, value])
  }
  const encapsulated = (fragments: Buffer, ts = '1.2.840.10008.1.2.4.70') =>
    dicomFile(ts, Buffer.concat([...header.map((e) => element(e)), element([0x7fe0, 0x0010, 'OB', fragments], 0xffffffff)]))
  t.regex(
    await readError(encapsulated(Buffer.concat([item(0), item(1 << 30)]))),
    /a pixel data fragment at byte \d+ says 1073741824 bytes/,
  )
  t.regex(
    await readError(encapsulated(Buffer.concat([item(0), item(4, Buffer.alloc(4))]))),
    /ends inside the encapsulated pixel data/,
  )
  // A JPEG codestream that claims a larger image than the file: refused before the decoder runs.
  const sof = Buffer.from([0xff, 0xd8, 0xff, 0xc3, 0, 11, 8, 0xea, 0x60, 0xea, 0x60, 1, 1, 0x11, 0, 0xff, 0xd9, 0])
  const end = Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0])
  t.regex(
    await readError(encapsulated(Buffer.concat([item(0), item(sof.length, sof), end]))),
    /the JPEG Lossless SV1 frame is 60000 x 60000 pixels; the file says 2 x 2/,
  )
  // A garbage codestream: the decoder's own error, and the next file still decodes.
  const junk = Buffer.from([0xff, 0xd8, 0xff, 0xc3, 0, 11, 8, 0, 2, 0, 2, 1, 1, 0x11, 0, 0xff, 0xd9, 0])
  t.regex(await readError(encapsulated(Buffer.concat([item(0), item(junk.length, junk), end]))), /the Jpeg decoder failed: .+/)
  t.is(await readError(monochrome(tiny)), 'ok')
  // Sequences nested past the bound.
  let nested = element([0x0008, 0x0016, 'UI', str('1.2')])
  for (let k = 0; k < 40; k++) nested = element([0x0008, 0x1140, 'SQ', item(nested.length, nested)])
  t.regex(await readError(dicomFile('1.2.840.10008.1.2.1', nested)), /sequences nested deeper than 16 levels/)
  // A deflated data set that inflates without end stops at the bound.
  const bomb = deflateRawSync(Buffer.concat([element([0x0008, 0x0016, 'UI', str('1.2')]), Buffer.alloc(8 << 20)]))
  t.throws(() => parseDicom(dicomFile('1.2.840.10008.1.2.1.99', bomb), { maxInflatedBytes: 1 << 20 }), {
    message: /the deflated data set inflates to more than 1048576 bytes/,
  })
  // Not DICOM at all.
  t.regex(await readError(Buffer.from('just some text, long enough to be read\n')), /not a DICOM file/)
})

test('a FIFO named like a DICOM file is never opened for reading: left out of a folder, a skipped row in a CSV', async (t) => {
  const root = tempDir('dicom-fifo')
  const cls = path.join(root, 'src', 'a')
  mkdirSync(cls, { recursive: true })
  writeFileSync(path.join(cls, 'good.dcm'), monochrome({ rows: 2, columns: 2, pixels: [1, 2, 3, 4] }))
  execFileSync('mkfifo', [path.join(cls, 'pipe.dcm')])
  const ds = await loadDataset(path.join(root, 'src'), { size: 8, cacheDir: path.join(root, 'cache') })
  t.is(ds.count, 1)
  writeFileSync(path.join(cls, 'rows.csv'), 'path,label\ngood.dcm,x\npipe.dcm,y\n')
  const csv = await loadDataset(path.join(cls, 'rows.csv'), { size: 8, cacheDir: path.join(root, 'cache') })
  t.is(csv.count, 1)
  t.deepEqual(
    csv.skipped.map((s) => s.name),
    ['pipe.dcm'],
  )
  t.regex(csv.skipped[0].reason, /not a regular file/)
})

test("corpus files through loadDataset: multi-frame YBR JPEG, palette, RLE, JPEG 2000 and a truncated file as the issue's folder", async (t) => {
  const corpus = pydicomCorpus()
  const src = path.join(tempDir('dicom-corpus-folder'), 'src')
  for (const [cls, files] of [
    ['a', ['examples_ybr_color.dcm', 'examples_palette.dcm', 'MR_small_RLE.dcm']],
    ['b', ['MR_small_jp2klossless.dcm', 'CT_small.dcm', 'MR_truncated.dcm', 'rtplan.dcm']],
  ] as const) {
    mkdirSync(path.join(src, cls), { recursive: true })
    for (const f of files) copyFileSync(path.join(corpus, f), path.join(src, cls, f))
  }
  const ds = await loadDataset(src, { size: 16, cacheDir: path.join(src, '..', 'cache'), dicom: { frames: 'all' } })
  t.is(ds.count, 30 + 1 + 1 + 1 + 1)
  t.deepEqual(
    ds.skipped.map((s) => s.name),
    [path.join('b', 'MR_truncated.dcm'), path.join('b', 'rtplan.dcm')],
  )
  t.regex(ds.skipped[1].reason, /no Pixel Data/)
})
