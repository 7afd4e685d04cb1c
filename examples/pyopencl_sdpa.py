#!/usr/bin/env python3
"""clattn from a pyopencl program: its own context, queue and arrays, its own kernel producing Q,
causal attention with an additive mask chained to it by events, checked with numpy in float64.

usage: pyopencl_sdpa.py      (the clattn package installed, or python/ on PYTHONPATH; the C
                              library on the loader's path or in $CLATTN_LIBRARY)"""
import sys

import numpy as np
import pyopencl as cl
import pyopencl.array as cla
from pyopencl.elementwise import ElementwiseKernel

import clattn

# --- the program's own OpenCL objects -------------------------------------------------------
context = cl.create_some_context(interactive=False)
queue = cl.CommandQueue(context)
B, H, T, D = 2, 3, 37, 16
rng = np.random.default_rng(7)
x, k, v = (rng.standard_normal((B, H, T, D), dtype=np.float32) for _ in range(3))
mask = rng.standard_normal((T, T), dtype=np.float32)
mask[5, :] = -np.inf  # query 5 sees nothing: its output must be 0
scale_by_half = ElementwiseKernel(context, 'float *q, const float *x', 'q[i] = 0.5f * x[i]')
x_dev = cla.to_device(queue, x)
q_dev = cla.empty_like(x_dev)
made_q = scale_by_half(q_dev, x_dev)           # the program's kernel makes Q

# --- clattn on them -------------------------------------------------------------------------
ctx = clattn.Context(queue)
out, done = ctx.sdpa(q_dev, cla.to_device(queue, k), cla.to_device(queue, v), causal=True,
                     mask=cla.to_device(queue, mask), wait_for=[made_q])
done.wait()
got = out.get()

# --- numpy reference ------------------------------------------------------------------------
q = 0.5 * x.astype(np.float64)
s = np.einsum('bhid,bhjd->bhij', q, k.astype(np.float64)) / np.sqrt(D) + mask
s[..., np.triu(np.ones((T, T), dtype=bool), 1)] = -np.inf
mx = s.max(axis=-1, keepdims=True)
e = np.exp(s - np.where(np.isfinite(mx), mx, 0))
den = e.sum(axis=-1, keepdims=True)
want = np.divide(e, den, out=np.zeros_like(e), where=den > 0) @ v.astype(np.float64)
err = np.abs(got - want).max()
print(f'pyopencl + clattn {clattn.library_version} on {ctx.device_info()["name"]}: max error '
      f'{err:.2g}; fully masked row zero: {bool(np.all(got[:, :, 5, :] == 0))}')
sys.exit(0 if err <= 1e-4 * max(1.0, np.abs(want).max()) and np.all(got[:, :, 5, :] == 0) else 1)
