/* The paged KV cache (clattn_kv_cache_params.page_size): sequences sharing a pool of pages, each
 * attended through its block table against the double-precision reference over the tokens the
 * test knows it appended (a mirror per sequence). Page sizes 1, 16 and 64 with sequences growing
 * in turn (their pages interleave in the pool) and released and regrown (pages reused out of
 * order); forks sharing pages with copy on write; the pool running out (refused, nothing
 * changed); fp16, bfloat16 and int8 pages, RoPE, the model variants, split keys, mixed steps and
 * cross attention. The free-page count is checked against the test's own count of the pages the
 * sequences hold. (Refusals of bad arguments: test_errors.c, kv_paged_errors.) */
#include "harness.h"
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SETUPS "fused fused-gpu"

enum { MAXB = 4, HKV = 2, HQ = 4, D = 32, CAP = 160 };

typedef struct world {
    test_env e;
    clattn_kv_cache *kv;
    size_t B, page, pages;
    clattn_dtype dtype;
    bool rope;
    float *k[MAXB], *v[MAXB]; /* each sequence's tokens as appended: [HKV, CAP, D] */
    size_t len[MAXB];
    uint64_t seed;
} world;

static bool world_open(world *w, size_t B, size_t page, size_t pages, clattn_dtype dtype,
                       bool rope)
{
    memset(w, 0, sizeof *w);
    env_open(&w->e, false);
    w->B = B, w->page = page, w->pages = pages, w->dtype = dtype, w->rope = rope;
    w->seed = 1000 + page * 31 + pages * 7 + (size_t)dtype;
    for (size_t b = 0; b < B; b++) {
        w->k[b] = calloc(HKV * CAP * D, sizeof(float));
        w->v[b] = calloc(HKV * CAP * D, sizeof(float));
    }
    clattn_rope_params rp = clattn_rope_params_default();
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = B, kp.num_kv_heads = HKV, kp.head_dim = D, kp.capacity = CAP, kp.dtype = dtype;
    kp.page_size = page, kp.num_pages = pages, kp.rope = rope ? &rp : NULL;
    bool ok = true;
    EXPECT_STATUS(clattn_kv_cache_create(w->e.cc, &kp, &w->kv), CLATTN_SUCCESS);
    return ok;
}

static void world_close(world *w)
{
    clattn_kv_cache_destroy(&w->kv);
    for (size_t b = 0; b < w->B; b++)
        free(w->k[b]), free(w->v[b]);
    env_close(&w->e);
}

/* Appends counts[b] new random tokens to sequence b in one call; the mirror follows when it
 * succeeds. An fp16 cache gets fp16 tokens (the mirror keeps their rounded values). */
static clattn_status world_append(world *w, const size_t *counts)
{
    size_t T = 1;
    for (size_t b = 0; b < w->B; b++)
        T = counts[b] > T ? counts[b] : T;
    const size_t n = w->B * HKV * T * D;
    float *k = malloc(n * sizeof *k), *v = malloc(n * sizeof *v);
    fill_uniform(k, n, &w->seed, -1, 1);
    fill_uniform(v, n, &w->seed, -1, 1);
    const bool half = w->dtype == CLATTN_F16;
    uint16_t *hk = malloc(n * 2), *hv = malloc(n * 2);
    for (size_t i = 0; half && i < n; i++) {
        hk[i] = half_from_float(k[i]), k[i] = half_to_float(hk[i]);
        hv[i] = half_from_float(v[i]), v[i] = half_to_float(hv[i]);
    }
    const size_t es = half ? 2 : 4;
    cl_mem bk = buf_new(&w->e, n * es), bv = buf_new(&w->e, n * es);
    buf_write(&w->e, bk, 0, half ? (void *)hk : (void *)k, n * es);
    buf_write(&w->e, bv, 0, half ? (void *)hv : (void *)v, n * es);
    clattn_tensor K = clattn_tensor_bhtd(bk, 0, w->B, HKV, T, D), V = K;
    V.buffer = bv;
    K.dtype = V.dtype = half ? CLATTN_F16 : CLATTN_F32;
    const clattn_status st = clattn_kv_cache_append(w->kv, w->e.queue, &K, &V, counts, 0, NULL, NULL);
    if (st == CL_SUCCESS)
        for (size_t b = 0; b < w->B; b++) {
            for (size_t h = 0; h < HKV; h++)
                for (size_t t = 0; t < counts[b]; t++) {
                    const size_t src = ((b * HKV + h) * T + t) * D;
                    const size_t dst = (h * CAP + w->len[b] + t) * D;
                    memcpy(w->k[b] + dst, k + src, D * sizeof *k);
                    memcpy(w->v[b] + dst, v + src, D * sizeof *v);
                }
            w->len[b] += counts[b];
        }
    CL_OK(clFinish(w->e.queue));
    clReleaseMemObject(bk), clReleaseMemObject(bv);
    free(k), free(v), free(hk), free(hv);
    return st;
}

