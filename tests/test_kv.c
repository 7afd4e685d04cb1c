/* The KV cache: a padded prefill then decode steps, each step's attention against the reference
 * over everything appended so far (bottom-right causal, per-sequence lengths), with split-KV off,
 * forced and automatic; fp16 storage; appending past capacity refused with the cache unchanged. */
#include "harness.h"
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The setups every case of this file runs under (see harness.h). */
#define SETUPS "auto auto-gpu"

enum { B = 3, HKV = 2, HQ = 4, D = 32, CAP = 300, PRE = 40 };

/* The host's copy of what the cache should hold: [B, HKV, CAP, D] (as doubles, fp16-rounded for
 * an fp16 cache) and the lengths. */
typedef struct mirror {
    double *k, *v;
    int len[B];
} mirror;

static float round_if(float x, bool f16)
{
    return f16 ? half_to_float(half_from_float(x)) : x;
}

/* Appends T tokens (counts[b] of them to sequence b) to the cache and the mirror. */
static clattn_status append(test_env *e, clattn_kv_cache *c, mirror *m, size_t T,
                            const size_t *counts, bool f16, uint64_t *seed)
{
    const size_t n = (size_t)B * HKV * T * D;
    float *k = malloc(n * sizeof *k), *v = malloc(n * sizeof *v);
    fill_uniform(k, n, seed, -1, 1);
    fill_uniform(v, n, seed, -1, 1);
    const size_t es = f16 ? 2 : 4;
    unsigned char *hk = malloc(n * es), *hv = malloc(n * es);
    for (size_t i = 0; i < n; i++) {
        if (f16) {
            ((uint16_t *)hk)[i] = half_from_float(k[i]);
            ((uint16_t *)hv)[i] = half_from_float(v[i]);
        } else {
            ((float *)hk)[i] = k[i];
            ((float *)hv)[i] = v[i];
        }
    }
    cl_mem bk = buf_new(e, n * es), bv = buf_new(e, n * es);
    buf_write(e, bk, 0, hk, n * es);
    buf_write(e, bv, 0, hv, n * es);
    clattn_tensor K = clattn_tensor_bhtd(bk, 0, B, HKV, T, D), V = clattn_tensor_bhtd(bv, 0, B, HKV, T, D);
    K.dtype = V.dtype = f16 ? CLATTN_F16 : CLATTN_F32;
    clattn_status st = clattn_kv_cache_append(c, e->queue, &K, &V, counts, 0, NULL, NULL);
    if (st == CL_SUCCESS)
        for (size_t b = 0; b < B; b++) {
            size_t cnt = counts ? counts[b] : T;
            for (size_t h = 0; h < HKV; h++)
                for (size_t t = 0; t < cnt; t++)
                    for (size_t d = 0; d < D; d++) {
                        size_t src = ((b * HKV + h) * T + t) * D + d;
                        size_t dst = ((b * HKV + h) * CAP + m->len[b] + t) * D + d;
                        m->k[dst] = round_if(k[src], f16);
                        m->v[dst] = round_if(v[src], f16);
                    }
            m->len[b] += (int)cnt;
        }
    clFinish(e->queue);
    clReleaseMemObject(bk), clReleaseMemObject(bv);
    free(k), free(v), free(hk), free(hv);
    return st;
}

/* Attention of Lq new queries over the cache, against the reference; with `workspace`, the
 * split partial results go to a caller's buffer (at an offset, guards around it untouched)
 * instead of the cache's own scratch. */
