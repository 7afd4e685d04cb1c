/* Rotary position embedding against the double-precision reference (ref_rope): clattn_rope in
 * both layouts, partial rotary dims, a frequency table, per-sequence positions, in place, fp16
 * and strided views; the KV cache rotating keys as it appends and queries as it attends; and a
 * small Llama-style decoder (RoPE, GQA, a KV cache per layer, a sliding window on alternate
 * layers) decoding token by token against the reference run on the whole sequence. */
#include "harness.h"
#include "ref.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SETUPS "fused fused-gpu"

typedef struct rope_case {
    size_t B, H, T, D, R;
    int gptj;
    bool table;     /* a frequency table instead of theta */
    bool positions; /* per-sequence position offsets */
    bool in_place;
    layout lay;
} rope_case;

static bool run_rope(const rope_case *c)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    uint64_t seed = 11 + c->D + c->T;
    view_buf X = vb_new(&e, c->lay, c->B, c->H, c->T, c->D, 5, 7, &seed, true);
    view_buf Y = c->in_place ? X : vb_new(&e, c->lay, c->B, c->H, c->T, c->D, 2, 7, &seed, false);
    clattn_rope_params rp = clattn_rope_params_default();
    rp.layout = c->gptj ? CLATTN_ROPE_GPTJ : CLATTN_ROPE_NEOX;
    rp.rotary_dim = c->R;
    rp.theta = 500.0f;
    const size_t R = c->R ? c->R : c->D;
    double freq[256];
    cl_mem fb = NULL, pb = NULL;
    if (c->table) { /* Llama 3.1-like: the low frequencies scaled down by 8 */
        float f[256];
        for (size_t i = 0; i < R / 2; i++) {
            f[i] = powf(10000.0f, -(float)(2 * i) / (float)R) / (i >= R / 4 ? 8.0f : 1.0f);
            freq[i] = f[i];
        }
        fb = buf_new(&e, (R / 2 + 3) * sizeof(float));
        buf_write(&e, fb, 3 * sizeof(float), f, R / 2 * sizeof(float));
        rp.inv_freq = fb;
        rp.inv_freq_offset = 3;
    }
    int pos[4] = {0, 17, 250, 3};
    if (c->positions) {
        pb = buf_new(&e, sizeof pos);
        buf_write(&e, pb, 0, pos, sizeof pos);
        rp.positions = pb;
    }
    double *x = vb_dense(&X, X.host);
    const size_t n = c->B * c->H * c->T * c->D;
    double *ref = malloc(n * sizeof *ref);
    ref_rope(c->B, c->H, c->T, c->D, R, c->gptj, rp.theta, c->table ? freq : NULL,
             c->positions ? pos : NULL, x, ref);
    EXPECT_STATUS(clattn_rope(e.cc, e.queue, &X.t, &Y.t, &rp, 0, NULL, NULL), CLATTN_SUCCESS);
    float *all = malloc(Y.elems * sizeof *all);
    vb_read_all(&e, &Y, all);
    double *got = vb_dense(&Y, all);
    ok &= check_close("rope", got, ref, n, TOL);
    EXPECT(vb_outside_unchanged(&Y, Y.host, all));
    if (!c->in_place)
        EXPECT(vb_same(&e, &X));
    free(got), free(all), free(x), free(ref);
    if (fb)
        clReleaseMemObject(fb);
    if (pb)
        clReleaseMemObject(pb);
    if (!c->in_place)
        vb_free(&Y);
    vb_free(&X);
    env_close(&e);
    return ok;
}

#define ROPE_CASE(fname, ...)                                                                      \
    static bool fname(void)                                                                        \
    {                                                                                              \
        rope_case c = {2, 3, 9, 16, 0, 0, false, false, false, LAYOUT_BHTD};                      \
        __VA_ARGS__;                                                                               \
        return run_rope(&c);                                                                       \
    }

ROPE_CASE(rope_neox, c.gptj = 0)
ROPE_CASE(rope_gptj, c.gptj = 1)
ROPE_CASE(rope_partial_neox, c.D = 64; c.R = 16)
ROPE_CASE(rope_partial_gptj, c.D = 40; c.R = 10; c.gptj = 1)
ROPE_CASE(rope_table_positions, c.D = 128; c.table = true; c.positions = true; c.T = 5)
ROPE_CASE(rope_in_place_packed, c.in_place = true; c.lay = LAYOUT_BTHD; c.positions = true)
ROPE_CASE(rope_in_place_partial, c.in_place = true; c.D = 24; c.R = 8; c.gptj = 1)

