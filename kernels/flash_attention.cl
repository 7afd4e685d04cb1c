/* Fused attention (the FlashAttention algorithm): for a block of queries, loop over blocks of
 * keys, compute the scores, mask them, and fold them into an online softmax (running max m and
 * sum l, the output accumulator rescaled whenever m grows), then write O once, and optionally the
 * log-sum-exp per query. No Lq x Lk buffer exists. Key blocks that the causal mask or the key
 * lengths hide entirely are never loaded.
 *
 * Scores are kept in base 2: q is pre-multiplied by scale * log2(e) so each exponential is an
 * exp2, and the additive mask is multiplied by log2(e).
 *
 * Two variants share the masking and the softmax bookkeeping below; they differ in how the work
 * is laid out on the device:
 *   VARIANT 0 (CPUs): one work-item per block of 16 (query, head) lanes: 16 queries of one head,
 *     or (PACK > 1, decoding with GQA) 16 / PACK queries of PACK heads that share a kv head, so
 *     K and V are loaded once for them. Explicit float16 vectors and fma().
 *     PoCL does not vectorise across work-items when the kernel body loops, so the vectors are
 *     written out: scores are vectorised across the 16 queries, the weighted sum across the value
 *     dim. No local memory, no barriers. NDRange (ceil(Lq / (16 / PACK)), B * H / PACK), local
 *     (1, 1).
 *   VARIANT 1 (GPUs): a work-group of WG work-items, one query each; the work-group stages
 *     blocks of K and V in local memory with coalesced loads. NDRange (ceil(Lq / WG) * WG, B * H),
 *     local (WG, 1). Every work-item reaches every barrier: the key loop's bounds are the same
 *     for the whole work-group.
 *
 * Specialised with HEAD_DIM, VALUE_DIM, BLOCK_K, VARIANT, WG (variant 1), VEC and ROWS (variant 0:
 * the vector width along the value dim and the query rows per weighted-sum pass), CAUSAL (0 none,
 * 1 top-left, 2 bottom-right), HAS_ADDITIVE, HAS_LENGTHS, HAS_LSE, HALF_QO and HALF_KV (fp16
 * storage).
 *
 * Split keys (flash-decoding): get_global_id(2) picks a split that covers keys
 * [split * split_keys, (split + 1) * split_keys) (split_keys a multiple of BLOCK_K; 0: all keys,
 * one split) and writes its partial O and log-sum-exp at o_split / l_split elements per split,
 * for clattn_merge-style combination. Q, K, V and O have unit stride
 * along their last dim. */

#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#ifndef VALUE_DIM
#define VALUE_DIM HEAD_DIM
#endif
#ifndef BLOCK_K
#define BLOCK_K 32
#endif
#ifndef VARIANT
#define VARIANT 0
#endif
#ifndef WG
#define WG 64
#endif
#ifndef VEC
#define VEC 16
#endif
#ifndef ROWS
#define ROWS 4
#endif
#ifndef CAUSAL
#define CAUSAL 0
#endif
#ifndef HAS_ADDITIVE
#define HAS_ADDITIVE 0
#endif
#ifndef HAS_LENGTHS
#define HAS_LENGTHS 0
#endif
#ifndef HAS_LSE
#define HAS_LSE 0
#endif
#ifndef HALF_QO
#define HALF_QO 0
#endif
#ifndef PACK
#define PACK 1
#endif
#ifndef HALF_KV
#define HALF_KV 0
#endif

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)

/* Q and O (HALF_QO), K and V (HALF_KV) are float, or half read and written with
 * vload_half/vstore_half (core OpenCL: no cl_khr_fp16 needed); arithmetic is float either way. */
#if HALF_QO
#define T_QO half
#define LOAD_QO(p, i) vload_half((i), (p))
#define STORE1(x, p, i) vstore_half((x), (i), (p))
#define STOREV(x, i, p) CAT(vstore_half, VEC)((x), (i), (p))
#else
#define T_QO float
#define LOAD_QO(p, i) ((p)[i])
#define STORE1(x, p, i) ((p)[i] = (x))
#define STOREV(x, i, p) CAT(vstore, VEC)((x), (i), (p))
#endif
#if HALF_KV
#define T_KV half
#define LOAD_KV(p, i) vload_half((i), (p))
#define LOADV(i, p) CAT(vload_half, VEC)((i), (p))
#else
#define T_KV float
#define LOAD_KV(p, i) ((p)[i])
#define LOADV(i, p) CAT(vload, VEC)((i), (p))
#endif

