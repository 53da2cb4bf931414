/**
 * `npm run bench`: the CASS training step and each network's forward pass, ours (burn, via
 * `crates/cass-core/examples/bench_step.rs`) against the PyTorch + timm reference
 * (`bench/reference.py`), same configurations, same machine, same invocation. Prints a markdown
 * table with the ratio ours / PyTorch of images/s and writes `bench/results/<date>-<machine>.json`.
 *
 *   npm run bench -- [--quick] [--rounds N] [--python /usr/bin/python3]
 *
 * `--rounds N` measures each row N times, ours and the reference alternated (ours first in odd
 * rounds), and reports each side's median round and the median of the rounds' ratios with their
 * range: on a machine whose speed drifts (the 2-core VM's moved by 2x within minutes) one round's
 * ratio can be off by tens of percent.
 *   npm run bench -- --import results.jsonl   (a GPU run made by `bench/device.py`; README, Benchmarks)
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'

interface Row {
  model: string
  size: number
  batch: number
  what: 'step' | 'step-2views' | 'fwd-cnn' | 'fwd-vit'
  steps: number
  group: string
}

interface Result {
  images_per_sec: number
  sec: { min: number; median: number; max: number }
  peak_rss_mib: number
  /** Peak device memory of the process (GPU runs, sampled from nvidia-smi). */
  peak_gpu_mib?: number
  achieved_gflops?: number
  flops_per_iter?: number
  impl: string
  towers?: string
  conv?: string
  /** Wall time of every step from the first, warm-up included (GPU runs: `bench/device.py`). */
  step_sec?: number[]
  /** Images/s of every round (`--rounds`); the result is the median round's. */
  rounds?: number[]
}