/* What the attention calls get besides their queries: a variant, split keys, cross. */
typedef struct attend_opts {
    size_t splits;
    bool cross, mixed;
    long window;    /* -1: none */
    double softcap; /* 0: none */
    bool alibi, sinks;
} attend_opts;

static attend_opts plain(size_t splits)
{
    attend_opts o = {splits, false, false, -1, 0.0, false, false};
    return o;
}
#define PLAIN(splits) (&(attend_opts){(splits), false, false, -1, 0.0, false, false})

/* Attention of sequence b's newest nq[b] queries over everything it holds, in one call: packed
 * queries (o->mixed, cu_seqlens_q) or nq[0] for every sequence; each sequence against the
 * reference over its mirror (rotated, then stored as the cache stores it). A sequence with no
 * key gets zeros. */
static bool world_check(world *w, const size_t *nq, const attend_opts *o, const char *what)
{
    bool ok = true;
    size_t cu[MAXB + 1] = {0};
    for (size_t b = 0; b < w->B; b++)
        cu[b + 1] = cu[b] + (o->mixed ? nq[b] : nq[0]);
    const size_t total = cu[w->B];
    const size_t n = HQ * total * D;
    float *q = malloc(n * sizeof *q), *out = malloc(n * sizeof *out);
    fill_uniform(q, n, &w->seed, -1, 1);
    cl_mem bq = buf_new(&w->e, n * 4), bo = buf_new(&w->e, n * 4);
    /* host layout: packed [1, HQ, total, D] (mixed) or [B, HQ, nq, D], the same rows either way
     * once addressed through row_of */
    buf_write(&w->e, bq, 0, q, n * 4);
    const clattn_tensor Q = o->mixed ? clattn_tensor_bhtd(bq, 0, 1, HQ, total, D)
                                     : clattn_tensor_bhtd(bq, 0, w->B, HQ, nq[0], D);
    clattn_tensor O = Q;
    O.buffer = bo;
    double slopes[HQ], sinks[HQ];
    ref_alibi_slopes(HQ, slopes);
    for (size_t h = 0; h < HQ; h++)
        sinks[h] = 0.4 * (double)h - 0.7;
    cl_mem sb = buf_floats(&w->e, slopes, HQ), kb = buf_floats(&w->e, sinks, HQ);
    clattn_kv_attend_params ap = clattn_kv_attend_params_default();
    ap.splits = o->splits, ap.cross = o->cross;
    if (o->mixed)
        ap.cu_seqlens_q = cu, ap.num_seqs = w->B;
    if (o->window >= 0)
        ap.window_left = o->window;
    ap.logits.softcap = (float)o->softcap;
    ap.logits.alibi_slopes = o->alibi ? sb : NULL;
    ap.logits.sinks = o->sinks ? kb : NULL;
    EXPECT_STATUS(clattn_kv_cache_attend(w->kv, w->e.queue, &Q, &O, &ap, 0, NULL, NULL),
                  CLATTN_SUCCESS);
    buf_read(&w->e, bo, 0, out, n * 4);
    ref_variant rv = ref_variant_none();
    rv.window_left = o->window;
    rv.softcap = o->softcap;
    rv.alibi = o->alibi ? slopes : NULL;
    rv.sinks = o->sinks ? sinks : NULL;
    for (size_t b = 0; b < w->B; b++) {
        const size_t len = w->len[b], m = cu[b + 1] - cu[b];
        double *kd = malloc((HKV * len * D + 1) * 8), *vd = malloc((HKV * len * D + 1) * 8);
        double *qd = malloc(HQ * m * D * 8), *ro = malloc(HQ * m * D * 8), *go = malloc(HQ * m * D * 8);
        for (size_t h = 0; h < HKV; h++)
            for (size_t i = 0; i < len * D; i++) {
                kd[h * len * D + i] = w->k[b][h * CAP * D + i];
                vd[h * len * D + i] = w->v[b][h * CAP * D + i];
            }
        /* queries: row t of sequence b at (h, cu[b] + t) packed, or (b, h, t) */
        for (size_t h = 0; h < HQ; h++)
            for (size_t t = 0; t < m; t++)
                for (size_t d = 0; d < D; d++) {
                    const size_t at = o->mixed ? (h * total + cu[b] + t) * D + d
                                               : ((b * HQ + h) * m + t) * D + d;
                    qd[(h * m + t) * D + d] = q[at];
                    go[(h * m + t) * D + d] = out[at];
                }
        if (len == 0) {
            for (size_t i = 0; i < HQ * m * D; i++)
                ro[i] = 0.0;
        } else {
            if (w->rope) { /* keys at their positions, the queries at the newest */
                const int at = (int)(len - m);
                ref_rope(1, HKV, len, D, D, 0, 10000.0, NULL, NULL, kd, kd);
                ref_rope(1, HQ, m, D, D, 0, 10000.0, NULL, &at, qd, qd);
            }
            if (w->dtype == CLATTN_Q8) {
                ref_quantize_q8(HKV * len, D, kd, kd);
                ref_quantize_q8(HKV * len, D, vd, vd);
            } else if (w->dtype == CLATTN_BF16) {
                for (size_t i = 0; i < HKV * len * D; i++)
                    kd[i] = bf16_round((float)kd[i]), vd[i] = bf16_round((float)vd[i]);
            }
            ref_sdpa_variant(1, HQ, HKV, m, len, D, D, 1.0 / sqrt((double)D), o->cross ? 0 : 2,
                             NULL, NULL, &rv, qd, kd, vd, ro, NULL, NULL);
        }
        char msg[96];
        snprintf(msg, sizeof msg, "%s: sequence %zu (%zu of %zu)", what, b, m, len);
        /* int8 keys rotated in float, the reference's in double: a rounding step now and then */
        ok &= check_close(msg, go, ro, HQ * m * D,
                          w->dtype == CLATTN_Q8 && w->rope ? 2e-2
                          : w->rope || w->dtype == CLATTN_Q8 ? 1e-3
                                                            : TOL);
        free(kd), free(vd), free(qd), free(ro), free(go);
    }
    clReleaseMemObject(bq), clReleaseMemObject(bo), clReleaseMemObject(sb), clReleaseMemObject(kb);
    free(q), free(out);
    return ok;
}