/* fp16 storage: the rotation of the fp16-rounded input, rounded once more. */
static bool rope_fp16(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    const size_t B = 1, H = 2, T = 7, D = 32, n = B * H * T * D;
    uint64_t seed = 9;
    float *f = malloc(n * sizeof *f);
    fill_uniform(f, n, &seed, -2.0f, 2.0f);
    uint16_t *hx = malloc(n * 2), *hy = malloc(n * 2);
    double *x = malloc(n * sizeof *x), *ref = malloc(n * sizeof *ref);
    for (size_t i = 0; i < n; i++)
        hx[i] = half_from_float(f[i]), x[i] = half_to_float(hx[i]);
    cl_mem bx = buf_new(&e, n * 2), by = buf_new(&e, n * 2);
    buf_write(&e, bx, 0, hx, n * 2);
    clattn_tensor X = clattn_tensor_bhtd(bx, 0, B, H, T, D), Y = clattn_tensor_bhtd(by, 0, B, H, T, D);
    X.dtype = Y.dtype = CLATTN_F16;
    EXPECT_STATUS(clattn_rope(e.cc, e.queue, &X, &Y, NULL, 0, NULL, NULL), CLATTN_SUCCESS);
    buf_read(&e, by, 0, hy, n * 2);
    ref_rope(B, H, T, D, D, 0, 10000.0, NULL, NULL, x, ref);
    double err = 0.0;
    for (size_t i = 0; i < n; i++)
        err = fmax(err, fabs(half_to_float(hy[i]) - ref[i]));
    printf("fp16 rope max error %.3g (fp16 spacing at 2: %.3g)\n", err, 2.0 / 1024);
    EXPECT(err <= 2.0 / 1024); /* one rounding of a value below 2 in magnitude, and then some */
    clReleaseMemObject(bx), clReleaseMemObject(by);
    free(f), free(hx), free(hy), free(x), free(ref);
    env_close(&e);
    return ok;
}

/* --- the KV cache ---------------------------------------------------------------------------- */

/* A cache with RoPE: a prompt of P tokens appended at once, then `steps` single tokens; after
 * each append the newest Lq queries attend (split or not). Reference: every key rotated at its
 * position, the queries at theirs, bottom-right causal attention.
 * rope false: the same cache without RoPE. A bfloat16 cache gets float K/V whose values are
 * already bfloat16 (so that only what the cache computes, the rotated keys, is rounded). */
