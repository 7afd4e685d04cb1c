"""The C API as ctypes sees it: the library, its structs and its functions.

Every struct here mirrors one of include/clattn.h member for member; at import the library is asked
for its version, its ABI number and the size of each struct (clattn_struct_size), and a library that
does not match is refused rather than handed structs of the wrong shape."""
import ctypes
import os

ABI_VERSION = 1           # CLATTN_ABI_VERSION this package was written against
VERSION = (0, 2)          # the library's MAJOR.MINOR this package mirrors

c_size4 = ctypes.c_size_t * 4
c_mem = ctypes.c_void_p   # cl_mem, cl_command_queue, cl_event, ... as integers


class Tensor(ctypes.Structure):
    _fields_ = [('buffer', c_mem), ('offset', ctypes.c_size_t), ('dtype', ctypes.c_int),
                ('dims', c_size4), ('strides', c_size4)]


class KernelConfig(ctypes.Structure):
    _fields_ = [('flash_variant', ctypes.c_int), ('flash_block_k', ctypes.c_uint32),
                ('flash_wg', ctypes.c_uint32), ('gemm_engine', ctypes.c_int),
                ('gemm_rows', ctypes.c_uint32), ('gemm_vectors', ctypes.c_uint32),
                ('gemm_blocks', ctypes.c_uint32), ('reserved', ctypes.c_uint32 * 9)]


LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)


class ContextParams(ctypes.Structure):
    _fields_ = [('context', ctypes.c_void_p), ('device', ctypes.c_void_p), ('log', LOG_FN),
                ('log_user', ctypes.c_void_p), ('log_level', ctypes.c_int),
                ('cache_dir', ctypes.c_char_p), ('disk_cache_off', ctypes.c_int),
                ('kernels', KernelConfig), ('clblast_tuning', ctypes.c_int),
                ('reserved', ctypes.c_void_p * 7)]


class DeviceInfo(ctypes.Structure):
    _fields_ = [('name', ctypes.c_char * 256), ('vendor', ctypes.c_char * 256),
                ('device_version', ctypes.c_char * 256), ('driver_version', ctypes.c_char * 256),
                ('platform_name', ctypes.c_char * 256), ('platform_version', ctypes.c_char * 256),
                ('type', ctypes.c_uint64), ('compute_units', ctypes.c_uint32),
                ('max_work_group_size', ctypes.c_size_t), ('local_mem_size', ctypes.c_uint64),
                ('max_mem_alloc_size', ctypes.c_uint64), ('global_mem_size', ctypes.c_uint64),
                ('has_fp16', ctypes.c_int), ('has_fp64', ctypes.c_int),
                ('has_subgroups', ctypes.c_int), ('reserved', ctypes.c_uint64 * 32)]


class Tuning(ctypes.Structure):
    _fields_ = [('kernels', KernelConfig), ('clblast_xgemm', ctypes.c_char * 512),
                ('reserved', ctypes.c_uint64 * 8)]


class MaskParams(ctypes.Structure):
    _fields_ = [('causal', ctypes.c_int), ('additive', ctypes.POINTER(Tensor)),
                ('key_lengths', c_mem), ('key_lengths_offset', ctypes.c_size_t),
                ('window_left', ctypes.c_int64), ('window_right', ctypes.c_int64),
                ('window_keep_first', ctypes.c_size_t), ('query_offset', ctypes.c_ssize_t),
                ('reserved', ctypes.c_void_p * 3)]


class LogitParams(ctypes.Structure):
    _fields_ = [('softcap', ctypes.c_float), ('alibi_slopes', c_mem),
                ('alibi_slopes_offset', ctypes.c_size_t), ('sinks', c_mem),
                ('sinks_offset', ctypes.c_size_t), ('reserved', ctypes.c_void_p * 4)]


class SdpaParams(ctypes.Structure):
    _fields_ = [('scale', ctypes.c_float), ('mask', MaskParams), ('path', ctypes.c_int),
                ('probs', ctypes.POINTER(Tensor)), ('lse', ctypes.POINTER(Tensor)),
                ('workspace', c_mem), ('workspace_offset', ctypes.c_size_t),
                ('logits', LogitParams), ('cu_seqlens_q', ctypes.POINTER(ctypes.c_size_t)),
                ('cu_seqlens_k', ctypes.POINTER(ctypes.c_size_t)), ('num_seqs', ctypes.c_size_t),
                ('reserved', ctypes.c_void_p * 5)]


