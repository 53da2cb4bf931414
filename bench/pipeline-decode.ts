/**
 * Decode throughput of the data pipeline: JPEG files -> 224 x 224 RGB in the dataset cache.
 *
 *   npm run bench:pipeline -- [--images 400] [--source-size 512x384] [--size 224]
 *
 * Generates the JPEGs first (untimed), then times a cold load (discover, decode, resize, write
 * the cache) and a warm load (cache reused). Reports images/s for the cold load.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'

import sharp from 'sharp'

import { loadDataset } from '../ts/data/dataset.js'

async function main() {
  const { values } = parseArgs({
    options: {
      images: { type: 'string', default: '400' },
      'source-size': { type: 'string', default: '512x384' },
      size: { type: 'string', default: '224' },
      out: { type: 'string' },
    },
  })
  const n = Number(values.images)
  const [w, h] = values['source-size'].split('x').map(Number)
  const size = Number(values.size)
  const root = mkdtempSync(path.join(os.tmpdir(), 'cass-pipeline-bench-'))
  // Smooth gradients plus noise: compresses like a photograph, unlike pure noise.
  let seed = 1
  for (let i = 0; i < n; i++) {
    const cls = i % 4
    const raw = Buffer.alloc(w * h * 3)
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        seed = (seed * 1103515245 + 12345) >>> 0
        const noise = (seed >>> 27) - 16
        const o = (y * w + x) * 3
        raw[o] = Math.max(0, Math.min(255, ((x * 255) / w + noise + cls * 20) | 0))
        raw[o + 1] = Math.max(0, Math.min(255, ((y * 255) / h + noise) | 0))
        raw[o + 2] = Math.max(0, Math.min(255, (((x + y) * 127) / (w + h) + noise + 60) | 0))
      }
    }
    const dir = path.join(root, 'src', `class${cls}`)
    mkdirSync(dir, { recursive: true })
    await sharp(raw, { raw: { width: w, height: h, channels: 3 } })
      .jpeg({ quality: 90 })
      .toFile(path.join(dir, `${i}.jpg`))
  }
  const cacheDir = path.join(root, 'cache')
  const t0 = performance.now()
  const cold = await loadDataset(path.join(root, 'src'), { size, cacheDir })
  const coldSec = (performance.now() - t0) / 1000
  const t1 = performance.now()
  const warm = await loadDataset(path.join(root, 'src'), { size, cacheDir })
  const warmSec = (performance.now() - t1) / 1000
  rmSync(root, { recursive: true })
  const report = {
    date: new Date().toISOString(),
    images: n,
    sourceSize: `${w}x${h}`,
    targetSize: size,
    decoded: cold.decoded,
    coldSec,
    imagesPerSec: cold.decoded / coldSec,
    warmSec,
    warmDecoded: warm.decoded,
    sharpConcurrency: sharp.concurrency(),
    machine: { cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version, vips: sharp.versions.vips },
  }
  console.log(
    `| JPEGs | source | target | cold load s | decoded images/s | warm load s (decoded) |\n|---|---|---|---|---|---|\n| ${n} | ${w}x${h} | ${size} | ${coldSec.toFixed(2)} | ${report.imagesPerSec.toFixed(0)} | ${warmSec.toFixed(3)} (${warm.decoded}) |`,
  )
  const out = values.out ?? path.join('bench', 'results', `${report.date.slice(0, 10)}-${os.hostname()}-pipeline-${size}.json`)
  writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`)
  console.log(`written ${out}`)
}

main().catch((e: unknown) => {
  console.error(e)
  process.exit(1)
})
