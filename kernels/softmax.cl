/* Softmax step: each row of S [B, H, Lq, Lk] becomes exp(s - max) / sum, written to P (which may
 * be S itself: every element is read and then written by the same work-item). A row whose every
 * score is -INFINITY gives zeros and lse = -INFINITY; a NaN in a row makes the row NaN.
 * HAS_SINKS: head h's sink logit joins the denominator (prelude), and lse excludes it.
 *
 * One work-group of WG work-items per row. NDRange: (WG, Lq, B * H), local (WG, 1, 1).
 * Specialised with WG (a power of two) and HAS_LSE. */

#ifndef WG
#define WG 64
#endif

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void softmax_rows(VIEW(const float, s), VIEW(float, p), VIEW(float, lse), ulong H, ulong Lk,
                  __global const float *sinks, ulong sinks_off)
{
    __local float red[WG];
    const uint lid = get_local_id(0);
    const ulong i = get_global_id(1);
    const ulong z = get_global_id(2);
    const ulong b = z / H, h = z % H;
    const ulong srow = AT(s, b, h, i, 0), ss3 = s_st.s3;
    const ulong prow = AT(p, b, h, i, 0), ps3 = p_st.s3;

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

#if HAS_SINKS
    const float inv = empty ? 0.0f : 1.0f / (sum + exp(sinks[sinks_off + h] - mx));
#else
    (void)sinks;
    (void)sinks_off;
    const float inv = empty ? 0.0f : 1.0f / sum;
#endif
    for (ulong j = lid; j < Lk; j += WG)
        p[prow + j * ps3] = empty ? 0.0f : exp(s[srow + j * ss3] - mx) * inv;
#if HAS_LSE
    if (lid == 0)
        lse[AT(lse, b, h, i, 0)] = empty ? -INFINITY : mx + log(sum);
#else
    UNUSED_VIEW(lse);
#endif
}