static bool attend_in(test_env *e, clattn_kv_cache *c, const mirror *m, size_t Lq, size_t splits,
                      bool workspace, uint64_t *seed, const char *what)
{
    bool ok = true;
    const size_t nq = (size_t)B * HQ * Lq * D;
    view_buf Q = vb_new(e, LAYOUT_BHTD, B, HQ, Lq, D, 2, 3, seed, true);
    view_buf O = vb_new(e, LAYOUT_BHTD, B, HQ, Lq, D, 1, 3, seed, false);
    view_buf L = vb_new(e, LAYOUT_BHTD, B, HQ, Lq, 1, 0, 2, seed, false);
    clattn_kv_attend_params ap = clattn_kv_attend_params_default();
    ap.splits = splits;
    ap.lse = &L.t;
    size_t ws_bytes = 0;
    cl_mem ws = NULL;
    unsigned char *ws_before = NULL;
    if (workspace) {
        EXPECT_STATUS(clattn_kv_cache_workspace_size(c, &Q.t, &O.t, &ap, &ws_bytes), CLATTN_SUCCESS);
        EXPECT(ws_bytes > 0); /* the cache is long enough to split */
        /* Too small, then a misaligned offset: refused before anything runs. */
        ws = buf_new(e, ws_bytes + 64);
        ws_before = malloc(ws_bytes + 64);
        fill_uniform((float *)ws_before, (ws_bytes + 64) / 4, seed, -1, 1);
        buf_write(e, ws, 0, ws_before, ws_bytes + 64);
        ap.workspace = ws;
        ap.workspace_offset = 64 + 4;
        if (ws_bytes > 0)
            EXPECT_STATUS(clattn_kv_cache_attend(c, e->queue, &Q.t, &O.t, &ap, 0, NULL, NULL),
                          CLATTN_ERROR_WORKSPACE_TOO_SMALL);
        ap.workspace_offset = 2;
        if (ws_bytes > 0)
            EXPECT_STATUS(clattn_kv_cache_attend(c, e->queue, &Q.t, &O.t, &ap, 0, NULL, NULL),
                          CLATTN_ERROR_INVALID_ARGUMENT);
        ap.workspace_offset = 32;
    }
    cl_event ev = NULL;
    EXPECT_STATUS(clattn_kv_cache_attend(c, e->queue, &Q.t, &O.t, &ap, 0, NULL, &ev), CLATTN_SUCCESS);
    if (ev) {
        clWaitForEvents(1, &ev);
        clReleaseEvent(ev);
    }
    double *q = vb_dense(&Q, Q.host), *ro = malloc(nq * sizeof *ro), *rl = malloc(B * HQ * Lq * sizeof *rl);
    ref_sdpa(B, HQ, HKV, Lq, CAP, D, D, 1.0 / sqrt((double)D), 2, NULL, m->len, q, m->k, m->v, ro,
             NULL, rl);
    float *all = malloc(O.elems * sizeof *all);
    vb_read_all(e, &O, all);
    double *got = vb_dense(&O, all);
    char name[96];
    snprintf(name, sizeof name, "%s O", what);
    ok &= check_close(name, got, ro, nq, TOL);
    EXPECT(vb_outside_unchanged(&O, O.host, all));
    free(got), free(all);
    all = malloc(L.elems * sizeof *all);
    vb_read_all(e, &L, all);
    got = vb_dense(&L, all);
    snprintf(name, sizeof name, "%s lse", what);
    ok &= check_close(name, got, rl, (size_t)B * HQ * Lq, TOL);
    if (ws) {
        unsigned char *after = malloc(ws_bytes + 64);
        buf_read(e, ws, 0, after, ws_bytes + 64);
        EXPECT(memcmp(after, ws_before, 32) == 0); /* before the offset */
        EXPECT(memcmp(after + 32 + ws_bytes, ws_before + 32 + ws_bytes, 32) == 0);
        free(after), free(ws_before);
        clReleaseMemObject(ws);
    }
    free(got), free(all), free(q), free(ro), free(rl);
    vb_free(&Q), vb_free(&O), vb_free(&L);
    return ok;
}

static bool attend_matches(test_env *e, clattn_kv_cache *c, const mirror *m, size_t Lq,
                           size_t splits, uint64_t *seed, const char *what)
{
    return attend_in(e, c, m, Lq, splits, false, seed, what);
}

static bool decode(bool f16)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    clattn_kv_cache_params cp = clattn_kv_cache_params_default();
    cp.batch = B, cp.num_kv_heads = HKV, cp.head_dim = D, cp.capacity = CAP;
    cp.dtype = f16 ? CLATTN_F16 : CLATTN_F32;
    clattn_kv_cache *c = NULL;
    EXPECT_STATUS(clattn_kv_cache_create(e.cc, &cp, &c), CLATTN_SUCCESS);
    mirror m = {calloc((size_t)B * HKV * CAP * D, sizeof(double)), calloc((size_t)B * HKV * CAP * D, sizeof(double)), {0}};
    uint64_t seed = f16 ? 16 : 32;
    /* Prefill: prompts of unequal lengths, padded to PRE. */
    const size_t counts[B] = {PRE, 17, 29};
    EXPECT_STATUS(append(&e, c, &m, PRE, counts, f16, &seed), CLATTN_SUCCESS);
    for (size_t b = 0; b < B; b++)
        EXPECT(clattn_kv_cache_length(c, b) == counts[b]);
    /* The prompt's last 5 queries over it, then decode steps. */
    ok &= attend_matches(&e, c, &m, 5, 1, &seed, "prefill chunk");
    for (int step = 0; step < 4; step++) {
        EXPECT_STATUS(append(&e, c, &m, 1, NULL, f16, &seed), CLATTN_SUCCESS);
        ok &= attend_matches(&e, c, &m, 1, 1, &seed, "decode, one pass");
        ok &= attend_matches(&e, c, &m, 1, 3, &seed, "decode, 3 splits");
        ok &= attend_matches(&e, c, &m, 1, 0, &seed, "decode, auto splits");
    }
    /* Grow one sequence near the capacity, then ask for one token too many. */
    const size_t big[B] = {CAP - (size_t)m.len[0], 0, 100};
    EXPECT_STATUS(append(&e, c, &m, CAP - (size_t)m.len[0], big, f16, &seed), CLATTN_SUCCESS);
    ok &= attend_matches(&e, c, &m, 1, 7, &seed, "full cache, 7 splits");
    ok &= attend_in(&e, c, &m, 1, 3, true, &seed, "full cache, 3 splits, workspace");
    ok &= attend_matches(&e, c, &m, 1, (size_t)-1, &seed, "more splits than keys");
    EXPECT(clattn_kv_cache_length(c, 0) == CAP);
    int before[B];
    for (size_t b = 0; b < B; b++)
        before[b] = (int)clattn_kv_cache_length(c, b);
    EXPECT_STATUS(append(&e, c, &m, 1, NULL, f16, &seed), CLATTN_ERROR_CACHE_FULL);
    for (size_t b = 0; b < B; b++)
        EXPECT((int)clattn_kv_cache_length(c, b) == before[b]);
    ok &= attend_matches(&e, c, &m, 1, 2, &seed, "after a refused append");
    clattn_kv_cache_destroy(&c);
    EXPECT(c == NULL);
    free(m.k), free(m.v);
    env_close(&e);
    return ok;
}

