"""GPU side of the benchmark, for machines with a GPU but no Node.js: runs our `bench_step`
binary (built with the `cuda` feature) and `bench/reference.py` on the same rows, one after the
other, and appends one JSON object per measurement to a JSON-lines file. `bench/run.ts --import`
turns that file into the results table and file, exactly as for a local run.

    python3 bench/device.py --ours path/to/bench_step --out results.jsonl [--quick]

To compare builds of our side in one session, run it once per build with `--side NAME`, and
`--no-reference --no-peak` after the first, so PyTorch is timed once per row.

Peak device memory is sampled from `nvidia-smi` (the process's used memory, every 50 ms), the
same way for both sides, so it includes each runtime's context and caching allocator.

Every result carries `step_sec`, the wall time of each step from the first (warm-up included,
as `bench_step` and `reference.py` print them on stderr), so compilation and autotuning show
apart from the steady step; a run stopped at its time limit keeps the steps it finished.

`--dry-run` rehearses a session without a GPU: rows keep their names but run a tiny CPU stand-in
(`cpu-small`, 32 px, batch 4, 2 steps) on `--device cpu`, and the machine line says so. The
output parses exactly as a real one (`__test__/gpu-session.spec.ts`).
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time


def rows(quick):
    s = (lambda n: max(3, n // 3)) if quick else (lambda n: n)
    out = []
    # The `paper` pair: ResNet-50 + ViT-B/16 at 384 px (the paper's ViT) and at 224 px, batch 64.
    for what in ('step', 'fwd-cnn', 'fwd-vit'):
        out.append(dict(model='paper', size=384, batch=16, what=what, steps=s(10), group='main'))
    for what in ('step', 'fwd-cnn', 'fwd-vit'):
        out.append(dict(model='paper', size=224, batch=64, what=what, steps=s(10), group='main'))
    out.append(dict(model='r18-vitti', size=224, batch=16, what='step', steps=s(10), group='main'))
    out.append(dict(model='cpu-small', size=32, batch=64, what='step', steps=s(10), group='main'))
    return out


def gpu_memory_sampler(pid, peak, stop):
    while not stop.is_set():
        try:
            q = subprocess.run(
                ['nvidia-smi', '--query-compute-apps=pid,used_memory', '--format=csv,noheader,nounits'],
                capture_output=True, text=True, timeout=5).stdout
            for line in q.splitlines():
                p, mib = (v.strip() for v in line.split(','))
                if p == str(pid):
                    peak[0] = max(peak[0], float(mib))
        except Exception:  # sampling is best effort; the figure stays at what was seen
            pass
        stop.wait(0.05)


STEP_LINE = re.compile(r'^step (\d+): ([0-9.]+) s$')


def step_times(stderr):
    """The per-step wall times a run printed on stderr, in order."""
    return [float(m.group(2)) for m in map(STEP_LINE.match, stderr.splitlines()) if m]


def run(cmd, timeout):
    started = time.time()
    # Its own process group, so that a run stopped at its limit takes its children with it and
    # its pipes close at once.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    peak, stop = [0.0], threading.Event()
    sampler = threading.Thread(target=gpu_memory_sampler, args=(proc.pid, peak, stop), daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        stop.set()
        return {'error': f'timed out after {timeout} s', 'stderr': err[-1500:], 'step_sec': step_times(err),
                'peak_gpu_mib': peak[0]}
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        return {'error': f'exit {proc.returncode}', 'stderr': err[-1500:], 'step_sec': step_times(err)}
    res = json.loads(out.strip().splitlines()[-1])
    res['peak_gpu_mib'] = peak[0]
    res['wall_sec'] = time.time() - started
    res['step_sec'] = step_times(err)
    return res


def main():
    a = argparse.ArgumentParser()
    a.add_argument('--ours', required=True)
    a.add_argument('--out', required=True)
    a.add_argument('--python', default=sys.executable)
    a.add_argument('--quick', action='store_true')
    a.add_argument('--timeout', type=int, default=180)
    a.add_argument('--towers', action='store_true', help='also time our step with both tower modes')
    a.add_argument('--conv', default='auto', help="our convolution strategy: auto, native or batched")
    a.add_argument('--only', default='', help='comma-separated rows to run, as model:size:batch:what')
    a.add_argument('--side', default='ours', help='name of our side in the output (e.g. the build)')
    a.add_argument('--no-reference', action='store_true', help='skip PyTorch (already timed)')
    a.add_argument('--no-peak', action='store_true', help='skip the matmul peak row')
    a.add_argument('--extra', default='', help='more arguments for our side, e.g. "--towers parallel"')
    a.add_argument('--dry-run', action='store_true', help='no GPU: tiny CPU stand-ins under the real row names')
    args = a.parse_args()
    ref = [args.python, os.path.join(os.path.dirname(__file__), 'reference.py')]
    device = 'cpu' if args.dry_run else 'cuda'
    if args.dry_run:
        smi = 'DRY RUN: no GPU, CPU stand-ins'
    else:
        smi = subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total,driver_version', '--format=csv,noheader'],
                             capture_output=True, text=True).stdout.strip()

    def shape(row):
        """What actually runs for a row: the row itself, or its CPU stand-in in a dry run."""
        if args.dry_run:
            return ['--model', 'cpu-small', '--size', '32', '--batch', '4', '--what', row['what'], '--steps', '2',
                    '--warmup', '1', '--device', device]
        return ['--model', row['model'], '--size', str(row['size']), '--batch', str(row['batch']),
                '--what', row['what'], '--steps', str(row['steps']), '--warmup', '3', '--device', device]

    def emit(obj):
        with open(args.out, 'a') as f:
            f.write(json.dumps(obj) + '\n')
        print(json.dumps(obj)[:400], flush=True)

    emit({'kind': 'machine', 'gpu': smi, 'cpu_count': os.cpu_count(), 'device': device, 'side': args.side,
          'dry_run': args.dry_run})
    if not args.no_peak:
        n = '256' if args.dry_run else '8192'
        mm = ['--what', 'matmul', '--n', n, '--steps', '5', '--warmup', '2', '--device', device]
        emit({'kind': 'peak', 'ours': run([args.ours, *mm], args.timeout), 'torch': run([*ref, *mm], args.timeout)})
    only = {r for r in args.only.split(',') if r}
    for row in rows(args.quick):
        if only and f"{row['model']}:{row['size']}:{row['batch']}:{row['what']}" not in only:
            continue
        common = shape(row)
        variants = [(args.side, ['--conv', args.conv, *args.extra.split()])]
        if args.towers and row['what'] == 'step' and row['model'] == 'paper':
            variants = [(args.side, ['--conv', args.conv, '--towers', 'serial']),
                        (args.side + '-parallel-towers', ['--conv', args.conv, '--towers', 'parallel'])]
        for name, extra in variants:
            emit({'kind': 'row', 'row': row, 'side': name, 'result': run([args.ours, *common, *extra], args.timeout)})
        if not args.no_reference:
            emit({'kind': 'row', 'row': row, 'side': 'torch', 'result': run([*ref, *common], args.timeout)})


if __name__ == '__main__':
    main()
