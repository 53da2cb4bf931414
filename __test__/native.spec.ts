import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'

import { BackendError, type DeviceEvent, type ProgressEvent, pretrain, probeDevice } from '../ts/index.js'
import { type AddonProbeInputs, CUDA_PACKAGE, chooseAddon, native, probeInChild } from '../ts/native.js'
import { stripes, tempDir, tinyPretrain } from './helpers.js'

/** Stand-ins for a CUDA build, as modules the child process loads: one that works, one that
 *  throws like a CUDA build on a machine without a usable GPU, one that kills its process the way
 *  a GPU binary that does not fit the driver can. */
function fakeBuilds() {
  const dir = tempDir('fake-cuda')
  mkdirSync(dir, { recursive: true })
  const write = (name: string, body: string) => {
    const file = path.join(dir, `${name}.js`)
    writeFileSync(file, body)
    return file
  }
  return {
    works: write('works', "exports.probeDevice = (d) => ({ backend: d, reason: 'asked for' })"),
    throws: write('throws', "exports.probeDevice = () => { throw new Error('no usable CUDA device: driver too old') }"),
    crashes: write('crashes', 'process.abort()'),
    cpuOnly: write('cpu-only', "exports.probeDevice = () => ({ backend: 'cpu', reason: 'asked for' })"),
  }
}

const inputs = (over: Partial<AddonProbeInputs>): AddonProbeInputs => ({
  cudaEntry: '/nowhere/cass.node',
  driverPresent: true,
  probe: () => {
    throw new Error('the probe must not run here')
  },
  ...over,
})

test('the default build loads when the CUDA package is absent or no NVIDIA driver is loaded, without probing', (t) => {
  const absent = chooseAddon(inputs({ cudaEntry: undefined }))
  t.is(absent.build, 'default')
  t.true(absent.reason.includes(CUDA_PACKAGE), absent.reason)
  const noDriver = chooseAddon(inputs({ driverPresent: false }))
  t.is(noDriver.build, 'default')
  t.regex(noDriver.reason, /no NVIDIA driver.*\/proc\/driver\/nvidia\/version/)
  t.is(chooseAddon(inputs({ wanted: 'default' })).reason, 'CASS_SSL_ADDON=default')
})

test('CASS_SSL_ADDON=cuda is an error naming why the CUDA build cannot load; other values are refused', (t) => {
  t.throws(() => chooseAddon(inputs({ wanted: 'cuda', cudaEntry: undefined })), {
    message: new RegExp(`CASS_SSL_ADDON=cuda, but the CUDA build \\(${CUDA_PACKAGE}\\) is not installed`),
  })
  t.throws(() => chooseAddon(inputs({ wanted: 'cuda', driverPresent: false })), { message: /no NVIDIA driver/ })
  t.throws(() => chooseAddon(inputs({ wanted: 'gpu' })), { message: /CASS_SSL_ADDON is 'gpu'; it must be 'default' or 'cuda'/ })
})

test('the probe runs in a child process: a working build is chosen, a crash or a failure falls back with the reason', (t) => {
  const fake = fakeBuilds()
  const chosen = chooseAddon(inputs({ cudaEntry: fake.works, probe: probeInChild }))
  t.deepEqual(chosen, { build: 'cuda', from: fake.works, reason: 'the CUDA probe ran on the GPU' })

  // The crash kills the child only: this process goes on and says what happened.
  const crashed = chooseAddon(inputs({ cudaEntry: fake.crashes, probe: probeInChild }))
  t.is(crashed.build, 'default')
  t.is(crashed.reason, "the CUDA build's probe crashed (SIGABRT)")

  const threw = chooseAddon(inputs({ cudaEntry: fake.throws, probe: probeInChild }))
  t.is(threw.build, 'default')
  t.is(threw.reason, "the CUDA build's probe failed (exit 1): no usable CUDA device: driver too old")

  // A build that answers but not with CUDA is not taken either.
  t.deepEqual(probeInChild(fake.cpuOnly), { ok: false, reason: "the CUDA build's probe answered cpu, not cuda" })
})

test('this addon says what auto resolves to and why; a backend it lacks is a named error', (t) => {
  const backends = native().availableBackends()
  const auto = probeDevice()
  if (backends.length === 1) {
    t.deepEqual(auto, { backend: 'cpu', reason: 'auto: cuda: not in this build; wgpu: not in this build' })
    const e = t.throws(() => probeDevice('cuda'), { instanceOf: BackendError })
    t.regex(e!.message, /backend `cuda` is not in this build \(built with: cpu\)/)
  } else {
    t.true(['cpu', 'cuda', 'wgpu'].includes(auto.backend))
    t.true(auto.reason.startsWith('auto: '), auto.reason)
  }
  t.deepEqual(probeDevice('cpu'), { backend: 'cpu', reason: 'asked for' })
})

test('a job reports its device first, with the addon that runs it', async (t) => {
  const { images } = stripes(8, 16)
  const events: ProgressEvent[] = []
  await pretrain({
    config: { ...tinyPretrain, epochs: 1, device: 'auto' },
    images,
    outDir: tempDir('device-event'),
    onProgress: (e) => events.push(e),
  })
  const device = events[0] as DeviceEvent
  t.is(device.type, 'device')
  t.is(events.filter((e) => e.type === 'device').length, 1)
  t.is(device.backend, probeDevice('auto').backend)
  t.true(device.reason.startsWith('auto: '), device.reason)
  t.is(device.addon.build, 'default')
})
