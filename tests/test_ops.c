/* Each attention step as its own operation, against the double-precision reference: linear
 * (projection), scores, mask, softmax and weighted sum, on strided and offset views. */
#include "harness.h"
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The setups every case of this file runs under (see harness.h). */
#define SETUPS "auto auto-clblast"

static test_env E;

/* Runs after an op: reads the output view, compares it with `ref`, checks the guard elements. */
static bool expect_view(const char *what, view_buf *out, const double *ref, double tol)
{
    float *all = malloc(out->elems * sizeof *all + 1);
    vb_read_all(&E, out, all);
    double *got = vb_dense(out, all);
    const clattn_tensor *t = &out->t;
    bool ok = check_close(what, got, ref, t->dims[0] * t->dims[1] * t->dims[2] * t->dims[3], tol);
    ok &= vb_outside_unchanged(out, out->host, all);
    free(got);
    free(all);
    return ok;
}

static bool wait_done(cl_event ev)
{
    if (!ev)
        return false;
    cl_int st = clWaitForEvents(1, &ev);
    clReleaseEvent(ev);
    return st == CL_SUCCESS;
}

/* --- linear ---------------------------------------------------------------------------------- */

static bool linear_case(layout xl, size_t d0, size_t d1, size_t M, size_t K, size_t N,
                        bool bias, bool w_transposed)
{
    bool ok = true;
    uint64_t seed = 99 + M + K + N;
    view_buf X = vb_new(&E, xl, d0, d1, M, K, 7, 5, &seed, true);
    view_buf W = vb_new(&E, LAYOUT_BHTD, 1, 1, N, K, 3, 5, &seed, true);
    view_buf b = vb_new(&E, LAYOUT_BHTD, 1, 1, 1, N, 9, 5, &seed, true);
    view_buf Y = vb_new(&E, LAYOUT_BHTD, d0, d1, M, N, 4, 6, &seed, false);
    double *w = vb_dense(&W, W.host);
    if (w_transposed) {
        /* The same weights stored [K, N] (column-major [N, K]): strides (1, N). */
        for (size_t n = 0; n < N; n++)
            for (size_t k = 0; k < K; k++)
                W.host[3 + k * N + n] = (float)w[n * K + k];
        buf_write(&E, W.t.buffer, 0, W.host, W.elems * sizeof(float));
        W.t.strides[2] = 1;
        W.t.strides[3] = N;
    }
    cl_event ev = NULL;
    EXPECT_STATUS(clattn_linear(E.cc, E.queue, &X.t, &W.t, bias ? &b.t : NULL, &Y.t, 0, NULL, &ev),
                  CLATTN_SUCCESS);
    EXPECT(wait_done(ev));
    double *x = vb_dense(&X, X.host), *bb = vb_dense(&b, b.host);
    double *ref = malloc(d0 * d1 * M * N * sizeof *ref + 1);
    ref_linear(d0 * d1 * M, K, N, x, w, bias ? bb : NULL, ref);
    ok &= expect_view("Y", &Y, ref, TOL);
    EXPECT(vb_same(&E, &X) && vb_same(&E, &W) && vb_same(&E, &b));
    /* The same with the weights prepared once. */
    view_buf Y2 = vb_new(&E, LAYOUT_BHTD, d0, d1, M, N, 4, 6, &seed, false);
    clattn_weights *pw = NULL;
    EXPECT_STATUS(clattn_weights_create(E.cc, E.queue, &W.t, 0, NULL, NULL, &pw), CLATTN_SUCCESS);
    EXPECT(clattn_weights_bytes(pw) >= N * K * sizeof(float));
    EXPECT_STATUS(clattn_linear_prepared(E.cc, E.queue, &X.t, pw, bias ? &b.t : NULL, &Y2.t, 0, NULL, &ev),
                  CLATTN_SUCCESS);
    EXPECT(wait_done(ev));
    ok &= expect_view("Y, prepared weights", &Y2, ref, TOL);
    clattn_weights_destroy(&pw);
    EXPECT(pw == NULL);
    free(x), free(w), free(bb), free(ref);
    vb_free(&X), vb_free(&W), vb_free(&b), vb_free(&Y), vb_free(&Y2);
    return ok;
}

