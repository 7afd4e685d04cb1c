/* Packed batches of sequences of their own lengths (clattn_sdpa_params.cu_seqlens_q/_k): Q, K, V
 * and O as [total, H, D] rows, each sequence against the double-precision reference run on that
 * sequence alone, with both causal alignments, cross lengths, empty sequences, GQA, per-sequence
 * key lengths, the model variants and lse, on both fused variants; guards around every output;
 * and the multi-head layer on packed input. (Refusals: test_errors.c, varlen_errors.) */
#include "harness.h"
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SETUPS "fused fused-gpu"
#define MAX_SEQS 8

typedef struct vl_case {
    size_t n;                /* sequences */
    size_t lq[MAX_SEQS];     /* queries of each */
    size_t lk[MAX_SEQS];     /* keys of each; all 0: self attention (lk = lq, no cu_seqlens_k) */
    size_t Hq, Hkv, D, Dv;
    int causal;              /* 0 none, 1 top-left, 2 bottom-right */
    long wl, wr;             /* window sides, -1 unbounded */
    size_t keep;
    float softcap;
    bool alibi, sinks, lengths;
    bool half; /* Q, K, V and O stored as fp16 (the reference uses the rounded inputs) */
} vl_case;

static vl_case base(void)
{
    vl_case c = {0};
    c.Hq = 4, c.Hkv = 2, c.D = 32, c.Dv = 32, c.wl = -1, c.wr = -1;
    return c;
}

/* Rows s .. s + n of a dense [1, H, total, D] array as a dense [1, H, n, D] one. */
static double *rows_of(const double *all, size_t H, size_t total, size_t D, size_t s, size_t n)
{
    double *out = malloc((H * n * D + 1) * sizeof *out);
    for (size_t h = 0; h < H; h++)
        memcpy(out + h * n * D, all + (h * total + s) * D, n * D * sizeof *out);
    return out;
}

/* The view's whole buffer as fp16: its host copy rounded, a new device buffer of halves. */
static void make_half(test_env *e, view_buf *v)
{
    uint16_t *h = malloc(v->elems * 2);
    for (size_t i = 0; i < v->elems; i++) {
        h[i] = half_from_float(v->host[i]);
        v->host[i] = half_to_float(h[i]);
    }
    clReleaseMemObject(v->t.buffer);
    v->t.buffer = buf_new(e, v->elems * 2);
    buf_write(e, v->t.buffer, 0, h, v->elems * 2);
    v->t.dtype = CLATTN_F16;
    free(h);
}

static void read_all(test_env *e, const view_buf *v, float *out)
{
    if (v->t.dtype != CLATTN_F16) {
        vb_read_all(e, v, out);
        return;
    }
    uint16_t *h = malloc(v->elems * 2);
    buf_read(e, v->t.buffer, 0, h, v->elems * 2);
    for (size_t i = 0; i < v->elems; i++)
        out[i] = half_to_float(h[i]);
    free(h);
}

