/* Merging partial attention results over disjoint key sets into the result over their union
 * (split-KV decoding, several devices): with lse = log(sum over parts of exp(lse_s)),
 *   O = sum over parts of O_s * exp(lse_s - lse).
 * A part with lse = -inf (it saw no key) contributes nothing, not even a NaN its O may hold
 * (prelude: WEIGHTED_ADD); when every part is, O = 0 and lse = -inf. A NaN lse stays NaN.
 * One work-item per query row. NDRange: (Lq, B * H). No barriers. HAS_LSE: write the merged lse.
 * HAS_SINKS (merge_parts): head h's sink logit joins the merged denominator, once; the merged lse
 * excludes it. add_sinks (at the end) does the same for a result merged without them. */

/* O1_FMT, O2_FMT, O_FMT (merge; add_sinks: O_FMT): each O view float (0) or half (1),
 * loaded and stored as the prelude's FMT_* say; the merging is in float either way. */
#ifndef O1_FMT
#define O1_FMT 0
#endif
#ifndef O2_FMT
#define O2_FMT 0
#endif
#ifndef O_FMT
#define O_FMT 0
#endif

/* A part's weight exp(lse_s - mx) / sum, given the largest part lse mx and the sum of
 * exp(lse_t - mx) over all parts; 0 when no part saw a key. */
inline float part_weight(float lse_s, float mx, float sum)
{
    return mx == -INFINITY ? 0.0f : exp(lse_s - mx) / sum;
}

/* The sum of merge_parts' part weights: with a sink logit sk, exp(sk - mx) joins it. */
inline float with_sink(float sum, float mx, __global const float *sinks, ulong at)
{
#if HAS_SINKS
    return mx == -INFINITY ? sum : sum + exp(sinks[at] - mx);
#else
    (void)mx;
    (void)sinks;
    (void)at;
    return sum;
#endif
}

inline float merged_lse(float mx, float sum)
{
    return mx == -INFINITY ? -INFINITY : mx + log(sum);
}

/* Two parts in any two views (clattn_merge). Each work-item reads its row before writing it, so
 * O may be O1 or O2 and lse may be lse1 or lse2 (in-place accumulation). */
__kernel void merge(VIEW(const FMT_TYPE(O1_FMT), o1), VIEW(const float, l1),
                    VIEW(const FMT_TYPE(O2_FMT), o2), VIEW(const float, l2),
                    VIEW(FMT_TYPE(O_FMT), o), VIEW(float, l), ulong H, ulong Dv)
{
    const ulong i = get_global_id(0);
    const ulong z = get_global_id(1), b = z / H, h = z % H;
    const float a = l1[AT(l1, b, h, i, 0)];
    const float c = l2[AT(l2, b, h, i, 0)];
    const float mx = max_nan(a, c);
    const float sum = exp(a - mx) + exp(c - mx);
    const float w1 = part_weight(a, mx, sum), w2 = part_weight(c, mx, sum);
    for (ulong d = 0; d < Dv; d++) {
        const float x = WEIGHTED_ADD(float, 0.0f, w1, FMT_LOAD(O1_FMT, o1, AT(o1, b, h, i, d)));
        const float y = WEIGHTED_ADD(float, x, w2, FMT_LOAD(O2_FMT, o2, AT(o2, b, h, i, d)));
        FMT_STORE(O_FMT, y, o, AT(o, b, h, i, d));
    }
#if HAS_LSE
    l[AT(l, b, h, i, 0)] = merged_lse(mx, sum);
#else
    UNUSED_VIEW(l);
#endif
}

/* `parts` partial results in one buffer (split-KV decoding): part s is view `part` moved by
 * s * o_split elements, its lse view `part_lse` moved by s * l_split. The output row accumulates
 * one part at a time, reading each part's row in order. */
__kernel void merge_parts(VIEW(const float, part), VIEW(const float, part_lse), ulong parts,
                          ulong o_split, ulong l_split, VIEW(float, o), VIEW(float, l), ulong H,
                          ulong Dv, __global const float *sinks, ulong sinks_off)
{
    const ulong i = get_global_id(0);
    const ulong z = get_global_id(1), b = z / H, h = z % H;
    const ulong lrow = AT(part_lse, b, h, i, 0), prow = AT(part, b, h, i, 0);
    __global float *orow = o + AT(o, b, h, i, 0);
    float mx = -INFINITY;
    for (ulong s = 0; s < parts; s++)
        mx = max_nan(mx, part_lse[lrow + s * l_split]);
    float sum = 0.0f;
    for (ulong s = 0; s < parts; s++)
        sum += exp(part_lse[lrow + s * l_split] - mx);
    const float denom = with_sink(sum, mx, sinks, sinks_off + h);
    for (ulong s = 0; s < parts; s++) {
        const float w = part_weight(part_lse[lrow + s * l_split], mx, denom);
        const __global float *p = part + prow + s * o_split;
        for (ulong d = 0; d < Dv; d++) {
            const float x = s ? orow[d * o_st.s3] : 0.0f;
            orow[d * o_st.s3] = WEIGHTED_ADD(float, x, w, p[d * part_st.s3]);
        }
    }
#if HAS_LSE
    l[AT(l, b, h, i, 0)] = merged_lse(mx, sum);
#else
    UNUSED_VIEW(l);
#endif
}

/* Sinks added to a finished result (clattn_add_sinks): row (b, h, i) of O is scaled by
 * 1 / (1 + exp(sink_h - lse)), 0 where lse is -inf (its O is 0 already). NDRange (Lq, B * H). */
__kernel void add_sinks(VIEW(FMT_TYPE(O_FMT), o), VIEW(const float, l), ulong H, ulong Dv,
                        __global const float *sinks, ulong sinks_off)
{
    const ulong i = get_global_id(0);
    const ulong z = get_global_id(1), b = z / H, h = z % H;
    const float lse = l[AT(l, b, h, i, 0)];
    const float f = lse == -INFINITY ? 0.0f : 1.0f / (1.0f + exp(sinks[sinks_off + h] - lse));
    for (ulong d = 0; d < Dv; d++) {
        const ulong at = AT(o, b, h, i, d);
        FMT_STORE(O_FMT, WEIGHTED_ADD(float, 0.0f, f, FMT_LOAD(O_FMT, o, at)), o, at);
    }
}