interface Measured {
  row: Row
  ours: Result
  torch: Result
  /** Our step with the other tower mode, where measured (GPU runs). */
  oursAlt?: Result
  /** Ours / PyTorch of every round (`--rounds`), each from the same round's two runs. */
  ratios?: number[]
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** The median round's result (the lower middle one for an even count), with every round's images/s. */
function medianRound(results: Result[]): Result {
  const sorted = [...results].sort((a, b) => a.images_per_sec - b.images_per_sec)
  return { ...sorted[Math.floor((sorted.length - 1) / 2)], rounds: results.map((r) => r.images_per_sec) }
}

/**
 * Datasheet dense peaks, FLOP/s, of the GPUs the benchmark has run on: FP32 on the CUDA cores
 * (both sides compute in fp32) and TF32 on the tensor cores (what fp32 matmuls can use).
 */
const GPU_PEAKS: { match: RegExp; fp32: number; tf32: number }[] = [
  { match: /H200|H100 80GB HBM3|H100 SXM/, fp32: 66.9e12, tf32: 494.7e12 },
  { match: /H100 PCIe/, fp32: 51.2e12, tf32: 378e12 },
]

const root = path.resolve(__dirname, '..')

function rows(quick: boolean): Row[] {
  const s = (n: number) => (quick ? Math.max(2, Math.floor(n / 4)) : n)
  const out: Row[] = []
  for (const batch of [16, 64]) {
    for (const what of ['step', 'fwd-cnn', 'fwd-vit'] as const)
      out.push({ model: 'cpu-small', size: 32, batch, what, steps: s(batch === 16 ? 60 : 20), group: 'main' })
  }
  for (const size of [96, 224]) {
    for (const what of ['step', 'fwd-cnn', 'fwd-vit'] as const)
      out.push({ model: 'r18-vitti', size, batch: 16, what, steps: s(size === 96 ? 6 : 3), group: 'main' })
  }
  // The two-view step with the collapse guard (images/s counts images, not views).
  out.push({ model: 'cpu-small', size: 32, batch: 16, what: 'step-2views', steps: s(30), group: 'main' })
  for (const batch of [8, 32])
    out.push({ model: 'cpu-small', size: 32, batch, what: 'step', steps: s(10), group: 'batch-scaling' })
  out.push({ model: 'r18-vitti', size: 64, batch: 16, what: 'step', steps: s(6), group: 'size-scaling' })
  return out
}

function runJson(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Record<string, unknown> {
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', env: env ?? process.env, maxBuffer: 1 << 24 })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stderr.slice(-2000)}`)
  const line = r.stdout.trim().split('\n').at(-1) ?? ''
  return JSON.parse(line) as Record<string, unknown>
}

function measureLocal(quick: boolean, python: string, rounds: number) {
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
      '--features',
      'cass-core/testing',
      '--example',
      'bench_step',
      '--example',
      'forward_profile',
      '--example',
      'conv_profile',
      '--target',
      host,
    ],
    {
      cwd: root,
      stdio: 'inherit',
    },
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
  const blasCore = referenceBlasCore(python, refEnv)
  if (blasCore.set) refEnv.OPENBLAS_CORETYPE = blasCore.set
  console.log(`note: the PyTorch reference's OpenBLAS kernels: ${blasCore.describe}`)

  const mm = ['--what', 'matmul', '--steps', '5', '--warmup', '2']
  const peak = {
    ours: runJson(ours, mm).gflops as number,
    torch: runJson(python, ['bench/reference.py', ...mm], refEnv).gflops as number,
  }
  const measured: Measured[] = []
  for (const row of rows(quick)) {
    const args = [
      '--model',
      row.model,
      '--size',
      String(row.size),
      '--batch',
      String(row.batch),
      ...(row.what === 'step-2views' ? ['--what', 'step', '--views', '2', '--guard'] : ['--what', row.what]),
      '--steps',
      String(row.steps),
      '--warmup',
      '2',
    ]
    const sides: { ours: Result[]; torch: Result[] } = { ours: [], torch: [] }
    const measure = {
      ours: () => sides.ours.push(runJson(ours, args) as unknown as Result),
      torch: () => sides.torch.push(runJson(python, ['bench/reference.py', ...args], refEnv) as unknown as Result),
    }
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? (['ours', 'torch'] as const) : (['torch', 'ours'] as const)
      for (const side of order) measure[side]()
    }
    const ratios = sides.ours.map((o, i) => o.images_per_sec / sides.torch[i].images_per_sec)
    const [o, t] = [medianRound(sides.ours), medianRound(sides.torch)]
    measured.push({ row, ours: o, torch: t, ...(rounds > 1 ? { ratios } : {}) })
    console.error(
      `${row.model} ${row.size}px b${row.batch} ${row.what}: ours ${o.images_per_sec.toFixed(1)} img/s, pytorch ${t.images_per_sec.toFixed(1)} img/s, ratio ${median(ratios).toFixed(2)}${rounds > 1 ? ` (${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)} over ${rounds} rounds)` : ''}`,
    )
  }
  const breakdown = whereTimeGoes(ours, path.dirname(ours), quick)
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU'
  const memGiB = Math.round(os.totalmem() / 2 ** 30)
  return {
    describe: `Machine: ${cpu}, ${os.cpus().length} cores, ${memGiB} GiB; device cpu.`,
    fileTag: os.hostname(),
    machine: {
      cpu,
      cores: os.cpus().length,
      memGiB,
      node: process.version,
      host: os.hostname(),
    },
    device: 'cpu',
    unsetForReference: unset,
    referenceBlasCore: blasCore,
    peakGflops: peak,
    // MFU against the faster of the two matmuls measured in this run.
    mfuPeakGflops: Math.max(peak.ours, peak.torch),
    mfuPeakWhat: 'the higher of the two measured 1024^3 fp32 matmul rates',
    failures: [] as string[],
    measured,
    breakdown,
  }
}