static bool run(const vl_case *c)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    const bool cross = c->lk[0] + c->lk[1] + c->lk[2] + c->lk[3] + c->lk[4] > 0;
    size_t cq[MAX_SEQS + 1] = {0}, ck[MAX_SEQS + 1] = {0};
    for (size_t b = 0; b < c->n; b++) {
        cq[b + 1] = cq[b] + c->lq[b];
        ck[b + 1] = ck[b] + (cross ? c->lk[b] : c->lq[b]);
    }
    const size_t Tq = cq[c->n], Tk = ck[c->n];
    uint64_t seed = 7 + Tq * 3 + Tk;
    /* packed [total, H, D] rows, at an offset, with guards after */
    view_buf Q = vb_new(&e, LAYOUT_BTHD, 1, c->Hq, Tq, c->D, 5, 7, &seed, true);
    view_buf K = vb_new(&e, LAYOUT_BTHD, 1, c->Hkv, Tk, c->D, 3, 7, &seed, true);
    view_buf V = vb_new(&e, LAYOUT_BTHD, 1, c->Hkv, Tk, c->Dv, 1, 7, &seed, true);
    view_buf O = vb_new(&e, LAYOUT_BTHD, 1, c->Hq, Tq, c->Dv, 2, 9, &seed, false);
    view_buf L = vb_new(&e, LAYOUT_BHTD, 1, c->Hq, Tq, 1, 1, 3, &seed, false);
    double slopes[16], sinks[16];
    ref_alibi_slopes(c->Hq, slopes);
    for (size_t h = 0; h < c->Hq; h++)
        sinks[h] = 0.5 * (double)h - 1.0;
    int lens[MAX_SEQS];
    for (size_t b = 0; b < c->n; b++) /* keys per sequence: some cut, one past the end */
        lens[b] = (int)(b % 3 == 1 ? (cross ? c->lk[b] : c->lq[b]) / 2 : b % 3 == 2 ? 1000 : 7);
    cl_mem slope_buf = buf_floats(&e, slopes, c->Hq), sink_buf = buf_floats(&e, sinks, c->Hq);
    cl_mem len_buf = buf_new(&e, sizeof lens);
    buf_write(&e, len_buf, 0, lens, sizeof lens);
    if (c->half) {
        view_buf *all[] = {&Q, &K, &V, &O};
        for (int i = 0; i < 4; i++)
            make_half(&e, all[i]);
    }

    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.path = test_path();
    p.mask.causal = (clattn_causal)c->causal;
    p.mask.window_left = c->wl, p.mask.window_right = c->wr, p.mask.window_keep_first = c->keep;
    if (c->lengths)
        p.mask.key_lengths = len_buf;
    p.logits.softcap = c->softcap;
    if (c->alibi)
        p.logits.alibi_slopes = slope_buf;
    if (c->sinks)
        p.logits.sinks = sink_buf;
    p.lse = &L.t;
    p.cu_seqlens_q = cq;
    p.cu_seqlens_k = cross ? ck : NULL;
    p.num_seqs = c->n;
    EXPECT_STATUS(clattn_sdpa(e.cc, e.queue, &Q.t, &K.t, &V.t, &O.t, &p, 0, NULL, NULL),
                  CLATTN_SUCCESS);
    CL_OK(clFinish(e.queue));

    float *o_all = malloc(O.elems * sizeof *o_all), *l_all = malloc(L.elems * sizeof *l_all);
    read_all(&e, &O, o_all);
    vb_read_all(&e, &L, l_all);
    ok &= vb_outside_unchanged(&O, O.host, o_all) && vb_outside_unchanged(&L, L.host, l_all);
    double *q = vb_dense(&Q, Q.host), *k = vb_dense(&K, K.host), *v = vb_dense(&V, V.host);
    double *o = vb_dense(&O, o_all), *l = vb_dense(&L, l_all);
    ref_variant rv = ref_variant_none();
    rv.window_left = c->wl, rv.window_right = c->wr, rv.keep_first = c->keep;
    rv.softcap = c->softcap;
    rv.alibi = c->alibi ? slopes : NULL;
    rv.sinks = c->sinks ? sinks : NULL;
    for (size_t b = 0; b < c->n; b++) {
        const size_t nq = cq[b + 1] - cq[b], nk = ck[b + 1] - ck[b];
        double *qs = rows_of(q, c->Hq, Tq, c->D, cq[b], nq);
        double *ks = rows_of(k, c->Hkv, Tk, c->D, ck[b], nk);
        double *vs = rows_of(v, c->Hkv, Tk, c->Dv, ck[b], nk);
        double *gs = rows_of(o, c->Hq, Tq, c->Dv, cq[b], nq);
        double *gl = rows_of(l, c->Hq, Tq, 1, cq[b], nq);
        double *ro = malloc((c->Hq * nq * c->Dv + 1) * sizeof *ro);
        double *rl = malloc((c->Hq * nq + 1) * sizeof *rl);
        ref_sdpa_variant(1, c->Hq, c->Hkv, nq, nk, c->D, c->Dv, 1.0 / sqrt((double)c->D),
                         c->causal, NULL, c->lengths ? &lens[b] : NULL, &rv, qs, ks, vs, ro,
                         NULL, rl);
        char what[48];
        snprintf(what, sizeof what, "O of sequence %zu (%zu x %zu)", b, nq, nk);
        ok &= check_close(what, gs, ro, c->Hq * nq * c->Dv, c->half ? 2e-3 : TOL);
        snprintf(what, sizeof what, "lse of sequence %zu", b);
        ok &= check_close(what, gl, rl, c->Hq * nq, TOL);
        free(qs), free(ks), free(vs), free(gs), free(gl), free(ro), free(rl);
    }
    free(q), free(k), free(v), free(o), free(l), free(o_all), free(l_all);
    clReleaseMemObject(slope_buf), clReleaseMemObject(sink_buf), clReleaseMemObject(len_buf);
    vb_free(&Q), vb_free(&K), vb_free(&V), vb_free(&O), vb_free(&L);
    env_close(&e);
    return ok;
}

