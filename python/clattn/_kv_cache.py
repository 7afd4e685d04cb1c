"""clattn.KVCache: keys and values of B sequences kept on the device for decoding (clattn_kv_cache)."""
import ctypes

import numpy as np

from . import _capi
from ._errors import Error, check
from ._handle import Handle
from ._ops import rope_params, workspace_view
from ._params import logit_params
from ._views import check_queue, dtype_value, enqueue, new_array, tensor

_NAN = float('nan')


class KVCache(Handle):
    """B sequences × num_kv_heads heads of up to `capacity` tokens each, stored as dtype
    (float32, float16, 'bfloat16', or 'q8': int8 with a scale per token and head; a q8 cache
    takes float32, float16 or bfloat16 (uint16) appends and quantizes them). rope: a dict of RoPE
    keywords (layout, rotary_dim, theta, inv_freq) to rotate keys as they are appended and
    queries as they attend. page_size, num_pages: a paged cache, whose sequences share a pool of
    num_pages pages of page_size tokens (capacity: the most one sequence may hold), with
    release(), fork() and free_pages().

    Thread safety: as clattn_kv_cache: calls that change the cache must not overlap with any
    other call on it; enqueue them in order on one in-order queue or chain their events."""
    _destroy = 'clattn_kv_cache_destroy'

    def __init__(self, ctx, *, batch, num_kv_heads, head_dim, capacity, dtype=np.float32,
                 rope=None, page_size=0, num_pages=0):
        self.ctx = ctx
        keep = []
        p = _capi.lib.clattn_kv_cache_params_default()
        p.batch, p.num_kv_heads, p.head_dim, p.capacity = (int(batch), int(num_kv_heads),
                                                           int(head_dim), int(capacity))
        p.dtype = dtype_value(dtype)
        p.page_size, p.num_pages = int(page_size), int(num_pages)
        self.batch, self.num_kv_heads, self.head_dim = p.batch, p.num_kv_heads, p.head_dim
        self.capacity, self.dtype = p.capacity, p.dtype
        if rope is not None:
            r = rope_params(ctx, keep, **rope)
            p.rope = ctypes.pointer(r)
        handle = ctypes.c_void_p()
        check(_capi.lib.clattn_kv_cache_create(ctx.handle, ctypes.byref(p), ctypes.byref(handle)),
              'clattn_kv_cache_create')
        self._handle = handle
        ctx._adopt(self)

    def lengths(self):
        """Tokens each sequence holds."""
        return [_capi.lib.clattn_kv_cache_length(self.handle, b) for b in range(self.batch)]

    def free_pages(self):
        """Pages of a paged cache's pool that no sequence holds (0 for a contiguous cache)."""
        return _capi.lib.clattn_kv_cache_free_pages(self.handle)

    def release(self, b):
        """Paged caches: sequence b forgets its tokens; pages no other sequence holds go back to
        the pool. Host bookkeeping only (nothing is enqueued)."""
        check(_capi.lib.clattn_kv_cache_release(self.handle, int(b)), 'clattn_kv_cache_release')

    def fork(self, src, dst):
        """Paged caches: the empty sequence dst shares all of src's pages (a common prefix); the
        first append to either into a shared, partly filled page copies it."""
        check(_capi.lib.clattn_kv_cache_fork(self.handle, int(src), int(dst)),
              'clattn_kv_cache_fork')

    def _view(self, a):
        # bfloat16 has no numpy dtype: a bfloat16 cache takes uint16 arrays as its bits
        return tensor(a, dtype='bfloat16' if a.dtype == np.uint16 else None)

    def append(self, k_new, v_new, counts=None, *, wait_for=None, queue=None):
        """Appends k_new, v_new [B, Hkv, T, D]; sequence b gains counts[b] tokens (None: T each).
        Past the capacity: clattn.Error CLATTN_ERROR_CACHE_FULL; past a paged cache's free pages,
        CLATTN_ERROR_POOL_EXHAUSTED; either way the cache is unchanged. Returns the event."""
        queue = check_queue(self.ctx, queue)
        K, V = self._view(k_new), self._view(v_new)
        c = None
        if counts is not None:
            if len(counts) != self.batch:
                raise Error.of('CLATTN_ERROR_INVALID_SHAPE',
                               f'{len(counts)} counts for {self.batch} sequences')
            c = (ctypes.c_size_t * self.batch)(*[int(x) for x in counts])
        return enqueue(_capi.lib.clattn_kv_cache_append, 'clattn_kv_cache_append', queue,
                       [self.handle, ctypes.byref(K), ctypes.byref(V), c], wait_for)

    def attend(self, q, *, out=None, scale=None, splits=0, lse=False, window_left=None,
               window_keep_first=0, softcap=0.0, alibi=None, sinks=None, cross=False,
               workspace=None, cu_seqlens_q=None, num_heads=None, wait_for=None, queue=None):
        """Attention of q [B, Hq, Lq, D] (the Lq newest tokens of each sequence, causally; every
        key with cross=True) over the cache: out [B, Hq, Lq, D]. splits: key splits per query
        block (0: chosen by the library). window_left: keys a query sees behind it (None: all).
        workspace: caller-owned scratch for split partial results (a pyopencl Buffer).
        cu_seqlens_q: steps of their own per sequence in one launch (some prefilling a chunk,
        others decoding a token): q packed [total, Hq·D] with num_heads (or [1, Hq, total, D]),
        sequence b's newest tokens' queries at rows cu[b] .. cu[b + 1] - 1.
        Returns (out, event) or (out, lse, event) with lse=True."""
        queue = check_queue(self.ctx, queue)
        keep = []
        Q = tensor(q, num_heads)
        if out is None:
            out = new_array(queue, q.shape, q.dtype)
        O = tensor(out, num_heads)
        ap = _capi.lib.clattn_kv_attend_params_default()
        ap.scale = _NAN if scale is None else float(scale)
        ap.splits = int(splits)
        ap.workspace, ap.workspace_offset = workspace_view(workspace)
        if window_left is not None:
            if int(window_left) < 0:
                raise Error.of('CLATTN_ERROR_INVALID_ARGUMENT', 'window_left: None for no limit')
            ap.window_left = int(window_left)
        ap.window_keep_first = int(window_keep_first)
        ap.logits = logit_params(self.ctx, keep, Q.dims[1], softcap=softcap, alibi=alibi,
                                 sinks=sinks)
        ap.cross = int(bool(cross))
        if cu_seqlens_q is not None:
            cu = (ctypes.c_size_t * len(cu_seqlens_q))(*[int(x) for x in cu_seqlens_q])
            keep.append(cu)
            ap.cu_seqlens_q = ctypes.cast(cu, ctypes.POINTER(ctypes.c_size_t))
            ap.num_seqs = len(cu_seqlens_q) - 1
        want_lse = lse is not False and lse is not None  # an array's truth is ambiguous
        if want_lse:
            lse = new_array(queue, (Q.dims[0], Q.dims[1], Q.dims[2], 1), np.float32) \
                if lse is True else lse
            L = tensor(lse)
            ap.lse = ctypes.pointer(L)
        ev = enqueue(_capi.lib.clattn_kv_cache_attend, 'clattn_kv_cache_attend', queue,
                     [self.handle, ctypes.byref(Q), ctypes.byref(O), ctypes.byref(ap)], wait_for)
        return (out, lse, ev) if want_lse else (out, ev)