#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

/* ---- shared by both variants ---------------------------------------------------------------- */

/* Keys j < key_limit(i) are visible to query i; lk is the batch item's valid key count. */
inline long key_limit(long i, long lk, long Lq)
{
#if CAUSAL == 1
    return min(i + 1, lk);
#elif CAUSAL == 2
    return clamp(i + lk - Lq + 1, 0L, lk);
#else
    (void)i;
    (void)Lq;
    return lk;
#endif
}

/* The valid key count of batch item b. */
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

/* The running-max bookkeeping, for one query (float) or 16 (float16): the base the exponentials
 * of this block are taken against. While every key so far is hidden the max is -inf; a finite
 * base keeps exp2(-inf - base) at 0 instead of NaN. */
#define EXP_BASE(m_new) fmax((m_new), -FLT_MAX)

/* Folds one block's scores s[0 .. BLOCK_K) (base 2, hidden keys -inf) whose max is bm into the
 * running max m and sum l, turns the scores into their weights, and sets alpha, the factor by
 * which the output accumulated so far must be scaled. T: float or float16. */
#define ONLINE_SOFTMAX_BLOCK(T, s, bm, m, l, alpha)                                                \
    do {                                                                                           \
        const T m_new_ = fmax((m), (bm));                                                          \
        const T base_ = EXP_BASE(m_new_);                                                          \
        (alpha) = exp2((m) - base_);                                                               \
        T sum_ = 0.0f;                                                                             \
        for (int j_ = 0; j_ < BLOCK_K; j_++) {                                                     \
            (s)[j_] = exp2((s)[j_] - base_);                                                       \
            sum_ += (s)[j_];                                                                       \
        }                                                                                          \
        (l) = fma((l), (alpha), sum_);                                                             \
        (m) = m_new_;                                                                              \
    } while (0)

/* The kernel's arguments, the same for both variants (host/flash.c sets them). */
#define FLASH_PARAMS                                                                               \
    __global const T_QO *q, ulong q_off, ulong qs0, ulong qs1, ulong qs2,                          \
    __global const T_KV *k, ulong k_off, ulong ks0, ulong ks1, ulong ks2,                          \
    __global const T_KV *v, ulong v_off, ulong vs0, ulong vs1, ulong vs2,                          \
    __global T_QO *o, ulong o_off, ulong os0, ulong os1, ulong os2,                                \
    __global float *lse, ulong l_off, ulong ls0, ulong ls1, ulong ls2,                             \
    __global const float *mask, ulong m_off, ulong ms0, ulong ms1, ulong ms2, ulong ms3,           \
    __global const int *len, ulong len_off, ulong H, ulong group, ulong Lq_, ulong Lk_,            \
    float qscale, ulong split_keys, ulong o_split, ulong l_split

/* Final values for a query with running sum l and max m (base 2): 1/l for the output (0 when
 * every key was hidden) and the natural-log log-sum-exp. */
#define INV_SUM(l) select(1.0f / (l), 0.0f * (l), (l) == 0.0f)
#define LSE_OF(m, l) select(((m) + log2(l)) * LN2, (m), (l) == 0.0f)

#if VARIANT == 0
/* ---- CPU variant ---------------------------------------------------------------------------- */

#define floatV CAT(float, VEC)
#define intV CAT(int, VEC)
#define NV (VALUE_DIM / VEC) /* vectors per value row */
#define BQ 16                /* lanes per work-item: one (query, head) each */
/* PACK query heads that share a kv head fill the lanes together (decoding: few queries, GQA):
 * lane r holds query i0 + r / PACK of head h0 + r % PACK, and K/V are loaded once for them. */
#define QPB (BQ / PACK)      /* queries per work-item */
#define JB 8                 /* keys whose scores are accumulated at once */

/* acc[r][:] = af[r] * acc[r][:] + sum over the block's keys j of P[r][j] * V[j][:], ROWS rows at
 * a time (their accumulators stay in registers). ACCUMULATE is the update of c[r][cc] given
 * pr = P[r][j] broadcast, vv[cc] = V[j] and skip = (P[r][j] == 0). */
