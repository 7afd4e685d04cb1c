/* clattn_sdpa against the double-precision reference, over the shapes and options that find bugs:
 * odd lengths, Lq != Lk with both causal alignments, many head dims, padded batches, GQA, packed
 * and head-major views at non-zero offsets, out-of-order queues, and both context paths. */
#include "harness.h"
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The setups every case of this file runs under (see harness.h). */
#define SETUPS "unfused fused fused-gpu unfused-clblast"

typedef struct sdpa_case {
    size_t B, Hq, Hkv, Lq, Lk, D, Dv;
    int causal;          /* 0 none, 1 top-left, 2 bottom-right */
    int mask;            /* 0 none, 1 full [B,H,Lq,Lk], 2 broadcast [1,1,Lq,Lk], 3 [B,1,1,Lk] */
    bool lengths;        /* per-batch valid key lengths (one 0, one beyond Lk) */
    layout lay;          /* of Q, K, V and O */
    size_t offset;       /* elements before every view */
    bool probs, lse;     /* ask for the optional outputs */
    bool ooo;            /* out-of-order queue */
    bool default_ctx;    /* let clattn create the context */
    bool workspace;      /* pass a caller-owned workspace */
    float scale;         /* NAN: default */
} sdpa_case;

static bool run(const sdpa_case *c)
{
    bool ok = true;
    test_env e;
    if (c->default_ctx)
        env_open_default(&e);
    else
        env_open(&e, c->ooo);
    uint64_t seed = 1234 + c->Lq * 7 + c->Lk * 13 + c->D;
    const size_t pad = 37;
    view_buf Q = vb_new(&e, c->lay, c->B, c->Hq, c->Lq, c->D, c->offset, pad, &seed, true);
    view_buf K = vb_new(&e, c->lay, c->B, c->Hkv, c->Lk, c->D, c->offset, pad, &seed, true);
    view_buf V = vb_new(&e, c->lay, c->B, c->Hkv, c->Lk, c->Dv, c->offset, pad, &seed, true);
    view_buf O = vb_new(&e, c->lay, c->B, c->Hq, c->Lq, c->Dv, c->offset, pad, &seed, false);
    view_buf P = {0}, L = {0}, M = {0};
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.scale = c->scale;
    p.mask.causal = (clattn_causal)c->causal;
    p.path = test_path();
    if (c->probs) {
        P = vb_new(&e, LAYOUT_BHTD, c->B, c->Hq, c->Lq, c->Lk, c->offset, pad, &seed, false);
        p.probs = &P.t;
    }
    if (c->lse) {
        L = vb_new(&e, LAYOUT_BHTD, c->B, c->Hq, c->Lq, 1, c->offset, pad, &seed, false);
        p.lse = &L.t;
    }
    double *mask_dense = NULL;
    if (c->mask) {
        size_t mb = c->mask == 1 || c->mask == 3 ? c->B : 1, mh = c->mask == 1 ? c->Hq : 1;
        size_t mq = c->mask == 3 ? 1 : c->Lq;
        M = vb_new(&e, LAYOUT_BHTD, mb, mh, mq, c->Lk, c->offset, pad, &seed, true);
        /* Scale the random mask up and hide every key of the first query row of each slice, so
         * a fully masked row meets the additive path too. */
        for (size_t i = 0; i < M.elems; i++)
            M.host[i] *= 3.0f;
        for (size_t s = 0; s < mb * mh; s++)
            for (size_t j = 0; j < c->Lk && mq > 1; j++)
                M.host[c->offset + s * mq * c->Lk + j] = -INFINITY;
        buf_write(&e, M.t.buffer, 0, M.host, M.elems * sizeof(float));
        p.mask.additive = &M.t;
        /* The reference gets the mask broadcast to [B, Hq, Lq, Lk]. */
        mask_dense = malloc(c->B * c->Hq * c->Lq * c->Lk * sizeof *mask_dense + 1);
        for (size_t b = 0; b < c->B; b++)
            for (size_t h = 0; h < c->Hq; h++)
                for (size_t i = 0; i < c->Lq; i++)
                    for (size_t j = 0; j < c->Lk; j++)
                        mask_dense[((b * c->Hq + h) * c->Lq + i) * c->Lk + j] =
                            M.host[c->offset + ((b % mb) * mh + h % mh) * mq * c->Lk +
                                   (i % mq) * c->Lk + j];
    }
    int *lengths = NULL;
    cl_mem len_buf = NULL;
    if (c->lengths) {
        lengths = malloc(c->B * sizeof *lengths);
        for (size_t b = 0; b < c->B; b++)
            lengths[b] = (int)((c->Lk * (b + 1)) / (c->B + 1)); /* unequal, all below Lk */
        lengths[0] = 0;                                         /* every key hidden */
        if (c->B > 2)
            lengths[c->B - 1] = (int)c->Lk + 5; /* clamps to Lk */
        /* Two decoys before the lengths: a kernel that ignored the offset would read them. The
         * whole buffer is written (Oclgrind 21.10 reports reads after a write at an offset as
         * uninitialised even where that write covered them). */
        int *with_decoys = malloc((2 + c->B) * sizeof(int));
        with_decoys[0] = 999, with_decoys[1] = -5;
        memcpy(with_decoys + 2, lengths, c->B * sizeof(int));
        len_buf = buf_new(&e, (2 + c->B) * sizeof(int));
        buf_write(&e, len_buf, 0, with_decoys, (2 + c->B) * sizeof(int));
        free(with_decoys);
        p.mask.key_lengths = len_buf;
        p.mask.key_lengths_offset = 2;
    }
    cl_mem ws = NULL;
    if (c->workspace) {
        size_t need = 0;
        EXPECT_STATUS(clattn_sdpa_workspace_size(e.cc, &Q.t, &K.t, &V.t, &O.t, &p, &need),
                      CLATTN_SUCCESS);
        /* Only the unfused path keeps scores, and not when they go to probs. */
        bool unfused = test_path() == CLATTN_PATH_UNFUSED || c->probs;
        EXPECT(need == (unfused && !c->probs ? c->B * c->Hq * c->Lq * c->Lk * sizeof(float) : 0));
        ws = buf_new(&e, need + 64);
        /* NaN garbage in the workspace must not leak into the result (beta = 0 products). */
        float *nan = malloc(need + 64);
        for (size_t i = 0; i < (need + 64) / sizeof(float); i++)
            nan[i] = NAN;
        buf_write(&e, ws, 0, nan, need + 64);
        free(nan);
        p.workspace = ws;
        p.workspace_offset = 64;
    }

    cl_event done = NULL;
    if (test_path() == CLATTN_PATH_FUSED && c->probs) {
        /* The fused kernel never forms the probabilities: asking for them is an error that
         * leaves every output as it was. */
        EXPECT_STATUS(clattn_sdpa(e.cc, e.queue, &Q.t, &K.t, &V.t, &O.t, &p, 0, NULL, &done),
                      CLATTN_ERROR_UNSUPPORTED_PATH);
        EXPECT(done == NULL);
        float *all = malloc(P.elems * sizeof *all);
        vb_read_all(&e, &P, all);
        EXPECT(memcmp(all, P.host, P.elems * sizeof *all) == 0);
        free(all);
        p.probs = NULL;
    }
    EXPECT_STATUS(clattn_sdpa(e.cc, e.queue, &Q.t, &K.t, &V.t, &O.t, &p, 0, NULL, &done),
                  CLATTN_SUCCESS);
    if (done) {
        CL_OK(clWaitForEvents(1, &done));
        clReleaseEvent(done);
    } else {
        EXPECT(done != NULL);
    }

    /* Reference on the exact inputs. */
    double *q = vb_dense(&Q, Q.host), *k = vb_dense(&K, K.host), *v = vb_dense(&V, V.host);
    size_t no = c->B * c->Hq * c->Lq * c->Dv, np = c->B * c->Hq * c->Lq * c->Lk,
           nl = c->B * c->Hq * c->Lq;
    double *ro = malloc(no * sizeof *ro + 1), *rp = malloc(np * sizeof *rp + 1),
           *rl = malloc(nl * sizeof *rl + 1);
    double scale = isnan(c->scale) ? 1.0 / sqrt((double)c->D) : c->scale;
    ref_sdpa(c->B, c->Hq, c->Hkv, c->Lq, c->Lk, c->D, c->Dv, scale, c->causal, mask_dense,
             lengths, q, k, v, ro, rp, rl);

    float *all = malloc(O.elems * sizeof *all + 1);
    vb_read_all(&e, &O, all);
    double *got = vb_dense(&O, all);
    ok &= check_close("O", got, ro, no, TOL);
    EXPECT(vb_outside_unchanged(&O, O.host, all));
    free(got);
    free(all);
    if (p.probs) {
        all = malloc(P.elems * sizeof *all + 1);
        vb_read_all(&e, &P, all);
        got = vb_dense(&P, all);
        ok &= check_close("P", got, rp, np, TOL);
        EXPECT(vb_outside_unchanged(&P, P.host, all));
        free(got);
        free(all);
    }
    if (c->lse) {
        all = malloc(L.elems * sizeof *all + 1);
        vb_read_all(&e, &L, all);
        got = vb_dense(&L, all);
        ok &= check_close("lse", got, rl, nl, TOL);
        EXPECT(vb_outside_unchanged(&L, L.host, all));
        free(got);
        free(all);
    }
    /* Inputs are read only. */
    view_buf *ins[] = {&Q, &K, &V, c->mask ? &M : NULL};
    for (size_t i = 0; i < 4; i++) {
        if (!ins[i])
            continue;
        all = malloc(ins[i]->elems * sizeof *all + 1);
        vb_read_all(&e, ins[i], all);
        EXPECT(memcmp(all, ins[i]->host, ins[i]->elems * sizeof *all) == 0);
        free(all);
    }

    free(q), free(k), free(v), free(ro), free(rp), free(rl), free(mask_dense), free(lengths);
    if (len_buf)
        clReleaseMemObject(len_buf);
    if (ws)
        clReleaseMemObject(ws);
    vb_free(&Q), vb_free(&K), vb_free(&V), vb_free(&O), vb_free(&P), vb_free(&L), vb_free(&M);
    env_close(&e);
    return ok;
}

