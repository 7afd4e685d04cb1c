"""Attention and its helpers on pyopencl arrays: sdpa, merge, add_sinks, rope. Each is also a
method of clattn.Context (ctx.sdpa(q, k, v, ...))."""
import ctypes

import numpy as np
import pyopencl as cl

from . import _capi
from ._errors import Error, check
from ._params import device_vector, logit_params, mask_params, set_varlen
from ._views import check_queue, enqueue, new_array, path_value, tensor

_NAN = float('nan')


def _heads(a, num_heads):
    """Number of heads of an array: dim 1 of a 4-D one, num_heads for a packed 3-D one."""
    return a.shape[1] if num_heads is None else num_heads


def _like(queue, a, rows, width, num_heads, dtype=None):
    """A new output laid out as `a` is ([B, H, T, D], packed [B, T, H·D] or [T, H·D]), T = rows,
    D = width."""
    dtype = dtype or a.dtype
    if num_heads is None:
        return new_array(queue, (a.shape[0], a.shape[1], rows, width), dtype)
    if a.ndim == 2:
        return new_array(queue, (rows, num_heads * width), dtype)
    return new_array(queue, (a.shape[0], rows, num_heads * width), dtype)


def workspace_view(workspace):
    """(cl_mem, 0) of caller-owned scratch, or (None, 0). A whole pyopencl Buffer only: the
    library checks the buffer's size, so a view into a larger buffer could not be held to its
    own bounds."""
    if workspace is None:
        return None, 0
    if isinstance(workspace, cl.Buffer):
        return workspace.int_ptr, 0
    raise TypeError(f'workspace: expected a pyopencl Buffer, got {type(workspace).__name__}')


def _sdpa_args(ctx, queue, keep, q, k, v, *, causal=False, mask=None, key_lengths=None,
               scale=None, lse=False, probs=False, out=None, path='auto', window=None,
               window_keep_first=0, softcap=0.0, alibi=None, sinks=None, num_heads=None,
               num_kv_heads=None, workspace=None, cu_seqlens_q=None, cu_seqlens_k=None,
               query_offset=0):
    """The views and clattn_sdpa_params of a call, and the arrays it returns."""
    Q = tensor(q, num_heads)
    kv_heads = num_kv_heads if num_kv_heads is not None else num_heads
    K, V = tensor(k, kv_heads), tensor(v, kv_heads)
    B, Hq, Lq, Lk, Dv = Q.dims[0], Q.dims[1], Q.dims[2], K.dims[2], V.dims[3]
    if out is None:
        out = _like(queue, q, Lq, Dv, num_heads)
    O = tensor(out, num_heads)
    p = _capi.lib.clattn_sdpa_params_default()
    p.scale = _NAN if scale is None else float(scale)
    p.mask = mask_params(ctx, keep, causal=causal, mask=mask, key_lengths=key_lengths,
                         window=window, window_keep_first=window_keep_first,
                         query_offset=query_offset)
    p.path = path_value(path)
    p.logits = logit_params(ctx, keep, Hq, softcap=softcap, alibi=alibi, sinks=sinks)
    p.workspace, p.workspace_offset = workspace_view(workspace)
    set_varlen(p, keep, cu_seqlens_q, cu_seqlens_k)
    extra = []
    for name, want, shape in (('lse', lse, (B, Hq, Lq, 1)), ('probs', probs, (B, Hq, Lq, Lk))):
        if want is False or want is None:
            continue
        a = new_array(queue, shape, np.float32) if want is True else want
        t = tensor(a)
        keep.append(t)
        setattr(p, name, ctypes.pointer(t))
        extra.append(a)
    keep += [Q, K, V, O, p, out] + extra  # new arrays too: their buffers must outlive the call
    return [ctx.handle, ctypes.byref(Q), ctypes.byref(K), ctypes.byref(V), ctypes.byref(O),
            ctypes.byref(p)], out, extra


def sdpa(ctx, q, k, v, *, wait_for=None, queue=None, **kw):
    """Scaled dot-product attention, O = softmax(scale·Q·Kᵀ + mask)·V, by clattn_sdpa.

    q [B, Hq, Lq, D], k [B, Hkv, Lk, D], v [B, Hkv, Lk, Dv] (Hq a multiple of Hkv: GQA), or packed
    [B, T, H·D] arrays with num_heads (and num_kv_heads for k and v when it differs); any view
    pyopencl can make whose strides are non-negative, float32 or float16. Nothing is copied.
    Keywords:
    causal: False, True or 'top_left' (query i sees keys j <= i), 'bottom_right' (j <= i + Lk - Lq).
    mask: additive float device array broadcasting to [B, Hq, Lq, Lk] (-inf hides).
    key_lengths: valid keys per batch item (int32 device array, or host integers).
    scale: None for 1/sqrt(D). path: 'auto', 'fused' or 'unfused'.
    window: (left, right) sliding window, None for no limit on a side; window_keep_first.
    query_offset: added to every query's position among the keys (the causal mask, window and
    ALiBi measure from it): a block of a longer sequence. 0 by default.
    softcap: logit soft-capping (0 off). alibi: True for the standard slopes, or per-head slopes.
    sinks: per-head sink logits. Host values are copied into buffers of their own (no enqueue).
    lse: True (or an array [B, Hq, Lq, 1] float32) for the log-sum-exp of each row; probs: True
    (or an array [B, Hq, Lq, Lk]) for the probabilities (the unfused path). out: the output
    array, laid out as q (new when None). workspace: caller-owned scratch (a pyopencl Buffer of
    at least ctx.sdpa_workspace_size(...) bytes) instead of the library's.
    cu_seqlens_q, cu_seqlens_k: a packed batch of sequences of their own lengths (host offsets
    from 0 to the total, FlashAttention's varlen): q, k, v and out are then packed [total, H·D]
    with num_heads (or views of one batch item), sequence b's rows cu[b] .. cu[b + 1] - 1; the
    fused path only.
    wait_for: pyopencl events the call waits for; queue: another queue of the context.

    Returns (out, event), or (out, lse, event), (out, probs, event), (out, lse, probs, event):
    the arrays asked for, and the pyopencl event of the call's last command. Raises clattn.Error
    with nothing enqueued when the library refuses the call."""
    queue = check_queue(ctx, queue)
    keep = []
    args, out, extra = _sdpa_args(ctx, queue, keep, q, k, v, **kw)
    ev = enqueue(_capi.lib.clattn_sdpa, 'clattn_sdpa', queue, args, wait_for)
    return (out, *extra, ev)


