/* Multi-head attention block: Q/K/V projections (CLBlast) straight into the packed [B, T, H·D]
 * layout, sdpa on head views of it, the output ("value-up") projection, and optionally the
 * attention weights averaged over heads. */
#include "steps.h"
#include "tensor.h"

#include <stdlib.h>
#include <string.h>

struct clattn_mha {
    clattn_context *ctx;
    size_t E, H, Hkv, D, KV, kdim, vdim;
    bool packed; /* in_proj_weight given (else q/k/v_proj_weight) */
    clattn_dtype dtype; /* of the weights, inputs and output (fp16: staged through float) */
    bool bias;
    /* Copies of the caller's views; their buffers are retained. */
    clattn_tensor wq, wk, wv, bq, bk, bv, wo, bo;
    clattn_tensor in_proj, in_bias; /* whole packed weight and bias (self-attention fast path) */
};

clattn_mha_params clattn_mha_params_default(void)
{
    clattn_mha_params p;
    memset(&p, 0, sizeof p);
    p.bias = 1;
    p.dtype = CLATTN_F32;
    return p;
}

clattn_mha_forward_params clattn_mha_forward_params_default(void)
{
    clattn_mha_forward_params p;
    memset(&p, 0, sizeof p);
    p.mask = clattn_mask_params_default();
    p.path = CLATTN_PATH_AUTO;
    return p;
}

/* Rows [row0, row0 + rows) of a [1, 1, R, C] weight view (cols = all). */
static clattn_tensor rows_of(const clattn_tensor *w, size_t row0, size_t rows)
{
    clattn_tensor t = *w;
    t.offset += row0 * w->strides[2];
    t.dims[2] = rows;
    return t;
}

/* Elements [n0, n0 + n) of a [1, 1, 1, N] bias view. */
static clattn_tensor span_of(const clattn_tensor *b, size_t n0, size_t n)
{
    clattn_tensor t = *b;
    t.offset += n0 * b->strides[3];
    t.dims[3] = n;
    return t;
}

static clattn_status check_matrix(clattn_context *ctx, const clattn_tensor *t, size_t rows,
                                  size_t cols, clattn_dtype dtype)
{
    if (!t)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_status st = clattn__view_check_f16(ctx, t, CLATTN_VIEW_INPUT);
    if (st != CL_SUCCESS)
        return st;
    if (t->dtype != dtype)
        return CLATTN_ERROR_UNSUPPORTED_DTYPE;
    return (t->dims[0] == 1 && t->dims[1] == 1 && t->dims[2] == rows && t->dims[3] == cols)
               ? CL_SUCCESS
               : CLATTN_ERROR_INVALID_SHAPE;
}

/* The views whose buffers the layer keeps (retained at create, released at destroy). */
#define KEPT_VIEWS(m) {&(m)->in_proj, &(m)->in_bias, &(m)->wq, &(m)->wk, &(m)->wv, &(m)->wo, &(m)->bo}

/* Releases the kept buffers [0, n) of the list. */
static void release_kept(clattn_mha *m, size_t n)
{
    clattn_tensor *ts[] = KEPT_VIEWS(m);
    for (size_t i = 0; i < n; i++)
        if (ts[i]->buffer)
            clReleaseMemObject(ts[i]->buffer);
}

/* Retains every kept buffer, or none (a failed retain undoes the ones before it). */
static clattn_status retain_kept(clattn_mha *m)
{
    clattn_tensor *ts[] = KEPT_VIEWS(m);
    const size_t n = sizeof ts / sizeof ts[0];
    for (size_t i = 0; i < n; i++) {
        cl_int err = ts[i]->buffer ? clRetainMemObject(ts[i]->buffer) : CL_SUCCESS;
        if (err != CL_SUCCESS) {
            release_kept(m, i);
            return err;
        }
    }
    return CL_SUCCESS;
}

