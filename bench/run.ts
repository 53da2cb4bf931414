/**
 * `npm run bench`: the CASS training step and each network's forward pass, ours (burn, via
 * `crates/cass-core/examples/bench_step.rs`) against the PyTorch + timm reference
 * (`bench/reference.py`), same configurations, same machine, same invocation. Prints a markdown
 * table with the ratio ours / PyTorch of images/s and writes `bench/results/<date>-<machine>.json`.
 *
 *   npm run bench -- [--quick] [--device cpu|cuda] [--python /usr/bin/python3]
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'

interface Row {
  model: string
  size: number
  batch: number
  what: 'step' | 'fwd-cnn' | 'fwd-vit'
  steps: number
  group: string
}

interface Result {
  images_per_sec: number
  sec: { min: number; median: number; max: number }
  peak_rss_mib: number
  achieved_gflops?: number
  flops_per_iter?: number
  impl: string
}

const root = path.resolve(__dirname, '..')

function rows(quick: boolean, gpu: boolean): Row[] {
  const s = (n: number) => (quick ? Math.max(2, Math.floor(n / 4)) : n)
  const out: Row[] = []
  for (const batch of [16, 64]) {
    for (const what of ['step', 'fwd-cnn', 'fwd-vit'] as const)
      out.push({ model: 'cpu-small', size: 32, batch, what, steps: s(batch === 16 ? 20 : 8), group: 'main' })
  }
  for (const size of [96, 224]) {
    for (const what of ['step', 'fwd-cnn', 'fwd-vit'] as const)
      out.push({ model: 'r18-vitti', size, batch: 16, what, steps: s(size === 96 ? 6 : 3), group: 'main' })
  }
  for (const batch of [8, 32])
    out.push({ model: 'cpu-small', size: 32, batch, what: 'step', steps: s(10), group: 'batch-scaling' })
  out.push({ model: 'r18-vitti', size: 64, batch: 16, what: 'step', steps: s(6), group: 'size-scaling' })
  if (gpu) {
    out.push({ model: 'paper', size: 384, batch: 16, what: 'step', steps: s(20), group: 'main' })
    out.push({ model: 'paper', size: 224, batch: 64, what: 'step', steps: s(20), group: 'main' })
  }
  return out
}

function runJson(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Record<string, unknown> {
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', env: env ?? process.env, maxBuffer: 1 << 24 })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stderr.slice(-2000)}`)
  const line = r.stdout.trim().split('\n').at(-1) ?? ''
  return JSON.parse(line) as Record<string, unknown>
}

function main() {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      device: { type: 'string', default: 'cpu' },
      python: { type: 'string', default: process.env.CASS_BENCH_PYTHON ?? '/usr/bin/python3' },
      out: { type: 'string' },
    },
  })
  const python = values.python
  const probe = spawnSync(python, ['-c', 'import torch, timm'], { encoding: 'utf8' })
  if (probe.status !== 0) {
    console.error(
      `The PyTorch reference needs torch and timm for ${python}. On Debian:\n  apt-get install -y python3-torch python3-torchvision libopenblas0-pthread python3-pip && pip install --break-system-packages --no-deps timm==0.9.16 safetensors==0.4.5\n(or pass --python with an interpreter that has them)`,
    )
    process.exit(2)
  }
  // Build the example once, then run the binary directly. `--workspace` and the host target
  // resolve features exactly as the addon and test builds do, so the engine build is shared.
  const host = execFileSync('rustc', ['-vV'], { encoding: 'utf8' }).match(/^host: (.+)$/m)![1]
  const build = spawnSync(
    'cargo',
    [
      'build',
      '--workspace',
      '--example',
      'bench_step',
      '--target',
      host,
      ...(values.device === 'cuda' ? ['--features', 'cuda'] : []),
    ],
    { cwd: root, stdio: 'inherit' },
  )
  if (build.status !== 0) process.exit(build.status ?? 1)
  const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(root, 'target')
  const ours = path.join(targetDir, host, 'debug', 'examples', 'bench_step')
  // The reference must use its optimised BLAS as it would by default: the machine's OpenBLAS
  // core-type pins (set for old OpenBLAS builds) would slow it down.
  const refEnv = { ...process.env }
  const unset = ['OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE'].filter((k) => k in refEnv)
  for (const k of unset) delete refEnv[k]
  if (unset.length) console.log(`note: unset ${unset.join(', ')} for the PyTorch reference`)

  const gpu = values.device === 'cuda'
  const peak = {
    ours: runJson(ours, ['--what', 'matmul', '--steps', '5', '--warmup', '2', '--device', values.device]).gflops as number,
    torch: runJson(
      python,
      ['bench/reference.py', '--what', 'matmul', '--steps', '5', '--warmup', '2', '--device', values.device],
      refEnv,
    ).gflops as number,
  }
  const machinePeak = Math.max(peak.ours, peak.torch)
  const results: { row: Row; ours: Result; torch: Result; ratio: number; oursMfu?: number; torchMfu?: number }[] = []
  for (const row of rows(values.quick, gpu)) {
    const args = [
      '--model',
      row.model,
      '--size',
      String(row.size),
      '--batch',
      String(row.batch),
      '--what',
      row.what,
      '--steps',
      String(row.steps),
      '--warmup',
      '2',
      '--device',
      values.device,
    ]
    const o = runJson(ours, args) as unknown as Result
    const t = runJson(python, ['bench/reference.py', ...args], refEnv) as unknown as Result
    const ratio = o.images_per_sec / t.images_per_sec
    const flops = o.flops_per_iter ?? 0
    results.push({
      row,
      ours: o,
      torch: t,
      ratio,
      oursMfu: flops / o.sec.median / 1e9 / machinePeak,
      torchMfu: flops / t.sec.median / 1e9 / machinePeak,
    })
    console.error(
      `${row.model} ${row.size}px b${row.batch} ${row.what}: ours ${o.images_per_sec.toFixed(1)} img/s, pytorch ${t.images_per_sec.toFixed(1)} img/s, ratio ${ratio.toFixed(2)}`,
    )
  }
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU'
  const lines = [
    `Machine: ${cpu}, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB; device ${values.device}. Measured matmul peak (1024^3 fp32): ours ${peak.ours.toFixed(1)} GFLOP/s, PyTorch ${peak.torch.toFixed(1)} GFLOP/s. MFU = model FLOPs (3x forward for a step) / time / the higher of the two measured matmul rates.`,
    '',
    '| models | px | batch | what | ours img/s (min-max s/iter) | PyTorch img/s (min-max s/iter) | ours / PyTorch | ours MFU | PyTorch MFU | ours peak RSS MiB | PyTorch peak RSS MiB |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    ...results.map(
      ({ row, ours: o, torch: t, ratio, oursMfu, torchMfu }) =>
        `| ${row.model} | ${row.size} | ${row.batch} | ${row.what} | ${o.images_per_sec.toFixed(1)} (${o.sec.min.toFixed(3)}-${o.sec.max.toFixed(3)}) | ${t.images_per_sec.toFixed(1)} (${t.sec.min.toFixed(3)}-${t.sec.max.toFixed(3)}) | **${ratio.toFixed(2)}** | ${((oursMfu ?? 0) * 100).toFixed(1)} % | ${((torchMfu ?? 0) * 100).toFixed(1)} % | ${o.peak_rss_mib.toFixed(0)} | ${t.peak_rss_mib.toFixed(0)} |`,
    ),
  ]
  console.log(lines.join('\n'))
  const date = new Date().toISOString()
  const out = values.out ?? path.join(root, 'bench', 'results', `${date.slice(0, 10)}-${os.hostname()}-${values.device}.json`)
  mkdirSync(path.dirname(out), { recursive: true })
  writeFileSync(
    out,
    `${JSON.stringify({ date, machine: { cpu, cores: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version }, device: values.device, unsetForReference: unset, peakGflops: peak, results, table: lines.join('\n') }, null, 2)}\n`,
  )
  console.log(`\nwritten ${path.relative(root, out)}`)
}

main()