/* A default case: one batch item, 2 heads, self attention, head-major, offset views. */
static sdpa_case base(size_t L, size_t D)
{
    sdpa_case c = {1, 2, 2, L, L, D, D, 0, 0, false, LAYOUT_BHTD, 3, false, false, false, false,
                   false, NAN};
    return c;
}

#define SDPA_CASE(fname, ...)                                                                      \
    static bool fname(void)                                                                        \
    {                                                                                              \
        sdpa_case c = base(1, 16);                                                                 \
        __VA_ARGS__;                                                                               \
        return run(&c);                                                                            \
    }

/* Sequence lengths that straddle block and tile edges, causal and not. */
static bool run_seq_lengths(int causal)
{
    static const size_t Ls[] = {1, 3, 7, 63, 64, 65, 127, 129};
    bool ok = true;
    for (size_t i = 0; i < sizeof Ls / sizeof Ls[0]; i++) {
        sdpa_case c = base(Ls[i], 32);
        c.causal = causal;
        printf("-- L=%zu causal=%d\n", Ls[i], causal);
        ok &= run(&c);
    }
    return ok;
}
static bool seq_lengths(void) { return run_seq_lengths(0); }
static bool seq_lengths_causal(void) { return run_seq_lengths(1); }

static bool head_dims(void)
{
    static const size_t Ds[] = {16, 40, 64, 80, 96, 128, 256};
    bool ok = true;
    for (size_t i = 0; i < sizeof Ds / sizeof Ds[0]; i++) {
        sdpa_case c = base(33, Ds[i]);
        c.causal = 1;
        printf("-- D=%zu\n", Ds[i]);
        ok &= run(&c);
    }
    return ok;
}

