/* Masking step, in place on the scores S [B, H, Lq, Lk]: scores of keys the query does not see
 * (prelude: key_limit) become -INFINITY, the additive mask is added to the others (prelude:
 * ADD_MASK, whose -inf hides a key too). Specialised with CAUSAL, HAS_ADDITIVE, HAS_LENGTHS.
 * NDRange: (Lk, Lq, B * H). No barriers. */

__kernel void mask_apply(VIEW(float, s), ulong H, ulong Lq, ulong Lk, VIEW(const float, m),
                         __global const int *len, ulong len_off)
{
    const ulong j = get_global_id(0);
    const ulong i = get_global_id(1);
    const ulong z = get_global_id(2);
    const ulong b = z / H, h = z % H;
    const long lk = valid_keys(len, len_off, b, (long)Lk);
    const ulong at = AT(s, b, h, i, j);
    float v = s[at];
#if HAS_ADDITIVE
    v = ADD_MASK(float, v, m[AT(m, b, h, i, j)], 1.0f);
#else
    UNUSED_VIEW(m);
#endif
    s[at] = (long)j < key_limit((long)i, lk, (long)Lq) ? v : -INFINITY;
}