/* Prepared weights from fp16 storage, then updated in place: each product against the
 * reference on the (fp16-rounded) weights it was given. N and K leave partial panels. */
static bool linear_prepared_fp16_update(void)
{
    bool ok = true;
    const size_t M = 50, K = 70, N = 130;
    uint64_t seed = 321;
    view_buf X = vb_new(&E, LAYOUT_BHTD, 1, 1, M, K, 0, 0, &seed, true);
    view_buf Y = vb_new(&E, LAYOUT_BHTD, 1, 1, M, N, 2, 2, &seed, false);
    float *w = malloc(N * K * sizeof *w);
    uint16_t *wh = malloc(N * K * sizeof *wh);
    double *wd = malloc(N * K * sizeof *wd), *x = vb_dense(&X, X.host), *ref = malloc(M * N * sizeof *ref);
    cl_mem wb = buf_new(&E, N * K * sizeof *wh);
    clattn_tensor W = clattn_tensor_bhtd(wb, 0, 1, 1, N, K);
    W.dtype = CLATTN_F16;
    clattn_weights *pw = NULL;
    for (int round = 0; round < 2; round++) {
        fill_uniform(w, N * K, &seed, -0.5f, 0.5f);
        for (size_t i = 0; i < N * K; i++) {
            wh[i] = half_from_float(w[i]);
            wd[i] = half_to_float(wh[i]);
        }
        buf_write(&E, wb, 0, wh, N * K * sizeof *wh);
        if (round == 0)
            EXPECT_STATUS(clattn_weights_create(E.cc, E.queue, &W, 0, NULL, NULL, &pw), CLATTN_SUCCESS);
        else
            EXPECT_STATUS(clattn_weights_update(pw, E.queue, &W, 0, NULL, NULL), CLATTN_SUCCESS);
        cl_event ev = NULL;
        EXPECT_STATUS(clattn_linear_prepared(E.cc, E.queue, &X.t, pw, NULL, &Y.t, 0, NULL, &ev),
                      CLATTN_SUCCESS);
        EXPECT(wait_done(ev));
        ref_linear(M, K, N, x, wd, NULL, ref);
        ok &= expect_view(round ? "Y after update" : "Y, fp16 weights", &Y, ref, TOL);
    }
    /* Shapes that do not agree, and a NULL object. */
    view_buf X2 = vb_new(&E, LAYOUT_BHTD, 1, 1, M, K + 1, 0, 0, &seed, true);
    EXPECT_STATUS(clattn_linear_prepared(E.cc, E.queue, &X2.t, pw, NULL, &Y.t, 0, NULL, NULL),
                  CLATTN_ERROR_INVALID_SHAPE);
    EXPECT_STATUS(clattn_linear_prepared(E.cc, E.queue, &X.t, NULL, NULL, &Y.t, 0, NULL, NULL),
                  CLATTN_ERROR_INVALID_ARGUMENT);
    clattn_tensor W2 = W;
    W2.dims[2] = N - 1;
    EXPECT_STATUS(clattn_weights_update(pw, E.queue, &W2, 0, NULL, NULL), CLATTN_ERROR_INVALID_SHAPE);
    clattn_weights_destroy(&pw);
    clattn_weights_destroy(NULL);
    clReleaseMemObject(wb);
    free(w), free(wh), free(wd), free(x), free(ref);
    vb_free(&X), vb_free(&X2), vb_free(&Y);
    return ok;
}

static bool linear_packed_bias(void) { return linear_case(LAYOUT_BHTD, 2, 1, 13, 24, 40, true, false); }
static bool linear_head_split_input(void) { return linear_case(LAYOUT_BTHD, 2, 3, 11, 16, 20, true, false); }
static bool linear_transposed_weight(void) { return linear_case(LAYOUT_BHTD, 1, 2, 9, 33, 17, false, true); }

/* --- scores ---------------------------------------------------------------------------------- */

