/* Appending new tokens' keys and values to a KV cache, in two launches so that a sequence's
 * length changes only once all of its tokens are written:
 *   kv_append  copies them: sequence b gains n_b tokens at its present length len[b].
 *              NDRange (D, T, B * Hkv); work-items past n_b do nothing. No barriers.
 *   kv_advance then adds n_b to len[b]. NDRange (B).
 * n_b is counts[b] (HAS_COUNTS) or `count` for every sequence. Elements go through float: the new
 * tokens' format SRC_FMT, the cache's C_FMT (prelude: FMT_*; a bfloat16 cache takes float input,
 * rounded; an int8 one, C_FMT 3, quantizes rows of ROW_DIM values). HAS_ROPE: keys are rotated
 * at their positions in the cache (prelude: ROPE_AT) before they are stored.
 *
 * PAGE_SIZE (a paged cache): ck and cv are the pool as views [pages, Hkv, PAGE_SIZE, D]; token
 * `at` of sequence b goes to row at % PAGE_SIZE of page pt[pt_off + b * pt_stride + at /
 * PAGE_SIZE] (the block tables the host uploads with the call, already holding the pages the
 * append takes), and the host, which owns the lengths, runs no kv_advance. kv_copy_pages copies
 * the rows the sequence holds of the shared pages an append writes into (copy on write) first. */

#ifndef HAS_COUNTS
#define HAS_COUNTS 0
#endif
#ifndef SRC_FMT
#define SRC_FMT 0
#endif
#ifndef C_FMT
#define C_FMT SRC_FMT
#endif
#ifndef PAGE_SIZE
#define PAGE_SIZE 0
#endif
#define T_SRC FMT_TYPE(SRC_FMT)
#define T_C FMT_TYPE(C_FMT)
#define LOAD_E(p, i) FMT_LOAD(SRC_FMT, p, i)
#define STORE_E(x, p, i) FMT_STORE(C_FMT, x, p, i)

inline uint new_tokens(__global const int *counts, ulong b, uint count)
{
#if HAS_COUNTS
    (void)count;
    return (uint)counts[b];
#else
    (void)counts;
    (void)b;
    return count;
#endif
}

/* Where token `at` of sequence b, head h, element d is stored in the cache view x. */
#if PAGE_SIZE
#define CACHE_AT(x, b, h, at, d)                                                                   \
    AT(x, (ulong)pt[pt_off + (b) * pt_stride + (at) / PAGE_SIZE], h, (at) % PAGE_SIZE, d)
#else
#define CACHE_AT(x, b, h, at, d) AT(x, b, h, at, d)
#endif
#define APPEND_PARAMS                                                                              \
    ulong Hkv, __global const int *len, __global const int *counts, uint count, ROPE_PARAMS,     \
    __global const int *pt, ulong pt_off, ulong pt_stride

#if C_FMT == 3
/* int8 rows (prelude: Q8_*): a work-item quantizes one token's row of ROW_DIM values, keys after
 * their rotation, against the row's largest magnitude. NDRange (1, T, B * Hkv). */
#if HAS_ROPE
#define KEY_DIM(j) LOAD_E(k, AT(k, b, h, t, (ulong)(j)))
#define KEY_AT(d) ROPE_AT(KEY_DIM, (d), (long)at)
#else
#define KEY_AT(d) LOAD_E(k, AT(k, b, h, t, (ulong)(d)))
#endif
#define VALUE_AT(d) LOAD_E(v, AT(v, b, h, t, (ulong)(d)))

/* Stores the row x(0 .. ROW_DIM) (a macro of d, evaluated twice) at `row`. */
#define STORE_Q8_ROW(x, row)                                                                       \
    do {                                                                                           \
        float amax_ = 0.0f;                                                                        \
        for (int d = 0; d < ROW_DIM; d++) {                                                        \
            const float a_ = fabs(x(d)); /* a NaN stays: the row's scale becomes NaN */            \
            amax_ = a_ > amax_ || isnan(a_) ? a_ : amax_;                                          \
        }                                                                                          \
        const float inv_ = amax_ > 0.0f ? 127.0f / amax_ : 0.0f;                                   \
        for (int d = 0; d < ROW_DIM; d++)                                                          \
            (row)[d] = convert_char_sat_rte(x(d) * inv_);                                          \
        *(__global float *)((row) + Q8_SCALE_AT(ROW_DIM)) = amax_ / 127.0f;                        \
    } while (0)

__kernel void kv_append(VIEW(const T_SRC, k), VIEW(const T_SRC, v), VIEW(char, ck), VIEW(char, cv),
                        APPEND_PARAMS)
{
    const ulong t = get_global_id(1), z = get_global_id(2);
    const ulong b = z / Hkv, h = z % Hkv;
    if (t >= new_tokens(counts, b, count))
        return;
    const ulong at = (ulong)len[b] + t;
#if !HAS_ROPE
    ROPE_UNUSED;
#endif
    (void)pt, (void)pt_off, (void)pt_stride;
    STORE_Q8_ROW(KEY_AT, ck + CACHE_AT(ck, b, h, at, 0));
    STORE_Q8_ROW(VALUE_AT, cv + CACHE_AT(cv, b, h, at, 0));
}
#else
__kernel void kv_append(VIEW(const T_SRC, k), VIEW(const T_SRC, v), VIEW(T_C, ck), VIEW(T_C, cv),
                        APPEND_PARAMS)
{
    const ulong d = get_global_id(0), t = get_global_id(1), z = get_global_id(2);
    const ulong b = z / Hkv, h = z % Hkv;
    if (t >= new_tokens(counts, b, count))
        return;
    const ulong at = (ulong)len[b] + t;
    (void)pt, (void)pt_off, (void)pt_stride;
#if HAS_ROPE
#define KEY_DIM(j) LOAD_E(k, AT(k, b, h, t, (ulong)(j)))
    STORE_E(ROPE_AT(KEY_DIM, (int)d, (long)at), ck, CACHE_AT(ck, b, h, at, d));
#else
    ROPE_UNUSED;
    STORE_E(LOAD_E(k, AT(k, b, h, t, d)), ck, CACHE_AT(ck, b, h, at, d));
#endif
    STORE_E(LOAD_E(v, AT(v, b, h, t, d)), cv, CACHE_AT(cv, b, h, at, d));
}
#endif

__kernel void kv_advance(__global int *len, __global const int *counts, uint count)
{
    const ulong b = get_global_id(0);
    len[b] += (int)new_tokens(counts, b, count);
}

/* Copy on write: for each copy i, page copy[3i] of K and V copied to page copy[3i + 1], the
 * first copy[3i + 2] 16-bit words of each head's rows (those the sequence holds; every storage
 * format's rows are a whole number of words). A head's rows of a page are `page` words, heads
 * `head` words apart. NDRange (page, Hkv, copies). */
__kernel void kv_copy_pages(__global ushort *k, __global ushort *v, __global const int *copy,
                            ulong page, ulong head)
{
    const ulong w = get_global_id(0), h = get_global_id(1), i = get_global_id(2);
    if (w >= (ulong)copy[3 * i + 2])
        return;
    const ulong from = (ulong)copy[3 * i] * page + h * head + w;
    const ulong to = (ulong)copy[3 * i + 1] * page + h * head + w;
    k[to] = k[from];
    v[to] = v[from];
}
