/* The prelude: joined by the program module (host/program.c) in front of every kernel file, so
 * that the rules more than one kernel applies are written once:
 *   - how a tensor view arrives (VIEW) and is addressed (AT);
 *   - which keys a query sees: the causal mask in both alignments and the key lengths;
 *   - a -inf in the additive mask hides a key whatever its score, NaN included;
 *   - a weight of exactly 0 adds nothing, not even the NaN that 0 * Inf or 0 * NaN makes of a
 *     value row the query never sees;
 *   - a row that sees no key gets output 0 and log-sum-exp -inf.
 * The files that follow are specialised with -D; the rules here read CAUSAL and HAS_LENGTHS. */

#ifndef CAUSAL
#define CAUSAL 0 /* 0 none, 1 top-left (j <= i), 2 bottom-right (j <= i + Lk_b - Lq) */
#endif
#ifndef HAS_LENGTHS
#define HAS_LENGTHS 0 /* 1: keys j >= len[b] are hidden, and len[b] is the Lk_b above */
#endif
#ifndef HAS_ADDITIVE
#define HAS_ADDITIVE 0
#endif
#ifndef HAS_LSE
#define HAS_LSE 0
#endif

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)

#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

/* ---- views ------------------------------------------------------------------------------------ */

/* A 4-D strided view as kernel parameters: buffer, offset and strides in elements (stride 0
 * along size-1 and broadcast dims). host/program.c's clattn__arg_view passes one. */
#define VIEW(T, x) __global T *x, ulong x##_off, ulong4 x##_st
/* The element offset of (i0, i1, i2, i3) in view x. */
#define AT(x, i0, i1, i2, i3)                                                                      \
    ((x##_off) + (ulong)(i0) * (x##_st).s0 + (ulong)(i1) * (x##_st).s1 +                           \
     (ulong)(i2) * (x##_st).s2 + (ulong)(i3) * (x##_st).s3)
/* The parameters of a view the specialisation does not use (an optional output not asked for). */
#define UNUSED_VIEW(x) ((void)(x), (void)(x##_off), (void)(x##_st))

/* ---- which keys a query sees -------------------------------------------------------------------- */

/* The valid key count of batch item b: len[len_off + b] clamped to [0, Lk], or Lk. */
inline long valid_keys(__global const int *len, ulong len_off, ulong b, long Lk)
{
#if HAS_LENGTHS
    return clamp((long)len[len_off + b], 0L, Lk);
#else
    (void)len;
    (void)len_off;
    (void)b;
    return Lk;
#endif
}

/* Query i (of Lq) sees exactly the keys j < key_limit(i, lk, Lq), lk being its batch item's
 * valid key count. */
inline long key_limit(long i, long lk, long Lq)
{
#if CAUSAL == 1
    (void)Lq;
    return min(i + 1, lk);
#elif CAUSAL == 2
    return clamp(i + lk - Lq + 1, 0L, lk);
#else
    (void)i;
    (void)Lq;
    return lk;
#endif
}

/* ---- scores, weights and empty rows --------------------------------------------------------------- */

/* The larger of a and b where a NaN wins, so that a row holding a NaN is never mistaken for one
 * that saw no key (fmax would drop the NaN). */
inline float max_nan(float a, float b)
{
    return (a > b || isnan(a)) ? a : b;
}

/* Score s plus k times the additive mask value mv; -inf where mv is -inf, whatever s is (NaN
 * included). T is float or a float vector type; mv and s are T. */
#define ADD_MASK(T, s, mv, k) select(fma((mv), (T)(k), (s)), (T)(-INFINITY), (mv) == (T)(-INFINITY))

/* acc + w * x, where a weight of exactly 0 adds nothing (the key was hidden: its value row, Inf
 * or NaN, must not reach this output). T is float or a float vector type; w, x, acc are T. */
#define WEIGHTED_ADD(T, acc, w, x) select(fma((w), (x), (acc)), (acc), (w) == (T)(0.0f))

/* Final values of a row whose exponentials, taken in base 2 against the running max m, sum to l:
 * the factor for its accumulated output (0 when it saw no key, so the output is 0, never NaN) and
 * its natural-log log-sum-exp (-inf when it saw no key: m is -inf then). Scalars or vectors. */
#define INV_SUM(l) select(1.0f / (l), 0.0f * (l), (l) == 0.0f)
#define LSE_OF(m, l) select(((m) + log2(l)) * LN2, (m), (l) == 0.0f)