/**
 * The OpenBLAS kernels the PyTorch reference would use, and the core type to pin when OpenBLAS
 * does not recognise the CPU. Debian's OpenBLAS 0.3.21 takes this VM's Xeon (a generic CPUID
 * name) for a Prescott and runs SSE3 kernels: PyTorch's 1024³ matmul measured 30-60 GFLOP/s,
 * 178 with `OPENBLAS_CORETYPE=SkylakeX` (2026-12-06). A reference that slow would flatter every
 * ratio that goes through its matrix products (the ViT, the linear heads), so it is pinned to
 * the best core the CPU's flags allow, and the results file says so.
 */
function referenceBlasCore(python: string, env: NodeJS.ProcessEnv): { detected: string; set?: string; describe: string } {
  const r = spawnSync(python, ['-c', 'import torch; (torch.ones(64, 64) @ torch.ones(64, 64)).sum().item()'], {
    encoding: 'utf8',
    env: { ...env, OPENBLAS_VERBOSE: '2' },
  })
  const detected = /Core: (\S+)/.exec(`${r.stdout}${r.stderr}`)?.[1] ?? 'unknown'
  const flags = /^flags\s*:(.*)$/m.exec(readFileSyncSafe('/proc/cpuinfo'))?.[1] ?? ''
  const best = / avx512f /.test(`${flags} `) ? 'SkylakeX' : / avx2 /.test(`${flags} `) ? 'Haswell' : undefined
  const old = ['Prescott', 'Core2', 'Penryn', 'Dunnington', 'Nehalem', 'Sandybridge', 'unknown']
  if (best && old.includes(detected) && detected !== best)
    return {
      detected,
      set: best,
      describe: `OpenBLAS detected ${detected}; pinned to ${best} (the CPU has ${best === 'SkylakeX' ? 'AVX-512' : 'AVX2'})`,
    }
  return { detected, describe: `OpenBLAS detected ${detected}` }
}

function readFileSyncSafe(file: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch {
    return ''
  }
}

/**
 * Where our time goes, after the table: each layer of the CNN's evaluation forward pass
 * (`forward_profile`: a convolution with its folded BatchNorm, residual and ReLU is one step on
 * the CPU), each training convolution's output, input gradient and weight gradient
 * (`conv_profile`), and each phase of a CASS step (`bench_step --what breakdown`, median
 * seconds).
 */
function whereTimeGoes(ours: string, examples: string, quick: boolean) {
  const r = (n: number) => String(quick ? Math.max(2, Math.floor(n / 4)) : n)
  // A profiling example's printout for each (model, size, batch, repetitions).
  const profiled = (example: string, cases: readonly (readonly [string, number, number, number])[]) =>
    cases.map(([model, size, batch, reps]) => ({
      model,
      size,
      batch,
      text: execFileSync(
        path.join(examples, example),
        ['--model', model, '--size', String(size), '--batch', String(batch), '--reps', r(reps)],
        { cwd: root, encoding: 'utf8' },
      ).trim(),
    }))
  const forward = profiled('forward_profile', [
    ['cpu-small', 32, 16, 40],
    ['cpu-small', 32, 64, 20],
    ['resnet18', 96, 16, 6],
    ['resnet18', 224, 16, 3],
  ])
  const convolutions = profiled('conv_profile', [
    ['cpu-small', 32, 16, 20],
    ['resnet18', 96, 16, 5],
  ])
  const step = (
    [
      ['cpu-small', 32, 16, 10],
      ['r18-vitti', 96, 16, 4],
    ] as const
  ).map(([model, size, batch, steps]) =>
    runJson(ours, [
      '--model',
      model,
      '--size',
      String(size),
      '--batch',
      String(batch),
      '--what',
      'breakdown',
      '--steps',
      r(steps),
      '--warmup',
      '2',
    ]),
  )
  return { forward, convolutions, step }
}