class RopeParams(ctypes.Structure):
    _fields_ = [('layout', ctypes.c_int), ('rotary_dim', ctypes.c_size_t),
                ('theta', ctypes.c_float), ('inv_freq', c_mem),
                ('inv_freq_offset', ctypes.c_size_t), ('positions', c_mem),
                ('positions_offset', ctypes.c_size_t), ('reserved', ctypes.c_void_p * 8)]


_TP = ctypes.POINTER(Tensor)


class MhaParams(ctypes.Structure):
    _fields_ = [('embed_dim', ctypes.c_size_t), ('num_heads', ctypes.c_size_t),
                ('num_kv_heads', ctypes.c_size_t), ('kdim', ctypes.c_size_t),
                ('vdim', ctypes.c_size_t), ('bias', ctypes.c_int), ('dtype', ctypes.c_int),
                ('in_proj_weight', _TP), ('q_proj_weight', _TP), ('k_proj_weight', _TP),
                ('v_proj_weight', _TP), ('in_proj_bias', _TP), ('out_proj_weight', _TP),
                ('out_proj_bias', _TP), ('q_proj_bias', _TP), ('k_proj_bias', _TP),
                ('v_proj_bias', _TP), ('weight_dtype', ctypes.c_int),
                ('reserved', ctypes.c_void_p * 4)]


class MhaForwardParams(ctypes.Structure):
    _fields_ = [('mask', MaskParams), ('path', ctypes.c_int), ('weights', _TP),
                ('head_weights', _TP), ('workspace', c_mem), ('workspace_offset', ctypes.c_size_t),
                ('logits', LogitParams), ('cu_seqlens_q', ctypes.POINTER(ctypes.c_size_t)),
                ('cu_seqlens_k', ctypes.POINTER(ctypes.c_size_t)), ('num_seqs', ctypes.c_size_t),
                ('reserved', ctypes.c_void_p * 5)]


class KvCacheParams(ctypes.Structure):
    _fields_ = [('batch', ctypes.c_size_t), ('num_kv_heads', ctypes.c_size_t),
                ('head_dim', ctypes.c_size_t), ('capacity', ctypes.c_size_t),
                ('dtype', ctypes.c_int), ('rope', ctypes.POINTER(RopeParams)),
                ('page_size', ctypes.c_size_t), ('num_pages', ctypes.c_size_t),
                ('reserved', ctypes.c_void_p * 6)]


class KvAttendParams(ctypes.Structure):
    _fields_ = [('scale', ctypes.c_float), ('splits', ctypes.c_size_t), ('lse', _TP),
                ('workspace', c_mem), ('workspace_offset', ctypes.c_size_t),
                ('window_left', ctypes.c_int64), ('window_keep_first', ctypes.c_size_t),
                ('logits', LogitParams), ('cross', ctypes.c_int),
                ('cu_seqlens_q', ctypes.POINTER(ctypes.c_size_t)), ('num_seqs', ctypes.c_size_t),
                ('reserved', ctypes.c_void_p * 6)]


# Python name -> the C struct it mirrors (checked at import, and field by field by the tests).
STRUCTS = {
    'clattn_tensor': Tensor, 'clattn_kernel_config': KernelConfig,
    'clattn_context_params': ContextParams, 'clattn_device_info': DeviceInfo,
    'clattn_tuning': Tuning, 'clattn_mask_params': MaskParams,
    'clattn_logit_params': LogitParams, 'clattn_sdpa_params': SdpaParams,
    'clattn_rope_params': RopeParams, 'clattn_mha_params': MhaParams,
    'clattn_mha_forward_params': MhaForwardParams, 'clattn_kv_cache_params': KvCacheParams,
    'clattn_kv_attend_params': KvAttendParams,
}

# The OpenCL handle types every call takes, by position.
_P, _U, _S = ctypes.c_void_p, ctypes.c_uint, ctypes.c_int32
_WAIT = [_U, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p)]
_R = ctypes.POINTER

