#!/usr/bin/env python3
"""Draws clattn-bench's JSON results (what ci/bench.sh --plot writes into DIR) as PNG charts:

  DIR/flash.json    -> DIR/flash.png    sdpa time and % of the measured peak against T, fused vs
                                        unfused, causal and not (--suite flash --peak --json)
  DIR/decode.json   -> DIR/decode.png   decode-step time and K+V GB/s against cache length
                                        (--decode --json)
  DIR/startup-{,llama-}{cold,warm}.json -> DIR/startup.png   start-up, cold vs warm caches
                                        (--startup / --startup-llama --json)

A missing input skips its chart. DIR/meta.json ({"date": ...}, written by ci/bench.sh) dates the
titles; without it, the date of the newest input file.

usage: plot.py DIR"""
import datetime
import glob
import json
import os
import sys

import matplotlib

matplotlib.use('Agg')  # files only: no display on CI machines
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

OK = 'CLATTN_SUCCESS'
DPI = 100  # with the sizes below: 1000 px wide, small files


def load(path):
    with open(path) as f:
        return json.load(f)


def tokens(x, _pos=None):
    """1024 -> '1k', 65536 -> '64k': T and cache lengths are powers of two."""
    return f'{x / 1024:g}k' if x >= 1024 else f'{x:g}'


def log2_axis(ax, values, label):
    ax.set_xscale('log', base=2)
    ax.set_xticks(sorted(set(values)))
    ax.xaxis.set_major_formatter(FuncFormatter(tokens))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ''))
    ax.set_xlabel(label)
    ax.grid(True, which='major', alpha=0.3)


def save(fig, out):
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    print(f'plot.py: wrote {out} ({os.path.getsize(out) // 1024} KB)')


def plot_flash(rows, title, out):
    ok = [r for r in rows if r['status'] == OK]
    peak = next((r['peak_gflops'] for r in ok if 'peak_gflops' in r), None)
    fig, (ax_t, ax_p) = plt.subplots(1, 2, figsize=(10, 4.6))
    # Colour tells the path, the line style the mask, so both read in grey print too.
    for path, colour in (('fused', 'tab:blue'), ('unfused', 'tab:orange')):
        for causal, style, marker in (('none', '-', 'o'), ('top-left', '--', 's')):
            sel = sorted((r for r in ok if r['path'] == path and r['causal'] == causal),
                         key=lambda r: r['lq'])
            if not sel:
                continue
            label = f'{path}, {"causal" if causal != "none" else "not causal"}'
            T = [r['lq'] for r in sel]
            ax_t.plot(T, [r['median_ms'] for r in sel], style, marker=marker, color=colour, label=label)
            if peak:
                ax_p.plot(T, [r['pct_peak'] for r in sel], style, marker=marker, color=colour, label=label)
    every_T = [r['lq'] for r in rows]
    log2_axis(ax_t, every_T, 'T = Lq = Lk (tokens)')
    ax_t.set_yscale('log')
    ax_t.set_ylabel('median time per call (ms, log scale)')
    ax_t.set_title('time')
    ax_t.legend(fontsize=9)
    log2_axis(ax_p, every_T, 'T = Lq = Lk (tokens)')
    ax_p.set_ylim(0, 100)
    ax_p.set_ylabel('useful GFLOP/s as % of peak')
    ax_p.set_title(f'share of the measured fp32 peak ({peak:.0f} GFLOP/s)' if peak
                   else 'no peak in this run (--peak)')
    # Rows a path refused (the unfused score matrix past the device's largest buffer) get a note.
    refused = [r for r in rows if r['status'] != OK]
    note = '; '.join(f'{r["path"]} {"causal" if r["causal"] != "none" else "not causal"} '
                     f'T = {tokens(r["lq"])} ({r["status"]}: its fp32 score matrix would take '
                     f'{r["batch"] * r["heads"] * r["lq"] * r["lk"] * 4 / 2**30:g} GiB)'
                     for r in refused)
    fig.suptitle(title.format(what='sdpa, fused vs unfused: B = 1, H = 1, D = 64'), fontsize=11)
    if note:
        fig.text(0.5, 0.015, 'refused: ' + note, ha='center', fontsize=9, color='dimgray')
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    save(fig, out)


