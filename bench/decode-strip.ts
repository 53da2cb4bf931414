/**
 * MNIST-like arrays into the dataset cache's images: one sharp call per image (the path every
 * other source takes) against strips of images in one call (`ts/data/decode-strip.ts`), as
 * `loadDataset` schedules each: per image with `2 x cores` calls in flight, strips of up to 128
 * images with a window of 512 in flight. Rounds alternate; images/s as median (min-max).
 *
 *   node --import tsx bench/decode-strip.ts [--images 5000] [--size 32] [--rounds 5] [--out FILE.json]
 */
import { writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'

import { readIdxImages } from '../ts/data/arrays.js'
import { decodeImage } from '../ts/data/decode.js'
import { decodeStrip, stripLength } from '../ts/data/decode-strip.js'
import { mnistDir } from '../ts/demo.js'

const { values } = parseArgs({
  options: {
    images: { type: 'string', default: '5000' },
    size: { type: 'string', default: '32' },
    rounds: { type: 'string', default: '5' },
    out: { type: 'string' },
  },
})
const n = Number(values.images)
const size = Number(values.size)
const rounds = Number(values.rounds)

async function main() {
  const a = readIdxImages(path.join(mnistDir(), 'train-images-idx3-ubyte'))
  const plane = a.height * a.width * a.channels
  const positions = Array.from({ length: n }, (_, i) => i)

  const perImage = async () => {
    const concurrency = Math.max(2, os.cpus().length * 2)
    let next = 0
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < n) {
          const i = next++
          await decodeImage(
            { raw: a.pixels.subarray(i * plane, (i + 1) * plane), width: a.width, height: a.height, channels: a.channels },
            size,
          )
        }
      }),
    )
  }
  const strips = async () => {
    const per = stripLength(a, size)
    for (let start = 0; start < n; start += 512) {
      const window = positions.slice(start, start + 512)
      const parts: number[][] = []
      for (let i = 0; i < window.length; i += per) parts.push(window.slice(i, i + per))
      await Promise.all(parts.map((p) => decodeStrip(a, p, size)))
    }
  }

  const rates: Record<string, number[]> = { perImage: [], strips: [] }
  for (let r = 0; r < rounds; r++) {
    for (const [name, run] of [
      ['perImage', perImage],
      ['strips', strips],
    ] as const) {
      const t0 = process.hrtime.bigint()
      await run()
      rates[name].push(n / (Number(process.hrtime.bigint() - t0) / 1e9))
    }
  }
  const summary = (xs: number[]) => {
    const s = [...xs].sort((x, y) => x - y)
    return { median: s[Math.floor(s.length / 2)], min: s[0], max: s[s.length - 1] }
  }
  const result = {
    machine: `${os.cpus()[0]?.model} x ${os.cpus().length}`,
    images: n,
    size,
    rounds,
    perImage: summary(rates.perImage),
    strips: summary(rates.strips),
  }
  console.log(JSON.stringify(result, null, 1))
  if (values.out) writeFileSync(values.out, `${JSON.stringify(result, null, 1)}\n`)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