/** Reads the JSON lines written by `bench/device.py` on a GPU machine. */
function importDevice(file: string) {
  const lines = readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, any>)
  const machine = lines.find((l) => l.kind === 'machine')
  const peakLine = lines.find((l) => l.kind === 'peak')
  if (!machine || !peakLine) throw new Error(`${file}: no machine or peak line; not a bench/device.py output`)
  const gpu = String(machine.gpu)
  const datasheet = GPU_PEAKS.find((p) => p.match.test(gpu))
  const measured: Measured[] = []
  const failures: string[] = []
  // Every side's per-step times, also of runs that failed or were stopped at their limit: the
  // first steps hold compilation and autotuning.
  const firstSteps: string[] = []
  const byRow = new Map<string, { row: Row; sides: Record<string, Result> }>()
  for (const l of lines.filter((l) => l.kind === 'row')) {
    const key = JSON.stringify(l.row)
    const entry = byRow.get(key) ?? { row: l.row as Row, sides: {} }
    if (l.result.error) failures.push(`${l.side} ${key}: ${l.result.error}\n${l.result.stderr ?? ''}`)
    else entry.sides[l.side] = l.result as Result
    const steps = (l.result.step_sec ?? []) as number[]
    if (steps.length)
      firstSteps.push(
        `${l.row.model} ${l.row.size} px b${l.row.batch} ${l.row.what}, ${l.side}${l.result.error ? ` (${l.result.error})` : ''}: ${steps.map((t) => t.toFixed(3)).join(', ')}`,
      )
    byRow.set(key, entry)
  }
  for (const { row, sides } of byRow.values())
    if (sides.ours && sides.torch)
      measured.push({ row, ours: sides.ours, torch: sides.torch, oursAlt: sides['ours-parallel-towers'] })
  return {
    describe: `Machine: ${gpu}; device ${machine.device ?? 'cuda'}.`,
    fileTag: gpu.split(',')[0].replace(/[^A-Za-z0-9]+/g, '-'),
    machine: { gpu, cpuCount: machine.cpu_count },
    device: String(machine.device ?? 'cuda'),
    unsetForReference: [] as string[],
    peakGflops: { ours: peakLine.ours.gflops as number, torch: peakLine.torch.gflops as number },
    mfuPeakGflops: datasheet ? datasheet.fp32 / 1e9 : Math.max(peakLine.ours.gflops, peakLine.torch.gflops),
    mfuPeakWhat: datasheet
      ? `the datasheet dense FP32 peak of the card, ${(datasheet.fp32 / 1e12).toFixed(1)} TFLOP/s (TF32 tensor cores: ${(datasheet.tf32 / 1e12).toFixed(1)})`
      : 'the higher of the two measured 8192^3 fp32 matmul rates (card not in the datasheet table)',
    failures,
    measured,
    firstSteps,
    dryRun: machine.dry_run === true,
  }
}

