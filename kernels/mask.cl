/* Masking step, in place on the scores S [B, H, Lq, Lk], in the order include/clattn.h gives:
 * soft-capping (HAS_SOFTCAP), the additive mask (prelude: ADD_MASK, whose -inf hides a key
 * too), ALiBi (HAS_ALIBI), then the keys the query does not see (prelude: key_limit, key_first,
 * KEY_VISIBLE: causal, key lengths, window) become -INFINITY. Specialised with CAUSAL,
 * HAS_ADDITIVE, HAS_LENGTHS, HAS_WINDOW, HAS_SOFTCAP, HAS_ALIBI.
 * NDRange: (Lk, Lq, B * H). No barriers. */

__kernel void mask_apply(VIEW(float, s), ulong H, ulong Lq, ulong Lk, VIEW(const float, m),
                         __global const int *len, ulong len_off, long wl, long wr, long keep,
                         long qoff, float cap, float inv_cap, __global const float *slopes,
                         ulong slopes_off)
{
    const ulong j = get_global_id(0);
    const ulong i = get_global_id(1);
    const ulong z = get_global_id(2);
    const ulong b = z / H, h = z % H;
    const long lk = valid_keys(len, len_off, b, (long)Lk);
    const ulong at = AT(s, b, h, i, j);
    float v = s[at];
#if HAS_SOFTCAP
    v = SOFTCAP(v, cap, inv_cap);
#else
    (void)cap;
    (void)inv_cap;
#endif
#if HAS_ADDITIVE
    v = ADD_MASK(float, v, m[AT(m, b, h, i, j)], 1.0f);
#else
    UNUSED_VIEW(m);
#endif
#if HAS_ALIBI
    const float pos = (float)query_pos((long)i, lk, (long)Lq, qoff);
    v += ALIBI(float, slopes[slopes_off + h], pos, (long)j);
#else
    (void)slopes;
    (void)slopes_off;
#endif
    const long first = key_first((long)i, lk, (long)Lq, qoff, wl);
    const long limit = key_limit((long)i, lk, (long)Lq, qoff, wr);
    s[at] = KEY_VISIBLE((long)j, first, limit, keep) ? v : -INFINITY;
}