/* Every head dim from 1 to 512, D and Dv apart: odd value dims (summed a float at a time on the
 * CPU variant), dims past the old limit of 256. A deterministic sample of pairs; with
 * CLATTN_TEST_DIMS=all, every D = Dv from 1 to 512 (README: the long sweeps). */
static bool head_dims_any(void)
{
    static const size_t pairs[][2] = {{1, 1},     {3, 5},     {5, 3},     {2, 7},    {17, 1},
                                      {63, 65},   {100, 255}, {255, 100}, {257, 257}, {320, 64},
                                      {64, 320},  {384, 511}, {512, 512}};
    const char *all = getenv("CLATTN_TEST_DIMS");
    const bool every = all && strcmp(all, "all") == 0;
    const size_t n = every ? 512 : sizeof pairs / sizeof pairs[0];
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        sdpa_case c = base(9, every ? i + 1 : pairs[i][0]);
        c.Dv = every ? i + 1 : pairs[i][1];
        c.Lk = 21;
        c.causal = 2;
        c.lse = true;
        printf("-- D=%zu Dv=%zu\n", c.D, c.Dv);
        ok &= run(&c);
    }
    return ok;
}

/* Lq != Lk both ways, with each causal alignment. */
static bool cross_lengths(void)
{
    static const size_t LqLk[][2] = {{7, 65}, {65, 7}, {1, 129}, {64, 63}};
    bool ok = true;
    for (size_t i = 0; i < 4; i++)
        for (int causal = 0; causal <= 2; causal++) {
            sdpa_case c = base(0, 40);
            c.Lq = LqLk[i][0];
            c.Lk = LqLk[i][1];
            c.causal = causal;
            printf("-- Lq=%zu Lk=%zu causal=%d\n", c.Lq, c.Lk, causal);
            ok &= run(&c);
        }
    return ok;
}

SDPA_CASE(batch_key_lengths, c.B = 3; c.Lq = c.Lk = 37; c.lengths = true; c.lse = true)
SDPA_CASE(batch_key_lengths_bottom_right, c.B = 3; c.Lq = 5; c.Lk = 70; c.lengths = true;
     c.causal = 2; c.lse = true)
