"""The binding against the library and the header it was built from: struct layouts field by
field (a C compiler reports offsetof), enum values, status names, and refusal of a mismatch."""
import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import clattn
from clattn import _capi

HEADER_DIR = Path(os.environ.get('CLATTN_INCLUDE_DIR',
                                 Path(__file__).resolve().parents[2] / 'include'))

ENUMS = {'CLATTN_F32': 1, 'CLATTN_F16': 2, 'CLATTN_BF16': 3, 'CLATTN_CAUSAL_NONE': 0,
         'CLATTN_CAUSAL_TOP_LEFT': 1, 'CLATTN_CAUSAL_BOTTOM_RIGHT': 2, 'CLATTN_PATH_AUTO': 0,
         'CLATTN_PATH_UNFUSED': 1, 'CLATTN_PATH_FUSED': 2, 'CLATTN_ROPE_NEOX': 0,
         'CLATTN_ROPE_GPTJ': 1, 'CLATTN_LOG_WARN': 1, 'CLATTN_LOG_DEBUG': 3,
         'CLATTN_WINDOW_UNBOUNDED': -1}


def test_struct_layouts_match_the_header(tmp_path):
    cc = shutil.which('cc') or shutil.which('gcc')
    assert cc, 'a C compiler is needed to read the header'
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "clattn.h"', 'int main(void){']
    for cname, cls in _capi.STRUCTS.items():
        lines.append(f'printf("{cname} %zu\\n", sizeof({cname}));')
        for field, _ in cls._fields_:
            lines.append(f'printf("{cname}.{field} %zu\\n", offsetof({cname}, {field}));')
    for name in ENUMS:
        lines.append(f'printf("{name} %lld\\n", (long long){name});')
    lines.append('return 0;}')
    src = tmp_path / 'layout.c'
    src.write_text('\n'.join(lines))
    exe = tmp_path / 'layout'
    subprocess.run([cc, '-I', str(HEADER_DIR), str(src), '-o', str(exe)], check=True)
    c = dict(line.rsplit(' ', 1) for line in subprocess.run(
        [str(exe)], check=True, capture_output=True, text=True).stdout.splitlines())
    for cname, cls in _capi.STRUCTS.items():
        assert int(c[cname]) == ctypes.sizeof(cls), cname
        for field, _ in cls._fields_:
            assert int(c[f'{cname}.{field}']) == getattr(cls, field).offset, f'{cname}.{field}'
    from clattn import _views
    mirrored = {'CLATTN_F32': _views.F32, 'CLATTN_F16': _views.F16, 'CLATTN_BF16': _views.BF16,
                'CLATTN_CAUSAL_NONE': _views._CAUSAL[False],
                'CLATTN_CAUSAL_TOP_LEFT': _views._CAUSAL['top_left'],
                'CLATTN_CAUSAL_BOTTOM_RIGHT': _views._CAUSAL['bottom_right'],
                'CLATTN_PATH_AUTO': _views._PATHS['auto'],
                'CLATTN_PATH_UNFUSED': _views._PATHS['unfused'],
                'CLATTN_PATH_FUSED': _views._PATHS['fused'],
                'CLATTN_ROPE_NEOX': clattn._ops._LAYOUTS['neox'],
                'CLATTN_ROPE_GPTJ': clattn._ops._LAYOUTS['gptj'],
                'CLATTN_LOG_WARN': clattn._context._LEVELS['warn'],
                'CLATTN_LOG_DEBUG': clattn._context._LEVELS['debug'],
                'CLATTN_WINDOW_UNBOUNDED': clattn._params.UNBOUNDED}
    for name, value in mirrored.items():
        assert int(c[name]) == value, name


def test_status_names_come_from_the_library():
    text = (HEADER_DIR / 'clattn.h').read_text()
    listed = dict((n, int(v)) for n, v in re.findall(r'X\((CLATTN_\w+), (\d+),', text))
    assert listed and all(_capi.STATUS[n] == v for n, v in listed.items())
    assert _capi.STATUS['CL_OUT_OF_RESOURCES'] == -5
    e = clattn.Error(listed['CLATTN_ERROR_CACHE_FULL'], 'append')
    assert e.name == 'CLATTN_ERROR_CACHE_FULL' and 'capacity' in str(e)


def test_a_library_of_another_layout_is_refused():
    class Other:   # a library whose one struct grew: what an old package meets in a new libclattn
        def __init__(self, lib):
            self.lib = lib

        def __getattr__(self, name):
            return getattr(self.lib, name)

        def clattn_struct_size(self, name):
            return self.lib.clattn_struct_size(name) + (8 if name == b'clattn_sdpa_params' else 0)
    assert _capi._check(_capi.lib) == clattn.library_version
    with pytest.raises(clattn.LibraryMismatch, match='clattn_sdpa_params'):
        _capi._check(Other(_capi.lib))