clattn_status clattn_mha_create(clattn_context *ctx, const clattn_mha_params *params,
                                clattn_mha **out)
{
    if (!out)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    if (!ctx || !params)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    const clattn_mha_params *p = params;
    if (!CLATTN_RESERVED_ZERO(p))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (p->dtype != CLATTN_F32 && p->dtype != CLATTN_F16)
        return CLATTN_ERROR_UNSUPPORTED_DTYPE;
    const size_t E = p->embed_dim, H = p->num_heads;
    const size_t Hkv = p->num_kv_heads ? p->num_kv_heads : H;
    if (E == 0 || H == 0 || E % H != 0)
        return CLATTN_ERROR_INVALID_SHAPE;
    if (H % Hkv != 0)
        return CLATTN_ERROR_HEAD_MISMATCH;
    clattn_mha m = {0};
    m.ctx = ctx;
    m.E = E;
    m.H = H;
    m.Hkv = Hkv;
    m.D = E / H;
    m.KV = Hkv * m.D;
    m.kdim = p->kdim ? p->kdim : E;
    m.vdim = p->vdim ? p->vdim : E;
    m.packed = p->in_proj_weight != NULL;
    m.dtype = p->dtype;
    m.bias = p->bias != 0;
    const size_t W3 = E + 2 * m.KV;

    clattn_status st;
    if (m.packed) {
        if (p->q_proj_weight || p->k_proj_weight || p->v_proj_weight)
            return CLATTN_ERROR_INVALID_ARGUMENT; /* one form or the other */
        if (m.kdim != E || m.vdim != E)
            return CLATTN_ERROR_INVALID_SHAPE; /* as in PyTorch: packed needs kdim = vdim = E */
        if ((st = check_matrix(ctx, p->in_proj_weight, W3, E, p->dtype)) != CL_SUCCESS)
            return st;
        m.in_proj = *p->in_proj_weight;
        m.wq = rows_of(&m.in_proj, 0, E);
        m.wk = rows_of(&m.in_proj, E, m.KV);
        m.wv = rows_of(&m.in_proj, E + m.KV, m.KV);
    } else {
        if ((st = check_matrix(ctx, p->q_proj_weight, E, E, p->dtype)) != CL_SUCCESS ||
            (st = check_matrix(ctx, p->k_proj_weight, m.KV, m.kdim, p->dtype)) != CL_SUCCESS ||
            (st = check_matrix(ctx, p->v_proj_weight, m.KV, m.vdim, p->dtype)) != CL_SUCCESS)
            return st;
        m.wq = *p->q_proj_weight;
        m.wk = *p->k_proj_weight;
        m.wv = *p->v_proj_weight;
    }
    if ((st = check_matrix(ctx, p->out_proj_weight, E, E, p->dtype)) != CL_SUCCESS)
        return st;
    m.wo = *p->out_proj_weight;
    if (m.bias) {
        if ((st = check_matrix(ctx, p->in_proj_bias, 1, W3, p->dtype)) != CL_SUCCESS ||
            (st = check_matrix(ctx, p->out_proj_bias, 1, E, p->dtype)) != CL_SUCCESS)
            return st;
        m.in_bias = *p->in_proj_bias;
        m.bq = span_of(&m.in_bias, 0, E);
        m.bk = span_of(&m.in_bias, E, m.KV);
        m.bv = span_of(&m.in_bias, E + m.KV, m.KV);
        m.bo = *p->out_proj_bias;
    } else if (p->in_proj_bias || p->out_proj_bias) {
        return CLATTN_ERROR_INVALID_ARGUMENT;
    }
    clattn_mha *h = malloc(sizeof *h);
    if (!h)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    *h = m;
    if ((st = retain_kept(h)) != CL_SUCCESS) {
        free(h);
        return st;
    }
    *out = h;
    return CL_SUCCESS;
}

void clattn_mha_destroy(clattn_mha **mha)
{
    if (!mha || !*mha)
        return;
    clattn_tensor *ts[] = KEPT_VIEWS(*mha);
    release_kept(*mha, sizeof ts / sizeof ts[0]);
    free(*mha);
    *mha = NULL;
}

