/* The prelude: joined by the program module (host/program.c) in front of every kernel file, so
 * that the rules more than one kernel applies are written once:
 *   - how a tensor view arrives (VIEW) and is addressed (AT);
 *   - which keys a query sees: the causal mask in both alignments and the key lengths;
 *   - a -inf in the additive mask hides a key whatever its score, NaN included;
 *   - a weight of exactly 0 adds nothing, not even the NaN that 0 * Inf or 0 * NaN makes of a
 *     value row the query never sees;
 *   - a row that sees no key gets output 0 and log-sum-exp -inf;
 *   - the sliding window (HAS_WINDOW), soft-capping, ALiBi and attention sinks (include/clattn.h,
 *     clattn_logit_params, says in which order they apply).
 * The files that follow are specialised with -D; the rules here read CAUSAL, HAS_LENGTHS and
 * HAS_WINDOW. Which variants are -D and which are arguments: a variant that adds work to the
 * inner loop (window, soft-cap, ALiBi, sinks) is a -D flag, so that a kernel built without it
 * runs none of it; its values (window sides, the cap, slopes, sink logits) are arguments, so
 * that every model of a family shares one build. */

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
#ifndef HAS_WINDOW
#define HAS_WINDOW 0 /* 1: the window sides wl, wr and the kept first keys apply */
#endif
#ifndef HAS_SOFTCAP
#define HAS_SOFTCAP 0
#endif
#ifndef HAS_ALIBI
#define HAS_ALIBI 0
#endif
#ifndef HAS_SINKS
#define HAS_SINKS 0
#endif
#ifndef HAS_ROPE
#define HAS_ROPE 0 /* 1: rotary position embedding (the rope_* rules below) */
#endif
#ifndef ROPE_GPTJ
#define ROPE_GPTJ 0 /* the pairs' layout: 0 rotate-half (NeoX), 1 interleaved (GPT-J) */
#endif


#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)

/* ---- storage formats ------------------------------------------------------------------------- */

/* Elements stored as 0 float, 1 half (vload_half / vstore_half: core OpenCL, no cl_khr_fp16),
 * 2 bfloat16 (ushort bits: the upper half of a float, stored rounded to nearest even, NaN kept
 * NaN), 3 int8 rows (a KV cache's CLATTN_Q8: a row of n values is n chars and then, at byte
 * Q8_SCALE_AT(n), its float scale; the row stride is Q8_ROW_BYTES(n)). Arithmetic is float
 * whatever the format. FMT_* take the format as a -D value. */
inline float bf16_load(ushort b)
{
    return as_float((uint)b << 16);
}