static bool kv_rope(int gptj, size_t R, clattn_dtype dtype, size_t splits, long window, bool rope)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    /* A prompt of three key blocks (64 keys each here), so that splits really split. */
    const size_t B = 2, Hq = 8, Hkv = 2, D = 32, P = 150, steps = 3, N = P + steps;
    uint64_t seed = 21 + R + (size_t)gptj;
    view_buf K = vb_new(&e, LAYOUT_BHTD, B, Hkv, N, D, 0, 0, &seed, true);
    view_buf V = vb_new(&e, LAYOUT_BHTD, B, Hkv, N, D, 0, 0, &seed, true);
    view_buf Q = vb_new(&e, LAYOUT_BHTD, B, Hq, N, D, 0, 0, &seed, true);
    const bool f16 = dtype == CLATTN_F16;
    if (dtype == CLATTN_BF16) {
        for (size_t i = 0; i < K.elems; i++)
            K.host[i] = bf16_round(K.host[i]), V.host[i] = bf16_round(V.host[i]);
        buf_write(&e, K.t.buffer, 0, K.host, K.elems * sizeof(float));
        buf_write(&e, V.t.buffer, 0, V.host, V.elems * sizeof(float));
    }
    if (f16) { /* the cache holds fp16: the test's K and V are fp16 copies */
        uint16_t *hk = malloc(K.elems * 2), *hv = malloc(V.elems * 2);
        for (size_t i = 0; i < K.elems; i++) {
            hk[i] = half_from_float(K.host[i]), K.host[i] = half_to_float(hk[i]);
            hv[i] = half_from_float(V.host[i]), V.host[i] = half_to_float(hv[i]);
        }
        clReleaseMemObject(K.t.buffer), clReleaseMemObject(V.t.buffer);
        K.t.buffer = buf_new(&e, K.elems * 2), V.t.buffer = buf_new(&e, V.elems * 2);
        buf_write(&e, K.t.buffer, 0, hk, K.elems * 2);
        buf_write(&e, V.t.buffer, 0, hv, V.elems * 2);
        K.t.dtype = V.t.dtype = CLATTN_F16;
        free(hk), free(hv);
    }
    clattn_rope_params rp = clattn_rope_params_default();
    rp.layout = gptj ? CLATTN_ROPE_GPTJ : CLATTN_ROPE_NEOX;
    rp.rotary_dim = R;
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = B, kp.num_kv_heads = Hkv, kp.head_dim = D, kp.capacity = N, kp.dtype = dtype;
    kp.rope = rope ? &rp : NULL;
    clattn_kv_cache *kv = NULL;
    EXPECT_STATUS(clattn_kv_cache_create(e.cc, &kp, &kv), CLATTN_SUCCESS);
    double *k = vb_dense(&K, K.host), *v = vb_dense(&V, V.host), *q = vb_dense(&Q, Q.host);
    const size_t Rr = R ? R : D;
    double *kr = malloc(B * Hkv * N * D * sizeof *kr), *qr = malloc(B * Hq * N * D * sizeof *qr);
    ref_rope(B, Hkv, N, D, rope ? Rr : 0, gptj, 10000.0, NULL, NULL, k, kr);
    ref_rope(B, Hq, N, D, rope ? Rr : 0, gptj, 10000.0, NULL, NULL, q, qr);
    if (dtype == CLATTN_Q8) { /* what the cache holds: rows quantized, keys after rotating */
        ref_quantize_q8(B * Hkv * N, D, kr, kr);
        ref_quantize_q8(B * Hkv * N, D, v, v);
    }
    uint64_t s2 = 4;
    view_buf O = vb_new(&e, LAYOUT_BHTD, B, Hq, P, D, 0, 0, &s2, false);
    for (size_t step = 0; step <= steps; step++) {
        const size_t from = step ? P + step - 1 : 0, count = step ? 1 : P, len = from + count;
        clattn_tensor kn = K.t, vn = V.t, qn = Q.t, on = O.t;
        kn.dims[2] = vn.dims[2] = qn.dims[2] = on.dims[2] = count;
        kn.offset += from * D, vn.offset += from * D, qn.offset += from * D;
        EXPECT_STATUS(clattn_kv_cache_append(kv, e.queue, &kn, &vn, NULL, 0, NULL, NULL),
                      CLATTN_SUCCESS);
        clattn_kv_attend_params ap = clattn_kv_attend_params_default();
        ap.splits = splits;
        ap.window_left = window;
        size_t scratch = 0; /* partial results exist only when the keys really split */
        EXPECT_STATUS(clattn_kv_cache_workspace_size(kv, &qn, &on, &ap, &scratch), CLATTN_SUCCESS);
        EXPECT((scratch > 0) == (splits > 1));
        EXPECT_STATUS(clattn_kv_cache_attend(kv, e.queue, &qn, &on, &ap, 0, NULL, NULL),
                      CLATTN_SUCCESS);
        CL_OK(clFinish(e.queue));
        /* The reference over the first len tokens; its queries are the newest `count`. */
        double *kd = malloc(B * Hkv * len * D * sizeof *kd), *vd = malloc(B * Hkv * len * D * sizeof *vd);
        double *qd = malloc(B * Hq * count * D * sizeof *qd), *ro = malloc(B * Hq * count * D * sizeof *ro);
        for (size_t bh = 0; bh < B * Hkv; bh++) {
            memcpy(kd + bh * len * D, kr + bh * N * D, len * D * sizeof *kd);
            memcpy(vd + bh * len * D, v + bh * N * D, len * D * sizeof *vd);
        }
        for (size_t bh = 0; bh < B * Hq; bh++)
            memcpy(qd + bh * count * D, qr + (bh * N + from) * D, count * D * sizeof *qd);
        ref_variant rv = ref_variant_none();
        rv.window_left = window;
        ref_sdpa_variant(B, Hq, Hkv, count, len, D, D, 1.0 / sqrt((double)D), 2, NULL, NULL, &rv,
                         qd, kd, vd, ro, NULL, NULL);
        float *all = malloc(O.elems * sizeof *all);
        vb_read_all(&e, &O, all);
        double *got = malloc(B * Hq * count * D * sizeof *got);
        for (size_t bh = 0; bh < B * Hq; bh++)
            for (size_t i = 0; i < count * D; i++)
                got[bh * count * D + i] = all[bh * P * D + i];
        char what[32];
        snprintf(what, sizeof what, "O after %zu tokens", len);
        /* fp16 keys are rotated, then rounded to fp16 once more; bfloat16 ones to 8 significant
         * bits (relative 2^-8 at most): scores off by about that, outputs too. int8 rows of
         * keys rotated in float (the reference's in double) may round a value to the next
         * step now and then: a key off by one step of its row's scale. */
        const double tol = dtype == CLATTN_Q8 && rope    ? 2e-2
                           : dtype == CLATTN_BF16 && rope ? 1e-3
                           : f16                          ? 5e-4
                                                          : TOL;
        ok &= check_close(what, got, ro, B * Hq * count * D, tol);
        free(kd), free(vd), free(qd), free(ro), free(all), free(got);
    }
    clattn_kv_cache_destroy(&kv);
    free(k), free(v), free(q), free(kr), free(qr);
    vb_free(&K), vb_free(&V), vb_free(&Q), vb_free(&O);
    env_close(&e);
    return ok;
}
static bool kv_rope_neox_gqa(void) { return kv_rope(0, 0, CLATTN_F32, 1, -1, true); }
static bool kv_rope_gptj_partial_split(void) { return kv_rope(1, 16, CLATTN_F32, 3, -1, true); }
static bool kv_rope_fp16_window(void) { return kv_rope(0, 0, CLATTN_F16, 2, 9, true); }
/* bfloat16 storage: exact values stay exact (one pass and split), rotated keys are rounded. */
static bool kv_bf16(void)
{
    return kv_rope(0, 0, CLATTN_BF16, 1, -1, false) && kv_rope(0, 0, CLATTN_BF16, 3, -1, false);
}
/* A bfloat16 cache rounds float input to nearest even: one key, so the output is its value as
 * stored, compared bit for bit with the test's own rounding (ties among the values). */
