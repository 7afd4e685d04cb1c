/* Appends `count` new tokens of K and V for batch item b to a KV cache at position `start`, and
 * records the new length. Elements are copied as they are stored (ELEM: float, or ushort for
 * fp16 bits). NDRange: (D, count, Hkv). No barriers. */

#ifndef ELEM
#define ELEM float
#endif

__kernel void kv_append(__global const ELEM *k, ulong k_off, ulong ks1, ulong ks2, ulong ks3,
                        __global const ELEM *v, ulong v_off, ulong vs1, ulong vs2, ulong vs3,
                        __global ELEM *ck, __global ELEM *cv, ulong c_off, ulong cs1, ulong cs2,
                        ulong start, uint count, __global int *len, ulong b)
{
    const ulong d = get_global_id(0), t = get_global_id(1), h = get_global_id(2);
    const ulong at = c_off + h * cs1 + (start + t) * cs2 + d;
    ck[at] = k[k_off + h * ks1 + t * ks2 + d * ks3];
    cv[at] = v[v_off + h * vs1 + t * vs2 + d * vs3];
    if (d == 0 && t == 0 && h == 0)
        len[b] = (int)(start + count);
}
