/* Invalid arguments: each returns its own status, enqueues nothing, leaves the output buffer
 * bit-identical and returns no event. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

/* The setups every case of this file runs under (see harness.h). */
#define SETUPS ""

static test_env E;
static view_buf Q, K, V, O, S, M;
static cl_mem lens;

#define EVENT_SENTINEL ((cl_event)(uintptr_t)0x5eed)

/* Snapshot of every output buffer's bytes; compared after each failing call. */
static float *snap_O, *snap_S;

static void setup(void)
{
    uint64_t seed = 3;
    Q = vb_new(&E, LAYOUT_BHTD, 2, 4, 9, 16, 1, 1, &seed, true);
    K = vb_new(&E, LAYOUT_BHTD, 2, 2, 11, 16, 1, 1, &seed, true);
    V = vb_new(&E, LAYOUT_BHTD, 2, 2, 11, 16, 1, 1, &seed, true);
    O = vb_new(&E, LAYOUT_BHTD, 2, 4, 9, 16, 1, 1, &seed, true);
    S = vb_new(&E, LAYOUT_BHTD, 2, 4, 9, 11, 1, 1, &seed, true);
    M = vb_new(&E, LAYOUT_BHTD, 1, 1, 9, 11, 0, 0, &seed, true);
    int l[2] = {3, 11};
    lens = buf_new(&E, sizeof l);
    buf_write(&E, lens, 0, l, sizeof l);
    snap_O = malloc(O.elems * sizeof(float));
    snap_S = malloc(S.elems * sizeof(float));
    memcpy(snap_O, O.host, O.elems * sizeof(float));
    memcpy(snap_S, S.host, S.elems * sizeof(float));
}

static bool untouched(void)
{
    bool ok = true;
    float *a = malloc(O.elems * sizeof *a), *b = malloc(S.elems * sizeof *b);
    vb_read_all(&E, &O, a);
    vb_read_all(&E, &S, b);
    if (memcmp(a, snap_O, O.elems * sizeof *a) != 0) {
        fprintf(stderr, "O changed\n");
        ok = false;
    }
    if (memcmp(b, snap_S, S.elems * sizeof *b) != 0) {
        fprintf(stderr, "S changed\n");
        ok = false;
    }
    free(a), free(b);
    return ok;
}

/* Runs one sdpa call expected to fail with `want`. */
static bool sdpa_fails(const char *what, const clattn_tensor *q, const clattn_tensor *k,
                       const clattn_tensor *v, const clattn_tensor *o,
                       const clattn_sdpa_params *p, clattn_status want)
{
    bool ok = true;
    cl_event ev = EVENT_SENTINEL;
    clattn_status st = clattn_sdpa(E.cc, E.queue, q, k, v, o, p, 0, NULL, &ev);
    if (st != want) {
        fprintf(stderr, "%s: got %s, expected %s\n", what, clattn_status_name(st), clattn_status_name(want));
        ok = false;
    }
    if (ev != EVENT_SENTINEL) {
        fprintf(stderr, "%s: an event was returned\n", what);
        ok = false;
    }
    ok &= untouched();
    printf("%-40s -> %s%s\n", what, clattn_status_name(st), ok ? "" : "  FAIL");
    return ok;
}