SDPA_CASE(gqa_8_over_2, c.B = 2; c.Hq = 8; c.Hkv = 2; c.Lq = c.Lk = 29; c.D = c.Dv = 32; c.causal = 1)
SDPA_CASE(mqa_4_over_1, c.Hq = 4; c.Hkv = 1; c.Lq = 9; c.Lk = 31; c.D = c.Dv = 24)
/* Few queries with GQA: the fused CPU variant packs the 4 heads of a kv group into its lanes;
 * a per-head mask, key lengths and bottom-right causal all index by lane. */
SDPA_CASE(gqa_few_queries_packed, c.B = 2; c.Hq = 8; c.Hkv = 2; c.Lq = 7; c.Lk = 40; c.mask = 1;
     c.lengths = true; c.causal = 2; c.lse = true; c.lay = LAYOUT_BTHD)
SDPA_CASE(packed_bthd_views, c.B = 2; c.Hq = c.Hkv = 3; c.Lq = c.Lk = 45; c.D = c.Dv = 40;
     c.lay = LAYOUT_BTHD; c.offset = 11; c.causal = 1)
SDPA_CASE(packed_gqa_bottom_right, c.B = 2; c.Hq = 6; c.Hkv = 2; c.Lq = 13; c.Lk = 50; c.D = c.Dv = 16;
     c.lay = LAYOUT_BTHD; c.offset = 5; c.causal = 2)
SDPA_CASE(value_dim_differs, c.Lq = 20; c.Lk = 30; c.D = 24; c.Dv = 40)
SDPA_CASE(additive_mask_full, c.B = 2; c.Lq = c.Lk = 33; c.mask = 1; c.probs = true; c.lse = true)
SDPA_CASE(additive_mask_broadcast, c.B = 2; c.Hq = c.Hkv = 3; c.Lq = 17; c.Lk = 23; c.mask = 2;
     c.causal = 1)
SDPA_CASE(key_padding_mask_shape, c.B = 3; c.Lq = 12; c.Lk = 19; c.mask = 3)
SDPA_CASE(everything_combined, c.B = 3; c.Hq = 4; c.Hkv = 2; c.Lq = 21; c.Lk = 40; c.mask = 2;
     c.lengths = true; c.causal = 2; c.probs = true; c.lse = true; c.lay = LAYOUT_BTHD)
SDPA_CASE(probabilities_out, c.B = 2; c.Lq = c.Lk = 64; c.causal = 1; c.probs = true)
SDPA_CASE(explicit_scale, c.Lq = c.Lk = 16; c.scale = 0.37f)
SDPA_CASE(large_negative_scale, c.Lq = c.Lk = 16; c.scale = -1e4f; c.lse = true)
SDPA_CASE(out_of_order_queue, c.B = 2; c.Hq = 4; c.Hkv = 2; c.Lq = c.Lk = 65; c.causal = 1;
     c.mask = 2; c.lengths = true; c.ooo = true)
SDPA_CASE(default_context, c.Lq = c.Lk = 30; c.causal = 1; c.default_ctx = true)
SDPA_CASE(caller_workspace, c.B = 2; c.Lq = 19; c.Lk = 27; c.workspace = true; c.causal = 1)
SDPA_CASE(no_keys, c.Lq = 5; c.Lk = 0; c.lse = true)
SDPA_CASE(no_queries, c.Lq = 0; c.Lk = 9)
SDPA_CASE(empty_batch, c.B = 0; c.Lq = c.Lk = 9)

/* Split the keys into `parts` contiguous pieces, run sdpa on each with its log-sum-exp, merge the
 * pieces in place one by one, and compare with one pass over all keys and with the reference. */