static bool kv_bf16_rounding(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    enum { D = 24 };
    float v[D], k[D], q[D], o[D];
    uint64_t seed = 31;
    fill_uniform(v, D, &seed, -3.0f, 3.0f);
    fill_uniform(k, D, &seed, -1.0f, 1.0f);
    fill_uniform(q, D, &seed, -1.0f, 1.0f);
    v[0] = 1.0f + 1.0f / 256.0f;        /* halfway between 1 and 1 + 2^-7: to 1 (even) */
    v[1] = 1.0f + 3.0f / 256.0f;        /* halfway between 1 + 2^-7 and 1 + 2^-6: to 1 + 2^-6 */
    v[2] = -(1.0f + 1.0f / 1024.0f);    /* below halfway: down in magnitude, to -1 */
    v[3] = 3.0e38f;                     /* rounds to a finite bfloat16 below FLT_MAX */
    v[4] = FLT_MAX;                     /* past the largest bfloat16's halfway: to +inf */
    v[5] = -(1.0f + 1.0f / 256.0f);     /* a negative tie: to -1 (even) */
    v[6] = NAN;                         /* stays NaN */
    cl_mem bk = buf_new(&e, sizeof k), bv = buf_new(&e, sizeof v), bq = buf_new(&e, sizeof q),
           bo = buf_new(&e, sizeof o);
    buf_write(&e, bk, 0, k, sizeof k);
    buf_write(&e, bv, 0, v, sizeof v);
    buf_write(&e, bq, 0, q, sizeof q);
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = 1, kp.num_kv_heads = 1, kp.head_dim = D, kp.capacity = 4, kp.dtype = CLATTN_BF16;
    clattn_kv_cache *kv = NULL;
    EXPECT_STATUS(clattn_kv_cache_create(e.cc, &kp, &kv), CLATTN_SUCCESS);
    const clattn_tensor K = clattn_tensor_bhtd(bk, 0, 1, 1, 1, D), V = clattn_tensor_bhtd(bv, 0, 1, 1, 1, D),
                        Q = clattn_tensor_bhtd(bq, 0, 1, 1, 1, D), O = clattn_tensor_bhtd(bo, 0, 1, 1, 1, D);
    EXPECT_STATUS(clattn_kv_cache_append(kv, e.queue, &K, &V, NULL, 0, NULL, NULL), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_kv_cache_attend(kv, e.queue, &Q, &O, NULL, 0, NULL, NULL), CLATTN_SUCCESS);
    buf_read(&e, bo, 0, o, sizeof o);
    int wrong = 0;
    for (int d = 0; d < D; d++)
        if (isnan(v[d]) ? !isnan(o[d])
                        : memcmp(&o[d], &(float){bf16_round(v[d])}, sizeof(float)) != 0) {
            fprintf(stderr, "dim %d: %.9g stored as %.9g, expected %.9g\n", d, v[d], o[d],
                    bf16_round(v[d]));
            wrong++;
        }
    EXPECT(wrong == 0);
    EXPECT(o[0] == 1.0f && o[1] == 1.0f + 1.0f / 64.0f && o[2] == -1.0f && o[4] == INFINITY &&
           o[5] == -1.0f); /* what the rules give, written out */
    clattn_kv_cache_destroy(&kv);
    clReleaseMemObject(bk), clReleaseMemObject(bv), clReleaseMemObject(bq), clReleaseMemObject(bo);
    env_close(&e);
    return ok;
}

/* bfloat16 tokens appended as they are (bits copied through float), for head dims whose value
 * vectors are 1, 2 and 4 wide on the CPU variant; two key blocks, one pass and split. */