def plot_decode(rows, title, out):
    ok = [r for r in rows if r['status'] == OK]
    r0 = rows[0]
    fig, (ax_t, ax_b) = plt.subplots(1, 2, figsize=(10, 4.4))
    for splits, label, colour, marker in ((1, 'no split', 'tab:blue', 'o'),
                                          (8, '8 splits', 'tab:green', '^'),
                                          (0, 'automatic', 'tab:red', 's')):
        sel = sorted((r for r in ok if r['splits'] == splits), key=lambda r: r['cache_len'])
        if not sel:
            continue
        L = [r['cache_len'] for r in sel]
        ax_t.plot(L, [r['median_ms'] for r in sel], marker=marker, color=colour, label=label)
        # bytes / ms / 1e6 = GB/s
        ax_b.plot(L, [r['kv_bytes'] / r['median_ms'] / 1e6 for r in sel], marker=marker,
                  color=colour, label=label)
    for ax in (ax_t, ax_b):
        log2_axis(ax, [r['cache_len'] for r in rows], 'tokens in the KV cache')
        ax.legend(fontsize=9)
    ax_t.set_yscale('log')
    ax_t.set_ylabel('median time per decode step (ms, log scale)')
    ax_t.set_title('time per step')
    ax_b.set_ylim(bottom=0)
    ax_b.set_ylabel('K + V bytes read / time (GB/s)')
    ax_b.set_title('cache bandwidth')
    fig.suptitle(title.format(what=f'decode step over a KV cache: B = 1, Hq = {r0["heads"]}, '
                                   f'Hkv = {r0["kv_heads"]}, D = {r0["head_dim"]}, '
                                   f'{r0["kv_dtype"]} cache'), fontsize=11)
    fig.tight_layout()
    save(fig, out)


def plot_startup(runs, title, out):
    """runs: {(suite, 'cold' | 'warm'): row}."""
    groups = [('startup', 'every kernel file\n(--startup)', 'kernel files'),
              ('startup-llama', 'a Llama-3-8B-shaped decoder\'s programs\n(--startup-llama)',
               'programs')]
    groups = [g for g in groups if any((g[0], c) in runs for c in ('cold', 'warm'))]
    fig, ax = plt.subplots(figsize=(8, 4.6))
    width = 0.36
    for i, (suite, _label, unit) in enumerate(groups):
        for j, (cache, colour) in enumerate((('cold', 'tab:blue'), ('warm', 'tab:orange'))):
            r = runs.get((suite, cache))
            if not r:
                continue
            x = i + (j - 0.5) * width
            ax.bar(x, r['total_ms'], width, color=colour, label=f'{cache} caches' if i == 0 else None)
            ax.annotate(f'{r["total_ms"]:.0f} ms\n{r["count"]} {unit}\n' +
                        ('built' if cache == 'cold' else 'from the caches'), (x, r['total_ms']), ha='center',
                        va='bottom', fontsize=9, xytext=(0, 2), textcoords='offset points')
    ax.set_xticks(range(len(groups)), [g[1] for g in groups])
    # Cold and warm differ ~100x: a log axis keeps the warm bars visible.
    ax.set_yscale('log')
    # Bars start at 1 ms (a log axis has no zero); the top leaves room for the labels.
    ax.set_ylim(1, ax.get_ylim()[1] * 8)
    ax.set_ylabel('new context until ready (ms, log scale)')
    ax.legend(fontsize=9, loc='upper right')
    ax.grid(True, axis='y', alpha=0.3)
    context = [r['context_ms'] for r in runs.values()]
    fig.text(0.5, 0.015, f'each bar: a new process, clattn_context_create until ready; the context '
             f'alone took {min(context):.0f}–{max(context):.0f} ms of it', ha='center', fontsize=9,
             color='dimgray')
    fig.suptitle(title.format(what='start-up: cold (empty clattn and PoCL caches) vs warm'),
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    save(fig, out)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    inputs = glob.glob(os.path.join(d, '*.json'))
    meta_path = os.path.join(d, 'meta.json')
    if os.path.exists(meta_path):
        date = load(meta_path)['date']
    elif inputs:
        date = datetime.date.fromtimestamp(max(os.path.getmtime(p) for p in inputs)).isoformat()
    else:
        sys.exit(f'plot.py: no JSON in {d}')
    device = next((r['device'] for p in sorted(inputs) if p != meta_path for r in load(p)), '?')
    title = '{what}\n' + f'{device}, {date}'
    wrote = 0
    flash = os.path.join(d, 'flash.json')
    if os.path.exists(flash):
        plot_flash(load(flash), title, os.path.join(d, 'flash.png'))
        wrote += 1
    decode = os.path.join(d, 'decode.json')
    if os.path.exists(decode):
        plot_decode(load(decode), title, os.path.join(d, 'decode.png'))
        wrote += 1
    runs = {}
    for suite in ('startup', 'startup-llama'):
        for cache in ('cold', 'warm'):
            p = os.path.join(d, f'{suite}-{cache}.json')
            if os.path.exists(p):
                runs[(suite, cache)] = load(p)[0]
    if runs:
        plot_startup(runs, title, os.path.join(d, 'startup.png'))
        wrote += 1
    if not wrote:
        sys.exit(f'plot.py: none of flash.json, decode.json, startup-*.json in {d}')


if __name__ == '__main__':
    main()
