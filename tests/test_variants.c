/* The attention of today's models against the double-precision reference (ref_sdpa_variant,
 * which writes every rule out on its own): sliding windows in both alignments with the kept
 * first keys, ALiBi, logit soft-capping and attention sinks, alone and as the models combine
 * them, through clattn_sdpa (both fused variants and the unfused path) and the KV cache (one
 * pass and split keys). The layer's forward passes the same params to the attention. */
#include "harness.h"
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SETUPS "unfused fused fused-gpu"

typedef struct var_case {
    size_t B, Hq, Hkv, Lq, Lk, D;
    int causal;     /* 0 none, 1 top-left, 2 bottom-right */
    bool lengths;   /* per-batch key lengths (one 0) */
    bool mask;      /* a full additive mask with some -inf */
    long wl, wr;    /* window sides, -1 unbounded */
    size_t keep;    /* kept first keys */
    float softcap;  /* 0 off */
    bool alibi, sinks, lse;
    float qmul; /* 0 or 1: Q as drawn; else Q times this (scores large enough for a cap to bite) */
    long qoff;  /* the mask's query_offset */
} var_case;

static var_case base(size_t Lq, size_t Lk)
{
    var_case c = {2, 4, 2, Lq, Lk, 32, 0, false, false, -1, -1, 0, 0.0f, false, false, true, 0.0f,
                  0};
    return c;
}

/* A float vector on the device `off` elements into a buffer of decoys (a kernel that ignored
 * the offset would read them). */
static cl_mem vector_buf(test_env *e, const float *x, size_t n, size_t off)
{
    float *all = malloc((n + off) * sizeof *all);
    for (size_t i = 0; i < off; i++)
        all[i] = 1000.0f;
    memcpy(all + off, x, n * sizeof *x);
    cl_mem b = buf_new(e, (n + off) * sizeof *all);
    buf_write(e, b, 0, all, (n + off) * sizeof *all);
    free(all);
    return b;
}

typedef struct var_inputs {
    view_buf Q, K, V, M;
    double *q, *k, *v, *mask;
    int lens[8];
    cl_mem len_buf, slope_buf, sink_buf;
    double slopes[64], sinks[64];
    ref_variant rv;
    clattn_mask_params mp;
    clattn_logit_params lp;
} var_inputs;