static bool sdpa_invalid_arguments(void)
{
    bool ok = true;
    clattn_sdpa_params p = clattn_sdpa_params_default();
    ok &= sdpa_fails("null Q", NULL, &K.t, &V.t, &O.t, &p, CLATTN_ERROR_INVALID_ARGUMENT);
    ok &= sdpa_fails("null O", &Q.t, &K.t, &V.t, NULL, &p, CLATTN_ERROR_INVALID_ARGUMENT);
    clattn_tensor q = Q.t;
    q.buffer = NULL;
    ok &= sdpa_fails("null buffer", &q, &K.t, &V.t, &O.t, &p, CLATTN_ERROR_INVALID_ARGUMENT);
    clattn_sdpa_params r = p;
    r.reserved[0] = &r;
    ok &= sdpa_fails("reserved field set", &Q.t, &K.t, &V.t, &O.t, &r, CLATTN_ERROR_INVALID_ARGUMENT);
    r = p;
    r.mask.causal = (clattn_causal)7;
    ok &= sdpa_fails("bad causal enum", &Q.t, &K.t, &V.t, &O.t, &r, CLATTN_ERROR_INVALID_ARGUMENT);
    r = p;
    r.path = (clattn_path)9;
    ok &= sdpa_fails("bad path enum", &Q.t, &K.t, &V.t, &O.t, &r, CLATTN_ERROR_INVALID_ARGUMENT);

    cl_event ev = EVENT_SENTINEL;
    EXPECT_STATUS(clattn_sdpa(NULL, E.queue, &Q.t, &K.t, &V.t, &O.t, &p, 0, NULL, &ev),
                  CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT_STATUS(clattn_sdpa(E.cc, NULL, &Q.t, &K.t, &V.t, &O.t, &p, 0, NULL, &ev),
                  CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT_STATUS(clattn_sdpa(E.cc, E.queue, &Q.t, &K.t, &V.t, &O.t, &p, 2, NULL, &ev),
                  CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT(ev == EVENT_SENTINEL);
    EXPECT(untouched());
    return ok;
}

/* The model variants' parameters (windows, soft-capping, ALiBi slopes, sinks): on sdpa (both
 * paths), the KV cache's attention and the layer's forward. */
/* Packed batches (cu_seqlens): offsets that do not start at 0, decrease or miss the total, views
 * of more than one item, what only the unfused path gives, an additive mask, half-given params:
 * all refused before anything is enqueued. The views: one item of Q, K, V, O, 9 rows each. */
static bool varlen_errors(void)
{
    bool ok = true;
    clattn_tensor q1 = Q.t, k1 = K.t, v1 = V.t, o1 = O.t;
    q1.dims[0] = k1.dims[0] = v1.dims[0] = o1.dims[0] = 1;
    k1.dims[2] = v1.dims[2] = 9; /* self attention: as many keys as queries */
    const size_t good[] = {0, 4, 9}, good3[] = {0, 3, 6, 9}, from1[] = {1, 4, 9},
                 down[] = {0, 6, 4, 9}, short_[] = {0, 4, 8}, past[] = {0, 4, 10};
    const clattn_sdpa_params base = clattn_sdpa_params_default();
    clattn_sdpa_params p = base;
    p.cu_seqlens_q = good, p.num_seqs = 2;
    ok &= sdpa_fails("varlen, 2 batch items", &Q.t, &K.t, &V.t, &O.t, &p, CLATTN_ERROR_INVALID_SHAPE);
    const size_t *bad[] = {from1, down, short_, past};
    const size_t nums[] = {2, 3, 2, 2};
    for (int i = 0; i < 4; i++) {
        p = base;
        p.cu_seqlens_q = bad[i], p.num_seqs = nums[i];
        ok &= sdpa_fails("varlen, bad query offsets", &q1, &k1, &v1, &o1, &p,
                         CLATTN_ERROR_INVALID_ARGUMENT);
        p.cu_seqlens_q = nums[i] == 3 ? good3 : good, p.cu_seqlens_k = bad[i];
        ok &= sdpa_fails("varlen, bad key offsets", &q1, &k1, &v1, &o1, &p,
                         CLATTN_ERROR_INVALID_ARGUMENT);
    }
    p = base;
    p.cu_seqlens_k = good, p.num_seqs = 2;
    ok &= sdpa_fails("varlen, key offsets alone", &q1, &k1, &v1, &o1, &p, CLATTN_ERROR_INVALID_ARGUMENT);
    p = base;
    p.num_seqs = 2;
    ok &= sdpa_fails("varlen, a count alone", &q1, &k1, &v1, &o1, &p, CLATTN_ERROR_INVALID_ARGUMENT);
    p = base;
    p.cu_seqlens_q = good, p.num_seqs = 2;
    p.mask.additive = &M.t;
    ok &= sdpa_fails("varlen with an additive mask", &q1, &k1, &v1, &o1, &p,
                     CLATTN_ERROR_INVALID_ARGUMENT);
    p.mask.additive = NULL;
    p.path = CLATTN_PATH_UNFUSED;
    ok &= sdpa_fails("varlen on the unfused path", &q1, &k1, &v1, &o1, &p,
                     CLATTN_ERROR_UNSUPPORTED_PATH);
    p.path = CLATTN_PATH_AUTO;
    clattn_tensor s1 = S.t;
    s1.dims[0] = 1, s1.dims[3] = 9;
    p.probs = &s1;
    ok &= sdpa_fails("varlen with probabilities", &q1, &k1, &v1, &o1, &p,
                     CLATTN_ERROR_UNSUPPORTED_PATH);
    return ok;
}

/* The paged cache: params that make no pool, release and fork on a contiguous cache, sequence
 * indices outside the cache, a fork into a sequence that holds tokens or onto itself; every
 * refusal leaves the pool's free pages and the lengths as they were, and enqueues nothing. */
static bool kv_paged_errors(void)
{
    bool ok = true;
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = 2, kp.num_kv_heads = 2, kp.head_dim = 16, kp.capacity = 8;
    clattn_kv_cache *kv = NULL;
    kp.num_pages = 4; /* pages without a page size */
    EXPECT_STATUS(clattn_kv_cache_create(E.cc, &kp, &kv), CLATTN_ERROR_INVALID_SHAPE);
    kp.num_pages = 0, kp.page_size = 4; /* a page size without pages */
    EXPECT_STATUS(clattn_kv_cache_create(E.cc, &kp, &kv), CLATTN_ERROR_INVALID_SHAPE);
    kp.num_pages = (size_t)1 << 31; /* page numbers past int32 */
    EXPECT_STATUS(clattn_kv_cache_create(E.cc, &kp, &kv), CLATTN_ERROR_INVALID_SHAPE);
    kp.num_pages = (size_t)1 << 30; /* a pool past the device's largest allocation */
    EXPECT_STATUS(clattn_kv_cache_create(E.cc, &kp, &kv), CLATTN_ERROR_ALLOCATION_TOO_LARGE);
    EXPECT(kv == NULL);
    kp.num_pages = 0, kp.page_size = 0; /* contiguous: no release, no fork */
    EXPECT_STATUS(clattn_kv_cache_create(E.cc, &kp, &kv), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_kv_cache_release(kv, 0), CLATTN_ERROR_UNSUPPORTED_PATH);
    EXPECT_STATUS(clattn_kv_cache_fork(kv, 0, 1), CLATTN_ERROR_UNSUPPORTED_PATH);
    EXPECT(clattn_kv_cache_free_pages(kv) == 0);
    clattn_kv_cache_destroy(&kv);
    kp.page_size = 4, kp.num_pages = 3, kp.capacity = 16;
    EXPECT_STATUS(clattn_kv_cache_create(E.cc, &kp, &kv), CLATTN_SUCCESS);
    /* K/V [2, 2, 4, 16] from K.t's buffer: 4 + 1 tokens to sequence 0 take 2 pages */
    clattn_tensor kn = clattn_tensor_bhtd(K.t.buffer, 0, 2, 2, 4, 16);
    const size_t four[2] = {4, 0}, more[2] = {0, 4};
    EXPECT_STATUS(clattn_kv_cache_append(kv, E.queue, &kn, &kn, four, 0, NULL, NULL), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_kv_cache_append(kv, E.queue, &kn, &kn, (size_t[]){1, 0}, 0, NULL, NULL),
                  CLATTN_SUCCESS);
    CL_OK(clFinish(E.queue));
    EXPECT(clattn_kv_cache_free_pages(kv) == 1);
    EXPECT_STATUS(clattn_kv_cache_release(NULL, 0), CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT_STATUS(clattn_kv_cache_release(kv, 2), CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT_STATUS(clattn_kv_cache_fork(NULL, 0, 1), CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT_STATUS(clattn_kv_cache_fork(kv, 0, 2), CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT_STATUS(clattn_kv_cache_fork(kv, 2, 1), CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT_STATUS(clattn_kv_cache_fork(kv, 0, 0), CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT_STATUS(clattn_kv_cache_fork(kv, 1, 0), CLATTN_ERROR_INVALID_ARGUMENT); /* 0 holds 5 */
    /* 4 tokens to sequence 1 need one page: there is one, but with sequence 0's 4 more (its
     * second page has room for 3) the pool runs out */
    cl_event ev = EVENT_SENTINEL;
    EXPECT_STATUS(clattn_kv_cache_append(kv, E.queue, &kn, &kn, (size_t[]){4, 4}, 0, NULL, &ev),
                  CLATTN_ERROR_POOL_EXHAUSTED);
    EXPECT(ev == EVENT_SENTINEL);
    EXPECT(clattn_kv_cache_free_pages(kv) == 1);
    EXPECT(clattn_kv_cache_length(kv, 0) == 5 && clattn_kv_cache_length(kv, 1) == 0);
    EXPECT(clattn_kv_cache_free_pages(NULL) == 0);
    EXPECT_STATUS(clattn_kv_cache_append(kv, E.queue, &kn, &kn, more, 0, NULL, NULL), CLATTN_SUCCESS);
    CL_OK(clFinish(E.queue));
    EXPECT(clattn_kv_cache_free_pages(kv) == 0);
    clattn_kv_cache_destroy(&kv);
    EXPECT(untouched());
    return ok;
}

static bool variant_errors(void)
{
    bool ok = true;
    const clattn_sdpa_params p = clattn_sdpa_params_default();
    float four[4] = {0.5f, 0.25f, 0.125f, 0.0625f};
    cl_mem slopes = buf_new(&E, sizeof four), one = buf_new(&E, sizeof(float));
    buf_write(&E, slopes, 0, four, sizeof four);
    buf_write(&E, one, 0, four, sizeof(float));
    cl_int err;
    cl_mem wo = clCreateBuffer(clattn_context_cl_context(E.cc), CL_MEM_WRITE_ONLY, sizeof four,
                               NULL, &err);
    CL_OK(err);
    cl_context other = clCreateContext(NULL, 1, &E.device, NULL, NULL, &err);
    CL_OK(err);
    cl_mem foreign = clCreateBuffer(other, CL_MEM_READ_WRITE, sizeof four, NULL, &err);
    CL_OK(err);
    for (int path = CLATTN_PATH_UNFUSED; path <= CLATTN_PATH_FUSED; path++) {
        clattn_sdpa_params r = p;
        r.path = (clattn_path)path;
        r.mask.window_left = -2;
        ok &= sdpa_fails("window_left -2", &Q.t, &K.t, &V.t, &O.t, &r, CLATTN_ERROR_INVALID_ARGUMENT);
        r.mask.window_left = 3;
        r.mask.window_right = INT64_MIN;
        ok &= sdpa_fails("window_right INT64_MIN", &Q.t, &K.t, &V.t, &O.t, &r,
                         CLATTN_ERROR_INVALID_ARGUMENT);
        /* a query offset past 2^38 either way (it could close an unbounded window side) */
        r.mask.window_right = CLATTN_WINDOW_UNBOUNDED;
        r.mask.query_offset = ((ptrdiff_t)1 << 38) + 1;
        ok &= sdpa_fails("query_offset 2^38 + 1", &Q.t, &K.t, &V.t, &O.t, &r,
                         CLATTN_ERROR_INVALID_ARGUMENT);
        r.mask.query_offset = -((ptrdiff_t)1 << 38) - 1;
        ok &= sdpa_fails("query_offset -2^38 - 1", &Q.t, &K.t, &V.t, &O.t, &r,
                         CLATTN_ERROR_INVALID_ARGUMENT);
        r.mask.query_offset = 0;
        /* negative, NaN, infinite, a cap whose cap·log2(e) overflows, one whose inverse does */
        const float caps[] = {-1.0f, NAN, INFINITY, -0.0f - 1e-30f, 3e38f, 1e-39f};
        for (int c = 0; c < 6; c++) {
            r = p;
            r.path = (clattn_path)path;
            r.logits.softcap = caps[c];
            ok &= sdpa_fails("bad softcap", &Q.t, &K.t, &V.t, &O.t, &r, CLATTN_ERROR_INVALID_ARGUMENT);
        }
        r = p;
        r.path = (clattn_path)path;
        r.logits.reserved[3] = &r;
        ok &= sdpa_fails("logits reserved", &Q.t, &K.t, &V.t, &O.t, &r, CLATTN_ERROR_INVALID_ARGUMENT);
        r = p;
        r.path = (clattn_path)path;
        r.logits.alibi_slopes = one; /* 4 query heads need 4 slopes */
        ok &= sdpa_fails("ALiBi slopes too short", &Q.t, &K.t, &V.t, &O.t, &r,
                         CLATTN_ERROR_VIEW_OUT_OF_BOUNDS);
        r.logits.alibi_slopes = slopes;
        r.logits.alibi_slopes_offset = 1;
        ok &= sdpa_fails("ALiBi slopes offset past the end", &Q.t, &K.t, &V.t, &O.t, &r,
                         CLATTN_ERROR_VIEW_OUT_OF_BOUNDS);
        r.logits.alibi_slopes_offset = SIZE_MAX;
        ok &= sdpa_fails("ALiBi slopes offset overflows", &Q.t, &K.t, &V.t, &O.t, &r,
                         CLATTN_ERROR_SIZE_OVERFLOW);
        r = p;
        r.path = (clattn_path)path;
        r.logits.sinks = foreign;
        ok &= sdpa_fails("sinks of another context", &Q.t, &K.t, &V.t, &O.t, &r,
                         CLATTN_ERROR_CONTEXT_MISMATCH);
        r.logits.sinks = wo;
        ok &= sdpa_fails("write-only sinks", &Q.t, &K.t, &V.t, &O.t, &r,
                         CLATTN_ERROR_INVALID_ARGUMENT);
    }
    /* The mask step takes the window too. */
    clattn_mask_params mp = clattn_mask_params_default();
    mp.window_right = -7;
    cl_event ev = EVENT_SENTINEL;
    EXPECT_STATUS(clattn_mask(E.cc, E.queue, &S.t, &mp, 0, NULL, &ev), CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT(ev == EVENT_SENTINEL);
    mp = clattn_mask_params_default();
    mp.causal = CLATTN_CAUSAL_TOP_LEFT;
    mp.query_offset = PTRDIFF_MIN;
    EXPECT_STATUS(clattn_mask(E.cc, E.queue, &S.t, &mp, 0, NULL, &ev), CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT(ev == EVENT_SENTINEL);

    /* The KV cache's attention: a bad window, cap or sinks buffer changes nothing. */
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = 2, kp.num_kv_heads = 2, kp.head_dim = 16, kp.capacity = 16;
    kp.dtype = CLATTN_F32;
    clattn_kv_cache *kv = NULL;
    EXPECT_STATUS(clattn_kv_cache_create(E.cc, &kp, &kv), CLATTN_SUCCESS);
    clattn_kv_attend_params ap = clattn_kv_attend_params_default();
    ap.window_left = -9;
    EXPECT_STATUS(clattn_kv_cache_attend(kv, E.queue, &Q.t, &O.t, &ap, 0, NULL, &ev),
                  CLATTN_ERROR_INVALID_ARGUMENT);
    ap = clattn_kv_attend_params_default();
    ap.logits.softcap = NAN;
    EXPECT_STATUS(clattn_kv_cache_attend(kv, E.queue, &Q.t, &O.t, &ap, 0, NULL, &ev),
                  CLATTN_ERROR_INVALID_ARGUMENT);
    ap = clattn_kv_attend_params_default();
    ap.logits.sinks = one;
    EXPECT_STATUS(clattn_kv_cache_attend(kv, E.queue, &Q.t, &O.t, &ap, 0, NULL, &ev),
                  CLATTN_ERROR_VIEW_OUT_OF_BOUNDS);
    EXPECT(ev == EVENT_SENTINEL);
    EXPECT(clattn_kv_cache_length(kv, 0) == 0);
    clattn_kv_cache_destroy(&kv);

    /* bfloat16 is KV-cache storage only: sdpa refuses it; a bfloat16 cache takes bfloat16 or
     * float tokens, not fp16, and K and V of one dtype. */
    clattn_tensor qb = Q.t, kf = K.t, vh = V.t;
    qb.dtype = CLATTN_BF16;
    ok &= sdpa_fails("bfloat16 Q", &qb, &K.t, &V.t, &O.t, &p, CLATTN_ERROR_UNSUPPORTED_DTYPE);
    kp.dtype = CLATTN_BF16;
    EXPECT_STATUS(clattn_kv_cache_create(E.cc, &kp, &kv), CLATTN_SUCCESS);
    kf.dims[2] = vh.dims[2] = 3;
    vh.dtype = CLATTN_F16;
    EXPECT_STATUS(clattn_kv_cache_append(kv, E.queue, &vh, &vh, NULL, 0, NULL, &ev),
                  CLATTN_ERROR_UNSUPPORTED_DTYPE);
    EXPECT_STATUS(clattn_kv_cache_append(kv, E.queue, &kf, &vh, NULL, 0, NULL, &ev),
                  CLATTN_ERROR_UNSUPPORTED_DTYPE);
    clattn_tensor vb = vh; /* each taken alone, but K and V of different dtypes */
    vb.dtype = CLATTN_BF16;
    EXPECT_STATUS(clattn_kv_cache_append(kv, E.queue, &kf, &vb, NULL, 0, NULL, &ev),
                  CLATTN_ERROR_UNSUPPORTED_DTYPE);
    EXPECT(ev == EVENT_SENTINEL);
    EXPECT(clattn_kv_cache_length(kv, 0) == 0);
    clattn_kv_cache_destroy(&kv);

    /* int8 rows are KV-cache storage only, filled by quantizing appends: no view of them is
     * taken, by sdpa or by an append; a q8 cache takes float, fp16 or bfloat16 tokens. */
    clattn_tensor q8 = Q.t, k8 = kf;
    q8.dtype = k8.dtype = CLATTN_Q8;
    ok &= sdpa_fails("int8 Q", &q8, &K.t, &V.t, &O.t, &p, CLATTN_ERROR_UNSUPPORTED_DTYPE);
    ok &= sdpa_fails("int8 K", &Q.t, &q8, &V.t, &O.t, &p, CLATTN_ERROR_UNSUPPORTED_DTYPE);
    kp.dtype = CLATTN_Q8;
    EXPECT_STATUS(clattn_kv_cache_create(E.cc, &kp, &kv), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_kv_cache_append(kv, E.queue, &k8, &k8, NULL, 0, NULL, &ev),
                  CLATTN_ERROR_UNSUPPORTED_DTYPE);
    EXPECT_STATUS(clattn_kv_cache_append(kv, E.queue, &kf, &vb, NULL, 0, NULL, &ev),
                  CLATTN_ERROR_UNSUPPORTED_DTYPE);
    EXPECT(ev == EVENT_SENTINEL);
    EXPECT(clattn_kv_cache_length(kv, 0) == 0);
    clattn_kv_cache_destroy(&kv);

    /* clattn_add_sinks on O: no sinks, an lse of the wrong shape, an lse inside O. */
    uint64_t seed = 5;
    view_buf lse = vb_new(&E, LAYOUT_BHTD, 2, 4, 9, 1, 0, 0, &seed, true);
    clattn_tensor lse_inside = O.t;
    lse_inside.dims[3] = 1;
    clattn_tensor lse_short = lse.t;
    lse_short.dims[2] = 8;
    EXPECT_STATUS(clattn_add_sinks(E.cc, E.queue, &O.t, &lse.t, NULL, 0, 0, NULL, &ev),
                  CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT_STATUS(clattn_add_sinks(E.cc, E.queue, &O.t, &lse_short, slopes, 0, 0, NULL, &ev),
                  CLATTN_ERROR_INVALID_SHAPE);
    EXPECT_STATUS(clattn_add_sinks(E.cc, E.queue, &O.t, &lse_inside, slopes, 0, 0, NULL, &ev),
                  CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT_STATUS(clattn_add_sinks(E.cc, E.queue, &O.t, &lse.t, one, 0, 0, NULL, &ev),
                  CLATTN_ERROR_VIEW_OUT_OF_BOUNDS);
    EXPECT(ev == EVENT_SENTINEL);
    vb_free(&lse);

    EXPECT_STATUS(clattn_alibi_slopes(3, NULL), CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT_STATUS(clattn_alibi_slopes(0, NULL), CLATTN_SUCCESS);
    EXPECT(untouched());
    clReleaseMemObject(slopes), clReleaseMemObject(one), clReleaseMemObject(wo);
    clReleaseMemObject(foreign);
    clReleaseContext(other);
    return ok;
}

/* clattn_rope and a KV cache's RoPE: each bad parameter has its status; S (the output) is
 * unchanged and no event comes back. */
static bool rope_errors(void)
{
    bool ok = true;
    cl_event ev = EVENT_SENTINEL;
    const clattn_rope_params d = clattn_rope_params_default();
    cl_mem small = buf_new(&E, 4 * sizeof(float));
    float zeros[4] = {0};
    buf_write(&E, small, 0, zeros, sizeof zeros);
    struct {
        const char *what;
        clattn_rope_params p;
        clattn_status want;
    } bad[12];
    size_t n = 0;
#define BAD(w, st, ...)                                                                            \
    do {                                                                                           \
        bad[n].what = w, bad[n].p = d, bad[n].want = st;                                           \
        clattn_rope_params *p = &bad[n++].p;                                                       \
        __VA_ARGS__;                                                                               \
    } while (0)
    BAD("layout 7", CLATTN_ERROR_INVALID_ARGUMENT, p->layout = (clattn_rope_layout)7);
    BAD("odd rotary dim", CLATTN_ERROR_INVALID_ARGUMENT, p->rotary_dim = 5);
    BAD("rotary dim past the head dim", CLATTN_ERROR_INVALID_ARGUMENT, p->rotary_dim = 12);
    BAD("theta 0", CLATTN_ERROR_INVALID_ARGUMENT, p->theta = 0.0f);
    BAD("theta NaN", CLATTN_ERROR_INVALID_ARGUMENT, p->theta = NAN);
    BAD("frequency table too short", CLATTN_ERROR_VIEW_OUT_OF_BOUNDS, p->inv_freq = small);
    BAD("positions past the buffer", CLATTN_ERROR_VIEW_OUT_OF_BOUNDS, p->positions = small;
        p->positions_offset = 3);
    BAD("reserved set", CLATTN_ERROR_INVALID_ARGUMENT, p->reserved[2] = p);
#undef BAD
    /* X: Q's first 10 dims; Y: S's (S is the output untouched() watches). */
    clattn_tensor X = Q.t, Y = S.t;
    X.dims[3] = Y.dims[3] = 10;
    X.dims[2] = 9;
    for (size_t i = 0; i < n; i++) {
        ev = EVENT_SENTINEL;
        clattn_status st = clattn_rope(E.cc, E.queue, &X, &Y, &bad[i].p, 0, NULL, &ev);
        printf("%-40s -> %s\n", bad[i].what, clattn_status_name(st));
        EXPECT(st == bad[i].want);
        EXPECT(ev == EVENT_SENTINEL);
    }
    clattn_tensor odd = Q.t, oddY = S.t;
    odd.dims[3] = oddY.dims[3] = 11;
    EXPECT_STATUS(clattn_rope(E.cc, E.queue, &odd, &oddY, NULL, 0, NULL, &ev),
                  CLATTN_ERROR_INVALID_ARGUMENT); /* a head dim of 11 has no whole-dim rotation */
    clattn_tensor shifted = S.t; /* out of place over S itself, one element along */
    shifted.offset += 1;
    shifted.dims[3] = 10;
    EXPECT_STATUS(clattn_rope(E.cc, E.queue, &Y, &shifted, NULL, 0, NULL, &ev),
                  CLATTN_ERROR_INVALID_ARGUMENT);
    clattn_tensor half = Y;
    half.dtype = CLATTN_F16;
    EXPECT_STATUS(clattn_rope(E.cc, E.queue, &X, &half, NULL, 0, NULL, &ev),
                  CLATTN_ERROR_UNSUPPORTED_DTYPE);
    EXPECT(ev == EVENT_SENTINEL);

    /* A cache's RoPE is checked at create; positions there are the cache's own. */
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = 2, kp.num_kv_heads = 2, kp.head_dim = 16, kp.capacity = 8;
    clattn_rope_params rp = d;
    rp.positions = small;
    kp.rope = &rp;
    clattn_kv_cache *kv = NULL;
    EXPECT_STATUS(clattn_kv_cache_create(E.cc, &kp, &kv), CLATTN_ERROR_INVALID_ARGUMENT);
    rp = d;
    rp.rotary_dim = 18;
    EXPECT_STATUS(clattn_kv_cache_create(E.cc, &kp, &kv), CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT(kv == NULL);
    EXPECT(untouched());
    clReleaseMemObject(small);
    return ok;
}

static bool sdpa_invalid_shapes(void)
{
    bool ok = true;
    clattn_sdpa_params p = clattn_sdpa_params_default();
    clattn_tensor k = K.t;
    k.dims[3] = 8; /* head dim differs from Q's */
    ok &= sdpa_fails("K head dim != Q head dim", &Q.t, &k, &V.t, &O.t, &p, CLATTN_ERROR_INVALID_SHAPE);
    clattn_tensor o = O.t;
    o.dims[2] = 8;
    ok &= sdpa_fails("O length != Q length", &Q.t, &K.t, &V.t, &o, &p, CLATTN_ERROR_INVALID_SHAPE);
    clattn_tensor v = V.t;
    v.dims[2] = 10;
    ok &= sdpa_fails("V length != K length", &Q.t, &K.t, &v, &O.t, &p, CLATTN_ERROR_INVALID_SHAPE);
    clattn_tensor q = Q.t;
    q.dims[0] = 1;
    ok &= sdpa_fails("batch differs", &q, &K.t, &V.t, &O.t, &p, CLATTN_ERROR_INVALID_SHAPE);
    clattn_sdpa_params r = p;
    clattn_tensor probs = S.t;
    probs.dims[3] = 10;
    r.probs = &probs;
    ok &= sdpa_fails("probs of the wrong shape", &Q.t, &K.t, &V.t, &O.t, &r, CLATTN_ERROR_INVALID_SHAPE);
    return ok;
}

static bool sdpa_head_mismatch(void)
{
    /* 4 query heads over 3 kv heads: K/V views of 3 heads (same buffers, fewer tokens). */
    clattn_sdpa_params p = clattn_sdpa_params_default();
    clattn_tensor k = clattn_tensor_bhtd(K.t.buffer, 1, 2, 3, 7, 16);
    clattn_tensor v = clattn_tensor_bhtd(V.t.buffer, 1, 2, 3, 7, 16);
    return sdpa_fails("Hq=4 over Hkv=3", &Q.t, &k, &v, &O.t, &p, CLATTN_ERROR_HEAD_MISMATCH);
}

static bool sdpa_out_of_bounds(void)
{
    bool ok = true;
    clattn_sdpa_params p = clattn_sdpa_params_default();
    clattn_tensor o = O.t;
    o.offset += 2; /* one element past the end (pad is 1) */
    ok &= sdpa_fails("O runs past its buffer", &Q.t, &K.t, &V.t, &o, &p, CLATTN_ERROR_VIEW_OUT_OF_BOUNDS);
    clattn_tensor q = Q.t;
    q.strides[0] += 2; /* the last batch item now ends 2 past the view: the pad holds 1 */
    ok &= sdpa_fails("Q strides run past", &q, &K.t, &V.t, &O.t, &p, CLATTN_ERROR_VIEW_OUT_OF_BOUNDS);
    clattn_sdpa_params r = p;
    r.mask.key_lengths = lens;
    r.mask.key_lengths_offset = 1; /* needs 3 ints, the buffer holds 2 */
    ok &= sdpa_fails("key lengths past buffer", &Q.t, &K.t, &V.t, &O.t, &r, CLATTN_ERROR_VIEW_OUT_OF_BOUNDS);
    clattn_tensor big = Q.t;
    big.dims[2] = (size_t)1 << 40;
    big.strides[2] = (size_t)1 << 40;
    ok &= sdpa_fails("size_t overflow", &big, &K.t, &V.t, &O.t, &p, CLATTN_ERROR_SIZE_OVERFLOW);
    return ok;
}

static bool sdpa_other_errors(void)
{
    bool ok = true;
    clattn_sdpa_params p = clattn_sdpa_params_default();
    clattn_tensor q = Q.t;
    q.dtype = CLATTN_F16;
    ok &= sdpa_fails("f16 not yet supported", &q, &K.t, &V.t, &O.t, &p, CLATTN_ERROR_UNSUPPORTED_DTYPE);
    clattn_tensor o = O.t;
    o.strides[2] = 0;
    ok &= sdpa_fails("output with stride 0", &Q.t, &K.t, &V.t, &o, &p, CLATTN_ERROR_INVALID_STRIDE);
    q = Q.t;
    q.dims[2] = 4;
    q.strides[2] = 2 * 16;
    q.strides[3] = 2; /* no unit stride in either matrix dim */
    o = O.t;
    o.dims[2] = 4;
    ok &= sdpa_fails("no unit stride", &q, &K.t, &V.t, &o, &p, CLATTN_ERROR_UNSUPPORTED_LAYOUT);
    clattn_sdpa_params r = p;
    r.path = CLATTN_PATH_FUSED;
    r.probs = &S.t; /* the fused kernel never forms the probabilities */
    ok &= sdpa_fails("probabilities on the fused path", &Q.t, &K.t, &V.t, &O.t, &r, CLATTN_ERROR_UNSUPPORTED_PATH);
    r = p;
    r.path = CLATTN_PATH_FUSED;
    clattn_tensor qs = Q.t, ks = K.t, vs = V.t, os = O.t;
    qs.strides[3] = 2, ks.strides[3] = 2, vs.strides[3] = 2, os.strides[3] = 2; /* not unit */
    qs.dims[3] = ks.dims[3] = vs.dims[3] = os.dims[3] = 8;
    ok &= sdpa_fails("fused path needs unit inner stride", &qs, &ks, &vs, &os, &r, CLATTN_ERROR_UNSUPPORTED_LAYOUT);
    r = p;
    clattn_tensor m = M.t;
    m.dims[2] = 3; /* neither Lq (9) nor 1 */
    m.strides[1] = m.strides[0] = 3 * 11;
    r.mask.additive = &m;
    ok &= sdpa_fails("mask does not broadcast", &Q.t, &K.t, &V.t, &O.t, &r, CLATTN_ERROR_MASK_SHAPE);
    /* Review findings, pinned: a broadcast (stride 0) last dim on the fused path, an output
     * whose elements must overlap, an output the device may not write. */
    r = p;
    r.path = CLATTN_PATH_FUSED;
    q = Q.t;
    q.strides[3] = 0;
    ok &= sdpa_fails("fused path, broadcast head dim", &q, &K.t, &V.t, &O.t, &r, CLATTN_ERROR_UNSUPPORTED_LAYOUT);
    o = O.t;
    o.strides[0] = o.strides[1] = o.strides[2] = 1;
    ok &= sdpa_fails("output elements overlapping", &Q.t, &K.t, &V.t, &o, &p, CLATTN_ERROR_INVALID_STRIDE);
    cl_int err;
    cl_mem ro = clCreateBuffer(E.context, CL_MEM_READ_ONLY, O.elems * sizeof(float), NULL, &err);
    CL_OK(err);
    o = O.t;
    o.buffer = ro;
    ok &= sdpa_fails("read-only output buffer", &Q.t, &K.t, &V.t, &o, &p, CLATTN_ERROR_INVALID_ARGUMENT);
    clReleaseMemObject(ro);
    r = p;
    cl_mem small = buf_new(&E, 64);
    r.workspace = small;
    r.path = CLATTN_PATH_UNFUSED; /* the path that uses it */
    ok &= sdpa_fails("workspace too small", &Q.t, &K.t, &V.t, &O.t, &r, CLATTN_ERROR_WORKSPACE_TOO_SMALL);
    clReleaseMemObject(small);
    /* A workspace over the call's own operands: the scores would overwrite them. */
    r.workspace = Q.t.buffer;
    r.workspace_offset = 0;
    ok &= sdpa_fails("workspace over Q", &Q.t, &K.t, &V.t, &O.t, &r, CLATTN_ERROR_INVALID_ARGUMENT);
    r.workspace = O.t.buffer;
    ok &= sdpa_fails("workspace over O", &Q.t, &K.t, &V.t, &O.t, &r, CLATTN_ERROR_INVALID_ARGUMENT);
    cl_mem wo = clCreateBuffer(E.context, CL_MEM_WRITE_ONLY, 1 << 20, NULL, &err);
    CL_OK(err);
    r.workspace = wo; /* the library reads what it wrote there */
    ok &= sdpa_fails("write-only workspace", &Q.t, &K.t, &V.t, &O.t, &r, CLATTN_ERROR_INVALID_ARGUMENT);
    clReleaseMemObject(wo);
    return ok;
}

static bool sdpa_too_large_for_device(void)
{
    /* Lq = Lk = 65536, one head: the 16 GiB score matrix exceeds any single allocation PoCL or
     * a typical GPU allows; the unfused path must say so instead of failing later. */
    bool ok = true;
    clattn_device_info info;
    CL_OK(clattn_context_device_info(E.cc, &info));
    const size_t T = 65536, D = 16;
    if ((cl_ulong)T * T * 4 <= info.max_mem_alloc_size) {
        printf("device allows a %zu-byte buffer; nothing to check\n", T * T * 4);
        return false; /* not silently passed: this test expects a device with < 16 GiB buffers */
    }
    cl_mem big = buf_new(&E, T * D * 4);
    clattn_tensor t = clattn_tensor_bhtd(big, 0, 1, 1, T, D);
    cl_mem obuf = buf_new(&E, T * D * 4);
    clattn_tensor o = clattn_tensor_bhtd(obuf, 0, 1, 1, T, D);
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.path = CLATTN_PATH_UNFUSED; /* (the fused path needs no such buffer: see the sdpa tests) */
    cl_event ev = EVENT_SENTINEL;
    EXPECT_STATUS(clattn_sdpa(E.cc, E.queue, &t, &t, &t, &o, &p, 0, NULL, &ev),
                  CLATTN_ERROR_ALLOCATION_TOO_LARGE);
    EXPECT(ev == EVENT_SENTINEL);
    size_t need = 0;
    EXPECT_STATUS(clattn_sdpa_workspace_size(E.cc, &t, &t, &t, &o, &p, &need), CLATTN_SUCCESS);
    EXPECT(need == T * T * 4);
    clReleaseMemObject(big);
    clReleaseMemObject(obuf);
    return ok;
}

static bool foreign_objects(void)
{
    /* A buffer and a queue from a second context on the same device. */
    bool ok = true;
    cl_int err;
    cl_context other = clCreateContext(NULL, 1, &E.device, NULL, NULL, &err);
    CL_OK(err);
    cl_command_queue oq = clCreateCommandQueue(other, E.device, 0, &err);
    CL_OK(err);
    cl_mem ob = clCreateBuffer(other, CL_MEM_READ_WRITE, Q.elems * sizeof(float), NULL, &err);
    CL_OK(err);
    clattn_sdpa_params p = clattn_sdpa_params_default();
    clattn_tensor q = Q.t;
    q.buffer = ob;
    ok &= sdpa_fails("buffer of another context", &q, &K.t, &V.t, &O.t, &p, CLATTN_ERROR_CONTEXT_MISMATCH);
    cl_event ev = EVENT_SENTINEL;
    EXPECT_STATUS(clattn_sdpa(E.cc, oq, &Q.t, &K.t, &V.t, &O.t, &p, 0, NULL, &ev),
                  CLATTN_ERROR_CONTEXT_MISMATCH);
    EXPECT(ev == EVENT_SENTINEL);
    EXPECT(untouched());
    clReleaseMemObject(ob);
    clReleaseCommandQueue(oq);
    clReleaseContext(other);
    return ok;
}

static bool step_errors(void)
{
    bool ok = true;
    cl_event ev = EVENT_SENTINEL;
    /* linear: weight of the wrong width, bias of the wrong length. */
    clattn_tensor W = clattn_tensor_bhtd(K.t.buffer, 0, 1, 1, 11, 15);
    clattn_tensor X = clattn_tensor_bhtd(Q.t.buffer, 0, 1, 1, 9, 16);
    clattn_tensor Y = clattn_tensor_bhtd(S.t.buffer, 0, 1, 1, 9, 11);
    EXPECT_STATUS(clattn_linear(E.cc, E.queue, &X, &W, NULL, &Y, 0, NULL, &ev), CLATTN_ERROR_INVALID_SHAPE);
    W.dims[3] = 16;
    clattn_tensor b = clattn_tensor_bhtd(V.t.buffer, 0, 1, 1, 1, 10);
    EXPECT_STATUS(clattn_linear(E.cc, E.queue, &X, &W, &b, &Y, 0, NULL, &ev), CLATTN_ERROR_INVALID_SHAPE);
    /* scores: S of the wrong length; head mismatch. */
    clattn_tensor s = S.t;
    s.dims[3] = 10;
    EXPECT_STATUS(clattn_scores(E.cc, E.queue, &Q.t, &K.t, &s, NAN, 0, NULL, &ev), CLATTN_ERROR_INVALID_SHAPE);
    clattn_tensor k3 = clattn_tensor_bhtd(K.t.buffer, 1, 2, 3, 7, 16);
    clattn_tensor s3 = clattn_tensor_bhtd(S.t.buffer, 1, 2, 4, 9, 7);
    EXPECT_STATUS(clattn_scores(E.cc, E.queue, &Q.t, &k3, &s3, NAN, 0, NULL, &ev), CLATTN_ERROR_HEAD_MISMATCH);
    /* mask: no params; a mask that does not broadcast. */
    EXPECT_STATUS(clattn_mask(E.cc, E.queue, &S.t, NULL, 0, NULL, &ev), CLATTN_ERROR_INVALID_ARGUMENT);
    clattn_mask_params mp = clattn_mask_params_default();
    clattn_tensor m = M.t;
    m.dims[3] = 5;
    mp.additive = &m;
    EXPECT_STATUS(clattn_mask(E.cc, E.queue, &S.t, &mp, 0, NULL, &ev), CLATTN_ERROR_MASK_SHAPE);
    /* softmax: P of another shape; lse with a trailing dim other than 1. */
    clattn_tensor p = S.t;
    p.dims[2] = 8;
    EXPECT_STATUS(clattn_softmax(E.cc, E.queue, &S.t, &p, NULL, 0, NULL, &ev), CLATTN_ERROR_INVALID_SHAPE);
    clattn_tensor lse = clattn_tensor_bhtd(O.t.buffer, 0, 2, 4, 9, 2);
    EXPECT_STATUS(clattn_softmax(E.cc, E.queue, &S.t, &S.t, &lse, 0, NULL, &ev), CLATTN_ERROR_INVALID_SHAPE);
    /* weighted sum: V of the wrong length; O past its buffer. */
    clattn_tensor v = V.t;
    v.dims[2] = 10;
    EXPECT_STATUS(clattn_weighted_sum(E.cc, E.queue, &S.t, &v, &O.t, 0, NULL, &ev), CLATTN_ERROR_INVALID_SHAPE);
    clattn_tensor o = O.t;
    o.offset = 3;
    EXPECT_STATUS(clattn_weighted_sum(E.cc, E.queue, &S.t, &V.t, &o, 0, NULL, &ev), CLATTN_ERROR_VIEW_OUT_OF_BOUNDS);
    EXPECT(ev == EVENT_SENTINEL);
    EXPECT(untouched());
    return ok;
}

static bool mha_errors(void)
{
    bool ok = true;
    /* Weights for E = 16, H = 4: in_proj [48, 16] and out_proj [16, 16] inside the K/V/S buffers. */
    clattn_tensor in = clattn_tensor_bhtd(S.t.buffer, 0, 1, 1, 48, 16);
    clattn_tensor wo = clattn_tensor_bhtd(K.t.buffer, 0, 1, 1, 16, 16);
    clattn_mha_params mp = clattn_mha_params_default();
    mp.embed_dim = 16;
    mp.num_heads = 4;
    mp.bias = 0;
    mp.in_proj_weight = &in;
    mp.out_proj_weight = &wo;
    clattn_mha *m = (clattn_mha *)&mp;
    EXPECT_STATUS(clattn_mha_create(NULL, &mp, &m), CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT(m == NULL);
    clattn_mha_params bad = mp;
    bad.num_heads = 3; /* does not divide 16 */
    EXPECT_STATUS(clattn_mha_create(E.cc, &bad, &m), CLATTN_ERROR_INVALID_SHAPE);
    bad = mp;
    bad.num_kv_heads = 3;
    EXPECT_STATUS(clattn_mha_create(E.cc, &bad, &m), CLATTN_ERROR_HEAD_MISMATCH);
    bad = mp;
    bad.out_proj_weight = NULL;
    EXPECT_STATUS(clattn_mha_create(E.cc, &bad, &m), CLATTN_ERROR_INVALID_ARGUMENT);
    bad = mp;
    clattn_tensor in_short = in;
    in_short.dims[2] = 40;
    bad.in_proj_weight = &in_short;
    EXPECT_STATUS(clattn_mha_create(E.cc, &bad, &m), CLATTN_ERROR_INVALID_SHAPE);
    bad = mp;
    bad.bias = 1; /* but no biases given */
    EXPECT_STATUS(clattn_mha_create(E.cc, &bad, &m), CLATTN_ERROR_INVALID_ARGUMENT);
    bad = mp;
    bad.kdim = 8; /* packed weights need kdim = E, as in PyTorch */
    EXPECT_STATUS(clattn_mha_create(E.cc, &bad, &m), CLATTN_ERROR_INVALID_SHAPE);
    bad = mp;
    bad.weight_dtype = (clattn_dtype)7;
    EXPECT_STATUS(clattn_mha_create(E.cc, &bad, &m), CLATTN_ERROR_INVALID_ARGUMENT);
    bad.weight_dtype = CLATTN_F16; /* the weight views are fp32 */
    EXPECT_STATUS(clattn_mha_create(E.cc, &bad, &m), CLATTN_ERROR_UNSUPPORTED_DTYPE);
    /* Biases in both forms, in neither, or of the wrong size. */
    clattn_tensor b48 = clattn_tensor_bhtd(V.t.buffer, 0, 1, 1, 1, 48);
    clattn_tensor b16 = clattn_tensor_bhtd(V.t.buffer, 0, 1, 1, 1, 16);
    clattn_tensor b12 = clattn_tensor_bhtd(V.t.buffer, 0, 1, 1, 1, 12);
    bad = mp;
    bad.bias = 1;
    bad.in_proj_bias = &b48;
    bad.q_proj_bias = bad.k_proj_bias = bad.v_proj_bias = &b16;
    bad.out_proj_bias = &b16;
    EXPECT_STATUS(clattn_mha_create(E.cc, &bad, &m), CLATTN_ERROR_INVALID_ARGUMENT);
    bad.in_proj_bias = NULL;
    bad.k_proj_bias = &b12;
    EXPECT_STATUS(clattn_mha_create(E.cc, &bad, &m), CLATTN_ERROR_INVALID_SHAPE);
    bad.bias = 0; /* biases given to a layer without */
    bad.k_proj_bias = &b16;
    EXPECT_STATUS(clattn_mha_create(E.cc, &bad, &m), CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT(m == NULL);
    EXPECT_STATUS(clattn_mha_update_weights(NULL, E.queue, 0, NULL, NULL), CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT(clattn_mha_bytes(NULL) == 0);

    EXPECT_STATUS(clattn_mha_create(E.cc, &mp, &m), CLATTN_SUCCESS);
    /* Forward with a query of the wrong width, an output past its buffer, weights of the wrong
     * shape: each fails before anything runs. */
    clattn_tensor x = clattn_tensor_bhtd(Q.t.buffer, 0, 2, 1, 9, 16);
    clattn_tensor out = clattn_tensor_bhtd(O.t.buffer, 1, 2, 1, 9, 16);
    clattn_tensor x_wide = clattn_tensor_bhtd(Q.t.buffer, 0, 2, 1, 9, 12);
    cl_event ev = EVENT_SENTINEL;
    EXPECT_STATUS(clattn_mha_forward(m, E.queue, &x_wide, &x_wide, &x_wide, &out, NULL, 0, NULL, &ev),
                  CLATTN_ERROR_INVALID_SHAPE);
    clattn_tensor out_past = out;
    out_past.offset = O.elems - 9 * 16;
    EXPECT_STATUS(clattn_mha_forward(m, E.queue, &x, &x, &x, &out_past, NULL, 0, NULL, &ev),
                  CLATTN_ERROR_VIEW_OUT_OF_BOUNDS);
    clattn_mha_forward_params fp = clattn_mha_forward_params_default();
    clattn_tensor w = clattn_tensor_bhtd(S.t.buffer, 0, 2, 1, 9, 10);
    fp.weights = &w;
    EXPECT_STATUS(clattn_mha_forward(m, E.queue, &x, &x, &x, &out, &fp, 0, NULL, &ev),
                  CLATTN_ERROR_INVALID_SHAPE);
    EXPECT_STATUS(clattn_mha_forward(m, E.queue, &x, &x, &x, NULL, NULL, 0, NULL, &ev),
                  CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT_STATUS(clattn_mha_forward(NULL, E.queue, &x, &x, &x, &out, NULL, 0, NULL, &ev),
                  CLATTN_ERROR_INVALID_ARGUMENT);
    EXPECT(ev == EVENT_SENTINEL);
    EXPECT(untouched());
    clattn_mha_destroy(&m);
    EXPECT(m == NULL);
    clattn_mha_destroy(NULL);
    return ok;
}

/* A copy of view v in a new CL_MEM_WRITE_ONLY buffer (kernels may write it, not read it). */
static clattn_tensor write_only(const view_buf *v, cl_mem *keep)
{
    cl_int err;
    *keep = clCreateBuffer(E.context, CL_MEM_WRITE_ONLY | CL_MEM_COPY_HOST_PTR, v->elems * sizeof(float),
                           v->host, &err);
    CL_OK(err);
    clattn_tensor t = v->t;
    t.buffer = *keep;
    return t;
}

/* Write-only buffers: refused (INVALID_ARGUMENT, nothing enqueued) wherever the library reads the
 * argument — every input, the key lengths, probabilities, and every output a matrix product
 * writes — and accepted for outputs only kernels write (the fused path's O, softmax's P, a KV
 * cache's attention output). */
static bool write_only_buffers(void)
{
    bool ok = true;
    cl_mem wo[16] = {0};
    int n = 0;
    const clattn_tensor wq = write_only(&Q, &wo[n++]), wk = write_only(&K, &wo[n++]),
                        wv = write_only(&V, &wo[n++]), wm = write_only(&M, &wo[n++]),
                        wO = write_only(&O, &wo[n++]), wS = write_only(&S, &wo[n++]);
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.path = CLATTN_PATH_UNFUSED;
    const clattn_status bad = CLATTN_ERROR_INVALID_ARGUMENT;
    ok &= sdpa_fails("write-only Q", &wq, &K.t, &V.t, &O.t, &p, bad);
    ok &= sdpa_fails("write-only K", &Q.t, &wk, &V.t, &O.t, &p, bad);
    ok &= sdpa_fails("write-only V", &Q.t, &K.t, &wv, &O.t, &p, bad);
    ok &= sdpa_fails("write-only O, unfused (a product's)", &Q.t, &K.t, &V.t, &wO, &p, bad);
    clattn_sdpa_params r = p;
    r.mask.additive = &wm;
    ok &= sdpa_fails("write-only additive mask", &Q.t, &K.t, &V.t, &O.t, &r, bad);
    r = p;
    r.probs = &wS;
    ok &= sdpa_fails("write-only probabilities", &Q.t, &K.t, &V.t, &O.t, &r, bad);
    int l[2] = {3, 11};
    cl_int err;
    cl_mem wl = wo[n++] = clCreateBuffer(E.context, CL_MEM_WRITE_ONLY | CL_MEM_COPY_HOST_PTR, sizeof l, l, &err);
    CL_OK(err);
    r = p;
    r.path = CLATTN_PATH_AUTO;
    r.mask.key_lengths = wl;
    ok &= sdpa_fails("write-only key lengths", &Q.t, &K.t, &V.t, &O.t, &r, bad);

    /* The step operations. */
    cl_event ev = EVENT_SENTINEL;
    EXPECT_STATUS(clattn_scores(E.cc, E.queue, &Q.t, &wk, &S.t, NAN, 0, NULL, &ev), bad);
    EXPECT_STATUS(clattn_scores(E.cc, E.queue, &Q.t, &K.t, &wS, NAN, 0, NULL, &ev), bad);
    clattn_mask_params mp = clattn_mask_params_default();
    mp.causal = CLATTN_CAUSAL_TOP_LEFT;
    EXPECT_STATUS(clattn_mask(E.cc, E.queue, &wS, &mp, 0, NULL, &ev), bad); /* read and written */
    EXPECT_STATUS(clattn_softmax(E.cc, E.queue, &wS, &S.t, NULL, 0, NULL, &ev), bad);
    EXPECT_STATUS(clattn_weighted_sum(E.cc, E.queue, &S.t, &wv, &O.t, 0, NULL, &ev), bad);
    EXPECT_STATUS(clattn_weighted_sum(E.cc, E.queue, &S.t, &V.t, &wO, 0, NULL, &ev), bad);
    clattn_tensor X = clattn_tensor_bhtd(Q.t.buffer, 0, 1, 1, 9, 16), W = clattn_tensor_bhtd(K.t.buffer, 0, 1, 1, 11, 16);
    clattn_tensor Y = clattn_tensor_bhtd(S.t.buffer, 0, 1, 1, 9, 11);
    clattn_tensor wX = X, wW = W, wY = Y;
    wX.buffer = wq.buffer, wW.buffer = wk.buffer, wY.buffer = wS.buffer;
    EXPECT_STATUS(clattn_linear(E.cc, E.queue, &wX, &W, NULL, &Y, 0, NULL, &ev), bad);
    EXPECT_STATUS(clattn_linear(E.cc, E.queue, &X, &wW, NULL, &Y, 0, NULL, &ev), bad);
    EXPECT_STATUS(clattn_linear(E.cc, E.queue, &X, &W, NULL, &wY, 0, NULL, &ev), bad);
    clattn_weights *pw = NULL;
    EXPECT_STATUS(clattn_weights_create(E.cc, E.queue, &wW, 0, NULL, NULL, &pw), bad);
    EXPECT(pw == NULL);
    /* merge reads both parts. */
    clattn_tensor lse = clattn_tensor_bhtd(S.t.buffer, 0, 2, 4, 9, 1);
    EXPECT_STATUS(clattn_merge(E.cc, E.queue, &wO, &lse, &O.t, &lse, &O.t, NULL, 0, NULL, &ev), bad);
    EXPECT(ev == EVENT_SENTINEL);
    EXPECT(untouched());

    /* The layer: its weights at create, its query, its output (a product's), head weights. */
    clattn_tensor in = clattn_tensor_bhtd(S.t.buffer, 0, 1, 1, 48, 16);
    clattn_tensor wo16 = clattn_tensor_bhtd(K.t.buffer, 0, 1, 1, 16, 16), w_in = in;
    w_in.buffer = wS.buffer;
    clattn_mha_params hp = clattn_mha_params_default();
    hp.embed_dim = 16;
    hp.num_heads = 4;
    hp.bias = 0;
    hp.in_proj_weight = &w_in;
    hp.out_proj_weight = &wo16;
    clattn_mha *m = NULL;
    EXPECT_STATUS(clattn_mha_create(E.cc, &hp, &m), bad);
    hp.in_proj_weight = &in;
    EXPECT_STATUS(clattn_mha_create(E.cc, &hp, &m), CLATTN_SUCCESS);
    clattn_tensor x = clattn_tensor_bhtd(Q.t.buffer, 0, 2, 1, 9, 16), wx = x;
    wx.buffer = wq.buffer;
    clattn_tensor out = clattn_tensor_bhtd(O.t.buffer, 1, 2, 1, 9, 16), wout = out;
    wout.buffer = wO.buffer;
    EXPECT_STATUS(clattn_mha_forward(m, E.queue, &wx, &wx, &wx, &out, NULL, 0, NULL, &ev), bad);
    EXPECT_STATUS(clattn_mha_forward(m, E.queue, &x, &x, &x, &wout, NULL, 0, NULL, &ev), bad);
    clattn_mha_forward_params fp = clattn_mha_forward_params_default();
    clattn_tensor hw = clattn_tensor_bhtd(wS.buffer, 0, 2, 4, 9, 9);
    fp.head_weights = &hw;
    EXPECT_STATUS(clattn_mha_forward(m, E.queue, &x, &x, &x, &out, &fp, 0, NULL, &ev), bad);
    clattn_mha_destroy(&m);

    /* A KV cache: what it appends is read. */
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = 2, kp.num_kv_heads = 2, kp.head_dim = 16, kp.capacity = 16;
    clattn_kv_cache *kv = NULL;
    EXPECT_STATUS(clattn_kv_cache_create(E.cc, &kp, &kv), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_kv_cache_append(kv, E.queue, &wk, &V.t, NULL, 0, NULL, &ev), bad);
    EXPECT_STATUS(clattn_kv_cache_attend(kv, E.queue, &wq, &O.t, NULL, 0, NULL, &ev), bad);
    EXPECT(clattn_kv_cache_length(kv, 0) == 0 && clattn_kv_cache_length(kv, 1) == 0);
    EXPECT(ev == EVENT_SENTINEL);
    EXPECT(untouched());

    /* Outputs only kernels write may be write-only: the right values land there. */
    p.path = CLATTN_PATH_FUSED;
    EXPECT_STATUS(clattn_sdpa(E.cc, E.queue, &Q.t, &K.t, &V.t, &wO, &p, 0, NULL, NULL), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_sdpa(E.cc, E.queue, &Q.t, &K.t, &V.t, &O.t, &p, 0, NULL, NULL), CLATTN_SUCCESS);
    float *a = malloc(O.elems * sizeof *a), *b = malloc(O.elems * sizeof *b);
    buf_read(&E, wO.buffer, 0, a, O.elems * sizeof *a);
    vb_read_all(&E, &O, b);
    EXPECT(memcmp(a, b, O.elems * sizeof *a) == 0);
    buf_write(&E, O.t.buffer, 0, snap_O, O.elems * sizeof(float)); /* for the other cases */
    EXPECT_STATUS(clattn_kv_cache_append(kv, E.queue, &K.t, &V.t, NULL, 0, NULL, NULL), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_kv_cache_attend(kv, E.queue, &Q.t, &wO, NULL, 0, NULL, NULL), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_softmax(E.cc, E.queue, &S.t, &wS, NULL, 0, NULL, NULL), CLATTN_SUCCESS);
    CL_OK(clFinish(E.queue));
    clattn_kv_cache_destroy(&kv);
    free(a), free(b);
    for (int i = 0; i < n; i++)
        clReleaseMemObject(wo[i]);
    return ok;
}

int main(int argc, char **argv)
{
    static const test_case cases[] = {
        CASE(sdpa_invalid_arguments),
        CASE(sdpa_invalid_shapes),
        CASE(variant_errors),
        CASE(varlen_errors),
        CASE(kv_paged_errors),
        CASE(rope_errors),
        CASE(sdpa_head_mismatch),
        CASE(sdpa_out_of_bounds),
        CASE(sdpa_other_errors),
        CASE(sdpa_too_large_for_device),
        CASE(foreign_objects),
        CASE(step_errors),
        CASE(mha_errors),
        CASE(write_only_buffers),
    };
    env_open(&E, false);
    setup();
    int rc = run_cases(argc, argv, cases, sizeof cases / sizeof cases[0]);
    vb_free(&Q), vb_free(&K), vb_free(&V), vb_free(&O), vb_free(&S), vb_free(&M);
    clReleaseMemObject(lens);
    free(snap_O), free(snap_S);
    env_close(&E);
    return rc;
}
