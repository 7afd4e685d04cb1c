#!/usr/bin/env python3
"""clattn against PyTorch on the same CPU: nn.MultiheadAttention against clattn_mha_forward and
F.scaled_dot_product_attention against clattn_sdpa, for GPT-2 small (causal, T = 1024) and
BERT-base (B = 8, T = 128), fp32, 2 threads each. The two run in alternating rounds (PyTorch in
this process, clattn in a clattn-bench process), so that both see the same machine; each round
gives a median, and the table shows the median over rounds and the ratio.

Not run by CI (PyTorch's wheel is about 5 GB with its CUDA libraries). Setup, outside the
repository:
    python3 -m venv /opt/torchvenv && /opt/torchvenv/bin/pip install numpy torch
usage: /opt/torchvenv/bin/python tools/torch_peer.py BUILD/tools/clattn-bench [--rounds N]
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import torch
import torch.nn.functional as F

SHAPES = [
    # name, batch, heads, T, head dim, causal
    ('gpt2-small', 1, 12, 1024, 64, True),
    ('bert-base', 8, 12, 128, 64, False),
]


def median_ms(fn, warmup=3, reps=15):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def torch_times(name, B, H, T, D, causal):
    E = H * D
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, E, generator=g)
    mha = torch.nn.MultiheadAttention(E, H, batch_first=True).eval()
    mask = torch.nn.Transformer.generate_square_subsequent_mask(T) if causal else None
    q, k, v = (torch.randn(B, H, T, D, generator=g) for _ in range(3))
    with torch.inference_mode():
        t_mha = median_ms(lambda: mha(x, x, x, attn_mask=mask, is_causal=causal,
                                      need_weights=False))
        t_sdpa = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
    return {'mha': t_mha, 'sdpa': t_sdpa}


def clattn_times(bench, name, B, H, T, D, causal):
    out = {}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, 'out.json')
        args = [bench, '-b', str(B), '-H', str(H), '-T', str(T), '-d', str(D), '--warmup', '3',
                '--reps', '15', '--json', path]
        if causal:
            args.append('--causal')
        subprocess.run(args, check=True, capture_output=True)
        for row in json.load(open(path)):
            out[row['op']] = row['median_ms']
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('bench')
    ap.add_argument('--rounds', type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(2)
    times = {}
    for r in range(a.rounds):
        for shape in SHAPES:
            name = shape[0]
            # Alternate which goes first, so that drift does not favour one.
            runs = [('torch', lambda: torch_times(*shape)),
                    ('clattn', lambda: clattn_times(a.bench, *shape))]
            for who, fn in (runs if r % 2 == 0 else runs[::-1]):
                for op, ms in fn().items():
                    times.setdefault((name, op, who), []).append(ms)
        print(f'round {r + 1}/{a.rounds} done', flush=True)
    print(f'\nPyTorch {torch.__version__}, {torch.get_num_threads()} threads; '
          f'median over {a.rounds} rounds of each round\'s median (ms)\n')
    print('| shape | op | PyTorch ms | clattn ms | clattn speed-up | PyTorch, each round | '
          'clattn, each round |')
    print('|---|---|---|---|---|---|---|')
    for shape in SHAPES:
        for op, torch_op in (('mha', 'nn.MultiheadAttention'), ('sdpa', 'scaled_dot_product_attention')):
            tt, cc = times[(shape[0], op, 'torch')], times[(shape[0], op, 'clattn')]
            t, c = statistics.median(tt), statistics.median(cc)
            each = [' '.join(f'{v:.1f}' for v in x) for x in (tt, cc)]
            print(f'| {shape[0]} | {torch_op} / clattn_{"mha_forward" if op == "mha" else "sdpa"} '
                  f'| {t:.2f} | {c:.2f} | {t / c:.2f}x | {each[0]} | {each[1]} |')


if __name__ == '__main__':
    main()