static void inputs_new(test_env *e, const var_case *c, var_inputs *in)
{
    memset(in, 0, sizeof *in);
    uint64_t seed = 77 + c->Lq * 3 + c->Lk * 5 + (size_t)c->wl;
    in->Q = vb_new(e, LAYOUT_BHTD, c->B, c->Hq, c->Lq, c->D, 3, 11, &seed, true);
    if (c->qmul != 0.0f && c->qmul != 1.0f) {
        for (size_t i = 0; i < in->Q.elems; i++)
            in->Q.host[i] *= c->qmul;
        buf_write(e, in->Q.t.buffer, 0, in->Q.host, in->Q.elems * sizeof(float));
    }
    in->K = vb_new(e, LAYOUT_BHTD, c->B, c->Hkv, c->Lk, c->D, 3, 11, &seed, true);
    in->V = vb_new(e, LAYOUT_BHTD, c->B, c->Hkv, c->Lk, c->D, 3, 11, &seed, true);
    in->q = vb_dense(&in->Q, in->Q.host);
    in->k = vb_dense(&in->K, in->K.host);
    in->v = vb_dense(&in->V, in->V.host);
    in->rv = ref_variant_none();
    in->mp = clattn_mask_params_default();
    in->lp = clattn_logit_params_default();
    in->mp.causal = (clattn_causal)c->causal;
    in->mp.window_left = c->wl;
    in->mp.window_right = c->wr;
    in->mp.window_keep_first = c->keep;
    in->mp.query_offset = c->qoff;
    in->rv.query_offset = c->qoff;
    in->rv.window_left = c->wl;
    in->rv.window_right = c->wr;
    in->rv.keep_first = c->keep;
    in->lp.softcap = c->softcap;
    in->rv.softcap = c->softcap;
    if (c->mask) {
        in->M = vb_new(e, LAYOUT_BHTD, c->B, c->Hq, c->Lq, c->Lk, 0, 5, &seed, true);
        for (size_t i = 0; i < in->M.elems; i += 7)
            in->M.host[i] = -INFINITY;
        buf_write(e, in->M.t.buffer, 0, in->M.host, in->M.elems * sizeof(float));
        in->mask = vb_dense(&in->M, in->M.host);
        in->mp.additive = &in->M.t;
    }
    if (c->lengths) {
        for (size_t b = 0; b < c->B; b++)
            in->lens[b] = (int)(c->Lk - b * (c->Lk / (c->B + 1)));
        in->lens[c->B - 1] = 0; /* every key hidden */
        in->len_buf = buf_new(e, sizeof in->lens);
        buf_write(e, in->len_buf, 0, in->lens, sizeof in->lens);
        in->mp.key_lengths = in->len_buf;
    }
    float f[64];
    if (c->alibi) {
        if (clattn_alibi_slopes(c->Hq, f) != CLATTN_SUCCESS) {
            fprintf(stderr, "clattn_alibi_slopes failed\n");
            exit(2);
        }
        ref_alibi_slopes(c->Hq, in->slopes);
        /* The reference computes the slopes itself; the device gets the library's. */
        in->slope_buf = vector_buf(e, f, c->Hq, 1);
        in->lp.alibi_slopes = in->slope_buf;
        in->lp.alibi_slopes_offset = 1;
        in->rv.alibi = in->slopes;
    }
    if (c->sinks) {
        fill_uniform(f, c->Hq, &seed, -1.0f, 3.0f);
        for (size_t h = 0; h < c->Hq; h++)
            in->sinks[h] = f[h];
        in->sink_buf = vector_buf(e, f, c->Hq, 2);
        in->lp.sinks = in->sink_buf;
        in->lp.sinks_offset = 2;
        in->rv.sinks = in->sinks;
    }
}

static void inputs_free(var_inputs *in)
{
    free(in->q), free(in->k), free(in->v), free(in->mask);
    cl_mem b[] = {in->len_buf, in->slope_buf, in->sink_buf};
    for (int i = 0; i < 3; i++)
        if (b[i])
            clReleaseMemObject(b[i]);
    vb_free(&in->Q), vb_free(&in->K), vb_free(&in->V), vb_free(&in->M);
}

/* Reads view O (and lse) back and checks them against the reference. */
static bool compare(test_env *e, const var_case *c, const var_inputs *in, const view_buf *O,
                    const view_buf *L)
{
    bool ok = true;
    const size_t no = c->B * c->Hq * c->Lq * c->D, nl = c->B * c->Hq * c->Lq;
    double *ro = malloc(no * sizeof *ro), *rl = malloc(nl * sizeof *rl);
    ref_sdpa_variant(c->B, c->Hq, c->Hkv, c->Lq, c->Lk, c->D, c->D, 1.0 / sqrt((double)c->D),
                     c->causal, in->mask, c->lengths ? in->lens : NULL, &in->rv, in->q, in->k,
                     in->v, ro, NULL, rl);
    float *all = malloc(O->elems * sizeof *all);
    vb_read_all(e, O, all);
    double *got = vb_dense(O, all);
    ok &= check_close("O", got, ro, no, TOL);
    EXPECT(vb_outside_unchanged(O, O->host, all));
    free(got), free(all);
    if (L) {
        all = malloc(L->elems * sizeof *all);
        vb_read_all(e, L, all);
        got = vb_dense(L, all);
        ok &= check_close("lse", got, rl, nl, TOL);
        free(got), free(all);
    }
    free(ro), free(rl);
    return ok;
}