function main() {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      python: { type: 'string', default: process.env.CASS_BENCH_PYTHON ?? '/usr/bin/python3' },
      import: { type: 'string' },
      note: { type: 'string' },
      out: { type: 'string' },
      rounds: { type: 'string', default: '1' },
    },
  })
  const rounds = Number(values.rounds)
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) {
    console.error(`--rounds is a whole number from 1 to 20, not ${values.rounds}`)
    process.exit(2)
  }
  const run = values.import ? importDevice(values.import) : measureLocal(values.quick, values.python, rounds)
  const gpu = run.device !== 'cpu'
  const measuredRounds = values.import ? 1 : rounds
  const mem = (r: Result) => (gpu ? (r.peak_gpu_mib ?? NaN) : r.peak_rss_mib).toFixed(0)
  const mfu = (r: Result, flops: number) => ((flops / r.sec.median / 1e9 / run.mfuPeakGflops) * 100).toFixed(1)
  // Non-default engine settings of a row: the tower mode of a step, the convolution strategy.
  const label = (row: Row, r: Result) => {
    const notes = [
      ...(row.what === 'step' && r.towers ? [`${r.towers} towers`] : []),
      ...(r.conv && r.conv !== 'auto' ? [`conv ${r.conv}`] : []),
    ]
    return notes.length ? `${row.what} (${notes.join(', ')})` : row.what
  }
  const ips = (r: Result) => `${r.images_per_sec.toFixed(1)} (${r.sec.min.toFixed(3)}-${r.sec.max.toFixed(3)})`
  const lines = [
    `${run.describe} Measured matmul (fp32): ours ${run.peakGflops.ours.toFixed(1)} GFLOP/s, PyTorch ${run.peakGflops.torch.toFixed(1)} GFLOP/s. MFU = model FLOPs (3x forward for a step) / time / ${run.mfuPeakWhat}.${measuredRounds > 1 ? ` Each row measured in ${measuredRounds} rounds, ours and PyTorch alternated: images/s of the median round, the ratio is the median of the rounds' ratios (their range in brackets).` : ''}`,
    '',
    `| models | px | batch | what | ours img/s (min-max s/iter) | PyTorch img/s (min-max s/iter) | ours / PyTorch | ours MFU | PyTorch MFU | ours peak ${gpu ? 'GPU' : 'RSS'} MiB | PyTorch peak ${gpu ? 'GPU' : 'RSS'} MiB |`,
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  const results = run.measured.map(({ row, ours, torch, oursAlt, ratios }) => {
    const flops = ours.flops_per_iter ?? 0
    // Over several rounds: the median of the rounds' ratios, and their range.
    const ratio = ratios ? median(ratios) : ours.images_per_sec / torch.images_per_sec
    const range = ratios ? ` (${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)})` : ''
    lines.push(
      `| ${row.model} | ${row.size} | ${row.batch} | ${label(row, ours)} | ${ips(ours)} | ${ips(torch)} | **${ratio.toFixed(2)}**${range} | ${mfu(ours, flops)} % | ${mfu(torch, flops)} % | ${mem(ours)} | ${mem(torch)} |`,
    )
    if (oursAlt)
      lines.push(
        `| ${row.model} | ${row.size} | ${row.batch} | ${label(row, oursAlt)} | ${ips(oursAlt)} | (same) | **${(oursAlt.images_per_sec / torch.images_per_sec).toFixed(2)}** | ${mfu(oursAlt, flops)} % | | ${mem(oursAlt)} | |`,
      )
    return { row, ours, torch, oursAlt, ratio, ...(ratios ? { ratios } : {}) }
  })
  console.log(lines.join('\n'))
  if ('breakdown' in run && run.breakdown) {
    const b = run.breakdown
    const text = [
      '',
      'Where the time goes (ours): the CNN forward pass (evaluation) by layer',
      ...b.forward.map((f) => `\n${f.model} ${f.size} px, batch ${f.batch}:\n${f.text}`),
      '',
      'Each training convolution by phase (ours)',
      ...(b.convolutions ?? []).map((f) => `\n${f.model} ${f.size} px, batch ${f.batch}:\n${f.text}`),
      '',
      'A CASS step by phase (median seconds):',
      ...b.step.map((s) => JSON.stringify(s)),
    ].join('\n')
    console.log(text)
    lines.push(text)
  }
  if ('firstSteps' in run && run.firstSteps.length) {
    const text = ['', 'Seconds per step from step 1 (warm-up included):', ...run.firstSteps].join('\n')
    console.log(text)
    lines.push(text)
  }
  if (run.failures.length) console.log(`\nnot measured:\n${run.failures.join('\n')}`)
  const date = new Date().toISOString()
  const out = values.out ?? path.join(root, 'bench', 'results', `${date.slice(0, 10)}-${run.fileTag}-${run.device}.json`)
  mkdirSync(path.dirname(out), { recursive: true })
  const { measured: _m, ...meta } = run
  const note = values.note ? { note: values.note } : {}
  writeFileSync(
    out,
    `${JSON.stringify({ date, ...note, ...meta, rounds: measuredRounds, results, table: lines.join('\n') }, null, 2)}\n`,
  )
  console.log(`\nwritten ${path.relative(root, out)}`)
}

main()