/* Prompts of their own lengths, an empty one and a single token among them. */
static bool self_causal(void)
{
    vl_case c = base();
    const size_t lq[] = {17, 90, 0, 1, 64};
    c.n = 5;
    memcpy(c.lq, lq, sizeof lq);
    c.causal = 1;
    return run(&c);
}

/* Each sequence its own query and key counts, aligned at the end (chunked prefill and decoding
 * over keys already there); a sequence with queries but no keys gets zeros and lse -inf. */
static bool cross_bottom_right(void)
{
    vl_case c = base();
    const size_t lq[] = {1, 1, 3, 0, 5, 2}, lk[] = {50, 7, 40, 20, 5, 0};
    c.n = 6;
    memcpy(c.lq, lq, sizeof lq), memcpy(c.lk, lk, sizeof lk);
    c.causal = 2, c.lengths = true;
    return run(&c);
}

/* A decode step over sequences of their own lengths (one query each, or none; one sequence with
 * no key), GQA 8 over 2, with every variant; in fp16, the CPU's decode layout. */
static bool decode_step(bool half)
{
    vl_case c = base();
    const size_t lq[] = {1, 1, 0, 1, 1}, lk[] = {70, 7, 20, 0, 130};
    c.n = 5;
    memcpy(c.lq, lq, sizeof lq), memcpy(c.lk, lk, sizeof lk);
    c.Hq = 8, c.causal = 2, c.lengths = true;
    c.wl = 40, c.keep = 3, c.softcap = 4.0f, c.alibi = true, c.sinks = true;
    c.half = half;
    return run(&c);
}
static bool decode_step_f32(void) { return decode_step(false); }
static bool decode_step_f16(void) { return decode_step(true); }

/* No causal mask, key counts per sequence, odd value dim. */
static bool cross_no_mask(void)
{
    vl_case c = base();
    const size_t lq[] = {9, 33, 2}, lk[] = {40, 3, 17};
    c.n = 3;
    memcpy(c.lq, lq, sizeof lq), memcpy(c.lk, lk, sizeof lk);
    c.Dv = 24, c.lengths = true;
    c.Hkv = 1;
    return run(&c);
}

/* What today's models add, per sequence: a window with kept first keys, ALiBi, soft-capping,
 * sinks. */
static bool model_variants(void)
{
    vl_case c = base();
    const size_t lq[] = {40, 1, 70, 12};
    c.n = 4;
    memcpy(c.lq, lq, sizeof lq);
    c.causal = 1, c.wl = 9, c.keep = 2, c.softcap = 5.0f, c.alibi = true, c.sinks = true;
    return run(&c);
}

/* The multi-head layer on a packed batch (GQA, biases, causal): tokens [total, E], one forward,
 * each sequence against the reference layer run on that sequence alone. */