#define WEIGHTED_SUM(ACCUMULATE)                                                                   \
    do {                                                                                           \
    for (int r0 = 0; r0 < BQ; r0 += ROWS) {                                                        \
        floatV c[ROWS][NV];                                                                        \
        _Pragma("unroll") for (int r = 0; r < ROWS; r++)                                           \
            for (int cc = 0; cc < NV; cc++)                                                        \
                c[r][cc] = acc[r0 + r][cc] * af[r0 + r];                                           \
        for (int j = 0; j < nk; j++) {                                                             \
            const __global T_KV *vr = vb0 + (ulong)(kb + j) * vs2;                                 \
            floatV vv[NV];                                                                         \
            _Pragma("unroll") for (int cc = 0; cc < NV; cc++)                                      \
                vv[cc] = LOADV(cc, vr);                                                            \
            _Pragma("unroll") for (int r = 0; r < ROWS; r++) {                                     \
                const float w = pf[j * 16 + r0 + r];                                               \
                const floatV pr = (floatV)w;                                                       \
                const intV skip = (intV)(w == 0.0f ? -1 : 0);                                      \
                (void)skip;                                                                        \
                _Pragma("unroll") for (int cc = 0; cc < NV; cc++)                                  \
                    c[r][cc] = ACCUMULATE;                                                         \
            }                                                                                      \
        }                                                                                          \
        _Pragma("unroll") for (int r = 0; r < ROWS; r++)                                           \
            for (int cc = 0; cc < NV; cc++)                                                        \
                acc[r0 + r][cc] = c[r][cc];                                                        \
    }                                                                                              \
    } while (0)

__kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void flash_attention(FLASH_PARAMS)
{
    const long Lq = (long)Lq_, Lk = (long)Lk_;
    /* Causal blocks grow with the query index: interleave the first and the last so that any
     * contiguous run of work-groups (a CPU thread's share) holds a balanced mix. */
    const long nb = (Lq + QPB - 1) / QPB, g = (long)get_global_id(0);
    const long i0 = (CAUSAL ? (g % 2 ? nb - 1 - g / 2 : g / 2) : g) * QPB;
    const ulong z = get_global_id(1), b = z / (H / PACK), h0 = z % (H / PACK) * PACK;
    const ulong hk = h0 / group;
    const long lk = valid_keys(len, len_off, b, Lk);
    const long i_last = min(i0 + QPB, Lq) - 1;
    const long hi_first = key_limit(i0, lk, Lq);
    const ulong split = get_global_id(2);
    const long k_begin = (long)(split * split_keys);
    const long hi_max = split_keys ? min(key_limit(i_last, lk, Lq), k_begin + (long)split_keys)
                                   : key_limit(i_last, lk, Lq);
    o += split * o_split;
    lse += split * l_split;

    /* Per-lane key limits, for the blocks the mask cuts. */
    int lim[BQ];
    for (int r = 0; r < BQ; r++)
        lim[r] = (int)key_limit(min(i0 + r / PACK, i_last), lk, Lq);
    const int16 limv = vload16(0, lim);

    /* Q of the 16 queries, transposed (qt[d] holds dim d of all 16) and pre-scaled. Lanes past
     * Lq repeat the last query and are never written. */
    float16 qt[HEAD_DIM];
    {
        float tmp[BQ];
        for (int d = 0; d < HEAD_DIM; d++) {
            for (int r = 0; r < BQ; r++)
                tmp[r] = LOAD_QO(q, q_off + b * qs0 + (h0 + r % PACK) * qs1 +
                                        (ulong)min(i0 + r / PACK, i_last) * qs2 + d);
            qt[d] = vload16(0, tmp) * qscale;
        }
    }

    floatV acc[BQ][NV];
    for (int r = 0; r < BQ; r++)
        for (int c = 0; c < NV; c++)
            acc[r][c] = 0.0f;
    float16 m = -INFINITY, l = 0.0f;
    float16 p[BLOCK_K];
    const __private float *pf = (const __private float *)p; /* p[j] lane r = pf[j * 16 + r] */

    const __global T_KV *kb0 = k + k_off + b * ks0 + hk * ks1;
    const __global T_KV *vb0 = v + v_off + b * vs0 + hk * vs1;

    for (long kb = k_begin; kb < hi_max; kb += BLOCK_K) {
        /* Scores of the 16 queries against BLOCK_K keys, JB keys at a time. Keys past hi_max
         * read the last visible row (valid memory) and are masked below. */
        for (int j = 0; j < BLOCK_K; j += JB) {
            const __global T_KV *kr[JB];
            float16 a[JB];
            #pragma unroll
            for (int t = 0; t < JB; t++) {
                kr[t] = kb0 + (ulong)min(kb + j + t, hi_max - 1) * ks2;
                a[t] = 0.0f;
            }
            for (int d = 0; d < HEAD_DIM; d++) {
                const float16 qv = qt[d];
                #pragma unroll
                for (int t = 0; t < JB; t++)
                    a[t] = fma(qv, (float16)LOAD_KV(kr[t], d), a[t]);
            }
            #pragma unroll
            for (int t = 0; t < JB; t++)
                p[j + t] = a[t];
        }
#if HAS_ADDITIVE
        for (int j = 0; j < BLOCK_K; j++) {
            float tmp[BQ];
            const ulong jj = (ulong)min(kb + j, hi_max - 1);
            for (int r = 0; r < BQ; r++)
                tmp[r] = mask[m_off + b * ms0 + (h0 + r % PACK) * ms1 +
                              (ulong)min(i0 + r / PACK, i_last) * ms2 + jj * ms3];
            const float16 mv = vload16(0, tmp);
            /* -inf hides the key whatever its score, NaN included. */
            p[j] = select(fma(mv, (float16)LOG2E, p[j]), (float16)(-INFINITY), mv == -INFINITY);
        }
#endif
        /* Hide keys at or past each query's limit: only blocks the limits cut need it. */
        if (kb + BLOCK_K > hi_first) {
            for (int j = 0; j < BLOCK_K; j++)
                p[j] = select(p[j], (float16)(-INFINITY), (int16)((int)kb + j) >= limv);
        }

        float16 bm = p[0];
        for (int j = 1; j < BLOCK_K; j++)
            bm = fmax(bm, p[j]);
        float16 alpha;
        ONLINE_SOFTMAX_BLOCK(float16, p, bm, m, l, alpha);

        /* O = alpha * O + P * V, ROWS queries at a time, vectorised along the value dim. In
         * blocks where some key is hidden from some query, a weight of exactly 0 adds nothing:
         * not even the NaN that 0 * Inf or 0 * NaN would make of a value row that query never
         * sees. Other blocks skip that test. */
        float af[BQ];
        vstore16(alpha, 0, af);
        const int nk = (int)min((long)BLOCK_K, hi_max - kb);
        if (HAS_ADDITIVE || kb + BLOCK_K > hi_first)
            WEIGHTED_SUM(select(fma(pr, vv[cc], c[r][cc]), c[r][cc], skip));
        else
            WEIGHTED_SUM(fma(pr, vv[cc], c[r][cc]));
    }

    float inv[BQ];
    vstore16(INV_SUM(l), 0, inv);
    for (int r = 0; r < BQ && i0 + r / PACK < Lq; r++) {
        __global T_QO *orow = o + o_off + b * os0 + (h0 + r % PACK) * os1 + (ulong)(i0 + r / PACK) * os2;
        for (int cc = 0; cc < NV; cc++)
            STOREV(acc[r][cc] * inv[r], cc, orow);
    }
#if HAS_LSE
    float ls[BQ];
    vstore16(LSE_OF(m, l), 0, ls);
    for (int r = 0; r < BQ && i0 + r / PACK < Lq; r++)
        lse[l_off + b * ls0 + (h0 + r % PACK) * ls1 + (ulong)(i0 + r / PACK) * ls2] = ls[r];
#else
    (void)lse, (void)l_off, (void)ls0, (void)ls1, (void)ls2;
#endif
#if !HAS_ADDITIVE
    (void)mask, (void)m_off, (void)ms0, (void)ms1, (void)ms2, (void)ms3;
#endif
}