static bool scores_case(size_t B, size_t Hq, size_t Hkv, size_t Lq, size_t Lk, size_t D,
                        bool s_transposed, float scale)
{
    bool ok = true;
    uint64_t seed = 5 + Lq * Lk;
    view_buf Q = vb_new(&E, LAYOUT_BTHD, B, Hq, Lq, D, 2, 3, &seed, true);
    view_buf K = vb_new(&E, LAYOUT_BHTD, B, Hkv, Lk, D, 6, 3, &seed, true);
    view_buf S = vb_new(&E, LAYOUT_BHTD, B, Hq, Lq, Lk, 1, 4, &seed, false);
    if (s_transposed) { /* each [Lq, Lk] slice stored column-major */
        S.t.strides[2] = 1;
        S.t.strides[3] = Lq;
    }
    cl_event ev = NULL;
    EXPECT_STATUS(clattn_scores(E.cc, E.queue, &Q.t, &K.t, &S.t, scale, 0, NULL, &ev), CLATTN_SUCCESS);
    EXPECT(wait_done(ev));
    double *q = vb_dense(&Q, Q.host), *k = vb_dense(&K, K.host);
    double *ref = malloc(B * Hq * Lq * Lk * sizeof *ref + 1);
    ref_scores(B, Hq, Hkv, Lq, Lk, D, isnan(scale) ? 1.0 / sqrt((double)D) : scale, q, k, ref);
    ok &= expect_view("S", &S, ref, TOL);
    EXPECT(vb_same(&E, &Q) && vb_same(&E, &K));
    free(q), free(k), free(ref);
    vb_free(&Q), vb_free(&K), vb_free(&S);
    return ok;
}

static bool scores_gqa(void) { return scores_case(2, 4, 2, 11, 19, 16, false, 0.5f); }

/* GQA over packed views with a user event in the wait list: the call must return at once (it
 * may not wait on the caller's queue), and compute once the event completes. */
static bool scores_gqa_waits_without_blocking(void)
{
    bool ok = true;
    const size_t B = 2, Hq = 4, Hkv = 2, L = 9, Dh = 16;
    uint64_t seed = 12;
    view_buf Q = vb_new(&E, LAYOUT_BTHD, B, Hq, L, Dh, 1, 1, &seed, true);
    view_buf K = vb_new(&E, LAYOUT_BTHD, B, Hkv, L, Dh, 2, 1, &seed, true);
    view_buf S = vb_new(&E, LAYOUT_BHTD, B, Hq, L, L, 0, 1, &seed, false);
    cl_int err;
    cl_event gate = clCreateUserEvent(E.context, &err);
    CL_OK(err);
    cl_event done = NULL;
    EXPECT_STATUS(clattn_scores(E.cc, E.queue, &Q.t, &K.t, &S.t, NAN, 1, &gate, &done), CLATTN_SUCCESS);
    /* Reaching this line is the test: a blocking call would wait here forever. */
    cl_int state = 0;
    if (done)
        clGetEventInfo(done, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof state, &state, NULL);
    EXPECT(state != CL_COMPLETE);
    CL_OK(clSetUserEventStatus(gate, CL_COMPLETE));
    EXPECT(wait_done(done));
    clReleaseEvent(gate);
    double *q = vb_dense(&Q, Q.host), *k = vb_dense(&K, K.host);
    double *ref = malloc(B * Hq * L * L * sizeof *ref);
    ref_scores(B, Hq, Hkv, L, L, Dh, 0.25, q, k, ref);
    ok &= expect_view("S", &S, ref, TOL);
    free(q), free(k), free(ref);
    vb_free(&Q), vb_free(&K), vb_free(&S);
    return ok;
}
static bool scores_default_scale(void) { return scores_case(1, 3, 3, 7, 65, 40, false, NAN); }
static bool scores_transposed_output(void) { return scores_case(2, 2, 1, 9, 14, 24, true, 1.0f); }

/* --- mask ------------------------------------------------------------------------------------ */

