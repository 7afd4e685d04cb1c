"""float64 references in numpy, written from the definitions in include/clattn.h (not from the
library's code): attention with every mask and logit option, RoPE, PyTorch's multi-head layer."""
import numpy as np


def sdpa(q, k, v, *, causal=False, mask=None, key_lengths=None, scale=None, window=None,
         window_keep_first=0, softcap=0.0, alibi=None, sinks=None, query_offset=0):
    """q [B, Hq, Lq, D], k [B, Hkv, Lk, D], v [B, Hkv, Lk, Dv] -> (out, lse, probs) in float64.
    A row that sees no key gives 0 and lse -inf."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    g = Hq // Hkv
    k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    s = np.einsum('bhid,bhjd->bhij', q, k) * scale
    if softcap:
        s = softcap * np.tanh(s / softcap)
    lens = np.full(B, Lk) if key_lengths is None else np.clip(np.asarray(key_lengths), 0, Lk)
    i = np.arange(Lq)[:, None]
    j = np.arange(Lk)[None, :]
    hidden = np.zeros((B, Hq, Lq, Lk), dtype=bool)
    pos = np.empty((B, Lq, 1))
    for b in range(B):
        # where each query stands among the keys: its index (top-left), or aligned so that the
        # last query sits at the last valid key (bottom-right, and without a causal mask)
        p = (i if causal in (True, 'top_left') else i + lens[b] - Lq) + query_offset
        pos[b] = p
        h = (j >= lens[b])
        if causal:
            h = h | (j > p)
        if window is not None:
            left, right = window
            if left is not None:
                h = h | ((j < p - left) & (j >= window_keep_first))
            if right is not None:
                h = h | (j > p + right)
        hidden[b] = h
    if mask is not None:
        m = np.broadcast_to(np.asarray(mask, dtype=np.float64), s.shape)
        hidden = hidden | (m == -np.inf)
        s = s + np.where(m == -np.inf, 0, m)
    if alibi is not None:
        slopes = np.asarray(alibi, dtype=np.float64)[None, :, None, None]
        s = s - slopes * np.abs(pos[:, None, :, :] - j[None, None])
    s = np.where(hidden, -np.inf, s)
    mx = s.max(axis=-1, keepdims=True)
    safe = np.where(np.isfinite(mx), mx, 0.0)
    e = np.where(hidden, 0.0, np.exp(s - safe))
    den = e.sum(axis=-1, keepdims=True)
    lse = np.where(den > 0, safe + np.log(np.where(den > 0, den, 1.0)), -np.inf)
    if sinks is not None:
        den = den + np.where(den > 0, np.exp(np.asarray(sinks, np.float64)[None, :, None, None]
                                             - safe), 0.0)
    p = np.divide(e, den, out=np.zeros_like(e), where=den > 0)
    return p @ v, lse, p


def alibi_slopes(n):
    """Press et al.'s slopes: 2^(-8i/n) for a power of two n, interleaved from 2n otherwise."""
    def pow2(m):
        return [2.0 ** (-8.0 * (i + 1) / m) for i in range(m)]
    p2 = 1 << (n.bit_length() - 1)
    if p2 == n:
        return np.array(pow2(n))
    return np.array(pow2(p2) + pow2(2 * p2)[0::2][:n - p2])


def rope_neox(x, positions, theta=10000.0):
    """Rotate-half RoPE over the whole head dim: x [..., T, D], positions [T]."""
    x = np.asarray(x, dtype=np.float64)
    D = x.shape[-1]
    inv = theta ** (-np.arange(0, D, 2) / D)
    ang = np.asarray(positions, np.float64)[:, None] * inv[None, :]
    c, s = np.cos(ang), np.sin(ang)
    a, b = x[..., :D // 2], x[..., D // 2:]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def mha(query, key, value, sd, num_heads, **kw):
    """nn.MultiheadAttention(batch_first=True)'s forward from its state dict, in float64:
    ([B, Lq, E] out, [B, H, Lq, Lk] probabilities)."""
    f = {n: np.asarray(a, dtype=np.float64) for n, a in sd.items()}
    E = f['out_proj.weight'].shape[0]
    if 'in_proj_weight' in f:
        wq, wk, wv = np.split(f['in_proj_weight'], 3)
    else:
        wq, wk, wv = f['q_proj_weight'], f['k_proj_weight'], f['v_proj_weight']
    bq, bk, bv = np.split(f['in_proj_bias'], 3) if 'in_proj_bias' in f else (0, 0, 0)
    B, Lq, _ = query.shape

    def heads(x, w, bias):
        y = np.asarray(x, np.float64) @ w.T + bias
        return y.reshape(B, -1, num_heads, E // num_heads).transpose(0, 2, 1, 3)
    o, _, p = sdpa(heads(query, wq, bq), heads(key, wk, bk), heads(value, wv, bv), **kw)
    o = o.transpose(0, 2, 1, 3).reshape(B, Lq, E)
    return o @ f['out_proj.weight'].T + f.get('out_proj.bias', 0), p


def quantize_q8(x):
    """CLATTN_Q8 as include/clattn.h defines it, over the last axis: q = x·(127/m) rounded to
    nearest even in float32 (m = the row's max |x|), read back as q·(m/127)."""
    x = np.asarray(x, np.float32)
    m = np.abs(x).max(axis=-1, keepdims=True)
    inv = np.where(m > 0, np.float32(127) / np.where(m > 0, m, 1), 0).astype(np.float32)
    q = np.clip(np.rint((x * inv).astype(np.float32)), -127, 127)
    return q.astype(np.float64) * (m / np.float32(127)).astype(np.float32)
