"""The mask and logit parameters shared by sdpa, the multi-head layer and the KV cache, built from
keyword arguments. Each builder returns the ctypes struct and the objects it points into, which the
caller keeps alive until the C call returns (OpenCL retains what it enqueues)."""
import ctypes

import numpy as np
import pyopencl.array as cla

from . import _capi
from ._errors import Error, check
from ._views import causal_value, host_vector, tensor, vector

UNBOUNDED = -1  # CLATTN_WINDOW_UNBOUNDED


def alibi_slopes(num_heads):
    """The standard ALiBi slopes for `num_heads` heads (clattn_alibi_slopes), as float32."""
    out = np.zeros(max(int(num_heads), 1), dtype=np.float32)
    check(_capi.lib.clattn_alibi_slopes(int(num_heads), out.ctypes.data_as(
        ctypes.POINTER(ctypes.c_float))), 'clattn_alibi_slopes')
    return out[:num_heads]


def device_vector(ctx, values, dtype, what, keep):
    """(cl_mem, element offset) of a vector: a device array as it is, host values copied into a
    buffer of their own (made with its contents: nothing is enqueued); (None, 0) for None."""
    if values is None:
        return None, 0
    if isinstance(values, cla.Array):
        mem, off, obj = vector(values, dtype, what)
    else:
        obj = host_vector(ctx.cl_context, values, dtype)
        mem, off = obj.int_ptr, 0
    keep.append(obj)
    return mem, off


def _window_side(v, what):
    if v is None:
        return UNBOUNDED
    if int(v) < 0:
        raise Error.of('CLATTN_ERROR_INVALID_ARGUMENT', f'{what} {v}: give None for no limit')
    return int(v)


def mask_params(ctx, keep, *, causal=False, mask=None, key_lengths=None, window=None,
                window_keep_first=0, query_offset=0):
    """clattn_mask_params: causal (False, True/'top_left', 'bottom_right'), an additive float
    mask (device array broadcasting to [B, H, Lq, Lk]; fewer dims are leading 1s), key_lengths
    (int32 device array [B], or host integers), window (left, right) with None for no limit on a
    side, window_keep_first (keys always visible), query_offset (added to every query's position
    among the keys: a block of a longer sequence)."""
    m = _capi.lib.clattn_mask_params_default()
    m.causal = causal_value(causal)
    if mask is not None:
        t = tensor(mask)
        keep.append(t)
        m.additive = ctypes.pointer(t)
    m.key_lengths, m.key_lengths_offset = device_vector(ctx, key_lengths, np.int32,
                                                       'key_lengths', keep)
    if window is not None:
        left, right = window
        m.window_left = _window_side(left, 'window left')
        m.window_right = _window_side(right, 'window right')
    m.window_keep_first = int(window_keep_first)
    m.query_offset = int(query_offset)
    return m


def logit_params(ctx, keep, heads, *, softcap=0.0, alibi=None, sinks=None):
    """clattn_logit_params: softcap (0 off), alibi (True: the standard slopes for `heads` heads;
    or the slopes, host or device), sinks (one logit per query head, host or device)."""
    lp = _capi.lib.clattn_logit_params_default()
    lp.softcap = float(softcap or 0.0)
    if alibi is True:
        alibi = alibi_slopes(heads)
    elif alibi is False:
        alibi = None
    lp.alibi_slopes, lp.alibi_slopes_offset = device_vector(ctx, alibi, np.float32, 'alibi', keep)
    lp.sinks, lp.sinks_offset = device_vector(ctx, sinks, np.float32, 'sinks', keep)
    return lp


def set_varlen(p, keep, cu_seqlens_q, cu_seqlens_k):
    """A packed batch's host offsets into params p (clattn_sdpa_params or the layer's)."""
    if cu_seqlens_q is None:
        if cu_seqlens_k is not None:
            raise Error.of('CLATTN_ERROR_INVALID_ARGUMENT', 'cu_seqlens_k without cu_seqlens_q')
        return
    if cu_seqlens_k is not None and len(cu_seqlens_k) != len(cu_seqlens_q):
        raise Error.of('CLATTN_ERROR_INVALID_ARGUMENT',
                       'cu_seqlens_q and cu_seqlens_k differ in length')
    for name, cu in (('cu_seqlens_q', cu_seqlens_q), ('cu_seqlens_k', cu_seqlens_k)):
        if cu is not None:
            arr = (ctypes.c_size_t * len(cu))(*[int(x) for x in cu])
            keep.append(arr)
            setattr(p, name, ctypes.cast(arr, ctypes.POINTER(ctypes.c_size_t)))
    p.num_seqs = len(cu_seqlens_q) - 1