static bool mask_case(int causal, int additive, bool lengths, size_t Lq, size_t Lk)
{
    bool ok = true;
    const size_t B = 3, H = 2;
    uint64_t seed = 77 + (size_t)causal * 3 + Lq;
    view_buf S = vb_new(&E, LAYOUT_BHTD, B, H, Lq, Lk, 5, 5, &seed, true);
    /* Additive mask broadcast over heads: [B, 1, Lq, Lk]. */
    view_buf M = vb_new(&E, LAYOUT_BHTD, B, 1, Lq, Lk, 2, 2, &seed, true);
    int lens[3] = {(int)Lk / 2, 0, (int)Lk + 3};
    cl_mem lb = buf_new(&E, sizeof lens);
    buf_write(&E, lb, 0, lens, sizeof lens);
    clattn_mask_params mp = clattn_mask_params_default();
    mp.causal = (clattn_causal)causal;
    mp.additive = additive ? &M.t : NULL;
    mp.key_lengths = lengths ? lb : NULL;
    cl_event ev = NULL;
    EXPECT_STATUS(clattn_mask(E.cc, E.queue, &S.t, &mp, 0, NULL, &ev), CLATTN_SUCCESS);
    EXPECT(wait_done(ev));
    double *ref = vb_dense(&S, S.host), *m1 = vb_dense(&M, M.host);
    double *m = malloc(B * H * Lq * Lk * sizeof *m);
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < H; h++)
            memcpy(m + (b * H + h) * Lq * Lk, m1 + b * Lq * Lk, Lq * Lk * sizeof *m);
    ref_mask(B, H, Lq, Lk, causal, additive ? m : NULL, lengths ? lens : NULL, ref);
    ok &= expect_view("masked S", &S, ref, TOL);
    EXPECT(vb_same(&E, &M));
    free(ref), free(m1), free(m);
    clReleaseMemObject(lb);
    vb_free(&S), vb_free(&M);
    return ok;
}

static bool mask_causal_top_left(void) { return mask_case(1, 0, false, 9, 14) && mask_case(1, 0, false, 14, 9); }
static bool mask_causal_bottom_right(void) { return mask_case(2, 0, false, 9, 14) && mask_case(2, 0, false, 14, 9); }
static bool mask_additive_broadcast(void) { return mask_case(0, 1, false, 8, 12); }
static bool mask_key_lengths(void) { return mask_case(0, 0, true, 6, 10); }
static bool mask_all_combined(void) { return mask_case(2, 1, true, 5, 11) && mask_case(1, 1, true, 11, 5); }

/* --- softmax --------------------------------------------------------------------------------- */

/* Rows: random; all -inf (fully masked); partly -inf; huge logits; all negative; a NaN; +inf. */
static void special_rows(float *s, size_t rows, size_t Lk, float big)
{
    for (size_t j = 0; j < Lk; j++) {
        if (rows > 1)
            s[1 * Lk + j] = -INFINITY;
        if (rows > 2 && j % 2)
            s[2 * Lk + j] = -INFINITY;
        if (rows > 3)
            s[3 * Lk + j] = (j % 3 ? -big : big);
        if (rows > 4)
            s[4 * Lk + j] = -big - (float)j;
    }
    if (rows > 5)
        s[5 * Lk + Lk / 2] = NAN;
    if (rows > 6)
        s[6 * Lk + Lk / 3] = INFINITY;
}

static bool softmax_case(bool in_place, bool lse, size_t Lk, float big)
{
    bool ok = true;
    const size_t B = 2, H = 2, Lq = 7;
    uint64_t seed = 31 + Lk;
    view_buf S = vb_new(&E, LAYOUT_BHTD, B, H, Lq, Lk, 3, 3, &seed, true);
    for (size_t i = 0; i < S.elems; i++)
        S.host[i] *= 8.0f;
    special_rows(S.host + 3, B * H * Lq, Lk, big);
    buf_write(&E, S.t.buffer, 0, S.host, S.elems * sizeof(float));
    view_buf P = vb_new(&E, LAYOUT_BTHD, B, H, Lq, Lk, 8, 3, &seed, false);
    view_buf L = vb_new(&E, LAYOUT_BHTD, B, H, Lq, 1, 1, 2, &seed, false);
    double *s = vb_dense(&S, S.host);
    cl_event ev = NULL;
    view_buf *out = in_place ? &S : &P;
    EXPECT_STATUS(clattn_softmax(E.cc, E.queue, &S.t, &out->t, lse ? &L.t : NULL, 0, NULL, &ev),
                  CLATTN_SUCCESS);
    EXPECT(wait_done(ev));
    double *rp = malloc(B * H * Lq * Lk * sizeof *rp + 1), *rl = malloc(B * H * Lq * sizeof *rl);
    ref_softmax(B * H * Lq, Lk, s, rp, rl);
    ok &= expect_view("P", out, rp, TOL);
    if (lse)
        ok &= expect_view("lse", &L, rl, TOL);
    if (!in_place)
        EXPECT(vb_same(&E, &S));
    free(s), free(rp), free(rl);
    vb_free(&S), vb_free(&P), vb_free(&L);
    return ok;
}