/* Where one forward's intermediates live in its scratch buffer, as views. */
typedef struct mha_layout {
    size_t elems;         /* end of the layout in floats (it starts at the workspace offset) */
    bool self_attention;  /* one product for Q, K and V */
    clattn_tensor Yqkv;   /* fused projection output [B, 1, Lq, E + 2·KV] */
    clattn_tensor Yq, Yk, Yv, Xo; /* projection outputs / out-projection input, [B, 1, T, n] */
    clattn_tensor Qh, Kh, Vh, Oh; /* head views of the same memory, [B, heads, T, D] */
    clattn_tensor probs;          /* per-head weights when only the average is wanted */
    /* An fp16 layer: float copies of the inputs and weights, and the float output. */
    bool staged;
    clattn_tensor x32, k32, v32, out32, win32, bin32, wq32, wk32, wv32, wo32, bo32;
} mha_layout;

static bool same_view(const clattn_tensor *a, const clattn_tensor *b)
{
    if (a == b)
        return true;
    if (a->buffer != b->buffer || a->offset != b->offset || a->dtype != b->dtype)
        return false;
    for (int d = 0; d < 4; d++)
        if (a->dims[d] != b->dims[d] || a->strides[d] != b->strides[d])
            return false;
    return true;
}

/* A [B, 1, T, n] row-major view at `off` (elements), rows `n` apart. */
static clattn_tensor rows_view(cl_mem buf, size_t off, size_t B, size_t T, size_t n, size_t ld)
{
    clattn_tensor t = {buf, off, CLATTN_F32, {B, 1, T, n}, {T * ld, T * ld, ld, 1}};
    return t;
}

/* [B, heads, T, D] view of rows `ld` apart whose head h starts at column h·D. */
static clattn_tensor heads_view(cl_mem buf, size_t off, size_t B, size_t T, size_t heads,
                                size_t D, size_t ld)
{
    clattn_tensor t = {buf, off, CLATTN_F32, {B, heads, T, D}, {T * ld, D, ld, 1}};
    return t;
}

/* Adds `n` floats to the layout, returning the region's offset; false on overflow. */
static bool take(size_t *total, size_t a, size_t b, size_t c, size_t *off)
{
    size_t n;
    if (!clattn__mul(a, b, &n) || !clattn__mul(n, c, &n))
        return false;
    *off = *total;
    return clattn__add(*total, n, total);
}