/* Queries with no rows or no heads are a no-op whatever the cache holds; an output whose rows
 * are not contiguous is refused whether or not the keys are split; a workspace over the output
 * is refused. */
static bool edge_queries(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    clattn_kv_cache_params cp = clattn_kv_cache_params_default();
    cp.batch = 1, cp.num_kv_heads = 1, cp.head_dim = 16, cp.capacity = 4096;
    clattn_kv_cache *c = NULL;
    EXPECT_STATUS(clattn_kv_cache_create(e.cc, &cp, &c), CLATTN_SUCCESS);
    uint64_t seed = 21;
    view_buf K = vb_new(&e, LAYOUT_BHTD, 1, 1, 2048, 16, 0, 0, &seed, true);
    view_buf Q = vb_new(&e, LAYOUT_BHTD, 1, 2, 1, 16, 0, 0, &seed, true);
    view_buf O = vb_new(&e, LAYOUT_BHTD, 1, 2, 1, 32, 0, 1024, &seed, false); /* room after */
    clattn_tensor o_strided = O.t, q_empty = Q.t, o_empty = O.t;
    o_strided.dims[3] = 16;
    o_strided.strides[3] = 2;
    q_empty.dims[2] = o_empty.dims[2] = 0;
    o_empty.dims[3] = 16;
    clattn_kv_attend_params ap = clattn_kv_attend_params_default();
    for (int step = 0; step < 2; step++) { /* 100 cached keys (one pass), then 2148 (split) */
        clattn_tensor k = K.t;
        k.dims[2] = step ? 2048 : 100;
        EXPECT_STATUS(clattn_kv_cache_append(c, e.queue, &k, &k, NULL, 0, NULL, NULL), CLATTN_SUCCESS);
        for (size_t splits = 0; splits <= 4; splits += 4) {
            ap.splits = splits;
            cl_event ev = NULL;
            EXPECT_STATUS(clattn_kv_cache_attend(c, e.queue, &q_empty, &o_empty, &ap, 0, NULL, &ev),
                          CLATTN_SUCCESS);
            EXPECT(ev != NULL);
            if (ev)
                clReleaseEvent(ev);
            size_t bytes = 1;
            EXPECT_STATUS(clattn_kv_cache_workspace_size(c, &q_empty, &o_empty, &ap, &bytes), CLATTN_SUCCESS);
            EXPECT(bytes == 0);
            EXPECT_STATUS(clattn_kv_cache_attend(c, e.queue, &Q.t, &o_strided, &ap, 0, NULL, NULL),
                          CLATTN_ERROR_UNSUPPORTED_LAYOUT);
        }
    }
    ap.splits = 4;
    ap.workspace = O.t.buffer;
    clattn_tensor o = O.t;
    o.dims[3] = 16;
    o.strides[2] = 32; /* rows 32 apart: the workspace could start inside them */
    EXPECT_STATUS(clattn_kv_cache_attend(c, e.queue, &Q.t, &o, &ap, 0, NULL, NULL),
                  CLATTN_ERROR_INVALID_ARGUMENT);
    clFinish(e.queue);
    EXPECT(vb_same(&e, &O));
    clattn_kv_cache_destroy(&c);
    vb_free(&K), vb_free(&Q), vb_free(&O);
    env_close(&e);
    return ok;
}

static bool decode_f32(void) { return decode(false); }
static bool decode_f16(void) { return decode(true); }

int main(int argc, char **argv)
{
    static const test_case cases[] = {
        CASE(decode_f32),
        CASE(decode_f16),
        CASE(edge_queries),
    };
    return run_cases(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
