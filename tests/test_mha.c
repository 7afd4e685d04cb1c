/* The multi-head attention block against a double-precision reference of the whole layer:
 * self attention (packed in_proj, fused Q/K/V product), cross attention with kdim != vdim != E,
 * GQA, padded batches, masks, and the attention weights out (averaged and per head). */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The setups every case of this file runs under (see harness.h). */
#define SETUPS "unfused fused unfused-clblast fused-clblast"

typedef struct mha_case {
    size_t B, Lq, Lk, E, H, Hkv, kdim, vdim;
    bool bias, packed, self;
    int causal;
    bool mask, lengths, weights, head_weights;
    size_t offset;
    bool workspace;     /* the intermediates in a caller's buffer, at an offset, guarded */
    bool separate_bias; /* q/k/v_proj_bias instead of in_proj_bias */
    bool f16_weights;   /* weights and biases in fp16, inputs and output in fp32 */
    bool update;        /* the layer made from other weights, then clattn_mha_update_weights */
    bool variants;      /* a window with kept keys, soft-capping, ALiBi and sinks */
} mha_case;

/* Writes a weight's values (v->host, as float or as fp16) into its device buffer, or zeros. */
static void put(test_env *e, view_buf *v, bool f16, bool zeros)
{
    if (!v->t.buffer)
        return;
    if (!f16) {
        float *z = calloc(v->elems, sizeof *z);
        buf_write(e, v->t.buffer, 0, zeros ? z : v->host, v->elems * sizeof(float));
        free(z);
        return;
    }
    uint16_t *h = calloc(v->elems, sizeof *h);
    for (size_t i = 0; i < v->elems && !zeros; i++)
        h[i] = half_from_float(v->host[i]);
    buf_write(e, v->t.buffer, 0, h, v->elems * sizeof *h);
    free(h);
}

/* An fp16 weight: its values rounded to fp16 (what the reference then uses), a buffer of halves
 * in the same layout. */
static void make_f16(test_env *e, view_buf *v)
{
    if (!v->t.buffer)
        return;
    for (size_t i = 0; i < v->elems; i++)
        v->host[i] = half_to_float(half_from_float(v->host[i]));
    clReleaseMemObject(v->t.buffer);
    v->t.buffer = buf_new(e, v->elems * sizeof(uint16_t));
    v->t.dtype = CLATTN_F16;
    put(e, v, true, false);
}

/* A random [rows, cols] weight scaled like PyTorch's init, on the device at `offset`. */
static view_buf weight(test_env *e, size_t rows, size_t cols, size_t offset, uint64_t *seed)
{
    view_buf w = vb_new(e, LAYOUT_BHTD, 1, 1, rows, cols, offset, 3, seed, true);
    float s = 1.0f / sqrtf((float)cols);
    for (size_t i = 0; i < w.elems; i++)
        w.host[i] *= s;
    buf_write(e, w.t.buffer, 0, w.host, w.elems * sizeof(float));
    return w;
}

/* The attention path every case runs on is the setup's (test_path()). With attention weights
 * asked for, "fused" still runs the unfused path (AUTO's choice): only it forms the weights. */

