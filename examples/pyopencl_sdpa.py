#!/usr/bin/env python3
"""clattn from Python: a pyopencl program passes its own context, queue and buffers to clattn
through ctypes, runs causal attention with an additive mask, waits on the event clattn returns,
and checks the result with numpy.

usage: pyopencl_sdpa.py [path/to/libclattn.so]     (default: find it on the library path)"""
import ctypes
import ctypes.util
import sys

import numpy as np
import pyopencl as cl

# --- the C API, as ctypes sees it (include/clattn.h) ----------------------------------------
c_size4 = ctypes.c_size_t * 4


class Tensor(ctypes.Structure):
    _fields_ = [('buffer', ctypes.c_void_p), ('offset', ctypes.c_size_t), ('dtype', ctypes.c_int),
                ('dims', c_size4), ('strides', c_size4)]


class KernelConfig(ctypes.Structure):
    _fields_ = [('flash_variant', ctypes.c_int), ('flash_block_k', ctypes.c_uint32),
                ('flash_wg', ctypes.c_uint32), ('reserved', ctypes.c_uint32 * 13)]


class ContextParams(ctypes.Structure):
    _fields_ = [('context', ctypes.c_void_p), ('device', ctypes.c_void_p), ('log', ctypes.c_void_p),
                ('log_user', ctypes.c_void_p), ('log_level', ctypes.c_int),
                ('cache_dir', ctypes.c_char_p), ('disk_cache_off', ctypes.c_int),
                ('kernels', KernelConfig), ('reserved', ctypes.c_void_p * 8)]


class MaskParams(ctypes.Structure):
    _fields_ = [('causal', ctypes.c_int), ('additive', ctypes.POINTER(Tensor)),
                ('key_lengths', ctypes.c_void_p), ('key_lengths_offset', ctypes.c_size_t),
                ('window_left', ctypes.c_int64), ('window_right', ctypes.c_int64),
                ('window_keep_first', ctypes.c_size_t), ('reserved', ctypes.c_void_p * 4)]


class LogitParams(ctypes.Structure):
    _fields_ = [('softcap', ctypes.c_float), ('alibi_slopes', ctypes.c_void_p),
                ('alibi_slopes_offset', ctypes.c_size_t), ('sinks', ctypes.c_void_p),
                ('sinks_offset', ctypes.c_size_t)]


class SdpaParams(ctypes.Structure):
    _fields_ = [('scale', ctypes.c_float), ('mask', MaskParams), ('path', ctypes.c_int),
                ('probs', ctypes.POINTER(Tensor)), ('lse', ctypes.POINTER(Tensor)),
                ('workspace', ctypes.c_void_p), ('workspace_offset', ctypes.c_size_t),
                ('logits', LogitParams), ('reserved', ctypes.c_void_p * 8)]


CLATTN_F32, CAUSAL_TOP_LEFT = 1, 1

lib_path = sys.argv[1] if len(sys.argv) > 1 else ctypes.util.find_library('clattn')
lib = ctypes.CDLL(lib_path)
lib.clattn_context_params_default.restype = ContextParams
lib.clattn_sdpa_params_default.restype = SdpaParams
lib.clattn_context_create.argtypes = [ctypes.POINTER(ContextParams), ctypes.POINTER(ctypes.c_void_p)]
lib.clattn_context_destroy.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
lib.clattn_status_name.restype = ctypes.c_char_p
lib.clattn_sdpa.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.POINTER(Tensor)] * 4 + [
    ctypes.POINTER(SdpaParams), ctypes.c_uint, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]


def bhtd(buf, B, H, T, D):
    return Tensor(ctypes.c_void_p(buf.int_ptr), 0, CLATTN_F32, c_size4(B, H, T, D),
                  c_size4(H * T * D, T * D, D, 1))


def check(status, what):
    if status != 0:
        raise SystemExit(f'{what}: {lib.clattn_status_name(status).decode()}')


# --- the program's own OpenCL objects -------------------------------------------------------
platform = cl.get_platforms()[0]
device = platform.get_devices()[0]
ctx = cl.Context([device])
queue = cl.CommandQueue(ctx)
B, H, T, D = 2, 3, 37, 16
rng = np.random.default_rng(7)
q, k, v = (rng.standard_normal((B, H, T, D), dtype=np.float32) for _ in range(3))
mask = rng.standard_normal((T, T), dtype=np.float32)
mask[5, :] = -np.inf  # query 5 sees nothing: its output must be 0
mf = cl.mem_flags
bq, bk, bv, bm = (cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=a) for a in (q, k, v, mask))
bo = cl.Buffer(ctx, mf.READ_WRITE, q.nbytes)

# --- clattn on them -------------------------------------------------------------------------
cp = lib.clattn_context_params_default()
cp.context, cp.device = ctx.int_ptr, device.int_ptr
cc = ctypes.c_void_p()
check(lib.clattn_context_create(ctypes.byref(cp), ctypes.byref(cc)), 'clattn_context_create')
Q, K, V, O = bhtd(bq, B, H, T, D), bhtd(bk, B, H, T, D), bhtd(bv, B, H, T, D), bhtd(bo, B, H, T, D)
M = bhtd(bm, 1, 1, T, T)
params = lib.clattn_sdpa_params_default()
params.mask.causal = CAUSAL_TOP_LEFT
params.mask.additive = ctypes.pointer(M)
event = ctypes.c_void_p()
check(lib.clattn_sdpa(cc, queue.int_ptr, Q, K, V, O, ctypes.byref(params), 0, None,
                      ctypes.byref(event)), 'clattn_sdpa')
cl.Event.from_int_ptr(event.value, retain=False).wait()
out = np.empty_like(q)
cl.enqueue_copy(queue, out, bo).wait()
lib.clattn_context_destroy(ctypes.byref(cc))

# --- numpy reference ------------------------------------------------------------------------
s = np.einsum('bhid,bhjd->bhij', q.astype(np.float64), k.astype(np.float64)) / np.sqrt(D)
s = s + mask.astype(np.float64)
s[..., np.triu(np.ones((T, T), dtype=bool), 1)] = -np.inf
mx = s.max(axis=-1, keepdims=True)
e = np.exp(s - np.where(np.isfinite(mx), mx, 0))
den = e.sum(axis=-1, keepdims=True)
p = np.divide(e, den, out=np.zeros_like(e), where=den > 0)
ref = p @ v.astype(np.float64)
err = np.abs(out - ref).max()
print(f'pyopencl + clattn on {device.name}: max error {err:.2g}; fully masked row zero: '
      f'{bool(np.all(out[:, :, 5, :] == 0))}')
sys.exit(0 if err <= 1e-4 * max(1.0, np.abs(ref).max()) and np.all(out[:, :, 5, :] == 0) else 1)