/* clattn_sdpa on the setup's path. */
static bool run_sdpa(const var_case *c)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    var_inputs in;
    inputs_new(&e, c, &in);
    uint64_t seed = 5;
    view_buf O = vb_new(&e, LAYOUT_BHTD, c->B, c->Hq, c->Lq, c->D, 3, 11, &seed, false);
    view_buf L = vb_new(&e, LAYOUT_BHTD, c->B, c->Hq, c->Lq, 1, 3, 11, &seed, false);
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.mask = in.mp;
    p.logits = in.lp;
    p.path = test_path();
    p.lse = c->lse ? &L.t : NULL;
    cl_event done = NULL;
    EXPECT_STATUS(clattn_sdpa(e.cc, e.queue, &in.Q.t, &in.K.t, &in.V.t, &O.t, &p, 0, NULL, &done),
                  CLATTN_SUCCESS);
    if (done) {
        CL_OK(clWaitForEvents(1, &done));
        clReleaseEvent(done);
    }
    ok &= compare(&e, c, &in, &O, c->lse ? &L : NULL);
    vb_free(&O), vb_free(&L);
    inputs_free(&in);
    env_close(&e);
    return ok;
}

/* The same attention through a KV cache: the keys appended in two steps (prompt, then the rest),
 * the queries attending bottom-right (c->causal 2) or with no causal mask (c->causal 0: the
 * cache's cross attention), in one pass (splits 1) or split over `splits`. */
static bool run_kv(const var_case *c, size_t splits)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    var_inputs in;
    inputs_new(&e, c, &in);
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = c->B;
    kp.num_kv_heads = c->Hkv;
    kp.head_dim = c->D;
    kp.capacity = c->Lk + 3;
    kp.dtype = CLATTN_F32;
    clattn_kv_cache *kv = NULL;
    EXPECT_STATUS(clattn_kv_cache_create(e.cc, &kp, &kv), CLATTN_SUCCESS);
    const size_t first = c->Lk / 3;
    clattn_tensor k1 = in.K.t, v1 = in.V.t, k2 = in.K.t, v2 = in.V.t;
    k1.dims[2] = v1.dims[2] = first;
    k2.dims[2] = v2.dims[2] = c->Lk - first;
    k2.offset += first * k2.strides[2];
    v2.offset += first * v2.strides[2];
    EXPECT_STATUS(clattn_kv_cache_append(kv, e.queue, &k1, &v1, NULL, 0, NULL, NULL),
                  CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_kv_cache_append(kv, e.queue, &k2, &v2, NULL, 0, NULL, NULL),
                  CLATTN_SUCCESS);
    uint64_t seed = 6;
    view_buf O = vb_new(&e, LAYOUT_BHTD, c->B, c->Hq, c->Lq, c->D, 3, 11, &seed, false);
    view_buf L = vb_new(&e, LAYOUT_BHTD, c->B, c->Hq, c->Lq, 1, 3, 11, &seed, false);
    clattn_kv_attend_params ap = clattn_kv_attend_params_default();
    ap.splits = splits;
    ap.window_left = c->wl;
    ap.window_keep_first = c->keep;
    ap.logits = in.lp;
    ap.cross = c->causal == 0;
    ap.lse = &L.t;
    size_t scratch = 0; /* partial results exist only when the keys really split */
    EXPECT_STATUS(clattn_kv_cache_workspace_size(kv, &in.Q.t, &O.t, &ap, &scratch), CLATTN_SUCCESS);
    EXPECT((scratch > 0) == (splits > 1));
    EXPECT_STATUS(clattn_kv_cache_attend(kv, e.queue, &in.Q.t, &O.t, &ap, 0, NULL, NULL),
                  CLATTN_SUCCESS);
    CL_OK(clFinish(e.queue));
    var_case rc = *c;
    rc.causal = c->causal == 0 ? 0 : 2; /* what the cache does: cross, or bottom-right causal */
    ok &= compare(&e, &rc, &in, &O, &L);
    clattn_kv_cache_destroy(&kv);
    vb_free(&O), vb_free(&L);
    inputs_free(&in);
    env_close(&e);
    return ok;
}

#define VAR_CASE(fname, ...)                                                                       \
    static bool fname(void)                                                                        \
    {                                                                                              \
        var_case c = base(37, 37);                                                                 \
        __VA_ARGS__;                                                                               \
        return run_sdpa(&c);                                                                       \
    }

