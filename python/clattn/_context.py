"""clattn.Context: a clattn_context on the OpenCL context and device of a pyopencl queue."""
import ctypes
import weakref

from . import _capi, _ops
from ._errors import check
from ._handle import Handle
from ._views import check_queue

_LEVELS = {'error': 0, 'warn': 1, 'info': 2, 'debug': 3}


class Context(Handle):
    """The library's state for one OpenCL device: compiled kernels, tuning, caches.

    Context(queue): the device and OpenCL context of `queue` (a pyopencl.CommandQueue, in-order or
    out-of-order), which is also the queue calls use unless given another of the same context.
    cache_dir: the disk cache of compiled kernels (None: $CLATTN_CACHE_DIR or the default; 'off'
    for none). log: a function log(level, message) receiving build logs and warnings; log_level
    one of 'error', 'warn' (default), 'info', 'debug'.

    Methods sdpa (with sdpa_workspace_size, sdpa_prepare), merge, add_sinks and rope run
    attention and its helpers (see clattn.sdpa ...).
    Thread safety: as clattn_context (see include/clattn.h): calls may come from several threads.
    Objects made from it hold it alive; close() (or leaving a `with` block) destroys it and them.
    """
    _destroy = 'clattn_context_destroy'

    def __init__(self, queue, *, cache_dir=None, log=None, log_level='warn'):
        self.queue = check_queue(None, queue)
        self.cl_context = self.queue.context
        self.device = self.queue.device
        p = _capi.lib.clattn_context_params_default()
        p.context, p.device = self.cl_context.int_ptr, self.device.int_ptr
        if cache_dir == 'off':
            p.disk_cache_off = 1
        elif cache_dir is not None:
            self._cache_dir = str(cache_dir).encode()
            p.cache_dir = self._cache_dir
        if log is not None:
            # Kept on the object: the library calls it for as long as the context lives.
            self._log = _capi.LOG_FN(lambda user, level, msg: log(level, msg.decode(errors='replace')))
            p.log = self._log
        p.log_level = _LEVELS[log_level]
        handle = ctypes.c_void_p()
        check(_capi.lib.clattn_context_create(ctypes.byref(p), ctypes.byref(handle)),
              'clattn_context_create')
        self._handle = handle
        self._children = weakref.WeakSet()

    sdpa = _ops.sdpa
    sdpa_workspace_size = _ops.sdpa_workspace_size
    sdpa_prepare = _ops.sdpa_prepare
    merge = _ops.merge
    add_sinks = _ops.add_sinks
    rope = _ops.rope

    def _adopt(self, child):
        """Layers and caches made on this context: closed before it is."""
        self._children.add(child)

    def device_info(self):
        """What the library read from the device: name, vendor, memory, fp16/fp64 support."""
        info = _capi.DeviceInfo()
        check(_capi.lib.clattn_context_device_info(self.handle, ctypes.byref(info)),
              'clattn_context_device_info')
        return {k: (getattr(info, k).decode() if isinstance(getattr(info, k), bytes)
                    else getattr(info, k)) for k, _ in _capi.DeviceInfo._fields_ if k != 'reserved'}

    def finish(self):
        """Waits for all work the library put on queues of its own (clattn_context_finish)."""
        check(_capi.lib.clattn_context_finish(self.handle), 'clattn_context_finish')

    def close(self):
        """Destroys the context, after every layer and cache made from it (those become closed:
        using them raises ValueError). Work already enqueued still runs."""
        for child in list(getattr(self, '_children', ())):
            child.close()
        super().close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
