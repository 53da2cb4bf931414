/**
 * Loads the native addon. Two builds can be installed: the default one (the generated loader,
 * `index.js`, finds it beside the package or in `cass-ssl-<platform>`) and, on linux-x64, the
 * CUDA one (`cass-ssl-linux-x64-gnu-cuda`, an optional package). The CUDA build is used only
 * where an NVIDIA driver is present and a probe succeeds; the probe loads it and runs a tiny
 * computation on the GPU in a child process, because a GPU binary that does not fit the driver
 * can crash the process that loads it rather than throw.
 */
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import path from 'node:path'

import type * as Binding from '../index.js'

export type NativeBinding = typeof Binding

/** The CUDA build's package, for the one platform it is published for. */
export const CUDA_PACKAGE = 'cass-ssl-linux-x64-gnu-cuda'
const NVIDIA_DRIVER = '/proc/driver/nvidia/version'
/** A first CUDA context (driver load, kernel compile cache) takes seconds; a hung driver must not hang us. */
const PROBE_TIMEOUT_MS = 120_000

/** Which addon loads and why; `cass doctor` and the `device` progress event show it. */
export interface AddonChoice {
  build: 'default' | 'cuda'
  /** What `require` loads: a package name or a file. */
  from: string
  reason: string
}

/** What decides the choice; the defaults read this machine. */
export interface AddonProbeInputs {
  /** `CASS_SSL_ADDON`: `default` never tries the CUDA build, `cuda` requires it. */
  wanted?: string
  /** The CUDA build's entry (resolved package path), or undefined when it is not installed. */
  cudaEntry?: string
  driverPresent: boolean
  /** Runs the probe of a CUDA build in a child process. */
  probe: (entry: string) => { ok: true; reason: string } | { ok: false; reason: string }
}

/** Loads `entry` in a child process and asks it for a CUDA device; reports how the child ended. */
export function probeInChild(entry: string): { ok: true; reason: string } | { ok: false; reason: string } {
  // A failure to load or to find a device is written as one `probe:` line; a crash leaves only
  // whatever the dying process printed.
  const script = [
    'try {',
    '  const c = require(process.argv[1]).probeDevice("cuda")',
    '  process.stdout.write(JSON.stringify(c))',
    '} catch (e) {',
    '  let m = String(e && e.message)',
    '  try { m = JSON.parse(m).message } catch {}',
    '  process.stderr.write("probe: " + m.split("\\n")[0] + "\\n")',
    '  process.exit(1)',
    '}',
  ].join('\n')
  const r = spawnSync(process.execPath, ['-e', script, entry], { encoding: 'utf8', timeout: PROBE_TIMEOUT_MS })
  if (r.status === 0) {
    let answer = 'no answer'
    try {
      const c = JSON.parse(r.stdout) as { backend: string; reason: string }
      if (c.backend === 'cuda') return { ok: true, reason: 'the CUDA probe ran on the GPU' }
      answer = `${c.backend}, not cuda`
    } catch {
      /* not JSON: said below */
    }
    return { ok: false, reason: `the CUDA build's probe answered ${answer}` }
  }
  const how = r.error ? `could not run (${r.error.message})` : r.signal ? `crashed (${r.signal})` : `failed (exit ${r.status})`
  const lines = `${r.stderr ?? ''}`.split('\n')
  const said = lines.find((l) => l.startsWith('probe: '))?.slice('probe: '.length)
  return { ok: false, reason: `the CUDA build's probe ${how}${said ? `: ${said.slice(0, 300)}` : ''}` }
}

function resolveCudaEntry(): string | undefined {
  if (`${process.platform}-${process.arch}` !== 'linux-x64') return undefined
  try {
    return require.resolve(CUDA_PACKAGE, { paths: [path.resolve(__dirname, '..')] })
  } catch {
    return undefined
  }
}

export function machineProbeInputs(): AddonProbeInputs {
  return {
    wanted: process.env.CASS_SSL_ADDON,
    cudaEntry: resolveCudaEntry(),
    driverPresent: existsSync(NVIDIA_DRIVER),
    probe: probeInChild,
  }
}

/** Decides which addon to load. Throws only when `CASS_SSL_ADDON=cuda` cannot be honoured. */
export function chooseAddon(inputs: AddonProbeInputs): AddonChoice {
  const fallback = (reason: string): AddonChoice => ({ build: 'default', from: '../index.js', reason })
  const { wanted } = inputs
  if (wanted !== undefined && !['default', 'cuda'].includes(wanted)) {
    throw new Error(`cass-ssl: CASS_SSL_ADDON is '${wanted}'; it must be 'default' or 'cuda', or unset`)
  }
  if (wanted === 'default') return fallback('CASS_SSL_ADDON=default')
  const refuse = (why: string) => {
    if (wanted === 'cuda') throw new Error(`cass-ssl: CASS_SSL_ADDON=cuda, but ${why}`)
    return fallback(why)
  }
  if (!inputs.cudaEntry) return refuse(`the CUDA build (${CUDA_PACKAGE}) is not installed`)
  if (!inputs.driverPresent) return refuse(`no NVIDIA driver is loaded (${NVIDIA_DRIVER} is absent)`)
  const probed = inputs.probe(inputs.cudaEntry)
  if (!probed.ok) return refuse(probed.reason)
  return { build: 'cuda', from: inputs.cudaEntry, reason: probed.reason }
}

let cached: { binding: NativeBinding; choice: AddonChoice } | undefined

/** The addon, loaded on first use so that config validation never needs it. */
export function native(): NativeBinding {
  return loaded().binding
}

/** Which addon `native()` loaded, and why. */
export function addonChoice(): AddonChoice {
  return loaded().choice
}

function loaded(): { binding: NativeBinding; choice: AddonChoice } {
  if (cached) return cached
  const choice = chooseAddon(machineProbeInputs())
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cached = { binding: require(choice.from) as NativeBinding, choice }
  } catch (e) {
    // The loader's own message lists every path it tried; say first what to do about it.
    throw new Error(
      `cass-ssl: no native addon loads on ${process.platform}-${process.arch}. A prebuilt one comes as the optional ` +
        `package cass-ssl-<platform> (reinstall without --omit=optional); otherwise it is built from source at install ` +
        `(needs Rust; npm 11 runs install scripts only once allowed: \`npm install-scripts approve cass-ssl\`, then ` +
        `\`npm rebuild cass-ssl\`). \`npx cass doctor\` shows what was found.\n${(e as Error).message}`,
      { cause: e },
    )
  }
  return cached
}
