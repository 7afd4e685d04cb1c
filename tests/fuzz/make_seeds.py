#!/usr/bin/env python3
"""Writes the fuzzer's seed corpus: one input per operation that decodes to a valid call (so
that fuzzing starts from the success paths), plus a few that decode to known errors. Run by hand
when the harness's input format changes: python3 tests/fuzz/make_seeds.py tests/fuzz/seeds"""
import os
import sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def dim(d):
    # decodes as v % 7 below 200, as (v - 200) * 3 from 200 to 239
    if d < 7:
        return d
    assert d % 3 == 0 and d // 3 < 40, d
    return 200 + d // 3


def tensor(buf=0, off=0, dims=(1, 1, 1, 1), strides=(0, 0, 0, 1), dtype=0):
    # buffer selector, offset (< 64), dtype, 4 dims, 4 strides (< 40 decode as themselves)
    assert off < 64 and all(s < 40 for s in strides), (off, strides)
    return bytes([buf, off, dtype, *[dim(d) for d in dims], *strides])


def bhtd(off, B, H, T, D, buf=0):
    strides = (H * T * D, T * D, D, 1)
    return tensor(buf, off, (B, H, T, D), tuple(0 if n == 1 and i < 3 else s
                                                 for i, (n, s) in enumerate(zip((B, H, T, D), strides))))