static bool run(const mha_case *c)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    uint64_t seed = 77 + c->E + c->Lq + c->Lk;
    const size_t E = c->E, D = E / c->H, KV = c->Hkv * D, W3 = E + 2 * KV;
    const size_t kdim = c->self ? E : c->kdim, vdim = c->self ? E : c->vdim;
    const size_t Lk = c->self ? c->Lq : c->Lk;

    view_buf in = {0}, wq = {0}, wk = {0}, wv = {0}, bin = {0}, wo, bo = {0};
    view_buf sb[3]; /* separate q, k, v biases */
    memset(sb, 0, sizeof sb);
    clattn_mha_params mp = clattn_mha_params_default();
    mp.embed_dim = E;
    mp.num_heads = c->H;
    mp.num_kv_heads = c->Hkv;
    mp.kdim = kdim;
    mp.vdim = vdim;
    mp.bias = c->bias;
    if (c->f16_weights) {
        mp.weight_dtype = CLATTN_F16;
        mp.dtype = CLATTN_F32;
    }
    double *Wq, *Wk, *Wv;
    if (c->packed) {
        in = weight(&e, W3, E, 5, &seed);
        if (c->f16_weights)
            make_f16(&e, &in);
        mp.in_proj_weight = &in.t;
        double *all = vb_dense(&in, in.host);
        Wq = malloc(E * E * sizeof *Wq), Wk = malloc(KV * E * sizeof *Wk), Wv = malloc(KV * E * sizeof *Wv);
        memcpy(Wq, all, E * E * sizeof *Wq);
        memcpy(Wk, all + E * E, KV * E * sizeof *Wk);
        memcpy(Wv, all + (E + KV) * E, KV * E * sizeof *Wv);
        free(all);
    } else {
        wq = weight(&e, E, E, 1, &seed);
        wk = weight(&e, KV, kdim, 2, &seed);
        wv = weight(&e, KV, vdim, 0, &seed);
        if (c->f16_weights)
            make_f16(&e, &wq), make_f16(&e, &wk), make_f16(&e, &wv);
        mp.q_proj_weight = &wq.t;
        mp.k_proj_weight = &wk.t;
        mp.v_proj_weight = &wv.t;
        Wq = vb_dense(&wq, wq.host), Wk = vb_dense(&wk, wk.host), Wv = vb_dense(&wv, wv.host);
    }
    wo = weight(&e, E, E, 4, &seed);
    if (c->f16_weights)
        make_f16(&e, &wo);
    mp.out_proj_weight = &wo.t;
    double *bq = NULL, *bk = NULL, *bv = NULL, *bod = NULL, *ball = NULL;
    if (c->bias) {
        bo = vb_new(&e, LAYOUT_BHTD, 1, 1, 1, E, 1, 2, &seed, true);
        if (c->separate_bias) {
            const size_t n[3] = {E, KV, KV};
            ball = malloc(W3 * sizeof *ball);
            for (int i = 0, at = 0; i < 3; at += (int)n[i], i++) {
                sb[i] = vb_new(&e, LAYOUT_BHTD, 1, 1, 1, n[i], (size_t)i, 2, &seed, true);
                if (c->f16_weights)
                    make_f16(&e, &sb[i]);
                double *d = vb_dense(&sb[i], sb[i].host);
                memcpy(ball + at, d, n[i] * sizeof *d);
                free(d);
            }
            mp.q_proj_bias = &sb[0].t, mp.k_proj_bias = &sb[1].t, mp.v_proj_bias = &sb[2].t;
        } else {
            bin = vb_new(&e, LAYOUT_BHTD, 1, 1, 1, W3, 6, 2, &seed, true);
            if (c->f16_weights)
                make_f16(&e, &bin);
            mp.in_proj_bias = &bin.t;
            ball = vb_dense(&bin, bin.host);
        }
        if (c->f16_weights)
            make_f16(&e, &bo);
        mp.out_proj_bias = &bo.t;
        bq = ball, bk = ball + E, bv = ball + E + KV;
        bod = vb_dense(&bo, bo.host);
    }
    view_buf *weights[] = {&in, &wq, &wk, &wv, &wo, &bin, &bo, &sb[0], &sb[1], &sb[2]};
    const size_t nweights = sizeof weights / sizeof weights[0];
    for (size_t i = 0; c->update && i < nweights; i++) /* the layer first sees zeros */
        put(&e, weights[i], c->f16_weights, true);
    clattn_mha *mha = NULL;
    EXPECT_STATUS(clattn_mha_create(e.cc, &mp, &mha), CLATTN_SUCCESS);
    EXPECT(clattn_mha_bytes(mha) >= (2 * E * E + KV * (kdim + vdim)) * sizeof(float));
    if (c->update) {
        for (size_t i = 0; i < nweights; i++)
            put(&e, weights[i], c->f16_weights, false);
        cl_event up = NULL;
        EXPECT_STATUS(clattn_mha_update_weights(mha, e.queue, 0, NULL, &up), CLATTN_SUCCESS);
        EXPECT(up != NULL);
        if (up)
            clReleaseEvent(up);
    }

    view_buf q = vb_new(&e, LAYOUT_BHTD, c->B, 1, c->Lq, E, c->offset, 4, &seed, true);
    view_buf k = {0}, v = {0};
    if (!c->self) {
        k = vb_new(&e, LAYOUT_BHTD, c->B, 1, Lk, kdim, c->offset + 1, 4, &seed, true);
        v = vb_new(&e, LAYOUT_BHTD, c->B, 1, Lk, vdim, 2, 4, &seed, true);
    }
    view_buf out = vb_new(&e, LAYOUT_BHTD, c->B, 1, c->Lq, E, c->offset + 3, 5, &seed, false);
    view_buf w = {0}, hw = {0}, M = {0};
    clattn_mha_forward_params fp = clattn_mha_forward_params_default();
    fp.mask.causal = (clattn_causal)c->causal;
    fp.path = test_path() == CLATTN_PATH_FUSED && (c->weights || c->head_weights) ? CLATTN_PATH_AUTO
                                                                                 : test_path();
    double *mask = NULL;
    if (c->mask) { /* PyTorch's 2-D attn_mask [Lq, Lk], broadcast over batch and heads */
        M = vb_new(&e, LAYOUT_BHTD, 1, 1, c->Lq, Lk, 0, 0, &seed, true);
        fp.mask.additive = &M.t;
        mask = malloc(c->B * c->H * c->Lq * Lk * sizeof *mask);
        for (size_t s = 0; s < c->B * c->H; s++)
            for (size_t i = 0; i < c->Lq * Lk; i++)
                mask[s * c->Lq * Lk + i] = M.host[i];
    }
    int *lens = NULL;
    cl_mem lb = NULL;
    if (c->lengths) {
        lens = malloc(c->B * sizeof *lens);
        for (size_t b = 0; b < c->B; b++)
            lens[b] = (int)(Lk - (b * Lk) / (c->B + 1));
        lb = buf_new(&e, c->B * sizeof *lens);
        buf_write(&e, lb, 0, lens, c->B * sizeof *lens);
        fp.mask.key_lengths = lb;
    }
    ref_variant rv = ref_variant_none();
    double slopes[16], sinks[16];
    cl_mem slope_buf = NULL, sink_buf = NULL;
    if (c->variants) {
        float f[16];
        fp.mask.window_left = rv.window_left = 6;
        fp.mask.window_keep_first = rv.keep_first = 2;
        fp.logits.softcap = 1.5f;
        rv.softcap = 1.5;
        clattn_alibi_slopes(c->H, f);
        ref_alibi_slopes(c->H, slopes);
        slope_buf = buf_new(&e, c->H * sizeof *f);
        buf_write(&e, slope_buf, 0, f, c->H * sizeof *f);
        fill_uniform(f, c->H, &seed, -1.0f, 2.0f);
        for (size_t h = 0; h < c->H; h++)
            sinks[h] = f[h];
        sink_buf = buf_new(&e, c->H * sizeof *f);
        buf_write(&e, sink_buf, 0, f, c->H * sizeof *f);
        fp.logits.alibi_slopes = slope_buf;
        fp.logits.sinks = sink_buf;
        rv.alibi = slopes;
        rv.sinks = sinks;
    }
    if (c->weights) {
        w = vb_new(&e, LAYOUT_BHTD, c->B, 1, c->Lq, Lk, 2, 3, &seed, false);
        fp.weights = &w.t;
    }
    if (c->head_weights) {
        hw = vb_new(&e, LAYOUT_BHTD, c->B, c->H, c->Lq, Lk, 1, 3, &seed, false);
        fp.head_weights = &hw.t;
    }
    const clattn_tensor *kt = c->self ? &q.t : &k.t, *vt = c->self ? &q.t : &v.t;
    size_t need = 0;
    EXPECT_STATUS(clattn_mha_workspace_size(mha, &q.t, kt, vt, &fp, &need), CLATTN_SUCCESS);
    EXPECT(need > 0);
    cl_mem ws = NULL;
    float *ws_before = NULL;
    const size_t guard = 32; /* bytes before and after the workspace */
    if (c->workspace) {
        ws = buf_new(&e, need + 2 * guard);
        ws_before = malloc(need + 2 * guard);
        fill_uniform(ws_before, (need + 2 * guard) / 4, &seed, -1, 1);
        buf_write(&e, ws, 0, ws_before, need + 2 * guard);
        fp.workspace = ws;
        fp.workspace_offset = 2 * guard + 4; /* one float short at the end */
        EXPECT_STATUS(clattn_mha_forward(mha, e.queue, &q.t, kt, vt, &out.t, &fp, 0, NULL, NULL),
                      CLATTN_ERROR_WORKSPACE_TOO_SMALL);
        fp.workspace_offset = guard + 2;
        EXPECT_STATUS(clattn_mha_forward(mha, e.queue, &q.t, kt, vt, &out.t, &fp, 0, NULL, NULL),
                      CLATTN_ERROR_INVALID_ARGUMENT);
        fp.workspace_offset = guard;
    }
    EXPECT_STATUS(clattn_mha_prepare(mha, &q.t, kt, vt, &out.t, &fp), CLATTN_SUCCESS);
    cl_event ev = NULL;
    EXPECT_STATUS(clattn_mha_forward(mha, e.queue, &q.t, kt, vt, &out.t, &fp, 0, NULL, &ev),
                  CLATTN_SUCCESS);
    if (ev) {
        CL_OK(clWaitForEvents(1, &ev));
        clReleaseEvent(ev);
    }

    ref_mha_layer L = {E, c->H, c->Hkv, kdim, vdim, Wq, Wk, Wv, bq, bk, bv, NULL, bod};
    double *wod = vb_dense(&wo, wo.host);
    L.Wo = wod;
    double *qd = vb_dense(&q, q.host);
    double *kd = c->self ? qd : vb_dense(&k, k.host), *vd = c->self ? qd : vb_dense(&v, v.host);
    double *ro = malloc(c->B * c->Lq * E * sizeof *ro), *rw = malloc(c->B * c->Lq * Lk * sizeof *rw + 1),
           *rhw = malloc(c->B * c->H * c->Lq * Lk * sizeof *rhw + 1);
    ref_mha_variant(&L, c->variants ? &rv : NULL, c->B, c->Lq, Lk, c->causal, mask, lens, qd, kd,
                    vd, ro, rw, rhw);

    view_buf *outs[] = {&out, c->weights ? &w : NULL, c->head_weights ? &hw : NULL};
    double *refs[] = {ro, rw, rhw};
    const char *names[] = {"output", "weights (mean)", "weights (per head)"};
    for (int i = 0; i < 3; i++) {
        if (!outs[i])
            continue;
        float *all = malloc(outs[i]->elems * sizeof *all);
        vb_read_all(&e, outs[i], all);
        double *got = vb_dense(outs[i], all);
        const clattn_tensor *t = &outs[i]->t;
        ok &= check_close(names[i], got, refs[i], t->dims[0] * t->dims[1] * t->dims[2] * t->dims[3], TOL);
        EXPECT(vb_outside_unchanged(outs[i], outs[i]->host, all));
        free(got), free(all);
    }
    /* Inputs and weights are read only. */
    view_buf *ins[] = {&q, &k, &v, &M};
    for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++)
        if (ins[i]->t.buffer)
            EXPECT(vb_same(&e, ins[i]));
    for (size_t i = 0; i < nweights && !c->f16_weights; i++)
        if (weights[i]->t.buffer)
            EXPECT(vb_same(&e, weights[i]));
    if (ws) { /* nothing outside [offset, offset + need) was touched */
        unsigned char *after = malloc(need + 2 * guard);
        buf_read(&e, ws, 0, after, need + 2 * guard);
        EXPECT(memcmp(after, ws_before, guard) == 0);
        EXPECT(memcmp(after + guard + need, (unsigned char *)ws_before + guard + need, guard) == 0);
        free(after), free(ws_before);
        clReleaseMemObject(ws);
    }

    clattn_mha_destroy(&mha);
    EXPECT(mha == NULL);
    free(Wq), free(Wk), free(Wv), free(ball), free(bod), free(wod), free(qd), free(mask), free(lens);
    if (!c->self)
        free(kd), free(vd);
    free(ro), free(rw), free(rhw);
    if (lb)
        clReleaseMemObject(lb);
    if (slope_buf)
        clReleaseMemObject(slope_buf), clReleaseMemObject(sink_buf);
    for (size_t i = 0; i < nweights; i++)
        vb_free(weights[i]);
    vb_free(&q), vb_free(&k), vb_free(&v), vb_free(&out), vb_free(&w), vb_free(&hw), vb_free(&M);
    env_close(&e);
    return ok;
}