def sdpa_workspace_size(ctx, q, k, v, **kw):
    """Bytes of workspace ctx.sdpa(q, k, v, **kw) needs (0: none), validated as the call is."""
    keep = []
    args, _, _ = _sdpa_args(ctx, check_queue(ctx, None), keep, q, k, v, **kw)
    size = ctypes.c_size_t()
    check(_capi.lib.clattn_sdpa_workspace_size(*args, ctypes.byref(size)),
          'clattn_sdpa_workspace_size')
    return size.value


def sdpa_prepare(ctx, q, k, v, **kw):
    """Builds every kernel ctx.sdpa(q, k, v, **kw) would run (clattn_sdpa_prepare); enqueues
    nothing."""
    keep = []
    args, _, _ = _sdpa_args(ctx, check_queue(ctx, None), keep, q, k, v, **kw)
    check(_capi.lib.clattn_sdpa_prepare(*args), 'clattn_sdpa_prepare')


def merge(ctx, o1, lse1, o2, lse2, *, out=None, lse_out=None, wait_for=None, queue=None):
    """Joins two attention results over disjoint key sets (clattn_merge): O, lse of the union from
    (O1, lse1) and (O2, lse2), all [B, H, Lq, Dv] and [B, H, Lq, 1] float32. Returns
    (out, lse_out, event); out and lse_out may be o1/lse1 or o2/lse2 (in place)."""
    queue = check_queue(ctx, queue)
    if out is None:
        out = new_array(queue, o1.shape, o1.dtype)
    if lse_out is None:
        lse_out = new_array(queue, lse1.shape, np.float32)
    ts = [tensor(a) for a in (o1, lse1, o2, lse2, out, lse_out)]
    ev = enqueue(_capi.lib.clattn_merge, 'clattn_merge', queue,
               [ctx.handle] + [ctypes.byref(t) for t in ts], wait_for)
    return out, lse_out, ev


def add_sinks(ctx, o, lse, sinks, *, wait_for=None, queue=None):
    """Adds per-head sink logits once to a result merged from parts computed without them
    (clattn_add_sinks), in place on o [B, H, Lq, Dv] and lse [B, H, Lq, 1]. Returns the event."""
    queue = check_queue(ctx, queue)
    keep = []
    O, L = tensor(o), tensor(lse)
    mem, off = device_vector(ctx, sinks, np.float32, 'sinks', keep)
    if mem is None:
        raise Error.of('CLATTN_ERROR_INVALID_ARGUMENT', 'sinks are required')
    return enqueue(_capi.lib.clattn_add_sinks, 'clattn_add_sinks', queue,
                 [ctx.handle, ctypes.byref(O), ctypes.byref(L), mem, off], wait_for)


_LAYOUTS = {'neox': 0, 'gptj': 1}


def rope_params(ctx, keep, *, layout='neox', rotary_dim=0, theta=10000.0, inv_freq=None,
                positions=None):
    """clattn_rope_params from keywords: layout 'neox' (rotate-half) or 'gptj' (interleaved),
    rotary_dim (0: the whole head), theta or inv_freq (float [R/2]), positions (int32 [B]: the
    position of each sequence's first token; host values are copied into a buffer)."""
    r = _capi.lib.clattn_rope_params_default()
    if layout not in _LAYOUTS:
        raise Error.of('CLATTN_ERROR_INVALID_ARGUMENT', f"layout={layout!r}: 'neox' or 'gptj'")
    r.layout, r.rotary_dim, r.theta = _LAYOUTS[layout], int(rotary_dim), float(theta)
    r.inv_freq, r.inv_freq_offset = device_vector(ctx, inv_freq, np.float32, 'inv_freq', keep)
    r.positions, r.positions_offset = device_vector(ctx, positions, np.int32, 'positions', keep)
    return r


def rope(ctx, x, *, out=None, num_heads=None, wait_for=None, queue=None, **rope_kw):
    """Rotary position embedding (clattn_rope) of x [B, H, T, D] (or packed with num_heads) into
    out (x itself when None: in place). Keywords as rope_params. Returns (out, event)."""
    queue = check_queue(ctx, queue)
    keep = []
    out = x if out is None else out
    X, Y = tensor(x, num_heads), tensor(out, num_heads)
    r = rope_params(ctx, keep, **rope_kw)
    ev = enqueue(_capi.lib.clattn_rope, 'clattn_rope', queue,
               [ctx.handle, ctypes.byref(X), ctypes.byref(Y), ctypes.byref(r)], wait_for)
    return out, ev
