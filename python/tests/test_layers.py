"""MultiheadAttention and KVCache against float64 references."""
import numpy as np
import pyopencl.array as cla
import pytest

import clattn
import reference as ref
from conftest import close, dev


def mha_state_dict(rng, E, kdim=None, vdim=None):
    """The state dict of nn.MultiheadAttention(E, ..., kdim, vdim) with random values."""
    sd = {'in_proj_bias': rng.standard_normal(3 * E) * 0.1,
          'out_proj.weight': rng.standard_normal((E, E)) / np.sqrt(E),
          'out_proj.bias': rng.standard_normal(E) * 0.1}
    if kdim is None:
        sd['in_proj_weight'] = rng.standard_normal((3 * E, E)) / np.sqrt(E)
    else:
        sd['q_proj_weight'] = rng.standard_normal((E, E)) / np.sqrt(E)
        sd['k_proj_weight'] = rng.standard_normal((E, kdim)) / np.sqrt(kdim)
        sd['v_proj_weight'] = rng.standard_normal((E, vdim)) / np.sqrt(vdim)
    return {k: v.astype(np.float32) for k, v in sd.items()}


@pytest.mark.parametrize('path', ['fused', 'unfused'])
def test_self_attention_from_state_dict(ctx, queue, rng, path):
    B, T, E, H = 2, 19, 48, 4
    sd = mha_state_dict(rng, E)
    layer = clattn.MultiheadAttention.from_state_dict(ctx, sd, num_heads=H)
    x = rng.standard_normal((B, T, E)).astype(np.float32)
    out, ev = layer(dev(queue, x), causal=True, key_lengths=[19, 12], path=path)
    ev.wait()
    want, _ = ref.mha(x, x, x, sd, H, causal=True, key_lengths=[19, 12])
    close(out.get(), want, tol=5e-5)


def test_cross_attention_weights_and_fp16_weights(ctx, queue, rng):
    B, Lq, Lk, E, H, kdim, vdim = 2, 7, 12, 32, 2, 20, 24
    sd = mha_state_dict(rng, E, kdim, vdim)
    layer = clattn.MultiheadAttention.from_state_dict(ctx, sd, num_heads=H)
    q = rng.standard_normal((B, Lq, E))
    k = rng.standard_normal((B, Lk, kdim))
    v = rng.standard_normal((B, Lk, vdim))
    want, p = ref.mha(q, k, v, sd, H)
    out, w, ev = layer(dev(queue, q), dev(queue, k), dev(queue, v), need_weights=True)
    ev.wait()
    close(out.get(), want, tol=5e-5)
    close(w.get(), p.mean(axis=1))
    _, hw, ev = layer(dev(queue, q), dev(queue, k), dev(queue, v), need_weights=True,
                      average_attn_weights=False)
    ev.wait()
    close(hw.get(), p)
    # weights uploaded as fp16: the reference uses the same rounded weights
    half = clattn.MultiheadAttention.from_state_dict(ctx, sd, num_heads=H, weight_dtype=np.float16)
    sd16 = {n: a.astype(np.float16) for n, a in sd.items()}
    out, ev = half(dev(queue, q), dev(queue, k), dev(queue, v))
    ev.wait()
    close(out.get(), ref.mha(q, k, v, sd16, H)[0], tol=5e-5)
    assert half.nbytes() > 0


