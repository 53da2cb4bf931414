/**
 * The loss of every step of short fixed-seed runs (CASS `cpu-small`, two views and the guard;
 * DINO on each network), printed as JSON: run it against two builds (each from its own
 * checkout) and compare the files to see that a change kept every method's arithmetic to the bit.
 *
 *   node --import tsx bench/fixed-seed-losses.ts [--steps 20] > losses.json
 */
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'

import { pretrain, pretrainDino } from '../ts/index.js'

const { values } = parseArgs({ options: { steps: { type: 'string', default: '20' } } })
const steps = Number(values.steps)
const count = 16 * steps
let seed = 12345
const pixels = new Uint8Array(count * 32 * 32 * 3).map(() => {
  seed = (seed * 1103515245 + 12345) >>> 0
  return seed >>> 24
})
const images = { pixels, count, height: 32, width: 32 }
const common = { preset: 'cpu-small' as const, epochs: 1, device: 'cpu' as const }

async function main() {
  const out: Record<string, number[]> = {}
  const runs: [string, (outDir: string) => PromiseLike<{ losses: number[] }>][] = [
    ['cass', (outDir) => pretrain({ config: common, images, outDir })],
    ['dino-cnn', (outDir) => pretrainDino({ config: { ...common, arch: 'cnn' }, images, outDir })],
    ['dino-vit', (outDir) => pretrainDino({ config: { ...common, arch: 'vit' }, images, outDir })],
  ]
  for (const [name, run] of runs) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'cass-losses-'))
    out[name] = (await run(dir)).losses
    rmSync(dir, { recursive: true })
  }
  process.stdout.write(`${JSON.stringify(out)}\n`)
}

main().catch((e: unknown) => {
  console.error(e)
  process.exit(1)
})