static bool mha_packed(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    const size_t E = 32, H = 4, Hkv = 2, KV = Hkv * (E / H), n = 4;
    const size_t cu[] = {0, 17, 17, 57, 58};
    const size_t T = cu[n];
    uint64_t seed = 41;
    const size_t nw = E * E + 2 * KV * E, nb = E + 2 * KV;
    view_buf X = vb_new(&e, LAYOUT_BHTD, 1, 1, T, E, 3, 3, &seed, true);
    view_buf W = vb_new(&e, LAYOUT_BHTD, 1, 1, 1, nw + E * E + nb + E, 0, 0, &seed, true);
    view_buf O = vb_new(&e, LAYOUT_BHTD, 1, 1, T, E, 2, 5, &seed, false);
    clattn_tensor win = clattn_tensor_bhtd(W.t.buffer, 0, 1, 1, E + 2 * KV, E);
    clattn_tensor wo = clattn_tensor_bhtd(W.t.buffer, nw, 1, 1, E, E);
    clattn_tensor bin = clattn_tensor_bhtd(W.t.buffer, nw + E * E, 1, 1, 1, nb);
    clattn_tensor bo = clattn_tensor_bhtd(W.t.buffer, nw + E * E + nb, 1, 1, 1, E);
    clattn_mha_params mp = clattn_mha_params_default();
    mp.embed_dim = E, mp.num_heads = H, mp.num_kv_heads = Hkv, mp.bias = 1;
    mp.in_proj_weight = &win, mp.in_proj_bias = &bin, mp.out_proj_weight = &wo;
    mp.out_proj_bias = &bo;
    clattn_mha *m = NULL;
    EXPECT_STATUS(clattn_mha_create(e.cc, &mp, &m), CLATTN_SUCCESS);
    clattn_mha_forward_params fp = clattn_mha_forward_params_default();
    fp.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
    fp.path = test_path();
    fp.cu_seqlens_q = cu, fp.num_seqs = n;
    EXPECT_STATUS(clattn_mha_forward(m, e.queue, &X.t, &X.t, &X.t, &O.t, &fp, 0, NULL, NULL),
                  CLATTN_SUCCESS);
    CL_OK(clFinish(e.queue));
    float *all = malloc(O.elems * sizeof *all);
    vb_read_all(&e, &O, all);
    ok &= vb_outside_unchanged(&O, O.host, all);
    double *x = vb_dense(&X, X.host), *w = vb_dense(&W, W.host), *o = vb_dense(&O, all);
    const double *dwo = w + nw, *dbin = dwo + E * E, *dbo = dbin + nb;
    const ref_mha_layer L = {E, H, Hkv, E, E, w, w + E * E, w + E * E + KV * E,
                             dbin, dbin + E, dbin + E + KV, dwo, dbo};
    for (size_t b = 0; b < n; b++) {
        const size_t len = cu[b + 1] - cu[b];
        double *ref = malloc((len * E + 1) * sizeof *ref);
        const double *xs = x + cu[b] * E;
        ref_mha(&L, 1, len, len, 1, NULL, NULL, xs, xs, xs, ref, NULL, NULL);
        char what[40];
        snprintf(what, sizeof what, "layer output, sequence %zu", b);
        ok &= check_close(what, o + cu[b] * E, ref, len * E, TOL);
        free(ref);
    }
    /* attention weights need the unfused path, which packed batches do not take */
    uint64_t s2 = 5;
    view_buf Wt = vb_new(&e, LAYOUT_BHTD, 1, 1, T, T, 0, 0, &s2, false);
    fp.weights = &Wt.t;
    EXPECT_STATUS(clattn_mha_forward(m, e.queue, &X.t, &X.t, &X.t, &O.t, &fp, 0, NULL, NULL),
                  CLATTN_ERROR_UNSUPPORTED_PATH);
    clattn_mha_destroy(&m);
    free(all), free(x), free(w), free(o);
    vb_free(&X), vb_free(&W), vb_free(&O), vb_free(&Wt);
    env_close(&e);
    return ok;
}

/* Continuous batching over a KV cache: after prompts of 40, 70 and 5 tokens, one step in which
 * sequences 0 and 2 decode a token while sequence 1 prefills a chunk of 20, appended with
 * per-sequence counts and attended in one launch with packed queries (cu_seqlens_q); each
 * sequence against the reference over its own keys, its queries its newest tokens. */
