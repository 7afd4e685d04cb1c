/* Fused attention (the FlashAttention algorithm): for a block of queries, loop over blocks of
 * keys, compute the scores, mask them, and fold them into an online softmax (running max m and
 * sum l, the output accumulator rescaled whenever m grows), then write O once, and optionally the
 * log-sum-exp per query. No Lq x Lk buffer exists. Key blocks that the causal mask or the key
 * lengths hide entirely are never loaded, nor those outside a sliding window (HAS_WINDOW: the loop
 * runs over the kept first keys' blocks, then jumps to the window's first block).
 *
 * Scores are kept in base 2: q is pre-multiplied by scale * log2(e) so each exponential is an
 * exp2, and the additive mask, ALiBi's slopes and the sinks are multiplied by log2(e). With
 * soft-capping q is pre-multiplied by scale alone, and the cap (given as cap * log2(e)) turns the
 * scores into base 2.
 *
 * Which keys a query sees, the additive mask's -inf, the zero-weight rule and the values of a
 * row that sees no key come from the prelude; the online-softmax step below is shared by the
 * three variants, which differ in how the work is laid out on the device:
 *   VARIANT 0 (CPUs): one work-item per block of 16 (query, head) lanes: 16 queries of one head,
 *     or (PACK > 1, decoding with GQA) 16 / PACK queries of PACK heads that share a kv head, so
 *     K and V are loaded once for them. Explicit float16 vectors and fma().
 *     PoCL does not vectorise across work-items when the kernel body loops, so the vectors are
 *     written out: scores are vectorised across the 16 queries, the weighted sum across the value
 *     dim. No local memory, no barriers. NDRange (ceil(Lq / (16 / PACK)), B * H / PACK), local
 *     (1, 1).
 *   VARIANT 2 (CPUs, one query per sequence: decoding): one work-item per kv head and its
 *     GROUP query heads; each K and V row is loaded (and converted) once, as vectors along the
 *     head dim, for all of them, and the dot products of 16 keys are summed across their lanes
 *     together (variant 0 there fills GROUP of its 16 lanes and loads K a scalar at a time).
 *     NDRange (1, B * Hkv, splits), local (1, 1, 1).
 *   VARIANT 1 (GPUs): a work-group of WG work-items, one query each; the work-group stages
 *     blocks of K and V in local memory with coalesced loads. NDRange (ceil(Lq / WG) * WG, B * H),
 *     local (WG, 1). Every work-item reaches every barrier: the key loop's bounds are the same
 *     for the whole work-group.
 *
 * Specialised with HEAD_DIM, VALUE_DIM (any, 1 to 512), BLOCK_K, VARIANT, WG (variant 1), VEC and
 * ROWS (variant 0: the vector width along the value dim, 1 for odd dims, and the query rows per
 * weighted-sum pass), PACK, CAUSAL, HAS_ADDITIVE, HAS_LENGTHS, HAS_LSE, HAS_WINDOW, HAS_SOFTCAP,
 * HAS_ALIBI, HAS_SINKS, HAS_ROPE and ROPE_GPTJ (queries rotated as they are loaded, at their
 * positions among the keys: KV-cache attention), HALF_QO and KV_FMT (fp16, bfloat16 and int8
 * storage), PAGE_SIZE (K and V in the pages of a paged KV cache, read through block tables:
 * KV_ROW).
 *
 * VARLEN (a packed batch of sequences of their own lengths, clattn_sdpa_params.cu_seqlens_q):
 * Q, K, V, O and lse are views with one batch item; get_global_id(1) / (H / PACK) is a sequence
 * b, whose queries are rows cu[b] .. cu[b + 1] and whose keys are rows cu[k_off + b] ..
 * cu[k_off + b + 1] (VARLEN 2: batch item b of K and V, as a KV cache holds them); dim 0 of the
 * NDRange covers the longest sequence and the work-groups past a shorter one's end return at
 * once.
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
#ifndef HALF_QO
#define HALF_QO 0
#endif
#ifndef PACK
#define PACK 1
#endif
#ifndef VARLEN
#define VARLEN 0
#endif
#ifndef PAGE_SIZE
#define PAGE_SIZE 0
#endif
#ifndef KV_FMT
#define KV_FMT 0 /* K and V stored as float, half, bfloat16 or int8 rows (prelude: FMT_*) */
#endif

/* Q and O are float or (HALF_QO) half read and written with vload_half/vstore_half (core OpenCL:
 * no cl_khr_fp16 needed); K and V are stored as KV_FMT says; arithmetic is float either way. */