static bool merge_parts(size_t parts)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    const size_t B = 2, Hq = 4, Hkv = 2, Lq = 19, Lk = 70, D = 32;
    uint64_t seed = 900 + parts;
    view_buf Q = vb_new(&e, LAYOUT_BHTD, B, Hq, Lq, D, 1, 2, &seed, true);
    view_buf K = vb_new(&e, LAYOUT_BTHD, B, Hkv, Lk, D, 3, 2, &seed, true);
    view_buf V = vb_new(&e, LAYOUT_BTHD, B, Hkv, Lk, D, 0, 2, &seed, true);
    view_buf M = vb_new(&e, LAYOUT_BHTD, B, 1, Lq, Lk, 0, 0, &seed, true);
    /* Query 0 sees no key at all; query 1 sees none in the first piece. */
    for (size_t b = 0; b < B; b++)
        for (size_t j = 0; j < Lk; j++) {
            M.host[(b * Lq + 0) * Lk + j] = -INFINITY;
            if (j < Lk / parts)
                M.host[(b * Lq + 1) * Lk + j] = -INFINITY;
        }
    buf_write(&e, M.t.buffer, 0, M.host, M.elems * sizeof(float));
    view_buf O = vb_new(&e, LAYOUT_BHTD, B, Hq, Lq, D, 0, 0, &seed, false);
    view_buf L = vb_new(&e, LAYOUT_BHTD, B, Hq, Lq, 1, 0, 0, &seed, false);
    view_buf Op = vb_new(&e, LAYOUT_BHTD, B, Hq, Lq, D, 0, 0, &seed, false);
    view_buf Lp = vb_new(&e, LAYOUT_BHTD, B, Hq, Lq, 1, 0, 0, &seed, false);
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.path = test_path();
    cl_event ev = NULL;
    for (size_t k = 0; k < parts; k++) {
        const size_t j0 = Lk * k / parts, j1 = Lk * (k + 1) / parts;
        clattn_tensor kp = K.t, vp = V.t, mp = M.t;
        kp.offset += j0 * kp.strides[2];
        vp.offset += j0 * vp.strides[2];
        mp.offset += j0 * mp.strides[3];
        kp.dims[2] = vp.dims[2] = mp.dims[3] = j1 - j0;
        p.mask.additive = &mp;
        /* The first piece goes straight into the accumulator; the others merge into it. */
        p.lse = k == 0 ? &L.t : &Lp.t;
        EXPECT_STATUS(clattn_sdpa(e.cc, e.queue, &Q.t, &kp, &vp, k == 0 ? &O.t : &Op.t, &p, 0, NULL, NULL),
                      CLATTN_SUCCESS);
        if (k > 0)
            EXPECT_STATUS(clattn_merge(e.cc, e.queue, &O.t, &L.t, &Op.t, &Lp.t, &O.t, &L.t, 0, NULL,
                                       k + 1 == parts ? &ev : NULL),
                          CLATTN_SUCCESS);
    }
    if (ev) {
        CL_OK(clWaitForEvents(1, &ev));
        clReleaseEvent(ev);
    }
    double *q = vb_dense(&Q, Q.host), *kd = vb_dense(&K, K.host), *vd = vb_dense(&V, V.host);
    double *md = malloc(B * Hq * Lq * Lk * sizeof *md);
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < Hq; h++)
            for (size_t i = 0; i < Lq * Lk; i++)
                md[(b * Hq + h) * Lq * Lk + i] = M.host[b * Lq * Lk + i];
    double *ro = malloc(B * Hq * Lq * D * sizeof *ro), *rl = malloc(B * Hq * Lq * sizeof *rl);
    ref_sdpa(B, Hq, Hkv, Lq, Lk, D, D, 1.0 / sqrt((double)D), 0, md, NULL, q, kd, vd, ro, NULL, rl);
    float *all = malloc(O.elems * sizeof *all);
    vb_read_all(&e, &O, all);
    double *got = vb_dense(&O, all);
    ok &= check_close("merged O", got, ro, B * Hq * Lq * D, TOL);
    free(got);
    vb_read_all(&e, &L, all);
    got = vb_dense(&L, all);
    ok &= check_close("merged lse", got, rl, B * Hq * Lq, TOL);
    free(got), free(all), free(q), free(kd), free(vd), free(md), free(ro), free(rl);
    vb_free(&Q), vb_free(&K), vb_free(&V), vb_free(&M), vb_free(&O), vb_free(&L), vb_free(&Op), vb_free(&Lp);
    env_close(&e);
    return ok;
}
static bool merge_2_parts(void) { return merge_parts(2); }
static bool merge_3_parts(void) { return merge_parts(3); }
static bool merge_7_parts(void) { return merge_parts(7); }

/* T = 65536, one head, D = 64, causal: the fused path runs it in O(T·D) memory; the unfused path
 * would need a 16 GiB score matrix. Checked on sampled query rows (row i against the reference
 * over keys 0..i, which is what the causal mask leaves it). */