static bool kv_bf16_tokens(void)
{
    bool ok = true;
    static const size_t Ds[] = {1, 2, 4, 6};
    for (size_t t = 0; t < sizeof Ds / sizeof Ds[0]; t++) {
        test_env e;
        env_open(&e, false);
        const size_t B = 1, Hq = 4, Hkv = 2, Lq = 2, Lk = 70, D = Ds[t];
        const size_t nk = B * Hkv * Lk * D, nq = B * Hq * Lq * D;
        uint64_t seed = 40 + D;
        float *f = malloc((2 * nk + nq) * sizeof *f);
        fill_uniform(f, 2 * nk + nq, &seed, -1.5f, 1.5f);
        uint16_t *bits = malloc(2 * nk * sizeof *bits);
        double *k = malloc(nk * sizeof *k), *v = malloc(nk * sizeof *v), *q = malloc(nq * sizeof *q);
        for (size_t i = 0; i < 2 * nk; i++) {
            const float r = bf16_round(f[i]);
            uint32_t u;
            memcpy(&u, &r, sizeof u);
            bits[i] = (uint16_t)(u >> 16);
            (i < nk ? k : v)[i % nk] = r;
        }
        for (size_t i = 0; i < nq; i++)
            q[i] = f[2 * nk + i];
        cl_mem bk = buf_new(&e, 2 * nk * 2), bq = buf_new(&e, nq * 4), bo = buf_new(&e, nq * 4);
        buf_write(&e, bk, 0, bits, 2 * nk * 2);
        buf_write(&e, bq, 0, f + 2 * nk, nq * 4);
        clattn_tensor K = clattn_tensor_bhtd(bk, 0, B, Hkv, Lk, D), V = clattn_tensor_bhtd(bk, nk, B, Hkv, Lk, D);
        K.dtype = V.dtype = CLATTN_BF16;
        const clattn_tensor Q = clattn_tensor_bhtd(bq, 0, B, Hq, Lq, D), O = clattn_tensor_bhtd(bo, 0, B, Hq, Lq, D);
        clattn_kv_cache_params kp = clattn_kv_cache_params_default();
        kp.batch = B, kp.num_kv_heads = Hkv, kp.head_dim = D, kp.capacity = Lk, kp.dtype = CLATTN_BF16;
        clattn_kv_cache *kv = NULL;
        EXPECT_STATUS(clattn_kv_cache_create(e.cc, &kp, &kv), CLATTN_SUCCESS);
        EXPECT_STATUS(clattn_kv_cache_prepare(kv, &Q, &O, NULL), CLATTN_SUCCESS);
        EXPECT_STATUS(clattn_kv_cache_append(kv, e.queue, &K, &V, NULL, 0, NULL, NULL), CLATTN_SUCCESS);
        double *ref = malloc(nq * sizeof *ref), *got = malloc(nq * sizeof *got);
        ref_sdpa(B, Hq, Hkv, Lq, Lk, D, D, 1.0 / sqrt((double)D), 2, NULL, NULL, q, k, v, ref, NULL,
                 NULL);
        for (size_t splits = 1; splits <= 2; splits++) {
            clattn_kv_attend_params ap = clattn_kv_attend_params_default();
            ap.splits = splits;
            EXPECT_STATUS(clattn_kv_cache_attend(kv, e.queue, &Q, &O, &ap, 0, NULL, NULL), CLATTN_SUCCESS);
            float *o = malloc(nq * sizeof *o);
            buf_read(&e, bo, 0, o, nq * 4);
            for (size_t i = 0; i < nq; i++)
                got[i] = o[i];
            free(o);
            printf("-- D=%zu splits=%zu\n", D, splits);
            ok &= check_close("O", got, ref, nq, TOL);
        }
        clattn_kv_cache_destroy(&kv);
        clReleaseMemObject(bk), clReleaseMemObject(bq), clReleaseMemObject(bo);
        free(f), free(bits), free(k), free(v), free(q), free(ref), free(got);
        env_close(&e);
    }
    return ok;
}

static bool kv_bf16_rope(void) { return kv_rope(1, 0, CLATTN_BF16, 2, 20, true); }
/* int8 rows: attention over the quantized values as exact as over float ones (one pass and
 * split); with RoPE, keys quantized after their rotation. */
static bool kv_q8(void)
{
    return kv_rope(0, 0, CLATTN_Q8, 1, -1, false) && kv_rope(0, 0, CLATTN_Q8, 3, -1, false);
}
static bool kv_q8_rope(void) { return kv_rope(1, 16, CLATTN_Q8, 2, 20, true); }

/* The decode step of one query per head over `n` tokens of K, V (float [Hkv, n, D], B = 1) held
 * in a cache of `dtype`, into o [Hq, D]. */
