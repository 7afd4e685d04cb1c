"""What every object of the library's has in Python: its C handle while open, the destroy call
that close() (or garbage collection) makes, and a clear error when used after close."""
import ctypes

from . import _capi


class Handle:
    _destroy = ''  # the clattn_*_destroy function of the subclass's C type
    _handle = None

    @property
    def handle(self):
        if not self._handle:
            raise ValueError(f'clattn.{type(self).__name__} is closed')
        return self._handle

    def close(self):
        if self._handle:
            getattr(_capi.lib, self._destroy)(ctypes.byref(self._handle))
            self._handle = None

    def __del__(self):
        self.close()
