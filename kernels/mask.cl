/* Masking step, in place on the scores S [B, H, Lq, Lk]: hidden scores become -INFINITY, the
 * additive mask is added to the others.
 *
 * Specialised with:
 *   CAUSAL        0 none, 1 top-left (j <= i), 2 bottom-right (j <= i + Lk_b - Lq)
 *   HAS_ADDITIVE  1: add m[b, h, i, j] (strides already 0 where the mask broadcasts)
 *   HAS_LENGTHS   1: keys j >= len[b] are hidden; len is clamped to [0, Lk] and is also the Lk_b
 *                 of the bottom-right alignment
 * NDRange: (Lk, Lq, B * H). No barriers. */

#ifndef CAUSAL
#define CAUSAL 0
#endif
#ifndef HAS_ADDITIVE
#define HAS_ADDITIVE 0
#endif
#ifndef HAS_LENGTHS
#define HAS_LENGTHS 0
#endif

__kernel void mask_apply(__global float *s, ulong s_off, ulong ss0, ulong ss1, ulong ss2, ulong ss3,
                         ulong H, ulong Lq, ulong Lk,
                         __global const float *m, ulong m_off, ulong ms0, ulong ms1, ulong ms2,
                         ulong ms3, __global const int *len, ulong len_off)
{
    const ulong j = get_global_id(0);
    const ulong i = get_global_id(1);
    const ulong z = get_global_id(2);
    const ulong b = z / H, h = z % H;
    long lk = (long)Lk;
    int hidden = 0;
#if HAS_LENGTHS
    lk = clamp((long)len[len_off + b], 0L, (long)Lk);
    hidden |= (long)j >= lk;
#endif
#if CAUSAL == 1
    hidden |= j > i;
#elif CAUSAL == 2
    hidden |= (long)j > (long)i + lk - (long)Lq;
#endif
    const ulong at = s_off + b * ss0 + h * ss1 + i * ss2 + j * ss3;
    float v = s[at];
#if HAS_ADDITIVE
    const float mv = m[m_off + b * ms0 + h * ms1 + i * ms2 + j * ms3];
    v += mv;
    hidden |= mv == -INFINITY; /* -inf hides the key whatever its score, NaN included */
#endif
    s[at] = hidden ? -INFINITY : v;
}