static bool decode_once(test_env *e, clattn_dtype dtype, size_t Hq, size_t Hkv, size_t n,
                        size_t D, const float *k, const float *v, const float *q, float *o)
{
    bool ok = true;
    cl_mem bk = buf_new(e, Hkv * n * D * 4), bv = buf_new(e, Hkv * n * D * 4);
    cl_mem bq = buf_new(e, Hq * D * 4), bo = buf_new(e, Hq * D * 4);
    buf_write(e, bk, 0, k, Hkv * n * D * 4);
    buf_write(e, bv, 0, v, Hkv * n * D * 4);
    buf_write(e, bq, 0, q, Hq * D * 4);
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = 1, kp.num_kv_heads = Hkv, kp.head_dim = D, kp.capacity = n, kp.dtype = dtype;
    clattn_kv_cache *kv = NULL;
    const clattn_tensor K = clattn_tensor_bhtd(bk, 0, 1, Hkv, n, D);
    const clattn_tensor V = clattn_tensor_bhtd(bv, 0, 1, Hkv, n, D);
    const clattn_tensor Q = clattn_tensor_bhtd(bq, 0, 1, Hq, 1, D);
    const clattn_tensor O = clattn_tensor_bhtd(bo, 0, 1, Hq, 1, D);
    EXPECT_STATUS(clattn_kv_cache_create(e->cc, &kp, &kv), CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_kv_cache_append(kv, e->queue, &K, &V, NULL, 0, NULL, NULL),
                  CLATTN_SUCCESS);
    EXPECT_STATUS(clattn_kv_cache_attend(kv, e->queue, &Q, &O, NULL, 0, NULL, NULL),
                  CLATTN_SUCCESS);
    buf_read(e, bo, 0, o, Hq * D * 4);
    clattn_kv_cache_destroy(&kv);
    clReleaseMemObject(bk), clReleaseMemObject(bv), clReleaseMemObject(bq), clReleaseMemObject(bo);
    return ok;
}