# name: (restype, argtypes)
_PROTOTYPES = {
    'clattn_version': (ctypes.c_char_p, []),
    'clattn_abi_version': (ctypes.c_int, []),
    'clattn_struct_size': (ctypes.c_size_t, [ctypes.c_char_p]),
    'clattn_status_name': (ctypes.c_char_p, [_S]),
    'clattn_status_string': (ctypes.c_char_p, [_S]),
    'clattn_context_params_default': (ContextParams, []),
    'clattn_context_create': (_S, [_R(ContextParams), _R(ctypes.c_void_p)]),
    'clattn_context_destroy': (None, [_R(ctypes.c_void_p)]),
    'clattn_context_finish': (_S, [_P]),
    'clattn_context_device_info': (_S, [_P, _R(DeviceInfo)]),
    'clattn_mask_params_default': (MaskParams, []),
    'clattn_logit_params_default': (LogitParams, []),
    'clattn_sdpa_params_default': (SdpaParams, []),
    'clattn_alibi_slopes': (_S, [ctypes.c_size_t, _R(ctypes.c_float)]),
    'clattn_sdpa': (_S, [_P, _P, _TP, _TP, _TP, _TP, _R(SdpaParams)] + _WAIT),
    'clattn_sdpa_prepare': (_S, [_P, _TP, _TP, _TP, _TP, _R(SdpaParams)]),
    'clattn_sdpa_workspace_size': (_S, [_P, _TP, _TP, _TP, _TP, _R(SdpaParams),
                                        _R(ctypes.c_size_t)]),
    'clattn_merge': (_S, [_P, _P, _TP, _TP, _TP, _TP, _TP, _TP] + _WAIT),
    'clattn_add_sinks': (_S, [_P, _P, _TP, _TP, c_mem, ctypes.c_size_t] + _WAIT),
    'clattn_rope_params_default': (RopeParams, []),
    'clattn_rope': (_S, [_P, _P, _TP, _TP, _R(RopeParams)] + _WAIT),
    'clattn_mha_params_default': (MhaParams, []),
    'clattn_mha_create': (_S, [_P, _R(MhaParams), _R(ctypes.c_void_p)]),
    'clattn_mha_destroy': (None, [_R(ctypes.c_void_p)]),
    'clattn_mha_bytes': (ctypes.c_size_t, [_P]),
    'clattn_mha_forward_params_default': (MhaForwardParams, []),
    'clattn_mha_forward': (_S, [_P, _P, _TP, _TP, _TP, _TP, _R(MhaForwardParams)] + _WAIT),
    'clattn_kv_cache_params_default': (KvCacheParams, []),
    'clattn_kv_cache_create': (_S, [_P, _R(KvCacheParams), _R(ctypes.c_void_p)]),
    'clattn_kv_cache_destroy': (None, [_R(ctypes.c_void_p)]),
    'clattn_kv_cache_length': (ctypes.c_size_t, [_P, ctypes.c_size_t]),
    'clattn_kv_cache_free_pages': (ctypes.c_size_t, [_P]),
    'clattn_kv_cache_release': (_S, [_P, ctypes.c_size_t]),
    'clattn_kv_cache_fork': (_S, [_P, ctypes.c_size_t, ctypes.c_size_t]),
    'clattn_kv_cache_append': (_S, [_P, _P, _TP, _TP, _R(ctypes.c_size_t)] + _WAIT),
    'clattn_kv_attend_params_default': (KvAttendParams, []),
    'clattn_kv_cache_attend': (_S, [_P, _P, _TP, _TP, _R(KvAttendParams)] + _WAIT),
}


class LibraryMismatch(ImportError):
    """The libclattn found is not the one this package mirrors."""


def _load():
    """libclattn from $CLATTN_LIBRARY (a path), or by its SONAME through the dynamic loader's
    usual search (LD_LIBRARY_PATH, the ld.so cache: where `meson install` puts it)."""
    path = os.environ.get('CLATTN_LIBRARY') or f'libclattn.so.{ABI_VERSION}'
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise ImportError(f'clattn: cannot load {path} ({e}); install the C library '
                          '(meson install) or set CLATTN_LIBRARY to its path') from e
    for name, (res, args) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def _check(lib):
    version = lib.clattn_version().decode()
    if lib.clattn_abi_version() != ABI_VERSION or tuple(map(int, version.split('.')[:2])) != VERSION:
        raise LibraryMismatch(f'clattn: library {version} (ABI {lib.clattn_abi_version()}) is not '
                              f'the {VERSION[0]}.{VERSION[1]} (ABI {ABI_VERSION}) this package mirrors')
    for name, cls in STRUCTS.items():
        size = lib.clattn_struct_size(name.encode())
        if size != ctypes.sizeof(cls):
            raise LibraryMismatch(f'clattn: {name} is {size} bytes in the library, '
                                  f'{ctypes.sizeof(cls)} in this package')
    return version


lib = _load()
library_version = _check(lib)
library_path = lib._name


def _status_names():
    """name -> code for every status the library names: its own codes (1000 up) and OpenCL's
    (0 down to -70), read from clattn_status_name rather than copied."""
    names = {}
    for code in list(range(1000, 1100)) + list(range(0, -80, -1)):
        name = lib.clattn_status_name(code).decode()
        if name != 'CLATTN_UNKNOWN_STATUS':
            names[name] = code
    return names


STATUS = _status_names()
