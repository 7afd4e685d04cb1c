/* Softmax step: each row of S [B, H, Lq, Lk] becomes exp(s - max) / sum, written to P (which may
 * be S itself: every element is read and then written by the same work-item). A row whose every
 * score is -INFINITY gives zeros and lse = -INFINITY; a NaN in a row makes the row NaN.
 *
 * One work-group of WG work-items per row. NDRange: (WG, Lq, B * H), local (WG, 1, 1).
 * Specialised with WG (a power of two) and HAS_LSE. */

#ifndef WG
#define WG 64
#endif
#ifndef HAS_LSE
#define HAS_LSE 0
#endif

/* max() that lets a NaN win, so a NaN row is not mistaken for a fully masked one. */
inline float max_nan(float a, float b)
{
    return (a > b || isnan(a)) ? a : b;
}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void softmax_rows(__global const float *s, ulong s_off, ulong ss0, ulong ss1, ulong ss2, ulong ss3,
                  __global float *p, ulong p_off, ulong ps0, ulong ps1, ulong ps2, ulong ps3,
                  __global float *lse, ulong l_off, ulong ls0, ulong ls1, ulong ls2,
                  ulong H, ulong Lk)
{
    __local float red[WG];
    const uint lid = get_local_id(0);
    const ulong i = get_global_id(1);
    const ulong z = get_global_id(2);
    const ulong b = z / H, h = z % H;
    const ulong srow = s_off + b * ss0 + h * ss1 + i * ss2;
    const ulong prow = p_off + b * ps0 + h * ps1 + i * ps2;

    float mx = -INFINITY;
    for (ulong j = lid; j < Lk; j += WG)
        mx = max_nan(mx, s[srow + j * ss3]);
    red[lid] = mx;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint w = WG / 2; w > 0; w >>= 1) {
        if (lid < w)
            red[lid] = max_nan(red[lid], red[lid + w]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    mx = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);

    /* Every key hidden: the sum would be 0 and exp(-inf - -inf) NaN; the answer is 0. */
    const int empty = mx == -INFINITY;
    float sum = 0.0f;
    if (!empty)
        for (ulong j = lid; j < Lk; j += WG)
            sum += exp(s[srow + j * ss3] - mx);
    red[lid] = sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint w = WG / 2; w > 0; w >>= 1) {
        if (lid < w)
            red[lid] += red[lid + w];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    sum = red[0];

    const float inv = empty ? 0.0f : 1.0f / sum;
    for (ulong j = lid; j < Lk; j += WG)
        p[prow + j * ps3] = empty ? 0.0f : exp(s[srow + j * ss3] - mx) * inv;
#if HAS_LSE
    if (lid == 0)
        lse[l_off + b * ls0 + h * ls1 + i * ls2] = empty ? -INFINITY : mx + log(sum);
#endif
}