static mha_case base(void)
{
    mha_case c = {2, 17, 17, 32, 4, 4, 0, 0, true, true, true, 0, false, false, false, false, 0, false,
                  false, false, false, false};
    return c;
}

#define MHA_CASE(fname, ...)                                                                       \
    static bool fname(void)                                                                        \
    {                                                                                              \
        mha_case c = base();                                                                       \
        __VA_ARGS__;                                                                               \
        return run(&c);                                                                            \
    }

MHA_CASE(self_attention_packed, c.causal = 1)
MHA_CASE(self_attention_no_bias, c.bias = false; c.Lq = 9; c.offset = 7)
MHA_CASE(self_attention_separate_weights, c.packed = false; c.kdim = c.vdim = 32; c.causal = 1)
MHA_CASE(cross_attention_kdim_vdim, c.packed = false; c.self = false; c.Lq = 9; c.Lk = 21; c.kdim = 24;
     c.vdim = 40; c.offset = 2)
MHA_CASE(cross_attention_packed, c.self = false; c.Lq = 13; c.Lk = 6; c.kdim = c.vdim = 32)
MHA_CASE(gqa_self_attention, c.E = 64; c.H = 8; c.Hkv = 2; c.Lq = 23; c.causal = 1)
MHA_CASE(gqa_cross_attention, c.E = 64; c.H = 8; c.Hkv = 2; c.packed = false; c.self = false; c.Lq = 7;
     c.Lk = 30; c.kdim = 48; c.vdim = 20)