static bool softmax_out_of_place_lse(void) { return softmax_case(false, true, 37, 88.0f); }
static bool softmax_in_place(void) { return softmax_case(true, false, 64, 88.0f); }
static bool softmax_large_logits(void) { return softmax_case(false, true, 129, 3.0e4f); }
static bool softmax_one_key(void) { return softmax_case(false, true, 1, 100.0f); }

/* --- weighted sum ---------------------------------------------------------------------------- */

static bool weighted_sum_case(size_t Hq, size_t Hkv, size_t Lq, size_t Lk, size_t Dv)
{
    bool ok = true;
    const size_t B = 2;
    uint64_t seed = 11 + Lk;
    view_buf P = vb_new(&E, LAYOUT_BHTD, B, Hq, Lq, Lk, 4, 4, &seed, true);
    view_buf V = vb_new(&E, LAYOUT_BTHD, B, Hkv, Lk, Dv, 2, 3, &seed, true);
    view_buf O = vb_new(&E, LAYOUT_BTHD, B, Hq, Lq, Dv, 6, 3, &seed, false);
    cl_event ev = NULL;
    EXPECT_STATUS(clattn_weighted_sum(E.cc, E.queue, &P.t, &V.t, &O.t, 0, NULL, &ev), CLATTN_SUCCESS);
    EXPECT(wait_done(ev));
    double *p = vb_dense(&P, P.host), *v = vb_dense(&V, V.host);
    double *ref = malloc(B * Hq * Lq * Dv * sizeof *ref + 1);
    ref_weighted_sum(B, Hq, Hkv, Lq, Lk, Dv, p, v, ref);
    ok &= expect_view("O", &O, ref, TOL);
    EXPECT(vb_same(&E, &P) && vb_same(&E, &V));
    free(p), free(v), free(ref);
    vb_free(&P), vb_free(&V), vb_free(&O);
    return ok;
}

static bool weighted_sum_gqa(void) { return weighted_sum_case(6, 2, 10, 23, 40); }
static bool weighted_sum_no_keys(void) { return weighted_sum_case(2, 2, 5, 0, 16); }

/* Views of no element whose other dims are enormous (the fuzzer's find): softmax and mask
 * launch nothing for them, rather than a grid of 2^64 rows that never ends. */
static bool empty_views_huge_dims(void)
{
    bool ok = true;
    uint64_t seed = 3;
    view_buf S = vb_new(&E, LAYOUT_BHTD, 1, 1, 4, 4, 0, 0, &seed, true);
    clattn_tensor huge = S.t;
    huge.dims[1] = SIZE_MAX - 13, huge.dims[2] = 1, huge.dims[3] = 0;
    huge.strides[0] = 12, huge.strides[1] = 4, huge.strides[2] = 1, huge.strides[3] = 0;
    cl_event ev = NULL;
    EXPECT_STATUS(clattn_softmax(E.cc, E.queue, &huge, &huge, NULL, 0, NULL, &ev), CLATTN_SUCCESS);
    EXPECT(wait_done(ev));
    ev = NULL;
    clattn_mask_params mp = clattn_mask_params_default();
    mp.causal = CLATTN_CAUSAL_TOP_LEFT;
    EXPECT_STATUS(clattn_mask(E.cc, E.queue, &huge, &mp, 0, NULL, &ev), CLATTN_SUCCESS);
    EXPECT(wait_done(ev));
    /* the products of empty operands into an empty output of as many heads */
    clattn_tensor none = huge;
    none.dims[2] = 0;
    ev = NULL;
    EXPECT_STATUS(clattn_scores(E.cc, E.queue, &huge, &none, &huge, 1.0f, 0, NULL, &ev),
                  CLATTN_SUCCESS);
    EXPECT(wait_done(ev));
    ev = NULL;
    EXPECT_STATUS(clattn_weighted_sum(E.cc, E.queue, &huge, &none, &huge, 0, NULL, &ev),
                  CLATTN_SUCCESS);
    EXPECT(wait_done(ev));
    EXPECT(vb_same(&E, &S));
    vb_free(&S);
    return ok;
}

