/* Rotary position embedding, Y = RoPE(X) for X, Y [B, H, T, D] (prelude: rope_partner,
 * rope_index, rope_angle, rope_value). One work-item per pair of rotated dims and per dim past
 * the rotary dim, so that each reads what it writes and Y may be X (in place).
 * NDRange (R / 2 + D - R, T, B * H). HALF: fp16 storage (vload_half / vstore_half). No barriers. */

#ifndef HALF
#define HALF 0
#endif
#if HALF
#define T_X half
#define LOADX(p, i) vload_half((i), (p))
#define STOREX(x, p, i) vstore_half((x), (i), (p))
#else
#define T_X float
#define LOADX(p, i) ((p)[i])
#define STOREX(x, p, i) ((p)[i] = (x))
#endif

__kernel void rope(VIEW(const T_X, x), VIEW(T_X, y), ulong H, ulong D, __global const int *pos,
                   ulong pos_off, int use_pos, ROPE_PARAMS)
{
    const int k = (int)get_global_id(0);
    const ulong t = get_global_id(1), z = get_global_id(2), b = z / H, h = z % H;
    const long p = (long)t + (use_pos ? (long)pos[pos_off + b] : 0L);
    const ulong xrow = AT(x, b, h, t, 0), yrow = AT(y, b, h, t, 0);
    const int half_r = rope_dim / 2;
    if (k >= half_r) { /* a dim past the rotary dim: copied */
        const ulong d = (ulong)(rope_dim + k - half_r);
        STOREX(LOADX(x, xrow + d * x_st.s3), y, yrow + d * y_st.s3);
        return;
    }
    const int d1 = ROPE_GPTJ ? 2 * k : k, d2 = rope_partner(d1, rope_dim);
    const float a = LOADX(x, xrow + (ulong)d1 * x_st.s3), c = LOADX(x, xrow + (ulong)d2 * x_st.s3);
    const float angle = rope_angle(p, d1, rope_dim, rope_theta, rope_table, rope_table_off,
                                   rope_use_table); /* d1 and d2 share it */
    STOREX(rope_value(a, c, d1, rope_dim, angle), y, yrow + (ulong)d1 * y_st.s3);
    STOREX(rope_value(c, a, d2, rope_dim, angle), y, yrow + (ulong)d2 * y_st.s3);
    (void)D;
}