inline ushort bf16_store(float x)
{
    const uint u = as_uint(x);
    return isnan(x) ? (ushort)((u >> 16) | 0x40u) : (ushort)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

#define FMT_TYPE_0 float
#define FMT_TYPE_1 half
#define FMT_TYPE_2 ushort
#define FMT_TYPE_3 char
#define FMT_TYPE(f) CAT(FMT_TYPE_, f)
#define FMT_LOAD_0(p, i) ((p)[i])
#define FMT_LOAD_1(p, i) vload_half((i), (p))
#define FMT_LOAD_2(p, i) bf16_load((p)[i])
#define FMT_LOAD_3(p, i) convert_float((p)[i]) /* times its row's scale: Q8_SCALE */
#define FMT_LOAD(f, p, i) CAT(FMT_LOAD_, f)(p, i)
#define FMT_STORE_0(x, p, i) ((p)[i] = (x))
#define FMT_STORE_1(x, p, i) vstore_half((x), (i), (p))
#define FMT_STORE_2(x, p, i) ((p)[i] = bf16_store(x))
#define FMT_STORE(f, x, p, i) CAT(FMT_STORE_, f)(x, p, i)
#define Q8_SCALE_AT(n) (((n) + 3) / 4 * 4)
#define Q8_ROW_BYTES(n) (Q8_SCALE_AT(n) + 4)
/* The scale of the int8 row of n values starting at `row`. */
#define Q8_SCALE(row, n) (*(const __global float *)((const __global char *)(row) + Q8_SCALE_AT(n)))
/* x, a value (or a sum of values times others) of the row of n values at `row`, in real units:
 * times the row's scale in format 3, unchanged in the others. */
#define FMT_ROW_SCALED(f, x, row, n) CAT(FMT_ROW_SCALED_, f)(x, row, n)
#define FMT_ROW_SCALED_0(x, row, n) (x)
#define FMT_ROW_SCALED_1(x, row, n) (x)
#define FMT_ROW_SCALED_2(x, row, n) (x)
#define FMT_ROW_SCALED_3(x, row, n) ((x) * Q8_SCALE(row, n))

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

/* The position of query i (of Lq) among its batch item's lk keys, i': i when the causal mask is
 * top-left, i + lk - Lq otherwise (the last query sits at the last key), moved by qoff (the
 * mask's query_offset). The window and ALiBi measure distances from it. */
inline long query_pos(long i, long lk, long Lq, long qoff)
{
#if CAUSAL == 1
    (void)lk;
    (void)Lq;
    return i + qoff;
#else
    return i + lk - Lq + qoff;
#endif
}

/* Query i sees the keys j < key_limit(i, lk, Lq, qoff, wr) that are at or past key_first(i, lk,
 * Lq, qoff, wl) or below the kept first keys (KEY_VISIBLE). wl and wr are the window's sides (the
 * host passes a huge value for an unbounded side); without HAS_WINDOW they are ignored. Both
 * bounds grow with i, so the first and last queries of a block bound the keys the block sees. */
inline long key_limit(long i, long lk, long Lq, long qoff, long wr)
{
#if CAUSAL != 0
    long lim = clamp(query_pos(i, lk, Lq, qoff) + 1, 0L, lk);
#else
    long lim = lk;
#endif
#if HAS_WINDOW
    lim = clamp(query_pos(i, lk, Lq, qoff) + wr + 1, 0L, lim);
#else
    (void)wr;
#endif
    return lim;
}

inline long key_first(long i, long lk, long Lq, long qoff, long wl)
{
#if HAS_WINDOW
    return max(query_pos(i, lk, Lq, qoff) - wl, 0L);
#else
    (void)i;
    (void)lk;
    (void)Lq;
    (void)qoff;
    (void)wl;
    return 0;
#endif
}

/* Whether key j is seen by a query whose bounds are first and limit, keys below keep being kept
 * visible by the window (StreamingLLM). Scalars (true/false) or integer vectors (-1/0 lanes).
 * Without a window, first is 0: one comparison, as the causal mask's blocks had before. */
#if HAS_WINDOW
#define KEY_VISIBLE(j, first, limit, keep) ((j) < (limit) && ((j) >= (first) || (j) < (keep)))
#else
#define KEY_VISIBLE(j, first, limit, keep) ((void)(first), (void)(keep), (j) < (limit))
#endif

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
/* The same when a sink logit sk (base 2, like m) joins the denominator: 1 / (l + 2^(sk - m)). The
 * sink adds no value and never makes a row that saw no key anything but 0. */
#define INV_SUM_SINK(l, m, sk) select(1.0f / ((l) + exp2((sk) - fmax((m), -FLT_MAX))), 0.0f * (l), \
                                      (l) == 0.0f)

/* ---- rotary position embedding (include/clattn.h, clattn_rope_params) ------------------------ */

/* The dim that dim d (< R, the rotary dim) turns with, and d's frequency index. */
inline int rope_partner(int d, int R)
{
    return ROPE_GPTJ ? d ^ 1 : (d < R / 2 ? d + R / 2 : d - R / 2);
}

inline int rope_index(int d, int R)
{
    return ROPE_GPTJ ? d / 2 : d % (R / 2);
}

/* The angle of dim d at position pos: pos * f_i, f_i = theta^(-2i/R) or table[toff + i] (when
 * use_table), in float as PyTorch takes it. */
inline float rope_angle(long pos, int d, int R, float theta, __global const float *table,
                        ulong toff, int use_table)
{
    const int i = rope_index(d, R);
    const float f = use_table ? table[toff + i] : pow(theta, -(float)(2 * i) / (float)R);
    return (float)pos * f;
}

/* Dim d's rotated value, given its value x, its partner's xp and the angle: the pair's first dim
 * (d < its partner) becomes x cos - xp sin, the second x cos + xp sin. */