/* The pages the sequences hold by the test's own count (no sharing): the pool's free pages must
 * be the rest. */
static bool free_pages_are(world *w, size_t expect, const char *what)
{
    const size_t got = clattn_kv_cache_free_pages(w->kv);
    if (got != expect)
        fprintf(stderr, "%s: %zu free pages, expected %zu\n", what, got, expect);
    return got == expect;
}

static size_t held_pages(const world *w)
{
    size_t n = 0;
    for (size_t b = 0; b < w->B; b++)
        n += (w->len[b] + w->page - 1) / w->page;
    return n;
}

/* Three sequences growing in turn: prompts of 70, 5 and 150 tokens (prefill checked with packed
 * queries), decode steps of one token each (one pass and split keys), then sequence 1 released
 * and regrown by a chunk of 20 while the others decode (a mixed step, one pass and split: the
 * splits must cover the longest sequence, not the first): its pages come back in another
 * order. */
static bool grow_in_turn(size_t page, size_t pages)
{
    bool ok = true;
    world w;
    ok &= world_open(&w, 3, page, pages, CLATTN_F32, false);
    const size_t prompt[3] = {70, 5, 150};
    /* the prompts one sequence at a time, so that their pages interleave less predictably */
    for (size_t b = 0; b < 3; b++) {
        size_t c[3] = {0, 0, 0};
        c[b] = prompt[b];
        EXPECT_STATUS(world_append(&w, c), CLATTN_SUCCESS);
    }
    attend_opts mixed = plain(1);
    mixed.mixed = true;
    ok &= world_check(&w, prompt, &mixed, "prefill");
    ok &= free_pages_are(&w, pages - held_pages(&w), "after the prompts");
    const size_t one[3] = {1, 1, 1};
    for (int step = 0; step < 6; step++) {
        EXPECT_STATUS(world_append(&w, one), CLATTN_SUCCESS);
        const attend_opts o = plain(step % 2 ? 3 : 1);
        ok &= world_check(&w, one, &o, step % 2 ? "decode, split" : "decode");
    }
    ok &= free_pages_are(&w, pages - held_pages(&w), "after decoding");
    EXPECT_STATUS(clattn_kv_cache_release(w.kv, 1), CLATTN_SUCCESS);
    w.len[1] = 0;
    ok &= free_pages_are(&w, pages - held_pages(&w), "after a release");
    if (clattn_kv_cache_length(w.kv, 1) != 0)
        ok = false, fprintf(stderr, "a released sequence holds tokens\n");
    const size_t chunk[3] = {1, 20, 1};
    EXPECT_STATUS(world_append(&w, chunk), CLATTN_SUCCESS);
    ok &= world_check(&w, chunk, &mixed, "mixed step");
    mixed.splits = 2;
    ok &= world_check(&w, chunk, &mixed, "mixed step, split");
    ok &= free_pages_are(&w, pages - held_pages(&w), "at the end");
    world_close(&w);
    return ok;
}
static bool page_size_1(void) { return grow_in_turn(1, 260); }
static bool page_size_16(void) { return grow_in_turn(16, 20); }
static bool page_size_64(void) { return grow_in_turn(64, 7); }