MHA_CASE(padded_batch_need_weights, c.B = 3; c.Lq = 11; c.lengths = true; c.weights = true;
     c.head_weights = true)
MHA_CASE(cross_padded_average_weights, c.B = 3; c.self = false; c.packed = false; c.Lq = 5; c.Lk = 19;
     c.kdim = 16; c.vdim = 24; c.lengths = true; c.weights = true)
MHA_CASE(attn_mask_bottom_right, c.self = false; c.Lq = 6; c.Lk = 14; c.kdim = c.vdim = 32; c.mask = true;
     c.causal = 2; c.head_weights = true)
MHA_CASE(caller_workspace, c.causal = 1; c.offset = 3; c.workspace = true)
MHA_CASE(separate_biases, c.packed = false; c.separate_bias = true; c.causal = 1)
MHA_CASE(fp16_weights_fp32_inputs, c.f16_weights = true; c.separate_bias = true; c.causal = 1)
MHA_CASE(fp16_weights_cross_gqa, c.f16_weights = true; c.self = false; c.packed = false; c.E = 64;
     c.H = 8; c.Hkv = 2; c.Lq = 7; c.Lk = 12; c.kdim = 40; c.vdim = 24)
MHA_CASE(weights_updated, c.update = true; c.causal = 1)
MHA_CASE(weights_updated_fp16, c.update = true; c.f16_weights = true; c.self = false; c.Lq = 5;
     c.Lk = 9; c.kdim = c.vdim = 32)
