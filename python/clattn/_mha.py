"""clattn.MultiheadAttention: a clattn_mha layer, made from PyTorch's nn.MultiheadAttention
state dict or from weights given one by one."""
import ctypes

import numpy as np
import pyopencl as cl

from . import _capi
from ._errors import Error, check
from ._handle import Handle
from ._ops import workspace_view
from ._params import logit_params, mask_params, set_varlen
from ._views import check_queue, dtype_value, enqueue, new_array, path_value, tensor


def to_numpy(value):
    """numpy data from numpy data or a torch tensor (torch is never imported: a tensor is
    recognised by its detach() method)."""
    if hasattr(value, 'detach'):
        value = value.detach().cpu()
        if str(value.dtype) == 'torch.bfloat16':  # numpy has no bfloat16
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


class MultiheadAttention(Handle):
    """Multi-head attention as PyTorch's nn.MultiheadAttention(batch_first=True) computes it, on
    one clattn.Context: query [B, Lq, E], key [B, Lk, kdim], value [B, Lk, vdim] -> [B, Lq, E].

    The weights are copied to the device once, at creation (nothing enqueued on the caller's
    queues), and prepared there by the library. dtype: of inputs and outputs (float32 or
    float16); weight_dtype: of the weights as uploaded (float16 halves their transfer; the layer
    keeps them in float32). num_kv_heads < num_heads gives grouped-query attention.
    Thread safety: as clattn_mha (forwards may run from several threads)."""
    _destroy = 'clattn_mha_destroy'

    def __init__(self, ctx, *, embed_dim, num_heads, in_proj_weight=None, q_proj_weight=None,
                 k_proj_weight=None, v_proj_weight=None, in_proj_bias=None,
                 out_proj_weight=None, out_proj_bias=None, num_kv_heads=None, kdim=None,
                 vdim=None, dtype=np.float32, weight_dtype=None):
        self.ctx = ctx
        self.embed_dim, self.num_heads = int(embed_dim), int(num_heads)
        self.dtype = np.dtype(dtype)
        wdt = np.dtype(weight_dtype or dtype)
        given = {'in_proj_weight': in_proj_weight, 'q_proj_weight': q_proj_weight,
                 'k_proj_weight': k_proj_weight, 'v_proj_weight': v_proj_weight,
                 'in_proj_bias': in_proj_bias, 'out_proj_weight': out_proj_weight,
                 'out_proj_bias': out_proj_bias}
        p = _capi.lib.clattn_mha_params_default()
        p.embed_dim, p.num_heads = self.embed_dim, self.num_heads
        p.num_kv_heads = int(num_kv_heads or 0)
        p.kdim, p.vdim = int(kdim or 0), int(vdim or 0)
        p.dtype, p.weight_dtype = dtype_value(self.dtype), dtype_value(wdt)
        p.bias = int(in_proj_bias is not None or out_proj_bias is not None)
        self._buffers = []  # the device copies the layer reads again at update; kept with it
        views = []
        for name, value in given.items():
            if value is None:
                continue
            host = np.ascontiguousarray(to_numpy(value), dtype=wdt)
            host2 = host.reshape(1, -1) if host.ndim == 1 else host
            if host2.ndim != 2:
                raise Error.of('CLATTN_ERROR_INVALID_SHAPE', f'{name}: shape {host.shape}')
            buf = cl.Buffer(ctx.cl_context, cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR,
                            hostbuf=host2)
            rows, cols = host2.shape
            t = _capi.Tensor(buf.int_ptr, 0, p.weight_dtype, _capi.c_size4(1, 1, rows, cols),
                             _capi.c_size4(rows * cols, rows * cols, cols, 1))
            self._buffers.append(buf)
            views.append(t)  # alive until create returns
            setattr(p, name, ctypes.pointer(t))
        handle = ctypes.c_void_p()
        check(_capi.lib.clattn_mha_create(ctx.handle, ctypes.byref(p), ctypes.byref(handle)),
              'clattn_mha_create')
        self._handle = handle
        ctx._adopt(self)

    @classmethod
    def from_state_dict(cls, ctx, state_dict, num_heads, *, prefix='', dtype=np.float32,
                        weight_dtype=None, num_kv_heads=None):
        """The layer of a PyTorch nn.MultiheadAttention's state_dict() (numpy arrays or torch
        tensors): in_proj_weight or q/k/v_proj_weight, in_proj_bias, out_proj.weight,
        out_proj.bias, under `prefix`. add_bias_kv layers (bias_k, bias_v) are refused."""
        sd = {k[len(prefix):]: to_numpy(v) for k, v in state_dict.items() if k.startswith(prefix)}
        if 'bias_k' in sd or 'bias_v' in sd:
            raise Error.of('CLATTN_ERROR_INVALID_ARGUMENT', 'add_bias_kv is not supported')
        out_w = sd.get('out_proj.weight')
        if out_w is None:
            raise Error.of('CLATTN_ERROR_INVALID_ARGUMENT', f'{prefix}out_proj.weight missing')
        E = int(out_w.shape[0])
        kdim = int(sd['k_proj_weight'].shape[1]) if 'k_proj_weight' in sd else None
        vdim = int(sd['v_proj_weight'].shape[1]) if 'v_proj_weight' in sd else None
        return cls(ctx, embed_dim=E, num_heads=num_heads, num_kv_heads=num_kv_heads, kdim=kdim,
                   vdim=vdim, dtype=dtype, weight_dtype=weight_dtype,
                   in_proj_weight=sd.get('in_proj_weight'), q_proj_weight=sd.get('q_proj_weight'),
                   k_proj_weight=sd.get('k_proj_weight'), v_proj_weight=sd.get('v_proj_weight'),
                   in_proj_bias=sd.get('in_proj_bias'), out_proj_weight=out_w,
                   out_proj_bias=sd.get('out_proj.bias'))

    def nbytes(self):
        """Device memory the layer holds (clattn_mha_bytes)."""
        return _capi.lib.clattn_mha_bytes(self.handle)

    def __call__(self, query, key=None, value=None, *, causal=False, attn_mask=None,
                 key_lengths=None, need_weights=False, average_attn_weights=True, out=None,
                 wait_for=None, queue=None, path='auto', window=None, window_keep_first=0,
                 softcap=0.0, alibi=None, sinks=None, workspace=None, cu_seqlens_q=None,
                 cu_seqlens_k=None):
        """The forward (clattn_mha_forward). key/value None: self attention on query.
        attn_mask: additive float device array broadcasting to [B, H, Lq, Lk]; key_lengths:
        valid keys per batch item (PyTorch's key_padding_mask as counts). need_weights: also
        the attention weights, [B, Lq, Lk] averaged over heads (average_attn_weights) or
        [B, H, Lq, Lk]. workspace: caller-owned scratch for the intermediates (a pyopencl
        Buffer of clattn_mha_workspace_size bytes). cu_seqlens_q/_k: a packed batch, query
        (key, value, out) [total, E] with sequence b's tokens at rows cu[b] .. cu[b + 1] - 1.
        Other keywords as sdpa.
        Returns (out, event) or (out, weights, event)."""
        queue = check_queue(self.ctx, queue)
        keep = []
        Q = tensor(query, 1)
        if key is None:  # self attention: the same view three times
            K = V = Q
        else:
            K, V = tensor(key, 1), tensor(value if value is not None else key, 1)
        B, Lq, Lk = Q.dims[0], Q.dims[2], K.dims[2]
        if out is None:
            shape = (Lq, self.embed_dim) if query.ndim == 2 else (B, Lq, self.embed_dim)
            out = new_array(queue, shape, query.dtype)
        O = tensor(out, 1)
        fp = _capi.lib.clattn_mha_forward_params_default()
        fp.mask = mask_params(self.ctx, keep, causal=causal, mask=attn_mask,
                              key_lengths=key_lengths, window=window,
                              window_keep_first=window_keep_first)
        fp.path = path_value(path)
        fp.workspace, fp.workspace_offset = workspace_view(workspace)
        set_varlen(fp, keep, cu_seqlens_q, cu_seqlens_k)
        fp.logits = logit_params(self.ctx, keep, self.num_heads, softcap=softcap, alibi=alibi,
                                 sinks=sinks)
        weights = None
        if need_weights:
            shape = (B, Lq, Lk) if average_attn_weights else (B, self.num_heads, Lq, Lk)
            weights = new_array(queue, shape, np.float32)
            W = tensor(weights, 1) if average_attn_weights else tensor(weights)
            keep.append(W)
            if average_attn_weights:
                fp.weights = ctypes.pointer(W)
            else:
                fp.head_weights = ctypes.pointer(W)
        ev = enqueue(_capi.lib.clattn_mha_forward, 'clattn_mha_forward', queue,
                     [self.handle] + [ctypes.byref(x) for x in (Q, K, V, O, fp)], wait_for)
        return (out, weights, ev) if need_weights else (out, ev)
