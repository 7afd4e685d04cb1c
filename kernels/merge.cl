/* Merges two partial attention results over disjoint key sets into the result over their union
 * (split-KV decoding, several devices): with lse = log(exp(lse1) + exp(lse2)),
 *   O = O1 * exp(lse1 - lse) + O2 * exp(lse2 - lse).
 * A part with lse = -inf (no visible key) contributes nothing; when both are -inf, O = 0 and
 * lse = -inf. One work-item per query row, which reads its inputs before writing, so O may be O1
 * or O2 and lse may be lse1 or lse2 (in-place accumulation). NDRange: (Lq, B * H). No barriers. */

#ifndef HAS_LSE
#define HAS_LSE 0
#endif

__kernel void merge(__global const float *o1, ulong o1_off, ulong o1s0, ulong o1s1, ulong o1s2, ulong o1s3,
                    __global const float *l1, ulong l1_off, ulong l1s0, ulong l1s1, ulong l1s2,
                    __global const float *o2, ulong o2_off, ulong o2s0, ulong o2s1, ulong o2s2, ulong o2s3,
                    __global const float *l2, ulong l2_off, ulong l2s0, ulong l2s1, ulong l2s2,
                    __global float *o, ulong o_off, ulong os0, ulong os1, ulong os2, ulong os3,
                    __global float *l, ulong l_off, ulong ls0, ulong ls1, ulong ls2, ulong H,
                    ulong Dv)
{
    const ulong i = get_global_id(0);
    const ulong z = get_global_id(1), b = z / H, h = z % H;
    const float a = l1[l1_off + b * l1s0 + h * l1s1 + i * l1s2];
    const float c = l2[l2_off + b * l2s0 + h * l2s1 + i * l2s2];
    const float mx = fmax(a, c);
    float w1 = 0.0f, w2 = 0.0f, lse = -INFINITY;
    if (mx != -INFINITY) {
        const float e1 = exp(a - mx), e2 = exp(c - mx); /* a NaN lse stays NaN */
        const float sum = e1 + e2;
        w1 = e1 / sum;
        w2 = e2 / sum;
        lse = mx + log(sum);
    }
    const ulong r1 = o1_off + b * o1s0 + h * o1s1 + i * o1s2;
    const ulong r2 = o2_off + b * o2s0 + h * o2s1 + i * o2s2;
    const ulong r = o_off + b * os0 + h * os1 + i * os2;
    for (ulong d = 0; d < Dv; d++) {
        /* A part with zero weight adds nothing, even where its O holds NaN from no keys. */
        const float x1 = w1 != 0.0f ? w1 * o1[r1 + d * o1s3] : 0.0f;
        const float x2 = w2 != 0.0f ? w2 * o2[r2 + d * o2s3] : 0.0f;
        o[r + d * os3] = x1 + x2;
    }
#if HAS_LSE
    l[l_off + b * ls0 + h * ls1 + i * ls2] = lse;
#else
    (void)l, (void)l_off, (void)ls0, (void)ls1, (void)ls2, (void)lse;
#endif
}