/* Windows: Mistral's (causal, left only), symmetric (non-causal, both sides), in both causal
 * alignments with key lengths, a window wider than the keys, and window 0 (each query sees
 * only its own position). Lengths straddle the fused kernel's key blocks. */
VAR_CASE(window_causal, c.Lq = c.Lk = 150; c.causal = 1; c.wl = 40)
VAR_CASE(window_symmetric, c.Lq = c.Lk = 90; c.wl = 7; c.wr = 5)
VAR_CASE(window_right_only, c.Lq = 20; c.Lk = 81; c.wr = 3; c.lengths = true)
VAR_CASE(window_bottom_right_lengths, c.Lq = 9; c.Lk = 140; c.causal = 2; c.wl = 33;
         c.lengths = true)
VAR_CASE(window_top_left_lengths, c.Lq = 70; c.Lk = 100; c.causal = 1; c.wl = 17;
         c.lengths = true; c.mask = true)
VAR_CASE(window_wider_than_keys, c.causal = 1; c.wl = 1000; c.wr = 1000)
VAR_CASE(window_zero, c.Lq = c.Lk = 19; c.causal = 1; c.wl = 0)
/* StreamingLLM: the first 4 keys stay visible past the window; and kept keys beyond a block. */
VAR_CASE(window_keep_first, c.Lq = c.Lk = 160; c.causal = 1; c.wl = 30; c.keep = 4)
VAR_CASE(window_keep_first_many, c.Lq = 10; c.Lk = 200; c.causal = 2; c.wl = 20; c.keep = 70)
/* ALiBi: causal (BLOOM), bidirectional, and a head count that is not a power of two. */
VAR_CASE(alibi_causal, c.causal = 1; c.alibi = true)
VAR_CASE(alibi_bidirectional, c.Lq = 12; c.Lk = 50; c.alibi = true; c.lengths = true)
VAR_CASE(alibi_six_heads, c.Hq = 6; c.Hkv = 3; c.causal = 2; c.Lq = 5; c.alibi = true)
/* Soft-capping (Gemma 2: 50 on the logits; a small cap that bites at these score sizes). */
VAR_CASE(softcap_small, c.softcap = 0.5f; c.causal = 1)
VAR_CASE(softcap_with_mask, c.softcap = 2.0f; c.mask = true; c.lengths = true)
/* A cap so large that capping barely changes a score: the exact tanh keeps it (the fast form's
 * absolute error times this cap would be 1e-2 in the logits). */
VAR_CASE(softcap_huge, c.softcap = 1e5f; c.causal = 1; c.Lq = c.Lk = 70)
/* Scores of some hundreds: a cap of 200 (the exact tanh) meets |s / cap| on both sides of 1/4,
 * where it changes formula; a cap of 128, the largest the fast form takes, at its error bound. */
VAR_CASE(softcap_exact_both_forms, c.softcap = 200.0f; c.qmul = 300.0f; c.causal = 1)
VAR_CASE(softcap_fast_at_its_limit, c.softcap = 128.0f; c.qmul = 300.0f; c.causal = 1)
/* Sinks (gpt-oss): a row that sees no key stays 0, lse excludes the sink. */
VAR_CASE(sinks_causal, c.sinks = true; c.causal = 1; c.lengths = true)
/* What models combine: Gemma 2 (soft-cap + window + sinks-like), gpt-oss (window + sinks, GQA),
 * BLOOM (ALiBi + causal + padding), everything at once. */
VAR_CASE(softcap_window_sinks, c.Lq = c.Lk = 130; c.causal = 1; c.wl = 25; c.softcap = 1.0f;
         c.sinks = true)
VAR_CASE(window_sinks_gqa, c.Hq = 8; c.Hkv = 2; c.Lq = 3; c.Lk = 150; c.causal = 2; c.wl = 64;
         c.sinks = true; c.lengths = true)
VAR_CASE(alibi_causal_lengths, c.causal = 1; c.Lq = c.Lk = 70; c.alibi = true; c.lengths = true)
VAR_CASE(everything, c.Lq = 33; c.Lk = 120; c.causal = 2; c.wl = 30; c.wr = 2; c.keep = 3;
         c.softcap = 1.5f; c.alibi = true; c.sinks = true; c.mask = true; c.lengths = true)