/* --- steps chained by the caller equal sdpa --------------------------------------------------- */

/* Merging parts whose log-sum-exps are NaN or -inf: a NaN part makes the row NaN (never a row
 * that "saw no key"); parts that all saw no key give 0 and -inf. */
static bool merge_nan_and_empty_parts(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    uint64_t seed = 12;
    const float l1[3] = {NAN, -INFINITY, 0.5f}, l2[3] = {-INFINITY, -INFINITY, NAN};
    view_buf O1 = vb_new(&e, LAYOUT_BHTD, 1, 1, 3, 4, 0, 0, &seed, true);
    view_buf O2 = vb_new(&e, LAYOUT_BHTD, 1, 1, 3, 4, 0, 0, &seed, true);
    view_buf L1 = vb_new(&e, LAYOUT_BHTD, 1, 1, 3, 1, 0, 0, &seed, true);
    view_buf L2 = vb_new(&e, LAYOUT_BHTD, 1, 1, 3, 1, 0, 0, &seed, true);
    view_buf O = vb_new(&e, LAYOUT_BHTD, 1, 1, 3, 4, 0, 0, &seed, false);
    view_buf L = vb_new(&e, LAYOUT_BHTD, 1, 1, 3, 1, 0, 0, &seed, false);
    buf_write(&e, L1.t.buffer, 0, l1, sizeof l1);
    buf_write(&e, L2.t.buffer, 0, l2, sizeof l2);
    EXPECT_STATUS(clattn_merge(e.cc, e.queue, &O1.t, &L1.t, &O2.t, &L2.t, &O.t, &L.t, 0, NULL, NULL),
                  CLATTN_SUCCESS);
    float o[12], l[3];
    buf_read(&e, O.t.buffer, 0, o, sizeof o);
    buf_read(&e, L.t.buffer, 0, l, sizeof l);
    for (int d = 0; d < 4; d++) {
        EXPECT(isnan(o[d]));         /* row 0: a NaN part */
        EXPECT(o[4 + d] == 0.0f);    /* row 1: no part saw a key */
        EXPECT(isnan(o[8 + d]));     /* row 2: a NaN part */
    }
    EXPECT(isnan(l[0]) && l[1] == -INFINITY && isnan(l[2]));
    vb_free(&O1), vb_free(&O2), vb_free(&L1), vb_free(&L2), vb_free(&O), vb_free(&L);
    env_close(&e);
    return ok;
}

/* Merging and adding sinks with fp16 outputs: an fp16 part into a float accumulator, a float
 * accumulator into an fp16 result, and sinks on an fp16 result, against the definitions in
 * double on the values as stored (rows that saw no key included). */