/* Lays the intermediates out in `buf` from element `base` on. */
static clattn_status plan_layout(const clattn_mha *m, const clattn_tensor *query,
                                 const clattn_tensor *key, const clattn_tensor *value,
                                 const clattn_mha_forward_params *fp, cl_mem buf, size_t base,
                                 mha_layout *L)
{
    const size_t B = query->dims[0], Lq = query->dims[2], Lk = key->dims[2];
    const size_t E = m->E, KV = m->KV, D = m->D, W3 = E + 2 * KV;
    memset(L, 0, sizeof *L);
    L->elems = base;
    L->self_attention = m->packed && same_view(query, key) && same_view(query, value);
    size_t oq, ok, ov, oa, op = 0;
    if (L->self_attention) {
        if (!take(&L->elems, B, Lq, W3, &oq))
            return CLATTN_ERROR_SIZE_OVERFLOW;
        L->Yqkv = rows_view(buf, oq, B, Lq, W3, W3);
        L->Qh = heads_view(buf, oq, B, Lq, m->H, D, W3);
        L->Kh = heads_view(buf, oq + E, B, Lq, m->Hkv, D, W3);
        L->Vh = heads_view(buf, oq + E + KV, B, Lq, m->Hkv, D, W3);
    } else {
        if (!take(&L->elems, B, Lq, E, &oq) || !take(&L->elems, B, Lk, KV, &ok) ||
            !take(&L->elems, B, Lk, KV, &ov))
            return CLATTN_ERROR_SIZE_OVERFLOW;
        L->Yq = rows_view(buf, oq, B, Lq, E, E);
        L->Yk = rows_view(buf, ok, B, Lk, KV, KV);
        L->Yv = rows_view(buf, ov, B, Lk, KV, KV);
        L->Qh = heads_view(buf, oq, B, Lq, m->H, D, E);
        L->Kh = heads_view(buf, ok, B, Lk, m->Hkv, D, KV);
        L->Vh = heads_view(buf, ov, B, Lk, m->Hkv, D, KV);
    }
    if (!take(&L->elems, B, Lq, E, &oa))
        return CLATTN_ERROR_SIZE_OVERFLOW;
    L->Xo = rows_view(buf, oa, B, Lq, E, E);
    L->Oh = heads_view(buf, oa, B, Lq, m->H, D, E);
    if (fp->weights && !fp->head_weights) {
        if (!take(&L->elems, B * m->H, Lq, Lk, &op))
            return CLATTN_ERROR_SIZE_OVERFLOW;
        L->probs = (clattn_tensor){buf, op, CLATTN_F32, {B, m->H, Lq, Lk},
                                   {m->H * Lq * Lk, Lq * Lk, Lk, 1}};
    }
    if (m->dtype == CLATTN_F16) {
        /* Float copies, contiguous: a matrix [rows, cols] at `off` is a [1, 1, rows, cols] view. */
        L->staged = true;
        size_t o1, o2, o3, o4, o5, o6, o7;
        const size_t wins = m->packed ? W3 * E : E * E + KV * (m->kdim + m->vdim);
        if (!take(&L->elems, B, Lq, E, &o1) || !take(&L->elems, B, Lq, E, &o2) ||
            !take(&L->elems, wins, 1, 1, &o3) || !take(&L->elems, E, E, 1, &o4) ||
            !take(&L->elems, W3 + E, 1, 1, &o5))
            return CLATTN_ERROR_SIZE_OVERFLOW;
        L->x32 = rows_view(buf, o1, B, Lq, E, E);
        L->out32 = rows_view(buf, o2, B, Lq, E, E);
        L->win32 = rows_view(buf, o3, 1, W3, E, E);
        L->wq32 = rows_view(buf, o3, 1, E, E, E);
        L->wk32 = rows_view(buf, o3 + E * E, 1, KV, m->kdim, m->kdim);
        L->wv32 = rows_view(buf, o3 + E * E + KV * m->kdim, 1, KV, m->vdim, m->vdim);
        L->wo32 = rows_view(buf, o4, 1, E, E, E);
        L->bin32 = rows_view(buf, o5, 1, 1, W3, W3);
        L->bo32 = rows_view(buf, o5 + W3, 1, 1, E, E);
        if (!L->self_attention) {
            if (!take(&L->elems, B, Lk, m->kdim, &o6) || !take(&L->elems, B, Lk, m->vdim, &o7))
                return CLATTN_ERROR_SIZE_OVERFLOW;
            L->k32 = rows_view(buf, o6, B, Lk, m->kdim, m->kdim);
            L->v32 = rows_view(buf, o7, B, Lk, m->vdim, m->vdim);
        }
    }
    size_t bytes; /* the byte size must fit too */
    return clattn__mul(L->elems, sizeof(float), &bytes) ? CL_SUCCESS : CLATTN_ERROR_SIZE_OVERFLOW;
}

/* Checks what the steps cannot: the views' shapes against the layer, and the params. `output`
 * may be NULL (a size query). */