/* Query offsets (a block of a longer sequence, as ring attention computes it): queries ahead of
 * the keys (every key visible to the late rows), behind them (early rows see nothing), in both
 * alignments, with the window, ALiBi, key lengths and sinks measuring from the moved positions. */
VAR_CASE(offset_ahead_causal, c.Lq = 40; c.Lk = 90; c.causal = 1; c.qoff = 64)
VAR_CASE(offset_behind_causal, c.Lq = c.Lk = 100; c.causal = 1; c.qoff = -30; c.lengths = true)
VAR_CASE(offset_bottom_right, c.Lq = 20; c.Lk = 130; c.causal = 2; c.qoff = -50; c.wl = 40)
VAR_CASE(offset_window_alibi_sinks, c.Lq = 70; c.Lk = 70; c.causal = 1; c.qoff = 45; c.wl = 50;
         c.keep = 2; c.alibi = true; c.sinks = true)
VAR_CASE(offset_no_causal_window, c.Lq = 33; c.Lk = 80; c.qoff = 17; c.wl = 9; c.wr = 4;
         c.alibi = true)
VAR_CASE(offset_hides_all, c.Lq = 16; c.Lk = 50; c.causal = 1; c.qoff = -60)
/* Odd head dims with the variants. */
VAR_CASE(variants_odd_head_dim, c.D = 7; c.causal = 1; c.wl = 5; c.alibi = true; c.sinks = true)

/* The KV cache: decoding (Lq = 1) and a chunk of queries, in one pass and with split keys (the
 * sinks are added once, after the merge). */
static bool kv_window_sinks_split(void)
{
    var_case c = base(1, 300);
    c.causal = 2;
    c.Hq = 8;
    c.Hkv = 2;
    c.wl = 100;
    c.keep = 4;
    c.sinks = true;
    return run_kv(&c, 1) && run_kv(&c, 4);
}
static bool kv_alibi_softcap_chunk(void)
{
    var_case c = base(6, 150);
    c.causal = 2;
    c.alibi = true;
    c.softcap = 1.0f;
    return run_kv(&c, 1) && run_kv(&c, 3);
}
static bool kv_sinks_split(void)
{
    var_case c = base(2, 260);
    c.causal = 2;
    c.sinks = true;
    return run_kv(&c, 1) && run_kv(&c, 5);
}
/* Cross attention over a cache written once (an encoder's K/V): decoder queries, no causal
 * mask, one pass and split. */
static bool kv_cross_attention(void)
{
    var_case c = base(3, 140);
    c.causal = 0;
    c.sinks = true;
    return run_kv(&c, 1) && run_kv(&c, 3);
}

/* Cross attention with most queries far from the newest key (where a causal mask would hide
 * much), a window measured from the queries' positions, and ALiBi. */
static bool kv_cross_window_alibi(void)
{
    var_case c = base(30, 40);
    c.causal = 0;
    c.wl = 10;
    c.alibi = true;
    return run_kv(&c, 1);
}

static bool kv_odd_head_dims(void)
{
    static const size_t Ds[] = {1, 3, 63, 257, 320};
    bool ok = true;
    for (size_t i = 0; i < sizeof Ds / sizeof Ds[0]; i++) {
        var_case c = base(2, 150); /* three key blocks: the split run splits */
        c.causal = 2;
        c.D = Ds[i];
        printf("-- head_dim %zu\n", Ds[i]);
        ok &= run_kv(&c, 1) && run_kv(&c, 2);
    }
    return ok;
}

/* Your own split over keys: each half attended without sinks (with its lse), clattn_merge, then
 * clattn_add_sinks once, against the reference with sinks over all keys. */