inline float rope_value(float x, float xp, int d, int R, float angle)
{
    float c;
    const float s = sincos(angle, &c);
    return d < rope_partner(d, R) ? x * c - xp * s : x * c + xp * s;
}

/* The arguments that carry a rotation's values to a kernel (host: clattn__arg_rope). */
#define ROPE_PARAMS int rope_dim, float rope_theta, __global const float *rope_table,                \
                    ulong rope_table_off, int rope_use_table
#define ROPE_ARGS rope_dim, rope_theta, rope_table, rope_table_off, rope_use_table
#define ROPE_UNUSED                                                                                \
    ((void)rope_dim, (void)rope_theta, (void)rope_table, (void)rope_table_off,                     \
     (void)rope_use_table)
/* Dim d of a head vector whose dim j reads as LOAD(j), at position pos, rotated when d < R. */
#define ROPE_AT(LOAD, d, pos)                                                                      \
    ((d) < rope_dim ? rope_value(LOAD(d), LOAD(rope_partner((d), rope_dim)), (d), rope_dim,        \
                                 rope_angle((pos), (d), rope_dim, rope_theta, rope_table,          \
                                            rope_table_off, rope_use_table))                      \
                    : LOAD(d))

/* ---- what shapes the scores (include/clattn.h, clattn_logit_params) ------------------------------ */

/* Logit soft-capping of score s: cap * tanh(s / cap), given inv_cap = 1 / cap. A kernel that
 * keeps scores in base 2 passes cap * log2(e) as cap (s stays in natural units until then).
 * tanh(x), x = s / cap, two ways (T float or float16; "16" names the CPU variant's lanes):
 *   fast:  1 - 2 / (e^2x + 1), one exp2 and a division: exactly +-1 at +-inf (e^2x overflowing
 *          to inf is fine); its error is absolute, about 1.2e-7 near 0 and up to about 2e-7
 *          elsewhere (with a correctly rounded exp2), so the logit's is the cap times that;
 *   exact: the same above |x| = 1/4, below it tanh's odd Taylor polynomial to x^7 (the next term
 *          is under 4e-7 relative there): a few ulp relative everywhere, four fma more.
 * Caps up to 128 (Gemma 2's 50 among them) take the fast form, whose logit error stays under
 * 3e-5 there; larger caps, which leave scores almost as they are, the exact one. The choice is
 * the same for the whole call. With PoCL's tanh, soft-capping cost the fused CPU kernel 28 % at
 * D = 64; BENCHMARKS.md has both forms' cost. */
#define DEFINE_SOFTCAP_TANH(fast, exact, T)                                                        \
    inline T fast(T x)                                                                             \
    {                                                                                              \
        return 1.0f - 2.0f / (exp2(x * (2.0f * LOG2E)) + 1.0f);                                    \
    }                                                                                              \
    inline T exact(T x)                                                                            \
    {                                                                                              \
        const T ax = fabs(x), x2 = x * x;                                                          \
        const T small = ax * fma(x2, fma(x2, fma(x2, (T)(-17.0f / 315.0f), (T)(2.0f / 15.0f)),     \
                                         (T)(-1.0f / 3.0f)),                                       \
                                 (T)1.0f);                                                         \
        return select(fast(x), copysign(small, x), ax < 0.25f);                                    \
    }
DEFINE_SOFTCAP_TANH(softcap_fast, softcap_exact, float)
DEFINE_SOFTCAP_TANH(softcap_fast16, softcap_exact16, float16)
#define SOFTCAP_IS_FAST(inv_cap) ((inv_cap) >= 1.0f / 128.0f)
#define SOFTCAP(s, cap, inv_cap)                                                                   \
    ((cap) * (SOFTCAP_IS_FAST(inv_cap) ? softcap_fast((s) * (inv_cap))                             \
                                       : softcap_exact((s) * (inv_cap))))

/* ALiBi's bias of key j for a query at position ip (query_pos): -slope * |ip - j|. Positions as
 * floats (exact below 2^24). T is float or a float vector type. */
#define ALIBI(T, slope, ip, j) (-(slope) * fabs((ip) - (T)(j)))
#define LSE_OF(m, l) select(((m) + log2(l)) * LN2, (m), (l) == 0.0f)