seeds = {
    # sdpa: Q, K, V, O [1,2,3,4]; mask [1,1,3,3]; then flags, causal, len offset, variants (and
    # their bytes), path, scale
    'sdpa_plain': bytes([0]) + bhtd(0, 1, 2, 3, 4) + bhtd(30, 1, 2, 3, 4) + bhtd(60, 1, 2, 3, 4)
    + bhtd(2, 1, 2, 3, 4, buf=2) + bhtd(0, 1, 1, 3, 3, buf=4) + bhtd(0, 1, 2, 3, 1, buf=4)
    + bytes([0, 1, 0, 0, 0, 0]),
    # a packed batch of two sequences (2 and 3 of the 5 rows), causal, fused path
    'sdpa_varlen': bytes([0]) + bhtd(0, 1, 2, 5, 4) + bhtd(40, 1, 2, 5, 4) + bhtd(0, 1, 2, 5, 4, buf=4)
    + bhtd(2, 1, 2, 5, 4, buf=2) + bhtd(0, 1, 1, 3, 3, buf=4) + bhtd(0, 1, 2, 5, 1, buf=4)
    + bytes([0, 1, 0, 32, 2, 2, 2, 3, 3, 2, 0]),
    # the KV cache (op 9): a q8 cache of 1 sequence, 1 kv head, D 4, capacity 8; 3 tokens
    # appended (t0, t1), 2 query heads attending (t2 into t3); then flags, causal, len offset,
    # variants, and the cache's own bytes: batch, kv heads, D, capacity, dtype (200: q8),
    # rotary dim, page size and pages (0: contiguous), 4 counts, the paged calls' byte, splits
    'kv_q8': bytes([9]) + bhtd(0, 1, 1, 3, 4) + bhtd(20, 1, 1, 3, 4) + bhtd(40, 1, 2, 1, 4)
    + bhtd(0, 1, 2, 1, 4, buf=2) + bhtd(20, 1, 2, 1, 1, buf=2) + bhtd(0, 1, 1, 1, 1)
    + bytes([0, 0, 0, 0, 1, 1, 4, 8, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    # a paged cache (pages of 2 tokens, 6 of them) of 2 sequences: 3 tokens to sequence 0 (with
    # counts), a fork of it into sequence 1, a second append of 3 tokens to sequence 0 (copy on
    # write of the shared half page), both attending
    'kv_paged': bytes([9]) + bhtd(0, 2, 1, 3, 4) + bhtd(30, 2, 1, 3, 4) + bhtd(40, 2, 2, 1, 4)
    + bhtd(0, 2, 2, 1, 4, buf=2) + bhtd(20, 2, 2, 1, 1, buf=2) + bhtd(0, 1, 1, 1, 1)
    + bytes([4, 0, 0, 0, 2, 1, 4, 8, 0, 0, 2, 6, 3, 0, 0, 0, 1 | 2 | (0 << 2) | (1 << 4), 0]),
    'sdpa_masked_lse': bytes([0]) + bhtd(0, 1, 2, 3, 4) + bhtd(30, 1, 2, 3, 4)
    + bhtd(60, 1, 2, 3, 4) + bhtd(2, 1, 2, 3, 4, buf=2) + bhtd(0, 1, 1, 3, 3, buf=4)
    + bhtd(9, 1, 2, 3, 1, buf=4) + bytes([1 | 2 | 8, 2, 0, 0, 2, 0]),
    'linear': bytes([1]) + bhtd(0, 1, 1, 3, 4) + bhtd(20, 1, 1, 5, 4) + bhtd(50, 1, 1, 1, 5)
    + bhtd(0, 1, 1, 3, 5, buf=2) + bhtd(0, 1, 1, 1, 1) * 2 + bytes([4, 0, 0, 0]),
    'scores': bytes([2]) + bhtd(0, 1, 2, 3, 4) + bhtd(30, 1, 1, 5, 4) + bhtd(0, 1, 2, 3, 5, buf=2)
    + bhtd(0, 1, 1, 1, 1) * 3 + bytes([0, 0, 0, 0]),
    'mask': bytes([3]) + bhtd(0, 1, 2, 3, 5, buf=2) + bhtd(0, 1, 1, 1, 1) * 3
    + bhtd(0, 1, 1, 3, 5) + bhtd(0, 1, 1, 1, 1) + bytes([1 | 2, 1, 1, 0]),
    'softmax': bytes([4]) + bhtd(0, 1, 2, 3, 5) + bhtd(0, 1, 2, 3, 5, buf=2)
    + bhtd(0, 1, 2, 3, 1, buf=4) + bhtd(0, 1, 1, 1, 1) * 3 + bytes([8, 0, 0, 0]),
    'weighted_sum': bytes([5]) + bhtd(0, 1, 2, 3, 5) + bhtd(30, 1, 1, 5, 4)
    + bhtd(0, 1, 2, 3, 4, buf=2) + bhtd(0, 1, 1, 1, 1) * 3 + bytes([0, 0, 0, 0]),
    'merge_in_place': bytes([6]) + bhtd(0, 1, 2, 3, 4, buf=2) + bhtd(0, 1, 2, 3, 1, buf=4)
    + bhtd(30, 1, 2, 3, 4) + bhtd(0, 1, 2, 3, 1) + bhtd(0, 1, 1, 1, 1) * 2 + bytes([4 | 8, 0, 0, 0]),
    'mha_packed': bytes([7]) + bhtd(0, 1, 1, 12, 4) + bhtd(0, 1, 1, 1, 1) * 3
    + bhtd(60, 1, 1, 4, 4) + bhtd(0, 1, 1, 1, 1) + bytes([8 | 32, 0, 0, 0])
    + bytes([4, 2, 0, 0, 0]) + bhtd(0, 1, 1, 3, 4, buf=2) + bhtd(0, 1, 1, 1, 1)
    + bhtd(20, 1, 1, 3, 4, buf=2) + bhtd(0, 1, 1, 1, 1),
    # sdpa with every variant: window (left 2, right unbounded, 1 kept key, query offset 5),
    # soft-cap 2, ALiBi slopes and sinks from buffer 1 at offset 0
    'sdpa_variants': bytes([0]) + bhtd(0, 1, 2, 3, 4) + bhtd(30, 1, 2, 3, 4) + bhtd(60, 1, 2, 3, 4)
    + bhtd(2, 1, 2, 3, 4, buf=2) + bhtd(0, 1, 1, 3, 3, buf=4) + bhtd(9, 1, 2, 3, 1, buf=4)
    + bytes([8, 1, 0, 1 | 4 | 8 | 16, 2, 1, 0, 5, 72, 1, 1, 2, 0]),
    # rope: X [1,2,3,4] into Y [1,2,3,4]; then flags, causal, len offset, variants, layout 0,
    # rotary 0 (the head dim), theta 100 * 100, no table, no positions
    'rope': bytes([8]) + bhtd(0, 1, 2, 3, 4) + bhtd(0, 1, 2, 3, 4, buf=2)
    + bhtd(0, 1, 1, 1, 1) * 4 + bytes([0, 0, 0, 0, 0, 0, 100, 0]),
    'sdpa_head_mismatch': bytes([0]) + bhtd(0, 1, 3, 3, 4) + bhtd(40, 1, 2, 3, 4)
    + bhtd(0, 1, 2, 3, 4, buf=3) + bhtd(2, 1, 3, 3, 4, buf=2) + bhtd(0, 1, 1, 1, 1) * 2 + bytes([0] * 6),
    'sdpa_overflow': bytes([0]) + bytes([0, 0, 0, 250, 127, 1, 3, 4, 250, 127, 0, 4, 1]) + bhtd(30, 1, 2, 3, 4)
    + bhtd(60, 1, 2, 3, 4) + bhtd(2, 1, 2, 3, 4, buf=2) + bhtd(0, 1, 1, 1, 1) * 2 + bytes([0] * 6),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), 'wb') as f:
        f.write(data)
print(f'{len(seeds)} seeds in {out}')
# Inputs the fuzzer once found failing are kept beside these seeds as regress-* files (written by
# libFuzzer, not by this script): regress-value-dim-1, a value dim of 1 on a CPU device, divided
# by zero while choosing the fused kernel's rows per pass (a zero byte, no variants, was inserted
# at offset 70 when the variants byte joined the format, and its first byte, 8, which
# selected sdpa as 8 % 8, became 0 when 8 came to select RoPE).
