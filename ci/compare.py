#!/usr/bin/env python3
"""Old build against new build, the project's "no slower" rule: the two clattn-bench binaries run
in alternating processes (old, new, new, old, ...), at least 5 processes each, and each row's
median over those processes is compared. Machines are shared and noisy: only ratios measured in
one such run mean anything.

usage: ci/compare.py OLD_BENCH NEW_BENCH [--runs N] [--suite flash|decode|models|overhead] [--out FILE]
  flash:  the flash suite's fused rows (T = 1024 .. 8192, D = 64, causal and not), one process
          per row and build and run
  decode: clattn-bench --decode (B = 1, Hq = 32, Hkv = 8, D = 128, 1k .. 32k cached tokens)
  models: the default suite (GPT-2 small, BERT-base, a GQA decoder; sdpa and mha)
  overhead: the host's time per call (--host-time: until the call returns, its work
          enqueued) on tiny shapes (T = 16, D = 16): fused sdpa (1 kernel), unfused sdpa
          (2 GEMMs, 2 kernels), a 2-head mha layer; needs a clattn-bench with --host-time
Prints a Markdown table: per row the old and new medians (ms) and new / old. Both binaries must
understand the options used, so this uses only those every version has had."""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile


def flash_rows():
    for T in (1024, 2048, 4096, 8192):
        for causal in (False, True):
            args = ['--op', 'sdpa', '-H', '1', '-T', str(T), '-d', '64', '--path', 'fused',
                    '--warmup', '5', '--reps', '30']
            if causal:
                args.append('--causal')
            yield f'T={T}{" causal" if causal else ""}', args


def overhead_rows():
    common = ['-H', '2', '-T', '16', '-d', '16', '--warmup', '20', '--reps', '400', '--host-time']
    yield 'sdpa fused', ['--op', 'sdpa', '--path', 'fused'] + common
    yield 'sdpa unfused', ['--op', 'sdpa', '--path', 'unfused', '--causal'] + common
    yield 'mha', ['--op', 'mha', '--path', 'fused'] + common


def run_json(bench, args):
    """Runs one process; returns {row name: median ms} from its --json."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, 'out.json')
        subprocess.run([bench] + args + ['--json', path], check=True, capture_output=True)
        with open(path) as f:
            rows = json.load(f)
    out = {}
    for r in rows:
        key = f'{r["shape"]} {r["op"]} B={r["batch"]} H={r["heads"]} T={r["lq"]} {r["causal"]}'
        out[key] = r['median_ms']
    return out


def run_decode(bench):
    """Runs clattn-bench --decode; returns {row: ms} for each cache length and split setting."""
    text = subprocess.run([bench, '--decode'], check=True, capture_output=True, text=True).stdout
    out = {}
    for line in text.splitlines():
        m = re.match(r'\s*(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+[\d.]+\s*$', line)
        if m:
            n = m.group(1)
            out[f'{n} no split'] = float(m.group(2))
            out[f'{n} 8 splits'] = float(m.group(3))
            out[f'{n} auto'] = float(m.group(4))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('old')
    ap.add_argument('new')
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--suite', default='flash', choices=['flash', 'decode', 'models', 'overhead'])
    ap.add_argument('--out')
    a = ap.parse_args()
    if a.runs < 5:
        sys.exit('compare.py: at least 5 processes per build')
    times = {'old': {}, 'new': {}}
    order = []
    for i in range(a.runs):
        order += [('old', a.old), ('new', a.new)] if i % 2 == 0 else [('new', a.new), ('old', a.old)]
    for n, (which, bench) in enumerate(order):
        print(f'\r[{n + 1}/{len(order)}] {which}', end='', file=sys.stderr, flush=True)
        if a.suite in ('flash', 'overhead'):
            got = {}
            for name, args in (flash_rows() if a.suite == 'flash' else overhead_rows()):
                got.update({name: v for v in run_json(bench, args).values()})
        elif a.suite == 'decode':
            got = run_decode(bench)
        else:
            got = run_json(bench, ['--warmup', '2', '--reps', '5'])
        for k, v in got.items():
            times[which].setdefault(k, []).append(v)
    print(file=sys.stderr)
    lines = [f'| row | old ms (median of {a.runs}) | new ms (median of {a.runs}) | new / old | '
             'old, each process | new, each process |', '|---|---|---|---|---|---|']
    for k in times['old']:
        o = statistics.median(times['old'][k])
        nw = statistics.median(times['new'].get(k, [float('nan')]))
        each = [' '.join(f'{v:.3g}' for v in times[w].get(k, [])) for w in ('old', 'new')]
        lines.append(f'| {k} | {o:.3f} | {nw:.3f} | {nw / o:.3f} | {each[0]} | {each[1]} |')
    text = '\n'.join(lines)
    print(text)
    if a.out:
        with open(a.out, 'w') as f:
            f.write(text + '\n')


if __name__ == '__main__':
    main()