static bool long_sequence_65536(void)
{
    bool ok = true;
    if (test_path() == CLATTN_PATH_UNFUSED) {
        printf("the unfused path's refusal of this size is tested in errors/sdpa_too_large_for_device\n");
        return true;
    }
    test_env e;
    env_open(&e, false);
    const size_t T = 65536, D = 64;
    uint64_t seed = 65536;
    view_buf Q = vb_new(&e, LAYOUT_BHTD, 1, 1, T, D, 0, 0, &seed, true);
    view_buf K = vb_new(&e, LAYOUT_BHTD, 1, 1, T, D, 0, 0, &seed, true);
    view_buf V = vb_new(&e, LAYOUT_BHTD, 1, 1, T, D, 0, 0, &seed, true);
    view_buf O = vb_new(&e, LAYOUT_BHTD, 1, 1, T, D, 0, 0, &seed, false);
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.path = test_path();
    p.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
    size_t need = 1;
    EXPECT_STATUS(clattn_sdpa_workspace_size(e.cc, &Q.t, &K.t, &V.t, &O.t, &p, &need), CLATTN_SUCCESS);
    EXPECT(need == 0);
    EXPECT_STATUS(clattn_sdpa(e.cc, e.queue, &Q.t, &K.t, &V.t, &O.t, &p, 0, NULL, NULL), CLATTN_SUCCESS);
    float *all = malloc(O.elems * sizeof *all);
    vb_read_all(&e, &O, all);
    static const size_t rows[] = {0, 1, 15, 16, 1000, 4095, 30001, 65519, 65535};
    double *q = malloc(D * sizeof *q), *kd = malloc(T * D * sizeof *kd), *vd = malloc(T * D * sizeof *vd);
    for (size_t i = 0; i < T * D; i++)
        kd[i] = K.host[i], vd[i] = V.host[i];
    double ref[64], got[64];
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        size_t i = rows[r];
        for (size_t d = 0; d < D; d++)
            q[d] = Q.host[i * D + d], got[d] = all[i * D + d];
        ref_sdpa(1, 1, 1, 1, i + 1, D, D, 1.0 / 8.0, 0, NULL, NULL, q, kd, vd, ref, NULL, NULL);
        char what[32];
        snprintf(what, sizeof what, "row %zu", i);
        ok &= check_close(what, got, ref, D, TOL);
    }
    free(q), free(kd), free(vd), free(all);
    vb_free(&Q), vb_free(&K), vb_free(&V), vb_free(&O);
    env_close(&e);
    return ok;
}

/* NaN and Inf reach exactly the outputs whose computation they enter. Causal top-left, one batch
 * item, two heads, 40 tokens; injected:
 *   Q[head 0, row 5] = NaN        -> O[0, 5] NaN, nothing else
 *   K[head 1, row 20] = NaN       -> O[1, i] NaN for i >= 20 (they see key 20), rows < 20 clean
 *   V[head 0, row 30] = +Inf      -> O[0, i] non-finite for i >= 30, rows < 30 clean
 *   mask[row 10, key 3] = NaN     -> row 10 of both heads NaN (key 3 is visible to it)
 *   mask[row 2, key 35] = NaN     -> nothing: key 35 is hidden from row 2 by the causal mask
 *   mask[row 15, every key] = -inf -> row 15 of both heads is 0 (fully masked), never NaN
 * Rows that must stay clean are compared with the reference on the clean inputs. The unfused
 * path's weighted sum is a matrix product, where a hidden key's weight 0 times Inf is NaN on both
 * engines (the setups run each): there the V row reaches every row of its head, which is checked
 * as such. */
static bool nan_inf_propagation(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    const size_t H = 2, L = 40, Dh = 16;
    uint64_t seed = 77;
    view_buf Q = vb_new(&e, LAYOUT_BHTD, 1, H, L, Dh, 0, 0, &seed, true);
    view_buf K = vb_new(&e, LAYOUT_BHTD, 1, H, L, Dh, 0, 0, &seed, true);
    view_buf V = vb_new(&e, LAYOUT_BHTD, 1, H, L, Dh, 0, 0, &seed, true);
    view_buf M = vb_new(&e, LAYOUT_BHTD, 1, 1, L, L, 0, 0, &seed, true);
    view_buf O = vb_new(&e, LAYOUT_BHTD, 1, H, L, Dh, 0, 0, &seed, false);
    for (size_t j = 0; j < L; j++)
        M.host[15 * L + j] = -INFINITY;
    /* The clean reference first. */
    double *q = vb_dense(&Q, Q.host), *k = vb_dense(&K, K.host), *v = vb_dense(&V, V.host);
    double *m = malloc(H * L * L * sizeof *m), *ro = malloc(H * L * Dh * sizeof *ro);
    for (size_t h = 0; h < H; h++)
        for (size_t i = 0; i < L * L; i++)
            m[h * L * L + i] = M.host[i];
    ref_sdpa(1, H, H, L, L, Dh, Dh, 1.0 / 4.0, 1, m, NULL, q, k, v, ro, NULL, NULL);
    /* Then the poison. */
    Q.host[(0 * L + 5) * Dh + 3] = NAN;
    K.host[(1 * L + 20) * Dh + 7] = NAN;
    V.host[(0 * L + 30) * Dh + 2] = INFINITY;
    M.host[10 * L + 3] = NAN;
    M.host[2 * L + 35] = NAN;
    view_buf *all[] = {&Q, &K, &V, &M};
    for (int t = 0; t < 4; t++)
        buf_write(&e, all[t]->t.buffer, 0, all[t]->host, all[t]->elems * sizeof(float));
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.path = test_path();
    p.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
    p.mask.additive = &M.t;
    EXPECT_STATUS(clattn_sdpa(e.cc, e.queue, &Q.t, &K.t, &V.t, &O.t, &p, 0, NULL, NULL), CLATTN_SUCCESS);
    float *got = malloc(O.elems * sizeof *got);
    vb_read_all(&e, &O, got);
    const bool unfused = test_path() == CLATTN_PATH_UNFUSED;
    int wrong = 0;
    for (size_t h = 0; h < H; h++)
        for (size_t i = 0; i < L; i++) {
            const float *row = got + (h * L + i) * Dh;
            const double *want = ro + (h * L + i) * Dh;
            /* Rows a NaN enters through Q, K or the mask: every element non-finite. */
            const bool whole = (h == 0 && i == 5) || (h == 1 && i >= 20) || i == 10;
            /* Rows that see V's Inf (on the unfused path: every row of head 0): its column. */
            const bool column = h == 0 && (unfused || i >= 30);
            for (size_t d = 0; d < Dh; d++) {
                bool good;
                if (whole || (column && d == 2))
                    good = !isfinite(row[d]);
                else if (i == 15)
                    good = row[d] == 0.0f; /* fully masked */
                else
                    good = isfinite(row[d]) && fabs(row[d] - want[d]) <= TOL;
                if (!good) {
                    printf("head %zu row %zu dim %zu: %g (clean value %g)\n", h, i, d, row[d], want[d]);
                    wrong++;
                }
            }
        }
    printf("%d elements wrong\n", wrong);
    EXPECT(wrong == 0);
    free(q), free(k), free(v), free(m), free(ro), free(got);
    vb_free(&Q), vb_free(&K), vb_free(&V), vb_free(&M), vb_free(&O);
    env_close(&e);
    return ok;
}