static clattn_status forward_check(const clattn_mha *m, const clattn_tensor *query,
                                   const clattn_tensor *key, const clattn_tensor *value,
                                   const clattn_tensor *output, const clattn_mha_forward_params *fp)
{
    clattn_context *ctx = m->ctx;
    if (!CLATTN_RESERVED_ZERO(fp))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_status st;
    if ((st = clattn__view_check_f16(ctx, query, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check_f16(ctx, key, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check_f16(ctx, value, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (output && (st = clattn__view_check_f16(ctx, output, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS) ||
        (fp->weights && (st = clattn__view_check(ctx, fp->weights, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS))
        return st;
    /* The layer's dtype for the inputs and the output; attention weights are always float. */
    if (query->dtype != m->dtype || key->dtype != m->dtype || value->dtype != m->dtype ||
        (output && output->dtype != m->dtype))
        return CLATTN_ERROR_UNSUPPORTED_DTYPE;
    const size_t B = query->dims[0], Lq = query->dims[2], Lk = key->dims[2];
    if (query->dims[1] != 1 || query->dims[3] != m->E || key->dims[0] != B || key->dims[1] != 1 ||
        key->dims[3] != m->kdim || value->dims[0] != B || value->dims[1] != 1 ||
        value->dims[2] != Lk || value->dims[3] != m->vdim)
        return CLATTN_ERROR_INVALID_SHAPE;
    if (output && (output->dims[0] != B || output->dims[1] != 1 || output->dims[2] != Lq ||
                   output->dims[3] != m->E))
        return CLATTN_ERROR_INVALID_SHAPE;
    if (fp->weights && (fp->weights->dims[0] != B || fp->weights->dims[1] != 1 ||
                        fp->weights->dims[2] != Lq || fp->weights->dims[3] != Lk))
        return CLATTN_ERROR_INVALID_SHAPE;
    return CL_SUCCESS;
}

/* The attention step's params for a forward. */
static clattn_sdpa_params attention_params(const clattn_mha_forward_params *fp, const mha_layout *L)
{
    clattn_sdpa_params sp = clattn_sdpa_params_default();
    sp.mask = fp->mask;
    sp.path = fp->path;
    sp.probs = fp->head_weights ? fp->head_weights : (fp->weights ? &L->probs : NULL);
    return sp;
}

/* Bytes of intermediates a forward needs: its layout, then the attention's score matrix when
 * the unfused path keeps one. */
static clattn_status scratch_bytes(const clattn_mha *m, const clattn_tensor *query,
                                   const clattn_tensor *key, const clattn_tensor *value,
                                   const clattn_mha_forward_params *fp, size_t *bytes)
{
    mha_layout L;
    clattn_status st = plan_layout(m, query, key, value, fp, NULL, 0, &L);
    const clattn_sdpa_params sp = attention_params(fp, &L);
    size_t sbytes = 0;
    if (st == CL_SUCCESS)
        st = clattn__sdpa_workspace(m->ctx, &L.Qh, &L.Kh, &L.Vh, &L.Oh, &sp, &sbytes);
    if (st != CL_SUCCESS)
        return st;
    if (!clattn__mul(L.elems, sizeof(float), bytes) || !clattn__add(*bytes, sbytes, bytes))
        return CLATTN_ERROR_SIZE_OVERFLOW;
    return CL_SUCCESS;
}

clattn_status clattn_mha_workspace_size(clattn_mha *m, const clattn_tensor *query,
                                        const clattn_tensor *key, const clattn_tensor *value,
                                        const clattn_mha_forward_params *params, size_t *bytes)
{
    if (!m || !bytes)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_mha_forward_params fp = params ? *params : clattn_mha_forward_params_default();
    fp.workspace = NULL; /* the question is how much, not whether the given one fits */
    fp.workspace_offset = 0;
    clattn_status st = forward_check(m, query, key, value, NULL, &fp);
    return st != CL_SUCCESS ? st : scratch_bytes(m, query, key, value, &fp, bytes);
}

static clattn_status head_mean_plan(clattn_plan *p, const clattn_tensor *P, const clattn_tensor *W)
{
    if (clattn__view_empty(W))
        return CL_SUCCESS;
    clattn_kargs args = {0};
    clattn__arg_view(&args, P);
    clattn__arg_ulong(&args, P->dims[1]);
    clattn__arg_view(&args, W);
    const size_t global[3] = {W->dims[3], W->dims[2], W->dims[0]};
    return clattn__plan_kernel(p, "head_mean", "", "head_mean", &args, 3, global, NULL);
}

/* The weights, inputs and output a forward's float pipeline reads and writes: the layer's and
 * the caller's own, or for an fp16 layer the float copies staged in the scratch. */
typedef struct mha_operands {
    const clattn_tensor *xq, *xk, *xv, *out;
    clattn_tensor in_proj, in_bias, wq, wk, wv, wo, bq, bk, bv, bo;
} mha_operands;

/* For an fp16 layer, appends the conversions into the float copies and points the operands at
 * them; the output's conversion back comes last (in mha_plan). */
static clattn_status stage_inputs(clattn_plan *p, const clattn_mha *m, const mha_layout *L,
                                  const clattn_tensor *query, const clattn_tensor *key,
                                  const clattn_tensor *value, mha_operands *x)
{
    x->xq = &L->x32;
    x->xk = L->self_attention ? &L->x32 : &L->k32;
    x->xv = L->self_attention ? &L->x32 : &L->v32;
    x->out = &L->out32;
    const clattn_tensor *src[9], *dst[9];
    int n = 0;
    src[n] = query, dst[n++] = &L->x32;
    if (!L->self_attention) {
        src[n] = key, dst[n++] = &L->k32;
        src[n] = value, dst[n++] = &L->v32;
    }
    if (m->packed) {
        x->in_proj = L->win32;
        src[n] = &m->in_proj, dst[n++] = &L->win32;
        x->wq = rows_of(&x->in_proj, 0, m->E);
        x->wk = rows_of(&x->in_proj, m->E, m->KV);
        x->wv = rows_of(&x->in_proj, m->E + m->KV, m->KV);
    } else {
        src[n] = &m->wq, dst[n++] = &L->wq32;
        src[n] = &m->wk, dst[n++] = &L->wk32;
        src[n] = &m->wv, dst[n++] = &L->wv32;
        x->wq = L->wq32;
        x->wk = L->wk32;
        x->wv = L->wv32;
    }
    x->wo = L->wo32;
    src[n] = &m->wo, dst[n++] = &L->wo32;
    if (m->bias) {
        x->in_bias = L->bin32;
        x->bq = span_of(&x->in_bias, 0, m->E);
        x->bk = span_of(&x->in_bias, m->E, m->KV);
        x->bv = span_of(&x->in_bias, m->E + m->KV, m->KV);
        x->bo = L->bo32;
        src[n] = &m->in_bias, dst[n++] = &L->bin32;
        src[n] = &m->bo, dst[n++] = &L->bo32;
    }
    clattn_status st = CL_SUCCESS;
    for (int i = 0; i < n && st == CL_SUCCESS; i++)
        st = clattn__convert_plan(p, src[i], dst[i]);
    return st;
}

static clattn_status mha_plan(clattn_plan *p, const clattn_mha *m, const clattn_tensor *query,
                              const clattn_tensor *key, const clattn_tensor *value,
                              const clattn_tensor *output, const clattn_mha_forward_params *fp)
{
    clattn_context *ctx = p->ctx;
    if (!output)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_status st = forward_check(m, query, key, value, output, fp);
    if (st != CL_SUCCESS || (clattn__view_empty(output) && !fp->weights && !fp->head_weights))
        return st;

    /* The intermediates go to the caller's workspace, followed by the attention's score matrix
     * when the unfused path keeps one (the attention checks that it fits), or to a buffer of the
     * call's own (the attention then places its scores itself). */
    mha_layout L;
    if ((st = plan_layout(m, query, key, value, fp, NULL, 0, &L)) != CL_SUCCESS)
        return st;
    const size_t bytes = L.elems * sizeof(float); /* checked by plan_layout */
    cl_mem buf = NULL;
    size_t base = 0;
    if (fp->workspace) {
        const clattn_tensor lens = clattn__lengths_view(&fp->mask, query->dims[0]);
        const clattn_tensor *views[] = {query, key, value, output, fp->weights, fp->head_weights,
                                        fp->mask.additive, &lens, &m->in_proj, &m->in_bias,
                                        &m->wq, &m->wk, &m->wv, &m->wo, &m->bo};
        if ((st = clattn__workspace_check(ctx, fp->workspace, fp->workspace_offset, bytes, views,
                                          sizeof views / sizeof views[0])) != CL_SUCCESS)
            return st;
        buf = fp->workspace;
        base = fp->workspace_offset / sizeof(float);
    } else if (bytes > 0 && (st = clattn__plan_buffer(p, bytes, &buf)) != CL_SUCCESS) {
        return st;
    }
    if ((st = plan_layout(m, query, key, value, fp, buf, base, &L)) != CL_SUCCESS)
        return st;
    clattn_sdpa_params sp = attention_params(fp, &L);
    if (fp->workspace) {
        sp.workspace = buf;
        sp.workspace_offset = fp->workspace_offset + bytes;
    }

    mha_operands x = {query, key, value, output, m->in_proj, m->in_bias, m->wq, m->wk, m->wv,
                      m->wo, m->bq, m->bk, m->bv, m->bo};
    if (L.staged && (st = stage_inputs(p, m, &L, query, key, value, &x)) != CL_SUCCESS)
        return st;
    const bool b = m->bias;
    if (L.self_attention) {
        st = clattn__linear_plan(p, x.xq, &x.in_proj, b ? &x.in_bias : NULL, &L.Yqkv);
    } else if ((st = clattn__linear_plan(p, x.xq, &x.wq, b ? &x.bq : NULL, &L.Yq)) == CL_SUCCESS &&
               (st = clattn__linear_plan(p, x.xk, &x.wk, b ? &x.bk : NULL, &L.Yk)) == CL_SUCCESS) {
        st = clattn__linear_plan(p, x.xv, &x.wv, b ? &x.bv : NULL, &L.Yv);
    }
    if (st == CL_SUCCESS)
        st = clattn__sdpa_plan(p, &L.Qh, &L.Kh, &L.Vh, &L.Oh, &sp);
    if (st == CL_SUCCESS)
        st = clattn__linear_plan(p, &L.Xo, &x.wo, b ? &x.bo : NULL, x.out);
    if (st == CL_SUCCESS && L.staged)
        st = clattn__convert_plan(p, &L.out32, output);
    if (st == CL_SUCCESS && fp->weights)
        st = head_mean_plan(p, sp.probs, fp->weights);
    return st;
}

clattn_status clattn_mha_forward(clattn_mha *m, cl_command_queue queue,
                                 const clattn_tensor *query, const clattn_tensor *key,
                                 const clattn_tensor *value, const clattn_tensor *output,
                                 const clattn_mha_forward_params *params, cl_uint num_wait,
                                 const cl_event *wait_list, cl_event *event_out)
{
    if (!m)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    const clattn_mha_forward_params fp = params ? *params : clattn_mha_forward_params_default();
    CLATTN_RETURN_PLANNED(m->ctx, queue, num_wait, wait_list, event_out,
                          mha_plan(&plan_, m, query, key, value, output, &fp));
}

clattn_status clattn_mha_prepare(clattn_mha *m, const clattn_tensor *query,
                                 const clattn_tensor *key, const clattn_tensor *value,
                                 const clattn_tensor *output,
                                 const clattn_mha_forward_params *params)
{
    if (!m)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    const clattn_mha_forward_params fp = params ? *params : clattn_mha_forward_params_default();
    CLATTN_RETURN_PREPARED(m->ctx, mha_plan(&plan_, m, query, key, value, output, &fp));
}