static bool split_merge_add_sinks(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    var_case c = base(7, 90);
    c.sinks = true;
    var_inputs in;
    inputs_new(&e, &c, &in);
    uint64_t seed = 8;
    view_buf O1 = vb_new(&e, LAYOUT_BHTD, c.B, c.Hq, c.Lq, c.D, 0, 0, &seed, false);
    view_buf O2 = vb_new(&e, LAYOUT_BHTD, c.B, c.Hq, c.Lq, c.D, 0, 0, &seed, false);
    view_buf L1 = vb_new(&e, LAYOUT_BHTD, c.B, c.Hq, c.Lq, 1, 0, 0, &seed, false);
    view_buf L2 = vb_new(&e, LAYOUT_BHTD, c.B, c.Hq, c.Lq, 1, 0, 0, &seed, false);
    view_buf O = vb_new(&e, LAYOUT_BHTD, c.B, c.Hq, c.Lq, c.D, 3, 11, &seed, false);
    view_buf L = vb_new(&e, LAYOUT_BHTD, c.B, c.Hq, c.Lq, 1, 3, 11, &seed, false);
    const size_t half = 41;
    clattn_tensor K1 = in.K.t, V1 = in.V.t, K2 = in.K.t, V2 = in.V.t;
    K1.dims[2] = V1.dims[2] = half;
    K2.dims[2] = V2.dims[2] = c.Lk - half;
    K2.offset += half * K2.strides[2];
    V2.offset += half * V2.strides[2];
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.path = test_path();
    p.lse = &L1.t;
    EXPECT_STATUS(clattn_sdpa(e.cc, e.queue, &in.Q.t, &K1, &V1, &O1.t, &p, 0, NULL, NULL),
                  CLATTN_SUCCESS);
    p.lse = &L2.t;
    EXPECT_STATUS(clattn_sdpa(e.cc, e.queue, &in.Q.t, &K2, &V2, &O2.t, &p, 0, NULL, NULL),
                  CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_merge(e.cc, e.queue, &O1.t, &L1.t, &O2.t, &L2.t, &O.t, &L.t, 0, NULL,
                               NULL),
                  CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_add_sinks(e.cc, e.queue, &O.t, &L.t, in.lp.sinks, in.lp.sinks_offset, 0,
                                   NULL, NULL),
                  CLATTN_SUCCESS);
    CL_OK(clFinish(e.queue));
    ok &= compare(&e, &c, &in, &O, &L);
    vb_free(&O1), vb_free(&O2), vb_free(&L1), vb_free(&L2), vb_free(&O), vb_free(&L);
    inputs_free(&in);
    env_close(&e);
    return ok;
}

int main(int argc, char **argv)
{
    static const test_case cases[] = {
        CASE(window_causal),
        CASE(window_symmetric),
        CASE(window_right_only),
        CASE(window_bottom_right_lengths),
        CASE(window_top_left_lengths),
        CASE(window_wider_than_keys),
        CASE(window_zero),
        CASE(window_keep_first),
        CASE(window_keep_first_many),
        CASE(alibi_causal),
        CASE(alibi_bidirectional),
        CASE(alibi_six_heads),
        CASE(softcap_small),
        CASE(softcap_with_mask),
        CASE(softcap_huge),
        CASE(softcap_exact_both_forms),
        CASE(softcap_fast_at_its_limit),
        CASE(sinks_causal),
        CASE(softcap_window_sinks),
        CASE(window_sinks_gqa),
        CASE(alibi_causal_lengths),
        CASE(everything),
        CASE(variants_odd_head_dim),
        CASE(offset_ahead_causal),
        CASE(offset_behind_causal),
        CASE(offset_bottom_right),
        CASE(offset_window_alibi_sinks),
        CASE(offset_no_causal_window),
        CASE(offset_hides_all),
        CASE(split_merge_add_sinks),
        CASE_IN(kv_window_sinks_split, "fused fused-gpu"),
        CASE_IN(kv_alibi_softcap_chunk, "fused fused-gpu"),
        CASE_IN(kv_sinks_split, "fused fused-gpu"),
        CASE_IN(kv_odd_head_dims, "fused fused-gpu"),
        CASE_IN(kv_cross_attention, "fused fused-gpu"),
        CASE_IN(kv_cross_window_alibi, "fused fused-gpu"),
    };
    return run_cases(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