MHA_CASE(caller_workspace_cross_weights, c.self = false; c.packed = false; c.Lq = 7; c.Lk = 12;
     c.kdim = 24; c.vdim = 16; c.lengths = true; c.weights = true; c.workspace = true)
/* Today's models through the layer: a window with kept keys, soft-capping, ALiBi and sinks, with
 * GQA, causal and padded; and with the attention weights asked for (the unfused path). */
MHA_CASE(model_variants, c.variants = true; c.causal = 1; c.Lq = c.Lk = 40; c.Hkv = 2;
         c.packed = false; c.kdim = c.vdim = 32; c.lengths = true)
MHA_CASE(model_variants_weights, c.variants = true; c.causal = 2; c.self = false; c.Lq = 6;
         c.Lk = 30; c.packed = false; c.kdim = c.vdim = 32; c.head_weights = true)

/* An fp16 layer (weights, inputs and output in fp16): on fp16-rounded weights and inputs, its
 * error against the float64 layer is at most twice that reference's own fp16 rounding error,
 * plus 1e-4 * max(1, max|ref|) (FlashAttention's rule). */
static uint16_t *to_half(const float *x, size_t n, double *rounded)
{
    uint16_t *h = malloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) {
        h[i] = half_from_float(x[i]);
        rounded[i] = half_to_float(h[i]);
    }
    return h;
}