/* Forks: sequence 0's prompt of 40 tokens (two full pages of 16 and one half full) shared by
 * sequences 1 and 2; all three then append their own tokens in one call (0 and 1 copy the
 * shared half page, 2, its last holder then, writes it in place), sequence 0 appends into its
 * copy in place, and releases give back exactly the pages no one else holds. */
static bool fork_copy_on_write(void)
{
    bool ok = true;
    world w;
    ok &= world_open(&w, 3, 16, 8, CLATTN_F32, false);
    const size_t prompt[3] = {40, 0, 0};
    EXPECT_STATUS(world_append(&w, prompt), CLATTN_SUCCESS);
    for (size_t b = 1; b < 3; b++) {
        EXPECT_STATUS(clattn_kv_cache_fork(w.kv, 0, b), CLATTN_SUCCESS);
        memcpy(w.k[b], w.k[0], HKV * CAP * D * sizeof(float));
        memcpy(w.v[b], w.v[0], HKV * CAP * D * sizeof(float));
        w.len[b] = w.len[0];
    }
    ok &= free_pages_are(&w, 8 - 3, "after two forks");
    /* forking into a sequence that holds tokens is refused */
    EXPECT_STATUS(clattn_kv_cache_fork(w.kv, 0, 1), CLATTN_ERROR_INVALID_ARGUMENT);
    const size_t one[3] = {1, 1, 1};
    ok &= world_check(&w, one, PLAIN(1), "forked");
    const size_t own[3] = {1, 1, 2};
    EXPECT_STATUS(world_append(&w, own), CLATTN_SUCCESS);
    ok &= free_pages_are(&w, 8 - 5, "after copies on write");
    ok &= world_check(&w, one, PLAIN(2), "diverged");
    const size_t zero_more[3] = {3, 0, 0}; /* sequence 0 alone holds its copy */
    EXPECT_STATUS(world_append(&w, zero_more), CLATTN_SUCCESS);
    ok &= free_pages_are(&w, 8 - 5, "after an append in place");
    ok &= world_check(&w, one, PLAIN(1), "in place");
    /* 0's two full pages stay with 1 and 2; its copy goes back */
    EXPECT_STATUS(clattn_kv_cache_release(w.kv, 0), CLATTN_SUCCESS);
    w.len[0] = 0;
    ok &= free_pages_are(&w, 8 - 4, "after releasing the forked-from sequence");
    const size_t more[3] = {0, 30, 0}; /* 41 + 30 = 71 tokens: two more pages */
    EXPECT_STATUS(world_append(&w, more), CLATTN_SUCCESS);
    ok &= free_pages_are(&w, 8 - 6, "after growing a fork");
    ok &= world_check(&w, one, PLAIN(1), "grown");
    EXPECT_STATUS(clattn_kv_cache_release(w.kv, 1), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_kv_cache_release(w.kv, 2), CLATTN_SUCCESS);
    w.len[1] = w.len[2] = 0;
    ok &= free_pages_are(&w, 8, "after releasing everything");
    world_close(&w);
    return ok;
}

/* A pool of 5 pages of 16: appends that need more pages than are free (fresh ones, or one for a
 * copy on write) are CLATTN_ERROR_POOL_EXHAUSTED and change nothing: lengths, free pages and
 * what attention returns stay as they were; appends past the capacity are CLATTN_ERROR_CACHE_FULL. */
