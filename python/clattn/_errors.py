"""clattn.Error: a status of the C library (or OpenCL), named by the library itself."""
from . import _capi


class Error(Exception):
    """A call failed; as in C, nothing was enqueued and no buffer changed.

    status: the code (int); name: its symbolic name ("CLATTN_ERROR_INVALID_SHAPE",
    "CL_OUT_OF_RESOURCES", ...) from clattn_status_name(); message: the library's text for it,
    with what the Python layer found when it refused the call itself."""

    def __init__(self, status, what='', detail=''):
        self.status = int(status)
        self.name = _capi.lib.clattn_status_name(self.status).decode()
        self.message = _capi.lib.clattn_status_string(self.status).decode()
        self.detail = detail
        text = f'{self.name}: {self.message}'
        if what:
            text = f'{what}: {text}'
        if detail:
            text += f' ({detail})'
        super().__init__(text)

    @classmethod
    def of(cls, name, detail=''):
        """The error of status `name`, raised by the Python layer before calling the library."""
        return cls(_capi.STATUS[name], detail=detail)


def check(status, what):
    if status != 0:
        raise Error(status, what)
