/**
 * wgpu through the whole door: the public API, the binding and the engine, with an addon built
 * with the `wgpu` feature. `npm run test:wgpu` builds that addon and runs this file with
 * `CASS_WGPU_ADDON` naming it; without it (plain `npm test`, whose addon is CPU-only) every test
 * here is skipped and says so.
 */
import test from 'ava'

import { type DeviceEvent, type ProgressEvent, availableBackends, pretrain, probeDevice } from '../ts/index.js'
import { stripes, tempDir, tinyPretrain } from './helpers.js'

const addon = process.env.CASS_WGPU_ADDON
// Read by napi's generated loader when the addon first loads, which is on first use.
if (addon) process.env.NAPI_RS_NATIVE_LIBRARY_PATH = addon
const wgpuTest = addon ? test : test.skip
if (!addon) console.log('wgpu.spec.ts: skipped; `npm run test:wgpu` builds the wgpu addon and runs it')

async function run(device: 'cpu' | 'wgpu') {
  const { images } = stripes(8, 16)
  const events: ProgressEvent[] = []
  const result = await pretrain({
    config: { ...tinyPretrain, epochs: 2, device },
    images,
    outDir: tempDir(`wgpu-${device}`),
    onProgress: (e) => events.push(e),
  })
  return { result, device: events.find((e): e is DeviceEvent => e.type === 'device')! }
}

wgpuTest('pre-training on wgpu through the API follows the CPU backend step for step', async (t) => {
  t.true(availableBackends().includes('wgpu'))
  const cpu = await run('cpu')
  const gpu = await run('wgpu')
  t.is(gpu.device.backend, 'wgpu')
  t.is(gpu.device.reason, 'asked for')
  t.is(gpu.result.status, 'completed')
  t.is(gpu.result.losses.length, 4)
  // Same seed, so the same initial weights (built on the CPU for every backend), the same data
  // and augmentation draws (made on the host): the losses differ only by the backends' summation
  // orders, compounded by each Adam step. Measured on lavapipe: 8.4e-7, 1.3e-6, 6.3e-6 and
  // 1.4e-5 relative over the four steps. A broken path is far off: initialising on the device
  // gave 2.2e-1 at the first step.
  for (const [k, a] of cpu.result.losses.entries()) {
    const b = gpu.result.losses[k]
    const rel = Math.abs(a - b) / Math.max(Math.abs(a), 1e-6)
    t.log(`step ${k + 1}: cpu ${a.toFixed(7)} wgpu ${b.toFixed(7)} relative ${rel.toExponential(2)}`)
    t.true(rel < 1e-4, `step ${k + 1}: cpu ${a}, wgpu ${b}`)
  }
})

wgpuTest('auto names wgpu in its reason, whichever backend it takes', (t) => {
  const auto = probeDevice('auto')
  t.true(auto.reason.startsWith('auto: cuda: not in this build; '), auto.reason)
  // A CPU adapter (lavapipe) is passed over; a GPU adapter is taken.
  if (auto.backend === 'cpu') t.regex(auto.reason, /wgpu: no discrete or integrated GPU adapter/)
  else t.is(auto.backend, 'wgpu')
})