#if HALF_QO
#define T_QO half
#define LOAD_QO(p, i) vload_half((i), (p))
#define STORE1(x, p, i) vstore_half((x), (i), (p))
#if VEC == 1
#define STOREV(x, i, p) vstore_half((x), (i), (p))
#else
#define STOREV(x, i, p) CAT(vstore_half, VEC)((x), (i), (p))
#endif
#else
#define T_QO float
#define LOAD_QO(p, i) ((p)[i])
#define STORE1(x, p, i) ((p)[i] = (x))
#if VEC == 1
#define STOREV(x, i, p) ((p)[i] = (x))
#else
#define STOREV(x, i, p) CAT(vstore, VEC)((x), (i), (p))
#endif
#endif
#define T_KV FMT_TYPE(KV_FMT)
#define LOAD_KV(p, i) FMT_LOAD(KV_FMT, p, i)
/* x computed from the K or V row of n values at `row`, in real units (int8 rows: times the
 * row's scale, applied once to a dot product or a loaded vector). */
#define KV_SCALED(x, row, n) FMT_ROW_SCALED(KV_FMT, x, row, n)
/* VEC values of a K or V row as a float vector (before KV_SCALED). */
#if VEC == 1
#define LOADV(i, p) LOAD_KV(p, i)
#elif KV_FMT == 1
#define LOADV(i, p) CAT(vload_half, VEC)((i), (p))
#elif KV_FMT == 2
#define LOADV(i, p) CAT(as_float, VEC)(CAT(convert_uint, VEC)(CAT(vload, VEC)((i), (p))) << 16)
#elif KV_FMT == 3
#define LOADV(i, p) CAT(convert_float, VEC)(CAT(vload, VEC)((i), (p)))
#else
#define LOADV(i, p) CAT(vload, VEC)((i), (p))
#endif

/* ---- shared by both variants ---------------------------------------------------------------- */

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

/* The kernel's arguments, the same for both variants (host/flash.c sets them). Q, K, V and O
 * have unit stride along their last dim. */
#define FLASH_PARAMS                                                                               \
    VIEW(const T_QO, q), VIEW(const T_KV, k), VIEW(const T_KV, v), VIEW(T_QO, o),                  \
    VIEW(float, lse), VIEW(const float, mask), __global const int *len, ulong len_off, ulong H,    \
    ulong group, ulong Lq_, ulong Lk_, float qscale, ulong split_keys, ulong o_split,              \
    ulong l_split, long wl, long wr, long keep, long qoff, float cap, float inv_cap,               \
    __global const float *slopes, ulong slopes_off, __global const float *sinks, ulong sinks_off,  \
    ROPE_PARAMS, __global const int *cu, ulong cu_k_off, __global const int *pt, ulong pt_off,    \
    ulong pt_stride

/* Sequence b of the launch: its query and key counts Lq and Lk, and bv and bk, the batch
 * indices its query-side views (Q, O, lse, mask) and its K and V are addressed with. VARLEN 1:
 * every view holds one batch item, and the pointers move to the sequence's first rows. VARLEN 2
 * (a KV cache's mixed steps): only the queries are packed so; K and V hold a batch item per
 * sequence. */
#if VARLEN == 1
#define SEQUENCE(b)                                                                                \
    const long q0_ = cu[b], k0_ = cu[cu_k_off + (b)];                                              \
    const long Lq = cu[(b) + 1] - q0_, Lk = cu[cu_k_off + (b) + 1] - k0_;                          \
    const ulong bv = 0, bk = 0;                                                                    \
    q += q0_ * q_st.s2, o += q0_ * o_st.s2, lse += q0_ * lse_st.s2;                                \
    k += k0_ * k_st.s2, v += k0_ * v_st.s2
#elif VARLEN == 2
#define SEQUENCE(b)                                                                                \
    const long q0_ = cu[b];                                                                        \
    const long Lq = cu[(b) + 1] - q0_, Lk = (long)Lk_;                                             \
    const ulong bv = 0, bk = (b);                                                                  \
    q += q0_ * q_st.s2, o += q0_ * o_st.s2, lse += q0_ * lse_st.s2;                                \
    (void)cu_k_off
#else
#define SEQUENCE(b)                                                                                \
    const long Lq = (long)Lq_, Lk = (long)Lk_;                                                     \
    const ulong bv = (b), bk = (b);                                                                \
    (void)cu, (void)cu_k_off
#endif

/* Row j of a sequence's K or V for kv head hk. x0 = KV_BASE(x, b, hk), the sequence's first row
 * of the head; PAGE_SIZE (a paged KV cache; K and V are its pool, [pages, Hkv, PAGE_SIZE, D]):
 * row j % PAGE_SIZE of page tbl[j / PAGE_SIZE] of the sequence's block table (PAGE_TABLE(b):
 * pt_stride entries from pt_off + b * pt_stride), x0 the head's row 0 of page 0 (the pool is
 * a view: its strides say where pages and heads lie). */