static bool fp16_case(bool self, bool packed)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    const size_t B = 2, Lq = 13, E = 32, H = 4, kdim = self ? 32 : 24, vdim = self ? 32 : 40;
    const size_t Lk = self ? Lq : 19, KV = E, W3 = 3 * E;
    uint64_t seed = self ? 5 : 6;
    const size_t nx = B * Lq * E, nk = B * Lk * kdim, nv = B * Lk * vdim;
    const size_t nw = packed ? W3 * E : E * E + KV * kdim + KV * vdim;
    float *f = malloc((nx + nk + nv + nw + E * E + W3 + E) * sizeof *f);
    fill_uniform(f, nx + nk + nv, &seed, -1, 1);
    fill_uniform(f + nx + nk + nv, nw + E * E + W3 + E, &seed, -0.2f, 0.2f);
    double *d = malloc((nx + nk + nv + nw + E * E + W3 + E) * sizeof *d);
    uint16_t *h = to_half(f, nx + nk + nv + nw + E * E + W3 + E, d);
    /* One buffer holds it all, in the order x, k, v, weights, out weight, in bias, out bias. */
    const size_t total = nx + nk + nv + nw + E * E + W3 + E;
    cl_mem all = buf_new(&e, total * 2), ob = buf_new(&e, (nx + 8) * 2);
    buf_write(&e, all, 0, h, total * 2);
    uint16_t *guard = malloc((nx + 8) * 2);
    for (size_t i = 0; i < nx + 8; i++)
        guard[i] = 0x7e00;
    buf_write(&e, ob, 0, guard, (nx + 8) * 2);
    size_t at = 0;
    clattn_tensor x = clattn_tensor_bhtd(all, at, B, 1, Lq, E);
    at += nx;
    clattn_tensor k = clattn_tensor_bhtd(all, at, B, 1, Lk, kdim);
    at += nk;
    clattn_tensor v = clattn_tensor_bhtd(all, at, B, 1, Lk, vdim);
    at += nv;
    const size_t w0 = at;
    clattn_tensor win = clattn_tensor_bhtd(all, w0, 1, 1, W3, E);
    clattn_tensor wq = clattn_tensor_bhtd(all, w0, 1, 1, E, E);
    clattn_tensor wk = clattn_tensor_bhtd(all, w0 + E * E, 1, 1, KV, kdim);
    clattn_tensor wv = clattn_tensor_bhtd(all, w0 + E * E + KV * kdim, 1, 1, KV, vdim);
    at += nw;
    clattn_tensor wo = clattn_tensor_bhtd(all, at, 1, 1, E, E);
    at += E * E;
    clattn_tensor bin = clattn_tensor_bhtd(all, at, 1, 1, 1, W3);
    at += W3;
    clattn_tensor bo = clattn_tensor_bhtd(all, at, 1, 1, 1, E);
    clattn_tensor out = clattn_tensor_bhtd(ob, 4, B, 1, Lq, E);
    clattn_tensor *ts[] = {&x, &k, &v, &win, &wq, &wk, &wv, &wo, &bin, &bo, &out};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        ts[i]->dtype = CLATTN_F16;
    clattn_mha_params mp = clattn_mha_params_default();
    mp.embed_dim = E, mp.num_heads = H, mp.kdim = kdim, mp.vdim = vdim, mp.dtype = CLATTN_F16;
    if (packed)
        mp.in_proj_weight = &win;
    else
        mp.q_proj_weight = &wq, mp.k_proj_weight = &wk, mp.v_proj_weight = &wv;
    mp.in_proj_bias = &bin, mp.out_proj_weight = &wo, mp.out_proj_bias = &bo;
    clattn_mha *m = NULL;
    EXPECT_STATUS(clattn_mha_create(e.cc, &mp, &m), CLATTN_SUCCESS);
    clattn_mha_forward_params fp = clattn_mha_forward_params_default();
    fp.mask.causal = self ? CLATTN_CAUSAL_TOP_LEFT : CLATTN_CAUSAL_NONE;
    fp.path = test_path();
    const clattn_tensor *kt = self ? &x : &k, *vt = self ? &x : &v;
    EXPECT_STATUS(clattn_mha_forward(m, e.queue, &x, kt, vt, &out, &fp, 0, NULL, NULL), CLATTN_SUCCESS);
    uint16_t *got = malloc((nx + 8) * 2);
    buf_read(&e, ob, 0, got, (nx + 8) * 2);
    EXPECT(got[0] == 0x7e00 && got[3] == 0x7e00 && got[4 + nx] == 0x7e00); /* guards */

    const double *dx = d, *dk = self ? d : d + nx, *dv = self ? d : d + nx + nk, *dw = d + nx + nk + nv;
    const double *dwo = dw + nw, *dbin = dwo + E * E, *dbo = dbin + W3;
    ref_mha_layer L = {E, H, H, kdim, vdim, dw, dw + E * E, dw + E * E + KV * kdim,
                       dbin, dbin + E, dbin + 2 * E, dwo, dbo};
    double *ref = malloc(nx * sizeof *ref);
    ref_mha(&L, B, Lq, Lk, self ? 1 : 0, NULL, NULL, dx, dk, dv, ref, NULL, NULL);
    double err = 0, rounding = 0, scale = 1;
    for (size_t i = 0; i < nx; i++) {
        double g = half_to_float(got[4 + i]);
        err = fmax(err, isnan(g) ? INFINITY : fabs(g - ref[i]));
        rounding = fmax(rounding, fabs(half_to_float(half_from_float((float)ref[i])) - ref[i]));
        scale = fmax(scale, fabs(ref[i]));
    }
    const double limit = 2 * rounding + 1e-4 * scale;
    printf("fp16 layer (%s, %s): error %.3g, reference rounded to fp16 %.3g, limit %.3g%s\n",
           self ? "self" : "cross", packed ? "packed" : "separate", err, rounding, limit,
           err <= limit ? "" : "  FAIL");
    EXPECT(err <= limit);
    /* A float input to an fp16 layer is refused. */
    clattn_tensor x32 = x;
    x32.dtype = CLATTN_F32;
    EXPECT_STATUS(clattn_mha_forward(m, e.queue, &x32, &x32, &x32, &out, &fp, 0, NULL, NULL),
                  CLATTN_ERROR_UNSUPPORTED_DTYPE);
    clattn_mha_destroy(&m);
    free(f), free(d), free(h), free(guard), free(got), free(ref);
    clReleaseMemObject(all), clReleaseMemObject(ob);
    env_close(&e);
    return ok;
}
static bool fp16_layer(void)
{
    return fp16_case(true, true) && fp16_case(false, false);
}