/* fp16 storage (FlashAttention's rule): on fp16-rounded inputs, the fp16 path's max error
 * against the float64 reference is at most twice the error of that reference's own output
 * rounded to fp16, plus a floor of 1e-4 * max(1, max|ref|). The fused path only; the unfused
 * path refuses fp16 views with CLATTN_ERROR_UNSUPPORTED_DTYPE. */
static bool fp16_case(size_t B, size_t Hq, size_t Hkv, size_t Lq, size_t Lk, size_t D, int causal,
                      bool lengths)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    uint64_t seed = 1600 + Lq + D;
    const size_t nq = B * Hq * Lq * D, nk = B * Hkv * Lk * D, off = 3;
    float *f = malloc((nq + 2 * nk) * sizeof *f);
    fill_uniform(f, nq + 2 * nk, &seed, -2.0f, 2.0f);
    uint16_t *hq = calloc(nq + off, 2), *hk = calloc(nk + off, 2), *hv = calloc(nk + off, 2),
             *ho = calloc(nq + off + 4, 2);
    double *q = malloc(nq * sizeof *q), *k = malloc(nk * sizeof *k), *v = malloc(nk * sizeof *v);
    for (size_t i = 0; i < nq; i++)
        hq[off + i] = half_from_float(f[i]), q[i] = half_to_float(hq[off + i]);
    for (size_t i = 0; i < nk; i++) {
        hk[off + i] = half_from_float(f[nq + i]), k[i] = half_to_float(hk[off + i]);
        hv[off + i] = half_from_float(f[nq + nk + i]), v[i] = half_to_float(hv[off + i]);
    }
    for (size_t i = 0; i < nq + off + 4; i++)
        ho[i] = 0x7e00; /* NaN sentinels */
    cl_mem bq = buf_new(&e, (nq + off) * 2), bk = buf_new(&e, (nk + off) * 2),
           bv = buf_new(&e, (nk + off) * 2), bo = buf_new(&e, (nq + off + 4) * 2);
    buf_write(&e, bq, 0, hq, (nq + off) * 2);
    buf_write(&e, bk, 0, hk, (nk + off) * 2);
    buf_write(&e, bv, 0, hv, (nk + off) * 2);
    buf_write(&e, bo, 0, ho, (nq + off + 4) * 2);
    clattn_tensor Q = clattn_tensor_bthd(bq, off, B, Lq, Hq, D), K = clattn_tensor_bthd(bk, off, B, Lk, Hkv, D),
                  V = clattn_tensor_bthd(bv, off, B, Lk, Hkv, D), O = clattn_tensor_bthd(bo, off, B, Lq, Hq, D);
    Q.dtype = K.dtype = V.dtype = O.dtype = CLATTN_F16;
    int lens[4] = {(int)Lk, (int)Lk / 3, 0, (int)Lk - 1};
    cl_mem lb = buf_new(&e, sizeof lens);
    buf_write(&e, lb, 0, lens, sizeof lens);
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.mask.causal = (clattn_causal)causal;
    p.mask.key_lengths = lengths ? lb : NULL;
    p.path = CLATTN_PATH_UNFUSED;
    EXPECT_STATUS(clattn_sdpa(e.cc, e.queue, &Q, &K, &V, &O, &p, 0, NULL, NULL), CLATTN_ERROR_UNSUPPORTED_DTYPE);
    p.path = test_path() == CLATTN_PATH_UNFUSED ? CLATTN_PATH_AUTO : test_path();
    EXPECT_STATUS(clattn_sdpa(e.cc, e.queue, &Q, &K, &V, &O, &p, 0, NULL, NULL), CLATTN_SUCCESS);
    buf_read(&e, bo, 0, ho, (nq + off + 4) * 2);
    EXPECT(ho[0] == 0x7e00 && ho[off - 1] == 0x7e00 && ho[off + nq] == 0x7e00); /* guards */

    /* The reference in [B, H, T, D] order; the device output in [B, T, H, D]. */
    double *qd = malloc(nq * sizeof *qd), *kd = malloc(nk * sizeof *kd), *vd = malloc(nk * sizeof *vd);
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < Lq; t++)
            for (size_t h = 0; h < Hq; h++)
                for (size_t d = 0; d < D; d++)
                    qd[((b * Hq + h) * Lq + t) * D + d] = q[((b * Lq + t) * Hq + h) * D + d];
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < Lk; t++)
            for (size_t h = 0; h < Hkv; h++)
                for (size_t d = 0; d < D; d++) {
                    kd[((b * Hkv + h) * Lk + t) * D + d] = k[((b * Lk + t) * Hkv + h) * D + d];
                    vd[((b * Hkv + h) * Lk + t) * D + d] = v[((b * Lk + t) * Hkv + h) * D + d];
                }
    double *ref = malloc(nq * sizeof *ref);
    ref_sdpa(B, Hq, Hkv, Lq, Lk, D, D, 1.0 / sqrt((double)D), causal, NULL, lengths ? lens : NULL,
             qd, kd, vd, ref, NULL, NULL);
    double err = 0, rounding = 0, scale = 1;
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < Lq; t++)
            for (size_t h = 0; h < Hq; h++)
                for (size_t d = 0; d < D; d++) {
                    double r = ref[((b * Hq + h) * Lq + t) * D + d];
                    double got = half_to_float(ho[off + ((b * Lq + t) * Hq + h) * D + d]);
                    err = fmax(err, isnan(got) ? INFINITY : fabs(got - r));
                    rounding = fmax(rounding, fabs(half_to_float(half_from_float((float)r)) - r));
                    scale = fmax(scale, fabs(r));
                }
    const double limit = 2 * rounding + 1e-4 * scale;
    printf("fp16 path error %.3g; reference rounded to fp16: %.3g; limit %.3g%s\n", err, rounding,
           limit, err <= limit ? "" : "  FAIL");
    EXPECT(err <= limit);
    free(f), free(hq), free(hk), free(hv), free(ho), free(q), free(k), free(v);
    free(qd), free(kd), free(vd), free(ref);
    cl_mem all[] = {bq, bk, bv, bo, lb};
    for (int i = 0; i < 5; i++)
        clReleaseMemObject(all[i]);
    env_close(&e);
    return ok;
}
/* fp16 with head dims that are odd or past 256: the fused path takes them too. */
static bool fp16_odd_head_dims(void)
{
    return fp16_case(1, 2, 1, 9, 20, 5, 1, false) && fp16_case(2, 2, 2, 7, 13, 63, 2, true) &&
           fp16_case(1, 1, 1, 5, 9, 257, 0, false);
}