#else
/* ---- GPU variant ---------------------------------------------------------------------------- */

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void flash_attention(FLASH_PARAMS)
{
    __local float ks[BLOCK_K * HEAD_DIM];
    __local float vs[BLOCK_K * VALUE_DIM];
    const long Lq = (long)Lq_, Lk = (long)Lk_;
    const int lid = (int)get_local_id(0);
    const long g0 = (long)get_group_id(0) * WG;
    const long i = g0 + lid;
    const long ic = min(i, Lq - 1); /* work-items past Lq shadow the last query, write nothing */
    const ulong z = get_global_id(1), b = z / H, h = z % H, hk = h / group;
    const long lk = valid_keys(len, len_off, b, Lk);
    /* Uniform across the work-group: the key loop and its barriers run the same for all. */
    const ulong split = get_global_id(2);
    const long k_begin = (long)(split * split_keys);
    const long hi_all = key_limit(min(g0 + WG, Lq) - 1, lk, Lq);
    const long hi_max = split_keys ? min(hi_all, k_begin + (long)split_keys) : hi_all;
    o += split * o_split;
    lse += split * l_split;
    const long lim = key_limit(ic, lk, Lq);

    float qr[HEAD_DIM];
    for (int d = 0; d < HEAD_DIM; d++)
        qr[d] = LOAD_QO(q, q_off + b * qs0 + h * qs1 + (ulong)ic * qs2 + d) * qscale;
    float acc[VALUE_DIM];
    for (int d = 0; d < VALUE_DIM; d++)
        acc[d] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    float s[BLOCK_K];

    const __global T_KV *kb0 = k + k_off + b * ks0 + hk * ks1;
    const __global T_KV *vb0 = v + v_off + b * vs0 + hk * vs1;

    for (long kb = k_begin; kb < hi_max; kb += BLOCK_K) {
        barrier(CLK_LOCAL_MEM_FENCE); /* the previous block is no longer read */
        for (int t = lid; t < BLOCK_K * HEAD_DIM; t += WG) {
            const long j = kb + t / HEAD_DIM;
            ks[t] = j < hi_max ? LOAD_KV(kb0, (ulong)j * ks2 + t % HEAD_DIM) : 0.0f;
        }
        for (int t = lid; t < BLOCK_K * VALUE_DIM; t += WG) {
            const long j = kb + t / VALUE_DIM;
            vs[t] = j < hi_max ? LOAD_KV(vb0, (ulong)j * vs2 + t % VALUE_DIM) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        float bm = -INFINITY;
        for (int j = 0; j < BLOCK_K; j++) {
            float a = 0.0f;
            for (int d = 0; d < HEAD_DIM; d++)
                a = fma(qr[d], ks[j * HEAD_DIM + d], a);
            bool hidden = kb + j >= lim;
#if HAS_ADDITIVE
            const float mv = mask[m_off + b * ms0 + h * ms1 + (ulong)ic * ms2 +
                                  (ulong)min(kb + j, hi_max - 1) * ms3];
            a = fma(mv, LOG2E, a);
            hidden |= mv == -INFINITY; /* whatever the score, NaN included */
#endif
            s[j] = hidden ? -INFINITY : a;
            bm = fmax(bm, s[j]);
        }
        float alpha;
        ONLINE_SOFTMAX_BLOCK(float, s, bm, m, l, alpha);
        for (int d = 0; d < VALUE_DIM; d++) {
            float a = acc[d] * alpha;
            for (int j = 0; j < BLOCK_K; j++) /* weight 0: a hidden key adds nothing, NaN neither */
                a = s[j] != 0.0f ? fma(s[j], vs[j * VALUE_DIM + d], a) : a;
            acc[d] = a;
        }
    }

    if (i < Lq) {
        const float inv = INV_SUM(l);
        __global T_QO *orow = o + o_off + b * os0 + h * os1 + (ulong)i * os2;
        for (int d = 0; d < VALUE_DIM; d++)
            STORE1(acc[d] * inv, orow, d);
#if HAS_LSE
        lse[l_off + b * ls0 + h * ls1 + (ulong)i * ls2] = LSE_OF(m, l);
#endif
    }
#if !HAS_LSE
    (void)lse, (void)l_off, (void)ls0, (void)ls1, (void)ls2;
#endif
#if !HAS_ADDITIVE
    (void)mask, (void)m_off, (void)ms0, (void)ms1, (void)ms2, (void)ms3;
#endif
}
#endif