static bool merge_and_sinks_fp16(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    enum { R = 6, DV = 5 };
    uint64_t seed = 77;
    float o1[R * DV], o2[R * DV], l1[R], l2[R], sinks[1] = {0.7f};
    fill_uniform(o1, R * DV, &seed, -2.0f, 2.0f);
    fill_uniform(o2, R * DV, &seed, -2.0f, 2.0f);
    fill_uniform(l1, R, &seed, -3.0f, 3.0f);
    fill_uniform(l2, R, &seed, -3.0f, 3.0f);
    l1[1] = -INFINITY, l2[2] = -INFINITY, l1[3] = l2[3] = -INFINITY;
    uint16_t h2[R * DV];
    for (int i = 0; i < R * DV; i++) {
        h2[i] = half_from_float(o2[i]);
        o2[i] = half_to_float(h2[i]); /* the values as stored */
    }
    cl_mem b1 = buf_new(&e, sizeof o1), b2 = buf_new(&e, sizeof h2), bl1 = buf_new(&e, sizeof l1);
    cl_mem bl2 = buf_new(&e, sizeof l2), bo = buf_new(&e, sizeof h2), bl = buf_new(&e, sizeof l1);
    cl_mem bs = buf_new(&e, sizeof sinks);
    buf_write(&e, b1, 0, o1, sizeof o1), buf_write(&e, b2, 0, h2, sizeof h2);
    buf_write(&e, bl1, 0, l1, sizeof l1), buf_write(&e, bl2, 0, l2, sizeof l2);
    buf_write(&e, bs, 0, sinks, sizeof sinks);
    clattn_tensor O1 = clattn_tensor_bhtd(b1, 0, 1, 1, R, DV), O2 = O1, O = O1;
    O2.buffer = b2, O2.dtype = CLATTN_F16;
    O.buffer = bo, O.dtype = CLATTN_F16;
    const clattn_tensor L1 = clattn_tensor_bhtd(bl1, 0, 1, 1, R, 1);
    const clattn_tensor L2 = clattn_tensor_bhtd(bl2, 0, 1, 1, R, 1);
    const clattn_tensor L = clattn_tensor_bhtd(bl, 0, 1, 1, R, 1);
    /* float + fp16 parts -> fp16 result; then the sink on it */
    EXPECT_STATUS(clattn_merge(e.cc, e.queue, &O1, &L1, &O2, &L2, &O, &L, 0, NULL, NULL),
                  CLATTN_SUCCESS);
    uint16_t got[R * DV];
    float lse[R];
    buf_read(&e, bo, 0, got, sizeof got);
    buf_read(&e, bl, 0, lse, sizeof lse);
    double want[R * DV], wl[R], g[R * DV];
    for (int r = 0; r < R; r++) {
        const double a = l1[r], c = l2[r], mx = a > c ? a : c;
        const double w1 = a == -INFINITY ? 0 : exp(a - mx), w2 = c == -INFINITY ? 0 : exp(c - mx);
        wl[r] = mx == -INFINITY ? -INFINITY : mx + log(w1 + w2);
        for (int d = 0; d < DV; d++) {
            want[r * DV + d] =
                mx == -INFINITY ? 0.0 : (w1 * o1[r * DV + d] + w2 * o2[r * DV + d]) / (w1 + w2);
            g[r * DV + d] = half_to_float(got[r * DV + d]);
        }
    }
    ok &= check_close("merged into fp16", g, want, R * DV, 1e-3); /* fp16's rounding */
    double gl[R];
    for (int r = 0; r < R; r++)
        gl[r] = lse[r];
    ok &= check_close("merged lse", gl, wl, R, TOL);
    EXPECT_STATUS(clattn_add_sinks(e.cc, e.queue, &O, &L, bs, 0, 0, NULL, NULL), CLATTN_SUCCESS);
    buf_read(&e, bo, 0, got, sizeof got);
    for (int r = 0; r < R; r++)
        for (int d = 0; d < DV; d++) {
            want[r * DV + d] *= wl[r] == -INFINITY ? 0.0 : 1.0 / (1.0 + exp(sinks[0] - wl[r]));
            g[r * DV + d] = half_to_float(got[r * DV + d]);
        }
    ok &= check_close("fp16 with its sink", g, want, R * DV, 1e-3);
    /* fp16 part into the float accumulator, in place */
    EXPECT_STATUS(clattn_merge(e.cc, e.queue, &O1, &L1, &O2, &L2, &O1, &L1, 0, NULL, NULL),
                  CLATTN_SUCCESS);
    float acc[R * DV];
    buf_read(&e, b1, 0, acc, sizeof acc);
    for (int r = 0; r < R; r++) {
        const double a = l1[r], c = l2[r], mx = a > c ? a : c;
        const double w1 = a == -INFINITY ? 0 : exp(a - mx), w2 = c == -INFINITY ? 0 : exp(c - mx);
        for (int d = 0; d < DV; d++) {
            want[r * DV + d] =
                mx == -INFINITY ? 0.0 : (w1 * o1[r * DV + d] + w2 * o2[r * DV + d]) / (w1 + w2);
            g[r * DV + d] = acc[r * DV + d];
        }
    }
    ok &= check_close("fp16 part into a float accumulator", g, want, R * DV, TOL);
    cl_mem bufs[] = {b1, b2, bl1, bl2, bo, bl, bs};
    for (int i = 0; i < 7; i++)
        clReleaseMemObject(bufs[i]);
    env_close(&e);
    return ok;
}