static bool pool_exhausted(void)
{
    bool ok = true;
    world w;
    ok &= world_open(&w, 2, 16, 5, CLATTN_F32, false);
    const size_t first[2] = {40, 0};
    EXPECT_STATUS(world_append(&w, first), CLATTN_SUCCESS);
    const size_t too_many[2] = {9, 20}; /* 1 + 2 pages, 2 free */
    EXPECT_STATUS(world_append(&w, too_many), CLATTN_ERROR_POOL_EXHAUSTED);
    ok &= free_pages_are(&w, 2, "after a refused append");
    if (clattn_kv_cache_length(w.kv, 0) != 40 || clattn_kv_cache_length(w.kv, 1) != 0)
        ok = false, fprintf(stderr, "a refused append changed the lengths\n");
    const size_t one[2] = {1, 1};
    ok &= world_check(&w, one, PLAIN(1),
                      "after a refused append");
    /* a fork, then appends to both: sequence 0 copies the shared half page, sequence 1 (then
     * its last holder) writes it in place and needs two fresh pages: 3 pages, 2 free */
    EXPECT_STATUS(clattn_kv_cache_fork(w.kv, 0, 1), CLATTN_SUCCESS);
    memcpy(w.k[1], w.k[0], HKV * CAP * D * sizeof(float));
    memcpy(w.v[1], w.v[0], HKV * CAP * D * sizeof(float));
    w.len[1] = w.len[0];
    const size_t both[2] = {1, 30};
    EXPECT_STATUS(world_append(&w, both), CLATTN_ERROR_POOL_EXHAUSTED);
    ok &= free_pages_are(&w, 2, "after a refused copy on write");
    ok &= world_check(&w, one, PLAIN(3),
                      "after a refused copy on write");
    /* one of them fits: it copies the shared page */
    const size_t fits[2] = {0, 9};
    EXPECT_STATUS(world_append(&w, fits), CLATTN_SUCCESS);
    ok &= free_pages_are(&w, 0, "full pool");
    const size_t any[2] = {0, 1}; /* room on its page: no new page */
    EXPECT_STATUS(world_append(&w, any), CLATTN_SUCCESS);
    const size_t past[2] = {CAP, 0};
    EXPECT_STATUS(world_append(&w, past), CLATTN_ERROR_CACHE_FULL);
    ok &= world_check(&w, one, PLAIN(1), "full");
    world_close(&w);
    return ok;
}

/* The storage formats and RoPE on pages of 16, decode steps (the CPU decode layout) and, with
 * `split`, the last one split. */
static bool formats_run(clattn_dtype dtype, bool rope, bool split)
{
    bool ok = true;
    world w;
    ok &= world_open(&w, 3, 16, 16, dtype, rope);
    const size_t prompt[3] = {70, 17, 33}, one[3] = {1, 1, 1}; /* 70: two key blocks to split */
    EXPECT_STATUS(world_append(&w, prompt), CLATTN_SUCCESS);
    for (int step = 0; step < 3; step++) {
        EXPECT_STATUS(world_append(&w, one), CLATTN_SUCCESS);
        ok &= world_check(&w, one, PLAIN(split && step == 2 ? 3 : 1), "decode");
    }
    world_close(&w);
    return ok;
}
static bool formats(clattn_dtype dtype, bool rope) { return formats_run(dtype, rope, true); }
static bool format_f16(void) { return formats(CLATTN_F16, false); }
static bool format_bf16(void) { return formats(CLATTN_BF16, false); }
static bool format_q8(void) { return formats(CLATTN_Q8, false); }
static bool rope_f32(void) { return formats(CLATTN_F32, true); }
static bool rope_q8(void) { return formats(CLATTN_Q8, true); }
/* For Oclgrind (tests/meson.build): the same without the split. */
static bool format_q8_one_pass(void) { return formats_run(CLATTN_Q8, false, false); }

/* A sliding window with ALiBi, soft-capping and sinks, one pass and split, and cross attention
 * (no causal mask) over an encoder's keys appended once. */
static bool variants(void)
{
    bool ok = true;
    world w;
    ok &= world_open(&w, 2, 16, 12, CLATTN_F32, false);
    const size_t prompt[2] = {70, 45}, one[2] = {1, 1}, three[2] = {3, 3};
    EXPECT_STATUS(world_append(&w, prompt), CLATTN_SUCCESS);
    attend_opts o = {1, false, false, 24, 8.0, true, true};
    ok &= world_check(&w, one, &o, "window, alibi, softcap, sinks");
    o.splits = 3;
    ok &= world_check(&w, three, &o, "the same, split");
    const attend_opts cross = {1, true, false, -1, 0.0, false, false};
    ok &= world_check(&w, three, &cross, "cross");
    world_close(&w);
    return ok;
}

int main(int argc, char **argv)
{
    static const test_case cases[] = {
        CASE(page_size_1),
        CASE(page_size_16),
        CASE(page_size_64),
        CASE(fork_copy_on_write),
        CASE(pool_exhausted),
        CASE(format_f16),
        CASE(format_bf16),
        CASE(format_q8),
        CASE(rope_f32),
        CASE(rope_q8),
        CASE(format_q8_one_pass),
        CASE(variants),
    };
    return run_cases(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
