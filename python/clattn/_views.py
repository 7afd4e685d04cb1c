"""pyopencl arrays and events as the C API takes them: views (clattn_tensor) read from an array's
buffer, offset, shape and strides without a copy; wait lists; small host vectors as buffers."""
import ctypes

import numpy as np
import pyopencl as cl
import pyopencl.array as cla

from . import _capi
from ._errors import Error

# clattn_dtype values (include/clattn.h)
F32, F16, BF16, Q8 = 1, 2, 3, 4
_DTYPES = {np.dtype(np.float32): F32, np.dtype(np.float16): F16}

# clattn_causal and clattn_path values
_CAUSAL = {None: 0, False: 0, 'none': 0, True: 1, 'top_left': 1, 'bottom_right': 2}
_PATHS = {'auto': 0, 'unfused': 1, 'fused': 2}


def causal_value(causal):
    try:
        return _CAUSAL[causal]
    except (KeyError, TypeError):
        raise Error.of('CLATTN_ERROR_INVALID_ARGUMENT',
                       f"causal={causal!r}: use False, True/'top_left' or 'bottom_right'") from None


def path_value(path):
    try:
        return _PATHS[path]
    except (KeyError, TypeError):
        raise Error.of('CLATTN_ERROR_INVALID_ARGUMENT',
                       f"path={path!r}: use 'auto', 'fused' or 'unfused'") from None


_NAMED = {'bfloat16': BF16, 'bf16': BF16, 'q8': Q8}


def dtype_value(dtype):
    """A clattn_dtype from a numpy dtype, or 'bfloat16' (numpy has none: such arrays are uint16)
    or 'q8' (int8 rows with a scale each: KV-cache storage)."""
    if isinstance(dtype, str) and dtype in _NAMED:
        return _NAMED[dtype]
    try:
        return _DTYPES[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise Error.of('CLATTN_ERROR_UNSUPPORTED_DTYPE',
                       f'{dtype}: clattn stores float32, float16, bfloat16 or q8') from None


def _elements(nbytes, itemsize, what):
    if nbytes % itemsize:
        raise Error.of('CLATTN_ERROR_UNSUPPORTED_LAYOUT',
                       f'{what} of {nbytes} bytes is not a whole number of elements')
    return nbytes // itemsize


def _buffer(a):
    if not isinstance(a, cla.Array):
        raise TypeError(f'expected a pyopencl.array.Array, got {type(a).__name__}')
    if a.base_data is None:
        raise Error.of('CLATTN_ERROR_INVALID_ARGUMENT', 'array has no buffer (size 0?)')
    return a.base_data


def tensor(a, heads=None, dtype=None):
    """The clattn_tensor viewing array `a`: 4-D [B, H, T, D] as it is; 3-D packed [B, T, H·D] (or
    2-D [T, H·D], one batch item) split into `heads` heads ([B, H, T, D] with strides (T·H·D, D, H·D, 1) for a contiguous one); fewer
    dims are taken as leading 1s (a mask [Lq, Lk]). `dtype` 'bfloat16' reads uint16 arrays as
    bfloat16."""
    buf = _buffer(a)
    kind = dtype_value(dtype if dtype is not None else a.dtype)
    if dtype is not None and a.dtype.itemsize != 2 and kind == BF16:
        raise Error.of('CLATTN_ERROR_UNSUPPORTED_DTYPE', 'bfloat16 data must be a 2-byte array')
    size = a.dtype.itemsize
    if any(s < 0 for s in a.strides):
        raise Error.of('CLATTN_ERROR_INVALID_STRIDE', 'negative strides have no clattn view')
    strides = [_elements(s, size, 'a stride') for s in a.strides]
    dims = list(a.shape)
    if heads is not None:
        if a.ndim == 2:  # [T, H·D]: a packed batch's rows (one batch item)
            dims, strides = [1] + dims, [strides[0] * dims[0]] + strides
        elif a.ndim != 3:
            raise Error.of('CLATTN_ERROR_INVALID_SHAPE', f'num_heads given: expected a packed '
                           f'[B, T, H*D] or [T, H*D] array, got shape {a.shape}')
        B, T, HD = dims
        if heads <= 0 or HD % heads:
            raise Error.of('CLATTN_ERROR_INVALID_SHAPE', f'{HD} features do not split into '
                           f'{heads} heads')
        D = HD // heads
        dims = [B, heads, T, D]
        strides = [strides[0], D * strides[2], strides[1], strides[2]]
    elif a.ndim > 4:
        raise Error.of('CLATTN_ERROR_INVALID_SHAPE', f'{a.ndim}-D array: clattn views have 4 dims')
    while len(dims) < 4:
        dims.insert(0, 1)
        strides.insert(0, strides[0] * dims[1] if strides else 1)
    offset = _elements(a.offset, size, 'the array offset')
    return _capi.Tensor(buf.int_ptr, offset, kind, _capi.c_size4(*dims), _capi.c_size4(*strides))


def vector(a, dtype, what):
    """(cl_mem handle, element offset, the array) of a contiguous 1-D device array of `dtype`;
    (None, 0, None) for None. Host values go through host_vector instead."""
    if a is None:
        return None, 0, None
    if isinstance(a, cla.Array):
        if a.dtype != np.dtype(dtype) or a.ndim != 1 or a.strides[0] != a.dtype.itemsize:
            raise Error.of('CLATTN_ERROR_UNSUPPORTED_LAYOUT',
                           f'{what}: expected a contiguous 1-D {np.dtype(dtype).name} array')
        return _buffer(a).int_ptr, a.offset // a.dtype.itemsize, a
    raise TypeError(f'{what}: expected a pyopencl.array.Array, got {type(a).__name__}')


def host_vector(context, values, dtype):
    """A read-only buffer holding `values` (copied at creation: nothing is enqueued)."""
    host = np.ascontiguousarray(values, dtype=dtype)
    if host.size == 0:
        host = np.zeros(1, dtype=dtype)
    return cl.Buffer(context, cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR, hostbuf=host)


def wait_list(events):
    """(count, cl_event array) for a list of pyopencl events (None: none)."""
    events = list(events or [])
    if not events:
        return 0, None
    for e in events:
        if not isinstance(e, cl.Event):
            raise TypeError(f'wait_for: expected pyopencl events, got {type(e).__name__}')
    return len(events), (ctypes.c_void_p * len(events))(*[e.int_ptr for e in events])


def event(handle):
    """The pyopencl event owning the reference a call returned."""
    return cl.Event.from_int_ptr(handle.value, retain=False) if handle.value else None


def enqueue(fn, what, queue, args, wait_for):
    """Calls fn(args[0], queue, *args[1:], wait list, &event): the library's enqueuing calls all
    take that form. Raises clattn.Error on a refusal; returns the pyopencl event."""
    n, waits = wait_list(wait_for)
    ev = ctypes.c_void_p()
    status = fn(*args[:1], queue.int_ptr, *args[1:], n, waits, ctypes.byref(ev))
    if status != 0:
        raise Error(status, what)
    return event(ev)


def check_queue(ctx, queue):
    q = queue if queue is not None else ctx.queue
    if not isinstance(q, cl.CommandQueue):
        raise TypeError(f'queue: expected a pyopencl.CommandQueue, got {type(q).__name__}')
    return q


def new_array(queue, shape, dtype):
    return cla.empty(queue, tuple(int(s) for s in shape), dtype)
