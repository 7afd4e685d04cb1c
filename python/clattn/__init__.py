"""clattn from Python: Transformer attention on any OpenCL device, on pyopencl's objects.

    import pyopencl as cl, pyopencl.array as cla, clattn
    queue = cl.CommandQueue(cl.create_some_context())
    ctx = clattn.Context(queue)
    out, event = ctx.sdpa(q, k, v, causal=True)      # q, k, v: pyopencl arrays [B, H, T, D]

Forward only (no backward pass). The C library (libclattn.so.1) is found through the dynamic
loader's search path or $CLATTN_LIBRARY; its version and struct layouts are checked at import."""
from ._capi import library_path, library_version, LibraryMismatch
from ._context import Context
from ._errors import Error
from ._kv_cache import KVCache
from ._mha import MultiheadAttention
from ._ops import add_sinks, merge, rope, sdpa
from ._params import alibi_slopes

__version__ = '0.2.0'
__all__ = ['Context', 'Error', 'KVCache', 'LibraryMismatch', 'MultiheadAttention', 'add_sinks',
           'alibi_slopes', 'library_path', 'library_version', 'merge', 'rope', 'sdpa']