/* Forwards without a workspace keep their intermediates in the layer for the next forward:
 * two of one shape on two queues back to back (the second reuses the first's buffers, so it
 * must wait for it on the device), then another shape; all three right. The layer's memory
 * grows by the scratch once, stays when reused, and a failed forward leaves it as it was. */
static bool kept_scratch(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    cl_int err;
    cl_command_queue q2 = clCreateCommandQueue(e.context, e.device, 0, &err);
    CL_OK(err);
    uint64_t seed = 91;
    const size_t E = 32, H = 4, B[3] = {2, 2, 1}, T[3] = {23, 23, 9};
    view_buf in = weight(&e, 3 * E, E, 0, &seed), wo = weight(&e, E, E, 0, &seed);
    view_buf bin = vb_new(&e, LAYOUT_BHTD, 1, 1, 1, 3 * E, 0, 0, &seed, true);
    view_buf bo = vb_new(&e, LAYOUT_BHTD, 1, 1, 1, E, 0, 0, &seed, true);
    clattn_mha_params mp = clattn_mha_params_default();
    mp.embed_dim = E;
    mp.num_heads = H;
    mp.in_proj_weight = &in.t, mp.in_proj_bias = &bin.t;
    mp.out_proj_weight = &wo.t, mp.out_proj_bias = &bo.t;
    clattn_mha *mha = NULL;
    EXPECT_STATUS(clattn_mha_create(e.cc, &mp, &mha), CLATTN_SUCCESS);
    clattn_mha_forward_params fp = clattn_mha_forward_params_default();
    fp.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
    fp.path = test_path();

    view_buf x[3], out[3];
    size_t bytes[3], need = 0;
    const size_t before = clattn_mha_bytes(mha);
    /* The first forward waits for a user event; the second, on another queue, must not finish
     * before it has run, however long that is. */
    cl_event gate = clCreateUserEvent(e.context, &err), second = NULL;
    CL_OK(err);
    for (int i = 0; i < 3; i++) { /* before the gate: their uploads would wait behind it */
        x[i] = vb_new(&e, LAYOUT_BHTD, B[i], 1, T[i], E, 1, 2, &seed, true);
        out[i] = vb_new(&e, LAYOUT_BHTD, B[i], 1, T[i], E, 2, 2, &seed, false);
    }
    for (int i = 0; i < 3; i++) {
        if (i == 0) /* its kernels built now, so that the gated forward only enqueues */
            EXPECT_STATUS(clattn_mha_prepare(mha, &x[0].t, &x[0].t, &x[0].t, &out[0].t, &fp),
                          CLATTN_SUCCESS);
        EXPECT_STATUS(clattn_mha_forward(mha, i == 1 ? q2 : e.queue, &x[i].t, &x[i].t, &x[i].t,
                                         &out[i].t, &fp, i == 0, i == 0 ? &gate : NULL,
                                         i == 1 ? &second : NULL),
                      CLATTN_SUCCESS);
        bytes[i] = clattn_mha_bytes(mha);
        if (i == 0)
            EXPECT_STATUS(clattn_mha_workspace_size(mha, &x[0].t, &x[0].t, &x[0].t, &fp, &need),
                          CLATTN_SUCCESS);
        if (i == 1) {
            CL_OK(clFlush(q2));
            const struct timespec pause = {0, 200 * 1000 * 1000};
            nanosleep(&pause, NULL);
            cl_int status = CL_COMPLETE;
            CL_OK(clGetEventInfo(second, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status, NULL));
            EXPECT(status > CL_COMPLETE); /* still waiting for the gated forward */
            /* A wrong output shape: refused, the kept scratch unchanged. */
            clattn_tensor short_out = out[i].t;
            short_out.dims[2]--;
            EXPECT_STATUS(clattn_mha_forward(mha, e.queue, &x[i].t, &x[i].t, &x[i].t, &short_out,
                                             &fp, 0, NULL, NULL),
                          CLATTN_ERROR_INVALID_SHAPE);
            EXPECT(clattn_mha_bytes(mha) == bytes[1]);
            CL_OK(clSetUserEventStatus(gate, CL_COMPLETE));
        }
    }
    CL_OK(clFinish(q2));
    CL_OK(clFinish(e.queue));
    clReleaseEvent(gate);
    if (second)
        clReleaseEvent(second);
    EXPECT(need > 0 && bytes[0] >= before + need);
    EXPECT(bytes[1] == bytes[0]);

    double *W = vb_dense(&in, in.host), *bi = vb_dense(&bin, bin.host), *Wo = vb_dense(&wo, wo.host),
           *bod = vb_dense(&bo, bo.host);
    ref_mha_layer L = {E, H, H, E, E, W, W + E * E, W + 2 * E * E, bi, bi + E, bi + 2 * E, Wo, bod};
    for (int i = 0; i < 3; i++) {
        const size_t n = B[i] * T[i] * E;
        double *xd = vb_dense(&x[i], x[i].host), *ref = malloc(n * sizeof *ref);
        ref_mha(&L, B[i], T[i], T[i], 1, NULL, NULL, xd, xd, xd, ref, NULL, NULL);
        float *all = malloc(out[i].elems * sizeof *all);
        vb_read_all(&e, &out[i], all);
        double *got = vb_dense(&out[i], all);
        ok &= check_close(i == 1 ? "second queue" : "output", got, ref, n, TOL);
        EXPECT(vb_outside_unchanged(&out[i], out[i].host, all));
        free(xd), free(ref), free(all), free(got);
        vb_free(&x[i]), vb_free(&out[i]);
    }
    clattn_mha_destroy(&mha);
    free(W), free(bi), free(Wo), free(bod);
    vb_free(&in), vb_free(&wo), vb_free(&bin), vb_free(&bo);
    clReleaseCommandQueue(q2);
    env_close(&e);
    return ok;
}

int main(int argc, char **argv)
{
    static const test_case cases[] = {
        CASE(self_attention_packed),
        CASE(self_attention_no_bias),
        CASE(self_attention_separate_weights),
        CASE(cross_attention_kdim_vdim),
        CASE(cross_attention_packed),
        CASE(gqa_self_attention),
        CASE(gqa_cross_attention),
        CASE(padded_batch_need_weights),
        CASE(cross_padded_average_weights),
        CASE(attn_mask_bottom_right),
        CASE(caller_workspace),
        CASE(separate_biases),
        CASE(fp16_weights_fp32_inputs),
        CASE(fp16_weights_cross_gqa),
        CASE(weights_updated),
        CASE(weights_updated_fp16),
        CASE(caller_workspace_cross_weights),
        CASE(model_variants),
        CASE(model_variants_weights),
        CASE(fp16_layer),
        CASE(kept_scratch),
    };
    return run_cases(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