static bool steps_equal_sdpa(void)
{
    bool ok = true;
    const size_t B = 2, H = 2, L = 21, D = 32;
    uint64_t seed = 4;
    view_buf Q = vb_new(&E, LAYOUT_BHTD, B, H, L, D, 0, 0, &seed, true);
    view_buf K = vb_new(&E, LAYOUT_BHTD, B, H, L, D, 0, 0, &seed, true);
    view_buf V = vb_new(&E, LAYOUT_BHTD, B, H, L, D, 0, 0, &seed, true);
    view_buf S = vb_new(&E, LAYOUT_BHTD, B, H, L, L, 0, 0, &seed, false);
    view_buf O1 = vb_new(&E, LAYOUT_BHTD, B, H, L, D, 0, 0, &seed, false);
    view_buf O2 = vb_new(&E, LAYOUT_BHTD, B, H, L, D, 0, 0, &seed, false);
    clattn_mask_params mp = clattn_mask_params_default();
    mp.causal = CLATTN_CAUSAL_TOP_LEFT;
    cl_event e1 = NULL, e2 = NULL, e3 = NULL, e4 = NULL;
    EXPECT_STATUS(clattn_scores(E.cc, E.queue, &Q.t, &K.t, &S.t, NAN, 0, NULL, &e1), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_mask(E.cc, E.queue, &S.t, &mp, 1, &e1, &e2), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_softmax(E.cc, E.queue, &S.t, &S.t, NULL, 1, &e2, &e3), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_weighted_sum(E.cc, E.queue, &S.t, &V.t, &O1.t, 1, &e3, &e4), CLATTN_SUCCESS);
    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
    p.path = CLATTN_PATH_UNFUSED; /* the same steps inside: bit-identical */
    cl_event e5 = NULL;
    EXPECT_STATUS(clattn_sdpa(E.cc, E.queue, &Q.t, &K.t, &V.t, &O2.t, &p, 1, &e4, &e5), CLATTN_SUCCESS);
    EXPECT(wait_done(e5));
    clReleaseEvent(e1), clReleaseEvent(e2), clReleaseEvent(e3), clReleaseEvent(e4);
    float *a = malloc(O1.elems * sizeof *a), *b = malloc(O2.elems * sizeof *b);
    vb_read_all(&E, &O1, a);
    vb_read_all(&E, &O2, b);
    /* Same kernels, same order of operations: bit-identical. */
    EXPECT(memcmp(a, b, O1.elems * sizeof *a) == 0);
    free(a), free(b);
    vb_free(&Q), vb_free(&K), vb_free(&V), vb_free(&S), vb_free(&O1), vb_free(&O2);
    return ok;
}

int main(int argc, char **argv)
{
    static const test_case cases[] = {
        CASE(linear_packed_bias),
        CASE(linear_head_split_input),
        CASE(linear_transposed_weight),
        CASE(linear_prepared_fp16_update),
        CASE(scores_gqa),
        CASE(scores_gqa_waits_without_blocking),
        CASE(scores_default_scale),
        CASE(scores_transposed_output),
        CASE(mask_causal_top_left),
        CASE(mask_causal_bottom_right),
        CASE(mask_additive_broadcast),
        CASE(mask_key_lengths),
        CASE(mask_all_combined),
        CASE(softmax_out_of_place_lse),
        CASE(softmax_in_place),
        CASE(softmax_large_logits),
        CASE(softmax_one_key),
        CASE(weighted_sum_gqa),
        CASE(weighted_sum_no_keys),
        CASE(empty_views_huge_dims),
        CASE(steps_equal_sdpa),
        CASE(merge_nan_and_empty_parts),
        CASE(merge_and_sinks_fp16),
    };
    env_open(&E, false);
    int rc = run_cases(argc, argv, cases, sizeof cases / sizeof cases[0]);
    env_close(&E);
    return rc;
}