static bool kv_mixed(clattn_dtype dtype, bool rope, size_t splits)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    enum { B = 3, HKV = 2, HQ = 8, D = 32, CAP = 100, NEW = 20 };
    const size_t prompt[B] = {40, 70, 5}, step[B] = {1, NEW, 1};
    uint64_t seed = 61 + (size_t)dtype * 7 + splits;
    float *k = malloc(B * HKV * CAP * D * 4), *v = malloc(B * HKV * CAP * D * 4);
    float *q = malloc(B * HQ * CAP * D * 4);
    fill_uniform(k, B * HKV * CAP * D, &seed, -1.0f, 1.0f);
    fill_uniform(v, B * HKV * CAP * D, &seed, -1.0f, 1.0f);
    fill_uniform(q, B * HQ * CAP * D, &seed, -1.0f, 1.0f);
    clattn_rope_params rp = clattn_rope_params_default();
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = B, kp.num_kv_heads = HKV, kp.head_dim = D, kp.capacity = CAP, kp.dtype = dtype;
    kp.rope = rope ? &rp : NULL;
    clattn_kv_cache *kv = NULL;
    EXPECT_STATUS(clattn_kv_cache_create(e.cc, &kp, &kv), CLATTN_SUCCESS);
    /* the prompts: tokens 0 .. prompt[b] of each stream, appended from the streams themselves */
    cl_mem bk = buf_new(&e, B * HKV * CAP * D * 4), bv = buf_new(&e, B * HKV * CAP * D * 4);
    buf_write(&e, bk, 0, k, B * HKV * CAP * D * 4);
    buf_write(&e, bv, 0, v, B * HKV * CAP * D * 4);
    clattn_tensor K = clattn_tensor_bhtd(bk, 0, B, HKV, CAP, D), V = K;
    V.buffer = bv;
    K.dims[2] = V.dims[2] = 70;
    EXPECT_STATUS(clattn_kv_cache_append(kv, e.queue, &K, &V, prompt, 0, NULL, NULL),
                  CLATTN_SUCCESS);
    /* the step's tokens, each sequence's from its own position, and their queries packed */
    const size_t cu[B + 1] = {0, 1, 1 + NEW, 2 + NEW}, total = cu[B];
    float *kn = calloc(B * HKV * NEW * D, 4), *vn = calloc(B * HKV * NEW * D, 4);
    float *qp = malloc(HQ * total * D * 4);
    for (size_t b = 0; b < B; b++) {
        for (size_t h = 0; h < HKV; h++)
            for (size_t t = 0; t < step[b]; t++) {
                memcpy(kn + ((b * HKV + h) * NEW + t) * D, k + ((b * HKV + h) * CAP + prompt[b] + t) * D, D * 4);
                memcpy(vn + ((b * HKV + h) * NEW + t) * D, v + ((b * HKV + h) * CAP + prompt[b] + t) * D, D * 4);
            }
        for (size_t h = 0; h < HQ; h++)
            for (size_t t = 0; t < step[b]; t++)
                memcpy(qp + (h * total + cu[b] + t) * D, q + ((b * HQ + h) * CAP + prompt[b] + t) * D, D * 4);
    }
    cl_mem bkn = buf_new(&e, B * HKV * NEW * D * 4), bvn = buf_new(&e, B * HKV * NEW * D * 4);
    cl_mem bq = buf_new(&e, HQ * total * D * 4), bo = buf_new(&e, HQ * total * D * 4);
    buf_write(&e, bkn, 0, kn, B * HKV * NEW * D * 4);
    buf_write(&e, bvn, 0, vn, B * HKV * NEW * D * 4);
    buf_write(&e, bq, 0, qp, HQ * total * D * 4);
    const clattn_tensor KN = clattn_tensor_bhtd(bkn, 0, B, HKV, NEW, D);
    const clattn_tensor VN = clattn_tensor_bhtd(bvn, 0, B, HKV, NEW, D);
    const clattn_tensor Q = clattn_tensor_bhtd(bq, 0, 1, HQ, total, D);
    const clattn_tensor O = clattn_tensor_bhtd(bo, 0, 1, HQ, total, D);
    EXPECT_STATUS(clattn_kv_cache_append(kv, e.queue, &KN, &VN, step, 0, NULL, NULL),
                  CLATTN_SUCCESS);
    clattn_kv_attend_params ap = clattn_kv_attend_params_default();
    ap.cu_seqlens_q = cu, ap.num_seqs = B, ap.splits = splits;
    EXPECT_STATUS(clattn_kv_cache_attend(kv, e.queue, &Q, &O, &ap, 0, NULL, NULL), CLATTN_SUCCESS);
    float *o = malloc(HQ * total * D * 4);
    buf_read(&e, bo, 0, o, HQ * total * D * 4);
    for (size_t b = 0; b < B; b++) {
        const size_t len = prompt[b] + step[b], nq = step[b];
        double *kd = malloc(HKV * len * D * 8), *vd = malloc(HKV * len * D * 8);
        double *qd = malloc(HQ * nq * D * 8), *ro = malloc(HQ * nq * D * 8), *go = malloc(HQ * nq * D * 8);
        for (size_t h = 0; h < HKV; h++)
            for (size_t i = 0; i < len * D; i++) {
                kd[h * len * D + i] = k[(b * HKV + h) * CAP * D + i];
                vd[h * len * D + i] = v[(b * HKV + h) * CAP * D + i];
            }
        for (size_t h = 0; h < HQ; h++)
            for (size_t i = 0; i < nq * D; i++) {
                qd[h * nq * D + i] = q[((b * HQ + h) * CAP + prompt[b]) * D + i];
                go[h * nq * D + i] = o[(h * total + cu[b]) * D + i];
            }
        if (rope) { /* keys at their positions, the queries at the newest */
            const int at = (int)prompt[b];
            ref_rope(1, HKV, len, D, D, 0, 10000.0, NULL, NULL, kd, kd);
            ref_rope(1, HQ, nq, D, D, 0, 10000.0, NULL, &at, qd, qd);
        }
        if (dtype == CLATTN_Q8) {
            ref_quantize_q8(HKV * len, D, kd, kd);
            ref_quantize_q8(HKV * len, D, vd, vd);
        }
        const ref_variant rv = ref_variant_none();
        ref_sdpa_variant(1, HQ, HKV, nq, len, D, D, 1.0 / sqrt((double)D), 2, NULL, NULL, &rv, qd, kd,
                         vd, ro, NULL, NULL);
        char what[40];
        snprintf(what, sizeof what, "sequence %zu (%zu of %zu)", b, nq, len);
        /* int8 keys rotated in float, the reference's in double: a step now and then */
        ok &= check_close(what, go, ro, HQ * nq * D, dtype == CLATTN_Q8 && rope ? 2e-2 : TOL);
        free(kd), free(vd), free(qd), free(ro), free(go);
    }
    /* offsets that are not the cache's batch, or do not end at the queries' count */
    const size_t two[] = {0, 1, total}, short_[] = {0, 1, 2, total - 1};
    ap.cu_seqlens_q = two, ap.num_seqs = 2;
    EXPECT_STATUS(clattn_kv_cache_attend(kv, e.queue, &Q, &O, &ap, 0, NULL, NULL),
                  CLATTN_ERROR_INVALID_ARGUMENT);
    ap.cu_seqlens_q = short_, ap.num_seqs = B;
    EXPECT_STATUS(clattn_kv_cache_attend(kv, e.queue, &Q, &O, &ap, 0, NULL, NULL),
                  CLATTN_ERROR_INVALID_ARGUMENT);
    clattn_kv_cache_destroy(&kv);
    clReleaseMemObject(bk), clReleaseMemObject(bv), clReleaseMemObject(bkn), clReleaseMemObject(bvn);
    clReleaseMemObject(bq), clReleaseMemObject(bo);
    free(k), free(v), free(q), free(kn), free(vn), free(qp), free(o);
    env_close(&e);
    return ok;
}
static bool kv_mixed_steps(void) { return kv_mixed(CLATTN_F32, false, 1); }
static bool kv_mixed_steps_split(void) { return kv_mixed(CLATTN_F32, false, 3); }
static bool kv_mixed_steps_q8_rope(void) { return kv_mixed(CLATTN_Q8, true, 2); }

int main(int argc, char **argv)
{
    static const test_case cases[] = {
        CASE(self_causal),
        CASE(cross_bottom_right),
        CASE(decode_step_f32),
        CASE(decode_step_f16),
        CASE(cross_no_mask),
        CASE(model_variants),
        CASE(mha_packed),
        CASE(kv_mixed_steps),
        CASE(kv_mixed_steps_split),
        CASE(kv_mixed_steps_q8_rope),
    };
    return run_cases(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
