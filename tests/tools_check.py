#!/usr/bin/env python3
"""Runs clattn-bench on small shapes with --check --json and checks what it reports: every row
succeeded, the error against the reference is within the fp32 tolerance, timings and GFLOP/s are
positive, and the library's memory is what sdpa's score matrix needs. Also runs --demo and checks
that each printed softmax row sums to 1 and hides later tokens, and --bandwidth for a positive
read bandwidth.

Then clattn-tune on small shapes in a cache directory of its own: it must finish within its budget,
check and time candidates, and store a tune file that clattn-info then reports from.

usage: tools_check.py CLATTN_BENCH OUT_DIR CLATTN_TUNE CLATTN_INFO"""
import json
import os
import re
import shutil
import subprocess
import sys

bench, out_dir, tune, info = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
os.makedirs(out_dir, exist_ok=True)
failures = []


def expect(cond, what):
    if not cond:
        failures.append(what)
        print('FAIL:', what)


# A small custom shape through both ops (GQA, causal), then through the JSON.
path = os.path.join(out_dir, 'bench.json')
args = [bench, '-b', '2', '-H', '4', '--kv-heads', '2', '--lq', '33', '--lk', '65', '-d', '32',
        '--causal=bottom-right', '--path', 'unfused', '--warmup', '1', '--reps', '3', '--check',
        '--json', path]
run = subprocess.run(args, capture_output=True, text=True)
print(run.stdout)
expect(run.returncode == 0, f'clattn-bench exited {run.returncode}: {run.stderr}')
rows = json.load(open(path))
expect([r['op'] for r in rows] == ['sdpa', 'mha'], f'rows: {[r["op"] for r in rows]}')
for r in rows:
    expect(r['status'] == 'CLATTN_SUCCESS', f'{r["op"]} status {r["status"]}')
    expect(r['max_err'] is not None and r['max_err'] <= 1e-4 * 4, f'{r["op"]} max_err {r["max_err"]}')
    expect(r['median_ms'] > 0 and r['gflops'] > 0, f'{r["op"]} timing {r["median_ms"]} {r["gflops"]}')
    expect(r['reps'] >= 3, f'{r["op"]} reps {r["reps"]}')
    expect((r['batch'], r['heads'], r['kv_heads'], r['lq'], r['lk'], r['head_dim']) == (2, 4, 2, 33, 65, 32),
           f'{r["op"]} shape fields')
sdpa = rows[0]
expect(sdpa['lib_bytes'] == 2 * 4 * 33 * 65 * 4, f'sdpa lib_bytes {sdpa["lib_bytes"]}')

# The demo: three 8x8 grids; the last is the softmax.
demo = subprocess.run([bench, '--demo'], capture_output=True, text=True)
expect(demo.returncode == 0, f'--demo exited {demo.returncode}')
lines = demo.stdout.splitlines()
start = max(i for i, l in enumerate(lines) if l.startswith('Softmax'))
grid = [l.split()[1:] for l in lines[start + 2:start + 10]]
for i, row in enumerate(grid):
    vals = [float(v) for v in row]
    expect(abs(sum(vals) - 1.0) < 0.01, f'demo softmax row {i} sums to {sum(vals)}')
    expect(all(v == 0.0 for v in vals[i + 1:]), f'demo row {i} attends to later tokens')
masked = lines[[i for i, l in enumerate(lines) if l.startswith('After the causal mask')][0] + 2]
expect(masked.split()[2:] == ['-inf'] * 7, f'first masked row: {masked}')

# --bandwidth: one line per vector width, then the best, in GB/s.
bw = subprocess.run([bench, '--bandwidth'], capture_output=True, text=True)
print(bw.stdout)
got = re.search(r'^read bandwidth: ([0-9.]+) GB/s$', bw.stdout, re.M)
expect(bw.returncode == 0 and got is not None and float(got.group(1)) > 0,
       f'--bandwidth exited {bw.returncode}: {bw.stdout[-300:]} {bw.stderr[-300:]}')

# clattn-tune, in a cache directory of its own (the other tests' contexts must not read its file).
tune_env = dict(os.environ, CLATTN_CACHE_DIR=os.path.join(out_dir, 'tune-cache'))
shutil.rmtree(tune_env['CLATTN_CACHE_DIR'], ignore_errors=True)
run = subprocess.run([tune, '--quick', '--seconds', '20'], capture_output=True, text=True, env=tune_env)
print(run.stdout)
expect(run.returncode == 0, f'clattn-tune exited {run.returncode}: {run.stderr[-500:]}')
tried = re.search(r'(\d+) candidates in (\d+) s, (\d+) refused', run.stdout)
expect(tried is not None and int(tried.group(1)) >= 2 and int(tried.group(3)) == 0,
       f'candidates line: {tried and tried.group(0)}')
expect(tried is not None and int(tried.group(2)) <= 60, 'clattn-tune overran its budget')
files = [f for f in os.listdir(tune_env['CLATTN_CACHE_DIR']) if f.startswith('tune-') and f.endswith('.txt')]
expect(len(files) == 1, f'tune files: {files}')
shown = subprocess.run([info], capture_output=True, text=True, env=tune_env)
expect('gemm tile:' in shown.stdout and 'fused block_k:' in shown.stdout,
       'clattn-info shows the settings in force')

print(f'{len(failures)} failure(s)')
sys.exit(1 if failures else 0)
