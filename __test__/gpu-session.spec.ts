/**
 * The prepared GPU session (`bench/gpu-session.sh`, `bench/device.py`) rehearsed without a GPU:
 * its dry run runs every command of the session with fake binaries standing in for our
 * benchmark and for PyTorch, and its output must parse into the results table
 * (`bench/run.ts --import`) with each run's per-step times from the first step, also for runs
 * that failed or hit their time limit. GPU minutes are rare: a session must not be spent finding
 * a typo in its script.
 */
import { spawnSync } from 'node:child_process'
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import test from 'ava'

const root = path.resolve(__dirname, '..')

/**
 * A stand-in for `bench_step` and for `python3 reference.py`: per-step lines on stderr, one JSON
 * line on stdout; `--precision bf16` fails after two steps, `FAKE_SLEEP` seconds of sleep after
 * the steps make it hit a time limit.
 */
const FAKE = `#!/usr/bin/env bash
args=" $* "
arg() { local k=$1; shift; while [ $# -gt 0 ]; do [ "$1" = "$k" ] && { echo "$2"; return; }; shift; done; }
case "$args" in
  *" --what parity "*) echo '{"logits": 1e-6, "features": 1e-6}'; exit 0 ;;
  *" --what matmul "*) echo '{"gflops": 1000.0, "n": 256, "what": "matmul"}'; exit 0 ;;
  *" --what breakdown "*) echo '{"what": "breakdown", "median_sec": {"forward_cnn": 0.01}, "total_sec": 0.01}'; exit 0 ;;
esac
steps=$(( $(arg --steps "$@") + $(arg --warmup "$@") ))
for i in $(seq 0 $((steps - 1))); do
  echo "step $i: 0.$((i + 1))00 s" >&2
  case "$args" in *" --precision bf16 "*) [ "$i" = 1 ] && { echo "bf16 not supported here" >&2; exit 3; } ;; esac
done
[ -n "\${FAKE_SLEEP:-}" ] && sleep "$FAKE_SLEEP"
echo '{"images_per_sec": 100.0, "sec": {"min": 0.1, "median": 0.1, "max": 0.1}, "peak_rss_mib": 10, "impl": "fake", "flops_per_iter": 1e9}'
`

function fakes() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cass-gpu-session-'))
  for (const name of ['bench_step', 'python']) {
    writeFileSync(path.join(dir, name), FAKE)
    chmodSync(path.join(dir, name), 0o755)
  }
  return dir
}

const jsonl = (file: string) =>
  readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, any>)

test('the dry run executes every command of the session and its output parses into the results table', (t) => {
  const dir = fakes()
  const out = path.join(dir, 'out')
  const r = spawnSync('bash', ['bench/gpu-session.sh', dir], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, CASS_GPU_DRY_RUN: '1', OUT: out, REF_PYTHON: path.join(dir, 'python') },
    timeout: 120_000,
  })
  t.is(r.status, 0, r.stderr)
  t.regex(r.stdout, /DRY RUN/)
  t.regex(r.stdout, /done\s*$/)
  const lines = jsonl(path.join(out, 'gpu.jsonl'))
  const machine = lines.find((l) => l.kind === 'machine')!
  t.true(machine.dry_run)
  t.is(machine.device, 'cpu')
  const rows = lines.filter((l) => l.kind === 'row')
  const sides = new Set(rows.map((l) => l.side))
  for (const side of ['ours', 'torch', 'ours-batched-conv', 'ours-bf16', 'ours-parallel']) t.true(sides.has(side), side)
  // The paper rows keep their names; each side ran warm-up 1 + 2 steps, all timed from step 1.
  const ours = rows.find((l) => l.side === 'ours' && l.row.size === 384)!
  t.deepEqual(ours.row, { model: 'paper', size: 384, batch: 16, what: 'step', steps: 10, group: 'main' })
  t.deepEqual(ours.result.step_sec, [0.1, 0.2, 0.3])
  // A run that fails keeps the steps it finished.
  const bf16 = rows.find((l) => l.side === 'ours-bf16')!
  t.regex(bf16.result.error, /exit 3/)
  t.deepEqual(bf16.result.step_sec, [0.1, 0.2])
  t.regex(readFileSync(path.join(out, 'parity.txt'), 'utf8'), /resnet_bottleneck f32 \{"logits"/)
  t.regex(readFileSync(path.join(out, 'breakdown.jsonl'), 'utf8'), /"breakdown"/)

  const results = path.join(dir, 'results.json')
  const imp = spawnSync(
    process.execPath,
    ['--import', 'tsx', 'bench/run.ts', '--import', path.join(out, 'gpu.jsonl'), '--out', results],
    { cwd: root, encoding: 'utf8' },
  )
  t.is(imp.status, 0, imp.stderr)
  t.regex(imp.stdout, /\| paper \| 384 \| 16 \| step .*\| \*\*1\.00\*\* \|/)
  t.regex(imp.stdout, /Seconds per step from step 1/)
  t.regex(imp.stdout, /paper 384 px b16 step, ours-bf16 \(exit 3\): 0\.100, 0\.200/)
  t.regex(imp.stdout, /not measured:\nours-bf16/)
  const saved = JSON.parse(readFileSync(results, 'utf8'))
  t.true(saved.dryRun)
  t.is(saved.device, 'cpu')
})

test('a run stopped at its time limit keeps the per-step times it printed', (t) => {
  const dir = fakes()
  const out = path.join(dir, 'limit.jsonl')
  const r = spawnSync(
    'python3',
    [
      'bench/device.py',
      '--ours',
      path.join(dir, 'bench_step'),
      '--python',
      path.join(dir, 'python'),
      '--out',
      out,
      '--dry-run',
      '--no-peak',
      '--no-reference',
      '--timeout',
      '2',
      '--only',
      'paper:384:16:step',
    ],
    { cwd: root, encoding: 'utf8', env: { ...process.env, FAKE_SLEEP: '30' }, timeout: 60_000 },
  )
  t.is(r.status, 0, r.stderr)
  const row = jsonl(out).find((l) => l.kind === 'row')!
  t.regex(row.result.error, /timed out after 2 s/)
  t.deepEqual(row.result.step_sec, [0.1, 0.2, 0.3])
})