def test_state_dict_of_tensor_like_values(ctx, queue, rng):
    # torch tensors are taken through detach().cpu().numpy() without importing torch
    class TensorLike:
        def __init__(self, a):
            self.a, self.dtype = a, 'torch.float32'

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.a
    E, H = 16, 2
    sd = mha_state_dict(rng, E)
    layer = clattn.MultiheadAttention.from_state_dict(
        ctx, {'attn.' + n: TensorLike(a) for n, a in sd.items()}, num_heads=H, prefix='attn.')
    x = rng.standard_normal((1, 5, E))
    out, ev = layer(dev(queue, x))
    ev.wait()
    close(out.get(), ref.mha(x, x, x, sd, H)[0], tol=5e-5)
    with pytest.raises(clattn.Error) as e:
        clattn.MultiheadAttention.from_state_dict(ctx, dict(sd, bias_k=sd['out_proj.bias']), H)
    assert e.value.name == 'CLATTN_ERROR_INVALID_ARGUMENT'
    with pytest.raises(clattn.Error) as e:
        clattn.MultiheadAttention.from_state_dict(ctx, sd, num_heads=5)   # 16 = 5 · ?
    assert e.value.name.startswith('CLATTN_ERROR_')


@pytest.mark.parametrize('dtype', [np.float32, np.float16, 'bfloat16', 'q8'])
def test_kv_cache_decode(ctx, queue, rng, dtype):
    B, Hkv, Hq, D, cap = 2, 2, 4, 16, 40
    cache = clattn.KVCache(ctx, batch=B, num_kv_heads=Hkv, head_dim=D, capacity=cap, dtype=dtype)
    keys = rng.standard_normal((B, Hkv, 30, D))
    vals = rng.standard_normal((B, Hkv, 30, D))
    if dtype == 'bfloat16':   # bfloat16 is the upper half of float32: round the data there
        def as_bits(a):
            return (a.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        keys = (as_bits(keys).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        vals = (as_bits(vals).astype(np.uint32) << 16).view(np.float32).astype(np.float64)

        def upload(a):
            return cla.to_device(queue, as_bits(a))
    elif dtype == 'q8':        # float appends, quantized by the cache: the reference's too
        keys, vals = keys.astype(np.float32), vals.astype(np.float32)

        def upload(a):
            return dev(queue, a)
    else:
        keys, vals = keys.astype(dtype), vals.astype(dtype)

        def upload(a):
            return dev(queue, a, dtype)
    # a prompt of 20 and 17 tokens, then two single-token steps
    cache.append(upload(keys[:, :, :20]), upload(vals[:, :, :20]), counts=[20, 17]).wait()
    assert cache.lengths() == [20, 17]
    held = [20, 17]
    for step in range(2):
        new_k = np.stack([keys[b, :, held[b]:held[b] + 1] for b in range(B)])
        new_v = np.stack([vals[b, :, held[b]:held[b] + 1] for b in range(B)])
        cache.append(upload(new_k), upload(new_v)).wait()
        held = [h + 1 for h in held]
        q = rng.standard_normal((B, Hq, 1, D))
        out, lse, ev = cache.attend(dev(queue, q), lse=True)
        ev.wait()
        held_k, held_v = (ref.quantize_q8(keys), ref.quantize_q8(vals)) if dtype == 'q8' \
            else (keys, vals)
        for b in range(B):
            want, want_lse, _ = ref.sdpa(q[b:b + 1], held_k[b:b + 1, :, :held[b]],
                                         held_v[b:b + 1, :, :held[b]], causal='bottom_right')
            close(out.get()[b:b + 1], want, tol=2e-5)
            close(lse.get()[b:b + 1], want_lse, tol=2e-5)
    with pytest.raises(clattn.Error) as e:
        cache.append(upload(keys[:, :, :20]), upload(vals[:, :, :20]))
    assert e.value.name == 'CLATTN_ERROR_CACHE_FULL'
    assert cache.lengths() == held                # a failed append changes nothing


def test_kv_cache_rope_window_and_close(queue, rng):
    ctx = clattn.Context(queue)
    B, H, D = 1, 2, 8
    cache = clattn.KVCache(ctx, batch=B, num_kv_heads=H, head_dim=D, capacity=16,
                           rope=dict(layout='neox', theta=10000.0))
    k = rng.standard_normal((B, H, 12, D))
    v = rng.standard_normal((B, H, 12, D))
    cache.append(dev(queue, k), dev(queue, v)).wait()
    q = rng.standard_normal((B, H, 3, D))
    out, ev = cache.attend(dev(queue, q), window_left=4)
    ev.wait()
    # the three newest tokens are at positions 9, 10, 11; the keys at 0..11
    want, _, _ = ref.sdpa(ref.rope_neox(q, np.arange(9, 12)), ref.rope_neox(k, np.arange(12)), v,
                          causal='bottom_right', window=(4, None))
    close(out.get(), want)
    ctx.close()                                   # closes the cache first
    with pytest.raises(ValueError):
        cache.lengths()


def test_fp16_layer(ctx, queue, rng):
    B, T, E, H = 2, 9, 32, 4
    sd = mha_state_dict(rng, E)
    layer = clattn.MultiheadAttention.from_state_dict(ctx, sd, num_heads=H, dtype=np.float16)
    x = rng.standard_normal((B, T, E)).astype(np.float16)
    out, ev = layer(dev(queue, x, np.float16), causal=True)
    ev.wait()
    assert out.dtype == np.float16
    sd16 = {n: a.astype(np.float16) for n, a in sd.items()}
    close(out.get(), ref.mha(x, x, x, sd16, H, causal=True)[0], tol=3e-3)


def test_packed_batch(ctx, queue, rng):
    # sequences of their own lengths back to back, [total, E], through the layer and sdpa
    E, H = 32, 4
    lengths = [5, 0, 17, 1, 9]
    cu = np.concatenate([[0], np.cumsum(lengths)])
    sd = mha_state_dict(rng, E)
    layer = clattn.MultiheadAttention.from_state_dict(ctx, sd, num_heads=H)
    x = rng.standard_normal((cu[-1], E))
    out, ev = layer(dev(queue, x), causal=True, cu_seqlens_q=cu)
    ev.wait()
    assert out.shape == (cu[-1], E)
    got = out.get()
    for b, n in enumerate(lengths):
        if n:
            xs = x[None, cu[b]:cu[b + 1]]
            close(got[cu[b]:cu[b + 1]], ref.mha(xs, xs, xs, sd, H, causal=True)[0][0], tol=5e-5)
    q = rng.standard_normal((cu[-1], H * 8))
    kv = rng.standard_normal((2, 30, 2 * 8))
    cu_k = [0, 4, 4, 20, 21, 30]   # per sequence keys of its own, one sequence with none
    o, ev = ctx.sdpa(dev(queue, q), dev(queue, kv[0]), dev(queue, kv[1]), num_heads=H,
                     num_kv_heads=2, causal='bottom_right', cu_seqlens_q=cu, cu_seqlens_k=cu_k)
    ev.wait()
    for b in (b for b, n in enumerate(lengths) if n):
        qs = q[cu[b]:cu[b + 1]].reshape(1, -1, H, 8).transpose(0, 2, 1, 3)
        ks, vs = (a[cu_k[b]:cu_k[b + 1]].reshape(1, -1, 2, 8).transpose(0, 2, 1, 3) for a in kv)
        want = ref.sdpa(qs, ks, vs, causal='bottom_right')[0].transpose(0, 2, 1, 3)
        close(o.get()[cu[b]:cu[b + 1]], want.reshape(-1, H * 8))
    with pytest.raises(clattn.Error) as e:
        layer(dev(queue, x), cu_seqlens_q=[0, 3, 2, cu[-1]])
    assert e.value.name == 'CLATTN_ERROR_INVALID_ARGUMENT'


def test_kv_cache_mixed_steps(ctx, queue, rng):
    # one sequence decodes a token while the other prefills a chunk of 4, in one attend
    B, Hkv, Hq, D = 2, 1, 2, 8
    cache = clattn.KVCache(ctx, batch=B, num_kv_heads=Hkv, head_dim=D, capacity=16)
    k, v = rng.standard_normal((2, B, Hkv, 12, D))
    cache.append(dev(queue, k[:, :, :5]), dev(queue, v[:, :, :5]), counts=[5, 3]).wait()
    new_k, new_v = np.zeros((2, B, Hkv, 4, D))
    new_k[0, :, :1], new_v[0, :, :1] = k[0, :, 5:6], v[0, :, 5:6]
    new_k[1, :, :4], new_v[1, :, :4] = k[1, :, 3:7], v[1, :, 3:7]
    cache.append(dev(queue, new_k), dev(queue, new_v), counts=[1, 4]).wait()
    assert cache.lengths() == [6, 7]
    q = rng.standard_normal((5, Hq * D))   # seq 0's newest token, then seq 1's four
    out, ev = cache.attend(dev(queue, q), cu_seqlens_q=[0, 1, 5], num_heads=Hq)
    ev.wait()
    for b, (rows, held) in enumerate(((slice(0, 1), 6), (slice(1, 5), 7))):
        qs = q[rows].reshape(1, -1, Hq, D).transpose(0, 2, 1, 3)
        want = ref.sdpa(qs, k[b:b + 1, :, :held], v[b:b + 1, :, :held], causal='bottom_right')[0]
        close(out.get()[rows], want.transpose(0, 2, 1, 3).reshape(-1, Hq * D))
    # the log-sum-exp into an array of the caller's
    lse = cla.empty(queue, (1, Hq, 5, 1), np.float32)
    _, got_lse, ev = cache.attend(dev(queue, q), cu_seqlens_q=[0, 1, 5], num_heads=Hq, lse=lse)
    ev.wait()
    assert got_lse is lse
    qs = q[1:5].reshape(1, -1, Hq, D).transpose(0, 2, 1, 3)
    close(lse.get()[:, :, 1:5], ref.sdpa(qs, k[1:2, :, :7], v[1:2, :, :7], causal='bottom_right')[1])


def test_kv_cache_paged_fork_and_pool(ctx, queue, rng):
    # pages of 4 tokens, 6 of them: a prompt of 6 tokens forked, both sides diverging (the shared
    # half page copied on write), an append the pool cannot hold refused, a release
    B, Hkv, Hq, D = 2, 1, 2, 8
    cache = clattn.KVCache(ctx, batch=B, num_kv_heads=Hkv, head_dim=D, capacity=16,
                           page_size=4, num_pages=6)
    k, v = rng.standard_normal((2, B, Hkv, 16, D))
    k[1, :, :6], v[1, :, :6] = k[0, :, :6], v[0, :, :6]  # the fork's prefix is sequence 0's
    cache.append(dev(queue, k[:, :, :6]), dev(queue, v[:, :, :6]), counts=[6, 0]).wait()
    cache.fork(0, 1)
    assert cache.lengths() == [6, 6] and cache.free_pages() == 4
    cache.append(dev(queue, k[:, :, 6:9]), dev(queue, v[:, :, 6:9])).wait()
    assert cache.lengths() == [9, 9] and cache.free_pages() == 1
    with pytest.raises(clattn.Error) as e:
        cache.append(dev(queue, k[:, :, 9:13]), dev(queue, v[:, :, 9:13]))
    assert e.value.name == 'CLATTN_ERROR_POOL_EXHAUSTED'
    assert cache.lengths() == [9, 9] and cache.free_pages() == 1
    q = rng.standard_normal((B, Hq, 1, D))
    out, ev = cache.attend(dev(queue, q))
    ev.wait()
    close(out.get(), ref.sdpa(q, k[:, :, :9], v[:, :, :9], causal='bottom_right')[0])
    cache.release(0)
    assert cache.lengths() == [0, 9] and cache.free_pages() == 3
    with pytest.raises(clattn.Error) as e:
        cache.fork(1, 1)
    assert e.value.name == 'CLATTN_ERROR_INVALID_ARGUMENT'