#if PAGE_SIZE
#define PAGE_TABLE(b) const __global int *tbl = pt + pt_off + (b) * pt_stride
#define KV_BASE(x, b, hk) ((x) + AT(x, 0, hk, 0, 0))
#define KV_ROW(x0, x, j)                                                                           \
    ((x0) + (ulong)tbl[(ulong)(j) / PAGE_SIZE] * x##_st.s0 + (ulong)(j) % PAGE_SIZE * x##_st.s2)
#else
#define PAGE_TABLE(b) (void)pt, (void)pt_off, (void)pt_stride
#define KV_BASE(x, b, hk) ((x) + AT(x, b, hk, 0, 0))
#define KV_ROW(x0, x, j) ((x0) + (ulong)(j) * x##_st.s2)
#endif

/* Where the key loop goes next: past the kept first keys' blocks (those below keep_end) it
 * jumps to the window's first block, lo. Both are multiples of BLOCK_K, as every split's start
 * is, so no block is visited twice. */
#if HAS_WINDOW
#define WINDOW_SKIP(kb, keep_end, lo) ((kb) >= (keep_end) && (kb) < (lo) ? (lo) : (kb))
#else
#define WINDOW_SKIP(kb, keep_end, lo) (kb)
#endif

/* The first block of keys a window starting at key `first` needs, and the end of the blocks the
 * kept first keys need (no further than lo). */
#define WINDOW_LO(k_begin, first) max((k_begin), (first) / BLOCK_K * BLOCK_K)
#define KEEP_END(keep, lo) min(((keep) + BLOCK_K - 1) / BLOCK_K * BLOCK_K, (lo))

#if VARIANT == 0
/* ---- CPU variant ---------------------------------------------------------------------------- */

#if VEC == 1
#define floatV float
#else
#define floatV CAT(float, VEC)
#endif
#define NV (VALUE_DIM / VEC) /* vectors per value row */
#define BQ 16                /* lanes per work-item: one (query, head) each */
/* PACK query heads that share a kv head fill the lanes together (decoding: few queries, GQA):
 * lane r holds query i0 + r / PACK of head h0 + r % PACK, and K/V are loaded once for them. */
#define QPB (BQ / PACK)      /* queries per work-item */
#define JB 8                 /* keys whose scores are accumulated at once */

/* acc[r][:] = af[r] * acc[r][:] + sum over the block's keys j of P[r][j] * V[j][:], ROWS rows at
 * a time (their accumulators stay in registers). ACCUMULATE is the update of c[r][cc] given
 * pr = P[r][j] broadcast and vv[cc] = V[j]. */
#define WEIGHTED_SUM(ACCUMULATE)                                                                   \
    do {                                                                                           \
    for (int r0 = 0; r0 < BQ; r0 += ROWS) {                                                        \
        floatV c[ROWS][NV];                                                                        \
        _Pragma("unroll") for (int r = 0; r < ROWS; r++)                                           \
            for (int cc = 0; cc < NV; cc++)                                                        \
                c[r][cc] = acc[r0 + r][cc] * af[r0 + r];                                           \
        for (int j = 0; j < nk; j++) {                                                             \
            const __global T_KV *vr = KV_ROW(vb0, v, kb + j);                                      \
            floatV vv[NV];                                                                         \
            _Pragma("unroll") for (int cc = 0; cc < NV; cc++)                                      \
                vv[cc] = KV_SCALED(LOADV(cc, vr), vr, VALUE_DIM);                                  \
            _Pragma("unroll") for (int r = 0; r < ROWS; r++) {                                     \
                const floatV pr = (floatV)pf[j * 16 + r0 + r];                                     \
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
    const ulong z = get_global_id(1), b = z / (H / PACK), h0 = z % (H / PACK) * PACK;
    SEQUENCE(b);
    PAGE_TABLE(b);
    /* Causal blocks grow with the query index: interleave the first and the last so that any
     * contiguous run of work-groups (a CPU thread's share) holds a balanced mix. */
    const long nb = (Lq + QPB - 1) / QPB, g = (long)get_global_id(0);
    if (g >= nb)
        return; /* past a shorter sequence's queries (VARLEN) */
    const long i0 = (CAUSAL ? (g % 2 ? nb - 1 - g / 2 : g / 2) : g) * QPB;
    const ulong hk = h0 / group;
    const long lk = valid_keys(len, len_off, b, Lk);
    const long i_last = min(i0 + QPB, Lq) - 1;
    const long hi_first = key_limit(i0, lk, Lq, qoff, wr);
    const ulong split = get_global_id(2);
    const long k_begin = (long)(split * split_keys);
    const long hi_last = key_limit(i_last, lk, Lq, qoff, wr);
    const long hi_max = split_keys ? min(hi_last, k_begin + (long)split_keys) : hi_last;
    const long lo = WINDOW_LO(k_begin, key_first(i0, lk, Lq, qoff, wl));
    const long keep_end = KEEP_END(keep, lo);
    o += split * o_split;
    lse += split * l_split;

    /* Per-lane key bounds, for the blocks the mask cuts, and what the lane's head and position
     * bring to its scores. */
    int lim[BQ], first[BQ];
    float pos[BQ], slope[BQ], sink[BQ];
    for (int r = 0; r < BQ; r++) {
        const long ir = min(i0 + r / PACK, i_last);
        const ulong hr = h0 + r % PACK;
        lim[r] = (int)key_limit(ir, lk, Lq, qoff, wr);
        first[r] = (int)min(key_first(ir, lk, Lq, qoff, wl), (long)INT_MAX);
        pos[r] = (float)query_pos(ir, lk, Lq, qoff);
        slope[r] = HAS_ALIBI ? slopes[slopes_off + hr] * LOG2E : 0.0f;
        sink[r] = HAS_SINKS ? sinks[sinks_off + hr] * LOG2E : 0.0f;
    }
    const int16 limv = vload16(0, lim), firstv = vload16(0, first);
    const int16 keepv = (int16)(int)min(keep, (long)INT_MAX);
    const float16 posv = vload16(0, pos), slopev = vload16(0, slope);
    (void)posv;
    (void)slopev;
    (void)cap;
    (void)inv_cap;

    /* Q of the 16 queries, transposed (qt[d] holds dim d of all 16) and pre-scaled. Lanes past
     * Lq repeat the last query and are never written. Written lane by lane straight into qt, so
     * that no vector load waits for 16 scalar stores just made (BERT's short rows: 7 %). */
    float16 qt[HEAD_DIM];
    {
        __private float *qtf = (__private float *)qt;
        for (int r = 0; r < BQ; r++) {
            const long ir = min(i0 + r / PACK, i_last);
            const __global T_QO *qr = q + AT(q, bv, h0 + r % PACK, ir, 0);
#if HAS_ROPE /* queries rotated at their positions among the keys (KV-cache attention) */
#define Q_DIM(j) LOAD_QO(qr, j)
            const long qpos = query_pos(ir, lk, Lq, qoff);
            for (int d = 0; d < HEAD_DIM; d++)
                qtf[d * BQ + r] = ROPE_AT(Q_DIM, d, qpos) * qscale;
#else
            for (int d = 0; d < HEAD_DIM; d++)
                qtf[d * BQ + r] = LOAD_QO(qr, d) * qscale;
#endif
        }
#if !HAS_ROPE
        ROPE_UNUSED;
#endif
    }

    floatV acc[BQ][NV];
    for (int r = 0; r < BQ; r++)
        for (int c = 0; c < NV; c++)
            acc[r][c] = 0.0f;
    float16 m = -INFINITY, l = 0.0f;
    float16 p[BLOCK_K];
    const __private float *pf = (const __private float *)p; /* p[j] lane r = pf[j * 16 + r] */

    const __global T_KV *kb0 = KV_BASE(k, bk, hk);
    const __global T_KV *vb0 = KV_BASE(v, bk, hk);

    for (long kb = WINDOW_SKIP(k_begin, keep_end, lo); kb < hi_max;
         kb = WINDOW_SKIP(kb + BLOCK_K, keep_end, lo)) {
        /* Scores of the 16 queries against BLOCK_K keys, JB keys at a time. Keys past hi_max
         * read the last visible row (valid memory) and are masked below. */
        for (int j = 0; j < BLOCK_K; j += JB) {
            const __global T_KV *kr[JB];
            float16 a[JB];
            #pragma unroll
            for (int t = 0; t < JB; t++) {
                kr[t] = KV_ROW(kb0, k, min(kb + j + t, hi_max - 1));
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
                a[t] = KV_SCALED(a[t], kr[t], HEAD_DIM);
#if HAS_SOFTCAP /* capped while the scores are in registers; the form is the call's */
            if (SOFTCAP_IS_FAST(inv_cap)) {
                #pragma unroll
                for (int t = 0; t < JB; t++)
                    p[j + t] = cap * softcap_fast16(a[t] * inv_cap);
            } else {
                #pragma unroll
                for (int t = 0; t < JB; t++)
                    p[j + t] = cap * softcap_exact16(a[t] * inv_cap);
            }
#else
            #pragma unroll
            for (int t = 0; t < JB; t++)
                p[j + t] = a[t];
#endif
        }
#if HAS_ADDITIVE
        for (int j = 0; j < BLOCK_K; j++) {
            float tmp[BQ];
            const ulong jj = (ulong)min(kb + j, hi_max - 1);
            for (int r = 0; r < BQ; r++)
                tmp[r] = mask[AT(mask, bv, h0 + r % PACK, min(i0 + r / PACK, i_last), jj)];
            const float16 mv = vload16(0, tmp);
            p[j] = ADD_MASK(float16, p[j], mv, LOG2E);
        }
#endif
#if HAS_ALIBI
        for (int j = 0; j < BLOCK_K; j++)
            p[j] += ALIBI(float16, slopev, posv, kb + j);
#endif
        /* Hide the keys each query does not see: only blocks the bounds cut need it. */
        const bool cut = HAS_WINDOW || kb + BLOCK_K > hi_first;
        if (cut) {
            for (int j = 0; j < BLOCK_K; j++) {
                const int16 jv = (int16)((int)kb + j);
                p[j] = select((float16)(-INFINITY), p[j], KEY_VISIBLE(jv, firstv, limv, keepv));
            }
        }

        float16 bm = p[0];
        for (int j = 1; j < BLOCK_K; j++)
            bm = fmax(bm, p[j]);
        float16 alpha;
        ONLINE_SOFTMAX_BLOCK(float16, p, bm, m, l, alpha);

        /* O = alpha * O + P * V, ROWS queries at a time, vectorised along the value dim. Blocks
         * where some key is hidden from some query need the zero-weight rule; others skip it. */
        float af[BQ];
        vstore16(alpha, 0, af);
        const int nk = (int)min((long)BLOCK_K, hi_max - kb);
        if (HAS_ADDITIVE || cut)
            WEIGHTED_SUM(WEIGHTED_ADD(floatV, c[r][cc], pr, vv[cc]));
        else
            WEIGHTED_SUM(fma(pr, vv[cc], c[r][cc]));
    }

    float inv[BQ];
#if HAS_SINKS
    vstore16(INV_SUM_SINK(l, m, vload16(0, sink)), 0, inv);
#else
    vstore16(INV_SUM(l), 0, inv);
#endif
    for (int r = 0; r < BQ && i0 + r / PACK < Lq; r++) {
        __global T_QO *orow = o + AT(o, bv, h0 + r % PACK, i0 + r / PACK, 0);
        for (int cc = 0; cc < NV; cc++)
            STOREV(acc[r][cc] * inv[r], cc, orow);
    }
#if HAS_LSE
    float ls[BQ];
    vstore16(LSE_OF(m, l), 0, ls);
    for (int r = 0; r < BQ && i0 + r / PACK < Lq; r++)
        lse[AT(lse, bv, h0 + r % PACK, i0 + r / PACK, 0)] = ls[r];
#else
    UNUSED_VIEW(lse);
#endif
#if !HAS_ADDITIVE
    UNUSED_VIEW(mask);
#endif
}

#elif VARIANT == 2
/* ---- CPU decode variant --------------------------------------------------------------------- */

/* One query per sequence (decoding; host/flash.c picks it): a work-item takes a kv head and the
 * GROUP query heads that share it, and reads and converts each K and V row once for all of
 * them, as VEC-wide vectors along the head dim (HEAD_DIM == VALUE_DIM, VEC divides it). A score
 * is a dot product of vectors summed across the lanes (16 keys at once when VEC is 16); the
 * weighted sum adds a weight times the V row to each head's accumulators.
 * No additive mask (the host picks this variant only without one). */
#if VEC == 1
#define floatV float
#else
#define floatV CAT(float, VEC)
#endif
/* The sum of x's lanes, pairwise. (Through memory, not swizzles: Oclgrind 21.10 loses track of
 * what .lo / .hi of an initialised vector hold and reports them uninitialised; compilers turn
 * either into the same shuffles.) */
inline float lane_sum(floatV x)
{
    __private float *f = (__private float *)&x;
    for (int w = VEC / 2; w > 0; w /= 2)
        for (int i = 0; i < w; i++)
            f[i] += f[i + w];
    return f[0];
}
#define NV (HEAD_DIM / VEC) /* vectors per row */

/* The K row kr times each query head g of the group, as VEC partial sums not yet added across
 * their lanes: STORE(g, x) takes each. The loops over the row's vectors and the group are
 * unrolled: PoCL 3.1 left them rolled, with the accumulators in memory (decoding ran 1.1-1.7x
 * slower). */
#define ROW_DOTS(kr, STORE)                                                                        \
    do {                                                                                           \
        floatV kv_[NV];                                                                            \
        _Pragma("unroll") for (int c_ = 0; c_ < NV; c_++)                                          \
            kv_[c_] = LOADV(c_, (kr));                                                             \
        _Pragma("unroll") for (int g_ = 0; g_ < GROUP; g_++) {                                     \
            floatV a_ = qv[g_][0] * kv_[0];                                                        \
            _Pragma("unroll") for (int c_ = 1; c_ < NV; c_++)                                      \
                a_ = fma(qv[g_][c_], kv_[c_], a_);                                                 \
            STORE(g_, a_);                                                                         \
        }                                                                                          \
    } while (0)

#if VEC == 16 && BLOCK_K % 16 == 0
/* Scores 16 keys at a time: each key's dot product is left as 16 partial sums (a vector), and
 * the 16 vectors of 16 keys are summed across their lanes together, by adding the even and the
 * odd lanes of pairs of them four times, which leaves the sums in key order: 15 vector additions
 * for 16 keys instead of 15 scalar ones per key. The softmax then runs on vectors of 16 scores.
 * (shuffle2, not .even / .odd: Oclgrind 21.10's uninitialised-value check crashes on a vector
 * built from those swizzles.) */
#define KEY_LANES 1
#define EVENS (uint16)(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
#define ODDS (uint16)(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)
#define PAIR_SUM(a, b) (shuffle2((a), (b), EVENS) + shuffle2((a), (b), ODDS))
inline float16 lane_sums16(__private const float16 *t)
{
    float16 u[8], w[4], x[2];
    for (int i = 0; i < 8; i++)
        u[i] = PAIR_SUM(t[2 * i], t[2 * i + 1]);
    for (int i = 0; i < 4; i++)
        w[i] = PAIR_SUM(u[2 * i], u[2 * i + 1]);
    for (int i = 0; i < 2; i++)
        x[i] = PAIR_SUM(w[2 * i], w[2 * i + 1]);
    return PAIR_SUM(x[0], x[1]);
}
/* The largest and the sum of x's lanes. */
inline float lane_max16(float16 x)
{
    for (int i = 0; i < 4; i++)
        x = fmax(shuffle2(x, x, EVENS), shuffle2(x, x, ODDS));
    return x.s0;
}
inline float lane_add16(float16 x)
{
    for (int i = 0; i < 4; i++)
        x = PAIR_SUM(x, x);
    return x.s0;
}

/* ONLINE_SOFTMAX_BLOCK for one head's BLOCK_K scores s, 16 at a time. */
inline float online_softmax16(__private float *s, __private float *m, __private float *l)
{
    float16 mx = vload16(0, s);
    for (int j = 1; j < BLOCK_K / 16; j++)
        mx = fmax(mx, vload16(j, s));
    const float m_new = fmax(*m, lane_max16(mx)), base = EXP_BASE(m_new);
    const float alpha = exp2(*m - base);
    float16 sum = 0.0f;
    for (int j = 0; j < BLOCK_K / 16; j++) {
        const float16 p = exp2(vload16(j, s) - base);
        vstore16(p, j, s);
        sum += p;
    }
    *l = fma(*l, alpha, lane_add16(sum));
    *m = m_new;
    return alpha;
}
#else
#define KEY_LANES 0
#endif

__kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void flash_attention(FLASH_PARAMS)
{
    const ulong z = get_global_id(1), b = z / (H / group), hk = z % (H / group), h0 = hk * GROUP;
    SEQUENCE(b);
    PAGE_TABLE(b);
    if (Lq <= 0)
        return; /* a sequence with no query (VARLEN) */
    const long lk = valid_keys(len, len_off, b, Lk);
    const long lim = key_limit(0, lk, Lq, qoff, wr), first = key_first(0, lk, Lq, qoff, wl);
    const float pos = (float)query_pos(0, lk, Lq, qoff);
    const ulong split = get_global_id(2);
    const long k_begin = (long)(split * split_keys);
    const long hi_max = split_keys ? min(lim, k_begin + (long)split_keys) : lim;
    const long lo = WINDOW_LO(k_begin, first);
    const long keep_end = KEEP_END(keep, lo);
    o += split * o_split;
    lse += split * l_split;
    (void)pos;
    (void)cap;
    (void)inv_cap;

    /* The group's queries, pre-scaled (and rotated at their position among the keys). */
    floatV qv[GROUP][NV];
    for (int g = 0; g < GROUP; g++) {
        __private float *qf = (__private float *)qv[g];
        const __global T_QO *qr = q + AT(q, bv, h0 + g, 0, 0);
#if HAS_ROPE
#define Q_DIM(j) LOAD_QO(qr, j)
        for (int d = 0; d < HEAD_DIM; d++)
            qf[d] = ROPE_AT(Q_DIM, d, query_pos(0, lk, Lq, qoff)) * qscale;
#else
        for (int d = 0; d < HEAD_DIM; d++)
            qf[d] = LOAD_QO(qr, d) * qscale;
#endif
    }
#if !HAS_ROPE
    ROPE_UNUSED;
#endif
    float slope[GROUP], m[GROUP], l[GROUP];
    floatV acc[GROUP][NV];
    for (int g = 0; g < GROUP; g++) {
        slope[g] = HAS_ALIBI ? slopes[slopes_off + h0 + g] * LOG2E : 0.0f;
        m[g] = -INFINITY, l[g] = 0.0f;
        for (int c = 0; c < NV; c++)
            acc[g][c] = 0.0f;
    }
    (void)slope;

    const __global T_KV *kb0 = KV_BASE(k, bk, hk);
    const __global T_KV *vb0 = KV_BASE(v, bk, hk);
    float s[GROUP][BLOCK_K];
#if KEY_LANES
    const int16 firstv = (int16)(int)min(first, (long)INT_MAX), limv = (int16)(int)min(lim, hi_max);
    const int16 keepv = (int16)(int)min(keep, (long)INT_MAX);
    const int16 lane = (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    (void)firstv, (void)keepv;
#endif
    for (long kb = WINDOW_SKIP(k_begin, keep_end, lo); kb < hi_max;
         kb = WINDOW_SKIP(kb + BLOCK_K, keep_end, lo)) {
        const int nk = (int)min((long)BLOCK_K, hi_max - kb);
#if KEY_LANES
        for (int j0 = 0; j0 < BLOCK_K; j0 += 16) {
            /* keys past the block's end read the last row (valid memory) and are hidden */
            float16 t[GROUP][16];
            float sc[16];
            for (int jj = 0; jj < 16; jj++) {
                const __global T_KV *kr = KV_ROW(kb0, k, min(kb + j0 + jj, hi_max - 1));
#define TO_LANES(g, x) (t[g][jj] = (x))
                ROW_DOTS(kr, TO_LANES);
                sc[jj] = KV_SCALED(1.0f, kr, HEAD_DIM);
            }
            (void)sc;
            const int16 jv = (int)(kb + j0) + lane;
            const int16 seen = KEY_VISIBLE(jv, firstv, limv, keepv);
            for (int g = 0; g < GROUP; g++) {
                float16 a = lane_sums16(t[g]);
#if KV_FMT == 3
                a *= vload16(0, sc); /* int8 rows: each key's scale */
#endif
#if HAS_SOFTCAP
                a = cap * (SOFTCAP_IS_FAST(inv_cap) ? softcap_fast16(a * inv_cap)
                                                    : softcap_exact16(a * inv_cap));
#endif
#if HAS_ALIBI
                a += ALIBI(float16, slope[g], pos, convert_float16(jv));
#endif
                vstore16(select((float16)(-INFINITY), a, seen), 0, &s[g][j0]);
            }
        }
        float alpha[GROUP];
        for (int g = 0; g < GROUP; g++) {
            alpha[g] = online_softmax16(s[g], &m[g], &l[g]);
            #pragma unroll
            for (int c = 0; c < NV; c++)
                acc[g][c] *= alpha[g];
        }
#else
        for (int j = 0; j < BLOCK_K; j++) {
            if (j >= nk) { /* past the split's or the window's end: no weight */
                for (int g = 0; g < GROUP; g++)
                    s[g][j] = -INFINITY;
                continue;
            }
            const __global T_KV *kr = KV_ROW(kb0, k, kb + j);
            floatV dot[GROUP];
#define TO_DOT(g, x) (dot[g] = (x))
            ROW_DOTS(kr, TO_DOT);
            const bool seen = KEY_VISIBLE(kb + j, first, lim, keep);
            for (int g = 0; g < GROUP; g++) {
                float a = KV_SCALED(lane_sum(dot[g]), kr, HEAD_DIM);
#if HAS_SOFTCAP
                a = SOFTCAP(a, cap, inv_cap);
#endif
#if HAS_ALIBI
                a += ALIBI(float, slope[g], pos, kb + j);
#endif
                s[g][j] = seen ? a : -INFINITY;
            }
        }
        float alpha[GROUP];
        for (int g = 0; g < GROUP; g++) {
            float bm = s[g][0];
            for (int j = 1; j < BLOCK_K; j++)
                bm = fmax(bm, s[g][j]);
            ONLINE_SOFTMAX_BLOCK(float, s[g], bm, m[g], l[g], alpha[g]);
            #pragma unroll
            for (int c = 0; c < NV; c++)
                acc[g][c] *= alpha[g];
        }
#endif
        /* Keys below nk are below the key limit: only a window hides some of them, so only
         * then does a weight of 0 need the zero-weight rule (as variant 0's uncut blocks). */
        for (int j = 0; j < nk; j++) {
            const __global T_KV *vr = KV_ROW(vb0, v, kb + j);
            floatV vv[NV];
            #pragma unroll
            for (int c = 0; c < NV; c++)
                vv[c] = KV_SCALED(LOADV(c, vr), vr, VALUE_DIM);
            #pragma unroll
            for (int g = 0; g < GROUP; g++) {
                const floatV p = (floatV)s[g][j];
                #pragma unroll
                for (int c = 0; c < NV; c++)
                    acc[g][c] = HAS_WINDOW ? WEIGHTED_ADD(floatV, acc[g][c], p, vv[c])
                                           : fma(p, vv[c], acc[g][c]);
            }
        }
    }

    for (int g = 0; g < GROUP; g++) {
#if HAS_SINKS
        const float inv = INV_SUM_SINK(l[g], m[g], sinks[sinks_off + h0 + g] * LOG2E);
#else
        const float inv = INV_SUM(l[g]);
#endif
        __global T_QO *orow = o + AT(o, bv, h0 + g, 0, 0);
        for (int c = 0; c < NV; c++)
            STOREV(acc[g][c] * inv, c, orow);
#if HAS_LSE
        lse[AT(lse, bv, h0 + g, 0, 0)] = LSE_OF(m[g], l[g]);
#endif
    }
#if !HAS_LSE
    UNUSED_VIEW(lse);
#endif
    UNUSED_VIEW(mask);
}

#else
/* ---- GPU variant ---------------------------------------------------------------------------- */

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void flash_attention(FLASH_PARAMS)
{
    __local float ks[BLOCK_K * HEAD_DIM];
    __local float vs[BLOCK_K * VALUE_DIM];
    const ulong z = get_global_id(1), b = z / H, h = z % H, hk = h / group;
    SEQUENCE(b);
    PAGE_TABLE(b);
    const int lid = (int)get_local_id(0);
    const long g0 = (long)get_group_id(0) * WG;
    if (g0 >= Lq)
        return; /* the whole work-group: past a shorter sequence's queries (VARLEN) */
    const long i = g0 + lid;
    const long ic = min(i, Lq - 1); /* work-items past Lq shadow the last query, write nothing */
    const long lk = valid_keys(len, len_off, b, Lk);
    /* Uniform across the work-group: the key loop and its barriers run the same for all. */
    const ulong split = get_global_id(2);
    const long k_begin = (long)(split * split_keys);
    const long hi_all = key_limit(min(g0 + WG, Lq) - 1, lk, Lq, qoff, wr);
    const long hi_max = split_keys ? min(hi_all, k_begin + (long)split_keys) : hi_all;
    const long lo = WINDOW_LO(k_begin, key_first(min(g0, Lq - 1), lk, Lq, qoff, wl));
    const long keep_end = KEEP_END(keep, lo);
    o += split * o_split;
    lse += split * l_split;
    const long lim = key_limit(ic, lk, Lq, qoff, wr);
    const long first = key_first(ic, lk, Lq, qoff, wl);
    const float pos = (float)query_pos(ic, lk, Lq, qoff);
    const float slope = HAS_ALIBI ? slopes[slopes_off + h] * LOG2E : 0.0f;
    (void)first;
    (void)pos;
    (void)slope;
    (void)cap;
    (void)inv_cap;

    float qr[HEAD_DIM];
#if HAS_ROPE
#define Q_DIM(j) LOAD_QO(q, AT(q, bv, h, ic, j))
    for (int d = 0; d < HEAD_DIM; d++)
        qr[d] = ROPE_AT(Q_DIM, d, query_pos(ic, lk, Lq, qoff)) * qscale;
#else
    ROPE_UNUSED;
    for (int d = 0; d < HEAD_DIM; d++)
        qr[d] = LOAD_QO(q, AT(q, bv, h, ic, d)) * qscale;
#endif
    float acc[VALUE_DIM];
    for (int d = 0; d < VALUE_DIM; d++)
        acc[d] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    float s[BLOCK_K];

    const __global T_KV *kb0 = KV_BASE(k, bk, hk);
    const __global T_KV *vb0 = KV_BASE(v, bk, hk);

    for (long kb = WINDOW_SKIP(k_begin, keep_end, lo); kb < hi_max;
         kb = WINDOW_SKIP(kb + BLOCK_K, keep_end, lo)) {
        barrier(CLK_LOCAL_MEM_FENCE); /* the previous block is no longer read */
        for (int t = lid; t < BLOCK_K * HEAD_DIM; t += WG) {
            const long j = kb + t / HEAD_DIM;
            const __global T_KV *kr = KV_ROW(kb0, k, min(j, hi_max - 1));
            ks[t] = j < hi_max ? KV_SCALED(LOAD_KV(kr, t % HEAD_DIM), kr, HEAD_DIM) : 0.0f;
        }
        for (int t = lid; t < BLOCK_K * VALUE_DIM; t += WG) {
            const long j = kb + t / VALUE_DIM;
            const __global T_KV *vr = KV_ROW(vb0, v, min(j, hi_max - 1));
            vs[t] = j < hi_max ? KV_SCALED(LOAD_KV(vr, t % VALUE_DIM), vr, VALUE_DIM) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        float bm = -INFINITY;
        for (int j = 0; j < BLOCK_K; j++) {
            float a = 0.0f;
            for (int d = 0; d < HEAD_DIM; d++)
                a = fma(qr[d], ks[j * HEAD_DIM + d], a);
#if HAS_SOFTCAP
            a = SOFTCAP(a, cap, inv_cap);
#endif
#if HAS_ADDITIVE
            a = ADD_MASK(float, a, mask[AT(mask, bv, h, ic, min(kb + j, hi_max - 1))], LOG2E);
#endif
#if HAS_ALIBI
            a += ALIBI(float, slope, pos, kb + j);
#endif
            s[j] = KEY_VISIBLE(kb + j, first, lim, keep) ? a : -INFINITY;
            bm = fmax(bm, s[j]);
        }
        float alpha;
        ONLINE_SOFTMAX_BLOCK(float, s, bm, m, l, alpha);
        for (int d = 0; d < VALUE_DIM; d++) {
            float a = acc[d] * alpha;
            for (int j = 0; j < BLOCK_K; j++)
                a = WEIGHTED_ADD(float, a, s[j], vs[j * VALUE_DIM + d]);
            acc[d] = a;
        }
    }

    if (i < Lq) {
#if HAS_SINKS
        const float inv = INV_SUM_SINK(l, m, sinks[sinks_off + h] * LOG2E);
#else
        const float inv = INV_SUM(l);
#endif
        __global T_QO *orow = o + AT(o, bv, h, i, 0);
        for (int d = 0; d < VALUE_DIM; d++)
            STORE1(acc[d] * inv, orow, d);
#if HAS_LSE
        lse[AT(lse, bv, h, i, 0)] = LSE_OF(m, l);
#endif
    }
#if !HAS_LSE
    UNUSED_VIEW(lse);
#endif
#if !HAS_ADDITIVE
    UNUSED_VIEW(mask);
#endif
}
#endif