static double max_diff(const float *a, const double *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* The accuracy int8 storage promises, on activations with a few outlier channels (as real keys
 * have): its error against attention over the values it holds is at most twice a float cache's
 * against attention over the float values; its error against the float values is reported. */
static bool kv_q8_accuracy(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    const size_t Hq = 8, Hkv = 2, n = 700, D = 128;
    uint64_t seed = 99;
    float *k = malloc(Hkv * n * D * 4), *v = malloc(Hkv * n * D * 4), *q = malloc(Hq * D * 4);
    fill_uniform(k, Hkv * n * D, &seed, -1.0f, 1.0f);
    fill_uniform(v, Hkv * n * D, &seed, -1.0f, 1.0f);
    fill_uniform(q, Hq * D, &seed, -1.0f, 1.0f);
    for (size_t i = 0; i < Hkv * n * D; i++) /* channels 3 and 77: outliers, as LLMs' keys have */
        k[i] *= i % D == 3 || i % D == 77 ? 12.0f : 1.0f;
    double *kd = malloc(Hkv * n * D * 8), *vd = malloc(Hkv * n * D * 8), *qd = malloc(Hq * D * 8);
    double *ref = malloc(Hq * D * 8), *ref_q = malloc(Hq * D * 8);
    float *o32 = malloc(Hq * D * 4), *o8 = malloc(Hq * D * 4);
    for (size_t i = 0; i < Hkv * n * D; i++)
        kd[i] = k[i], vd[i] = v[i];
    for (size_t i = 0; i < Hq * D; i++)
        qd[i] = q[i];
    const ref_variant rv = ref_variant_none();
    const double scale = 1.0 / sqrt((double)D);
    ref_sdpa_variant(1, Hq, Hkv, 1, n, D, D, scale, 2, NULL, NULL, &rv, qd, kd, vd, ref, NULL, NULL);
    ref_quantize_q8(Hkv * n, D, kd, kd);
    ref_quantize_q8(Hkv * n, D, vd, vd);
    ref_sdpa_variant(1, Hq, Hkv, 1, n, D, D, scale, 2, NULL, NULL, &rv, qd, kd, vd, ref_q, NULL, NULL);
    ok &= decode_once(&e, CLATTN_F32, Hq, Hkv, n, D, k, v, q, o32);
    ok &= decode_once(&e, CLATTN_Q8, Hq, Hkv, n, D, k, v, q, o8);
    const double err32 = max_diff(o32, ref, Hq * D), err8 = max_diff(o8, ref_q, Hq * D);
    const double err_orig = max_diff(o8, ref, Hq * D);
    double top = 0.0;
    for (size_t i = 0; i < Hq * D; i++)
        top = fmax(top, fabs(ref[i]));
    printf("int8 KV over %zu tokens: %.3g against the values it holds (float cache: %.3g against "
           "float); %.3g against the float values (largest output %.3g)\n", n, err8, err32,
           err_orig, top);
    if (!(err8 <= 2.0 * err32)) {
        printf("int8 error %.3g is more than twice the float cache's %.3g\n", err8, err32);
        ok = false;
    }
    /* the storage error itself, on data like this: a few percent of the output's scale */
    EXPECT(err_orig <= 0.05 * top);
    free(k), free(v), free(q), free(kd), free(vd), free(qd), free(ref), free(ref_q), free(o32),
        free(o8);
    env_close(&e);
    return ok;
}

/* --- a small decoder ------------------------------------------------------------------------- */

/* Layers of x += Wo · attention(RoPE(Wq x), RoPE(Wk x), Wv x), GQA, causal, a window of 6 keys
 * on odd layers; decoded token by token (projections by clattn_linear, a KV cache per layer
 * with RoPE, the residual on the host), against the reference over the whole sequence. */
static bool llama_decoder(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    enum { LAYERS = 3, T = 14, H = 4, HKV = 2, D = 16, E = H * D, KV = HKV * D };
    uint64_t seed = 99;
    float *w = malloc(LAYERS * (E * E * 2 + KV * E * 2) * sizeof *w);
    const size_t per = E * E * 2 + KV * E * 2;
    fill_uniform(w, LAYERS * per, &seed, -0.25f, 0.25f);
    float x0[T * E];
    fill_uniform(x0, T * E, &seed, -1.0f, 1.0f);

    /* The reference over all T tokens at once. */
    double *x = malloc(T * E * sizeof *x), *wd = malloc(LAYERS * per * sizeof *wd);
    for (size_t i = 0; i < T * E; i++)
        x[i] = x0[i];
    for (size_t i = 0; i < LAYERS * per; i++)
        wd[i] = w[i];
    for (int l = 0; l < LAYERS; l++) {
        const double *Wq = wd + l * per, *Wk = Wq + E * E, *Wv = Wk + KV * E, *Wo = Wv + KV * E;
        double q[T * E], k[T * KV], v[T * KV], qh[T * E], kh[T * KV], vh[T * KV], oh[T * E],
            o[T * E], y[T * E];
        ref_linear(T, E, E, x, Wq, NULL, q);
        ref_linear(T, E, KV, x, Wk, NULL, k);
        ref_linear(T, E, KV, x, Wv, NULL, v);
        for (size_t t = 0; t < T; t++) /* [T, heads, D] -> [heads, T, D] */
            for (size_t h = 0; h < H; h++)
                for (size_t d = 0; d < D; d++) {
                    qh[(h * T + t) * D + d] = q[(t * H + h) * D + d];
                    if (h < HKV) {
                        kh[(h * T + t) * D + d] = k[(t * HKV + h) * D + d];
                        vh[(h * T + t) * D + d] = v[(t * HKV + h) * D + d];
                    }
                }
        ref_rope(1, H, T, D, D, 0, 10000.0, NULL, NULL, qh, qh);
        ref_rope(1, HKV, T, D, D, 0, 10000.0, NULL, NULL, kh, kh);
        ref_variant rv = ref_variant_none();
        rv.window_left = l % 2 ? 5 : -1;
        ref_sdpa_variant(1, H, HKV, T, T, D, D, 1.0 / sqrt((double)D), 1, NULL, NULL, &rv, qh, kh,
                         vh, oh, NULL, NULL);
        for (size_t t = 0; t < T; t++)
            for (size_t h = 0; h < H; h++)
                for (size_t d = 0; d < D; d++)
                    o[(t * H + h) * D + d] = oh[(h * T + t) * D + d];
        ref_linear(T, E, E, o, Wo, NULL, y);
        for (size_t i = 0; i < T * E; i++)
            x[i] += y[i];
    }

    /* The device, one token at a time. */
    cl_mem wb = buf_new(&e, LAYERS * per * sizeof *w);
    buf_write(&e, wb, 0, w, LAYERS * per * sizeof *w);
    cl_mem xb = buf_new(&e, E * sizeof(float)), qb = buf_new(&e, E * sizeof(float)),
           kb = buf_new(&e, KV * sizeof(float)), vb = buf_new(&e, KV * sizeof(float)),
           ob = buf_new(&e, E * sizeof(float)), yb = buf_new(&e, E * sizeof(float));
    clattn_rope_params rp = clattn_rope_params_default();
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = 1, kp.num_kv_heads = HKV, kp.head_dim = D, kp.capacity = T, kp.rope = &rp;
    clattn_kv_cache *kv[LAYERS];
    for (int l = 0; l < LAYERS; l++)
        EXPECT_STATUS(clattn_kv_cache_create(e.cc, &kp, &kv[l]), CLATTN_SUCCESS);
    double err = 0.0, scale = 1.0;
    for (size_t t = 0; t < T; t++) {
        float h[E];
        memcpy(h, x0 + t * E, sizeof h);
        for (int l = 0; l < LAYERS; l++) {
            const size_t base = l * per;
            clattn_tensor Wq = {wb, base, CLATTN_F32, {1, 1, E, E}, {0, 0, E, 1}};
            clattn_tensor Wk = {wb, base + E * E, CLATTN_F32, {1, 1, KV, E}, {0, 0, E, 1}};
            clattn_tensor Wv = {wb, base + E * E + KV * E, CLATTN_F32, {1, 1, KV, E}, {0, 0, E, 1}};
            clattn_tensor Wo = {wb, base + E * E + 2 * KV * E, CLATTN_F32, {1, 1, E, E}, {0, 0, E, 1}};
            clattn_tensor X = {xb, 0, CLATTN_F32, {1, 1, 1, E}, {0, 0, 0, 1}};
            clattn_tensor Yq = {qb, 0, CLATTN_F32, {1, 1, 1, E}, {0, 0, 0, 1}};
            clattn_tensor Yk = {kb, 0, CLATTN_F32, {1, 1, 1, KV}, {0, 0, 0, 1}};
            clattn_tensor Yv = {vb, 0, CLATTN_F32, {1, 1, 1, KV}, {0, 0, 0, 1}};
            clattn_tensor Ya = {ob, 0, CLATTN_F32, {1, 1, 1, E}, {0, 0, 0, 1}};
            clattn_tensor Yo = {yb, 0, CLATTN_F32, {1, 1, 1, E}, {0, 0, 0, 1}};
            /* The projections' rows seen as heads: [1, heads, 1, D]. */
            clattn_tensor Qh = {qb, 0, CLATTN_F32, {1, H, 1, D}, {0, D, 0, 1}};
            clattn_tensor Kh = {kb, 0, CLATTN_F32, {1, HKV, 1, D}, {0, D, 0, 1}};
            clattn_tensor Vh = {vb, 0, CLATTN_F32, {1, HKV, 1, D}, {0, D, 0, 1}};
            clattn_tensor Oh = {ob, 0, CLATTN_F32, {1, H, 1, D}, {0, D, 0, 1}};
            buf_write(&e, xb, 0, h, sizeof h);
            EXPECT_STATUS(clattn_linear(e.cc, e.queue, &X, &Wq, NULL, &Yq, 0, NULL, NULL), CLATTN_SUCCESS);
            EXPECT_STATUS(clattn_linear(e.cc, e.queue, &X, &Wk, NULL, &Yk, 0, NULL, NULL), CLATTN_SUCCESS);
            EXPECT_STATUS(clattn_linear(e.cc, e.queue, &X, &Wv, NULL, &Yv, 0, NULL, NULL), CLATTN_SUCCESS);
            EXPECT_STATUS(clattn_kv_cache_append(kv[l], e.queue, &Kh, &Vh, NULL, 0, NULL, NULL),
                          CLATTN_SUCCESS);
            clattn_kv_attend_params ap = clattn_kv_attend_params_default();
            ap.window_left = l % 2 ? 5 : CLATTN_WINDOW_UNBOUNDED;
            EXPECT_STATUS(clattn_kv_cache_attend(kv[l], e.queue, &Qh, &Oh, &ap, 0, NULL, NULL),
                          CLATTN_SUCCESS);
            EXPECT_STATUS(clattn_linear(e.cc, e.queue, &Ya, &Wo, NULL, &Yo, 0, NULL, NULL), CLATTN_SUCCESS);
            float y[E];
            buf_read(&e, yb, 0, y, sizeof y);
            for (size_t i = 0; i < E; i++)
                h[i] += y[i];
        }
        for (size_t i = 0; i < E; i++) {
            err = fmax(err, isnan(h[i]) ? INFINITY : fabs(h[i] - x[t * E + i]));
            scale = fmax(scale, fabs(x[t * E + i]));
        }
    }
    printf("decoder: %d layers, %d tokens one at a time, max error %.3g against the whole "
           "sequence\n", LAYERS, T, err);
    EXPECT(err <= 1e-4 * scale);
    for (int l = 0; l < LAYERS; l++)
        clattn_kv_cache_destroy(&kv[l]);
    cl_mem bufs[] = {wb, xb, qb, kb, vb, ob, yb};
    for (int i = 0; i < 7; i++)
        clReleaseMemObject(bufs[i]);
    free(w), free(x), free(wd);
    env_close(&e);
    return ok;
}

int main(int argc, char **argv)
{
    static const test_case cases[] = {
        CASE_IN(rope_neox, "auto"),
        CASE_IN(rope_gptj, "auto"),
        CASE_IN(rope_partial_neox, "auto"),
        CASE_IN(rope_partial_gptj, "auto"),
        CASE_IN(rope_table_positions, "auto"),
        CASE_IN(rope_in_place_packed, "auto"),
        CASE_IN(rope_in_place_partial, "auto"),
        CASE_IN(rope_fp16, "auto"),
        CASE(kv_rope_neox_gqa),
        CASE(kv_rope_gptj_partial_split),
        CASE(kv_rope_fp16_window),
        CASE(kv_bf16),
        CASE(kv_bf16_rope),
        CASE(kv_bf16_rounding),
        CASE(kv_bf16_tokens),
        CASE(kv_q8),
        CASE(kv_q8_rope),
        CASE(kv_q8_accuracy),
        CASE(llama_decoder),
    };
    return run_cases(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