static bool fp16_storage(void)
{
    return fp16_case(2, 4, 2, 37, 37, 64, 1, false) && fp16_case(3, 2, 2, 9, 70, 40, 2, true) &&
           fp16_case(1, 2, 1, 65, 33, 128, 0, false);
}

int main(int argc, char **argv)
{
    static const test_case cases[] = {
        CASE(seq_lengths),
        CASE(seq_lengths_causal),
        CASE(head_dims),
        CASE(head_dims_any),
        CASE(cross_lengths),
        CASE(batch_key_lengths),
        CASE(batch_key_lengths_bottom_right),
        CASE(gqa_8_over_2),
        CASE(mqa_4_over_1),
        CASE(gqa_few_queries_packed),
        CASE(packed_bthd_views),
        CASE(packed_gqa_bottom_right),
        CASE(value_dim_differs),
        CASE(additive_mask_full),
        CASE(additive_mask_broadcast),
        CASE(key_padding_mask_shape),
        CASE(everything_combined),
        CASE(probabilities_out),
        CASE(explicit_scale),
        CASE(large_negative_scale),
        CASE(out_of_order_queue),
        CASE(default_context),
        CASE(caller_workspace),
        CASE(no_keys),
        CASE(no_queries),
        CASE(empty_batch),
        CASE(merge_2_parts),
        CASE(merge_3_parts),
        CASE(merge_7_parts),
        CASE_IN(long_sequence_65536, "unfused fused"),
        CASE(nan_inf_propagation),
        CASE(fp16_storage),
        CASE_IN(fp16_odd_head_dims, "fused fused-gpu"),
    };
    return run_cases(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
