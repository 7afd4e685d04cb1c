/* Multi-head attention block: Q/K/V projections (CLBlast) straight into the packed [B, T, H·D]
 * layout, sdpa on head views of it, the output ("value-up") projection, and optionally the
 * attention weights averaged over heads. */
#include "program.h"
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

static void retain_all(clattn_mha *m, bool retain)
{
    clattn_tensor *ts[] = {&m->in_proj, &m->in_bias, &m->wq, &m->wk, &m->wv, &m->wo, &m->bo};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        if (!ts[i]->buffer)
            continue;
        if (retain)
            clRetainMemObject(ts[i]->buffer);
        else
            clReleaseMemObject(ts[i]->buffer);
    }
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
    retain_all(h, true);
    *out = h;
    return CL_SUCCESS;
}

void clattn_mha_destroy(clattn_mha **mha)
{
    if (!mha || !*mha)
        return;
    retain_all(*mha, false);
    free(*mha);
    *mha = NULL;
}

/* Where one forward's intermediates live in its scratch buffer, as views. */
typedef struct mha_layout {
    size_t elems;         /* scratch size in floats */
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

static clattn_status plan_layout(const clattn_mha *m, const clattn_tensor *query,
                                 const clattn_tensor *key, const clattn_tensor *value,
                                 const clattn_mha_forward_params *fp, cl_mem buf, mha_layout *L)
{
    const size_t B = query->dims[0], Lq = query->dims[2], Lk = key->dims[2];
    const size_t E = m->E, KV = m->KV, D = m->D, W3 = E + 2 * KV;
    memset(L, 0, sizeof *L);
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

clattn_status clattn_mha_workspace_size(clattn_mha *m, const clattn_tensor *query,
                                        const clattn_tensor *key, const clattn_tensor *value,
                                        const clattn_mha_forward_params *params, size_t *bytes)
{
    if (!m || !bytes)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    const clattn_mha_forward_params fp = params ? *params : clattn_mha_forward_params_default();
    clattn_status st = forward_check(m, query, key, value, NULL, &fp);
    mha_layout L;
    if (st == CL_SUCCESS)
        st = plan_layout(m, query, key, value, &fp, NULL, &L);
    if (st != CL_SUCCESS)
        return st;
    /* Plus the score matrix the attention step allocates, if its path keeps one. */
    clattn_sdpa_params sp = clattn_sdpa_params_default();
    sp.mask = fp.mask;
    sp.path = fp.path;
    sp.probs = fp.head_weights ? fp.head_weights : (fp.weights ? &L.probs : NULL);
    size_t sbytes = 0;
    if ((st = clattn__sdpa_workspace(m->ctx, &L.Qh, &L.Kh, &L.Vh, &L.Oh, &sp, &sbytes)) != CL_SUCCESS)
        return st;
    if (!clattn__mul(L.elems, sizeof(float), bytes) || !clattn__add(*bytes, sbytes, bytes))
        return CLATTN_ERROR_SIZE_OVERFLOW;
    return CL_SUCCESS;
}

static clattn_status head_mean_enqueue(clattn_context *ctx, cl_command_queue q,
                                       const clattn_tensor *P, const clattn_tensor *W, cl_uint nw,
                                       const cl_event *wl, cl_event *ev)
{
    if (clattn__view_empty(W))
        return clattn__no_op(q, nw, wl, ev);
    cl_ulong p_off = P->offset, ps0 = clattn__stride(P, 0), ps1 = clattn__stride(P, 1),
             ps2 = clattn__stride(P, 2), ps3 = clattn__stride(P, 3), H = P->dims[1];
    cl_ulong w_off = W->offset, ws0 = clattn__stride(W, 0), ws2 = clattn__stride(W, 2),
             ws3 = clattn__stride(W, 3);
    const clattn_karg args[] = {CLATTN_KARG(P->buffer), CLATTN_KARG(p_off), CLATTN_KARG(ps0),
                                CLATTN_KARG(ps1),       CLATTN_KARG(ps2),   CLATTN_KARG(ps3),
                                CLATTN_KARG(H),         CLATTN_KARG(W->buffer), CLATTN_KARG(w_off),
                                CLATTN_KARG(ws0),       CLATTN_KARG(ws2),   CLATTN_KARG(ws3)};
    const size_t global[3] = {W->dims[3], W->dims[2], W->dims[0]};
    return clattn__launch(ctx, q, "head_mean", "head_mean", "", 3, global, NULL, args,
                          sizeof args / sizeof args[0], nw, wl, ev);
}

clattn_status clattn_mha_forward(clattn_mha *m, cl_command_queue queue,
                                 const clattn_tensor *query, const clattn_tensor *key,
                                 const clattn_tensor *value, const clattn_tensor *output,
                                 const clattn_mha_forward_params *params, cl_uint num_wait,
                                 const cl_event *wait_list, cl_event *event_out)
{
    if (!m)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_context *ctx = m->ctx;
    clattn_status st = clattn__check_call(ctx, queue, num_wait, wait_list);
    if (st == CL_SUCCESS && !output)
        st = CLATTN_ERROR_INVALID_ARGUMENT;
    const clattn_mha_forward_params fp = params ? *params : clattn_mha_forward_params_default();
    if (st != CL_SUCCESS || (st = forward_check(m, query, key, value, output, &fp)) != CL_SUCCESS)
        return st;
    if (clattn__view_empty(output) && !fp.weights && !fp.head_weights)
        return clattn__no_op(queue, num_wait, wait_list, event_out);

    mha_layout L;
    if ((st = plan_layout(m, query, key, value, &fp, NULL, &L)) != CL_SUCCESS)
        return st;
    cl_mem scratch = NULL;
    if (L.elems > 0) {
        size_t bytes = L.elems * sizeof(float);
        if (bytes > ctx->info.max_mem_alloc_size)
            return CLATTN_ERROR_ALLOCATION_TOO_LARGE;
        cl_int err;
        scratch = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
        if (err != CL_SUCCESS)
            return err;
        plan_layout(m, query, key, value, &fp, scratch, &L);
    }

    /* What the float pipeline reads and writes: the caller's tensors, or for an fp16 layer the
     * float copies staged in the scratch (converted first; the output converted back last). */
    const clattn_tensor *xq = query, *xk = key, *xv = value, *out = output;
    clattn_tensor in_proj = m->in_proj, in_bias = m->in_bias, wq = m->wq, wk = m->wk, wv = m->wv,
                  wo = m->wo, bq = m->bq, bk = m->bk, bv = m->bv, bo = m->bo;
    const clattn_tensor *conv_src[9], *conv_dst[9];
    int nconv = 0;
    if (L.staged) {
        xq = &L.x32;
        xk = L.self_attention ? &L.x32 : &L.k32;
        xv = L.self_attention ? &L.x32 : &L.v32;
        out = &L.out32;
        conv_src[nconv] = query, conv_dst[nconv++] = &L.x32;
        if (!L.self_attention) {
            conv_src[nconv] = key, conv_dst[nconv++] = &L.k32;
            conv_src[nconv] = value, conv_dst[nconv++] = &L.v32;
        }
        if (m->packed) {
            in_proj = L.win32;
            conv_src[nconv] = &m->in_proj, conv_dst[nconv++] = &L.win32;
        } else {
            conv_src[nconv] = &m->wq, conv_dst[nconv++] = &L.wq32;
            conv_src[nconv] = &m->wk, conv_dst[nconv++] = &L.wk32;
            conv_src[nconv] = &m->wv, conv_dst[nconv++] = &L.wv32;
        }
        wq = m->packed ? rows_of(&in_proj, 0, m->E) : L.wq32;
        wk = m->packed ? rows_of(&in_proj, m->E, m->KV) : L.wk32;
        wv = m->packed ? rows_of(&in_proj, m->E + m->KV, m->KV) : L.wv32;
        wo = L.wo32;
        conv_src[nconv] = &m->wo, conv_dst[nconv++] = &L.wo32;
        if (m->bias) {
            in_bias = L.bin32;
            bq = span_of(&in_bias, 0, m->E);
            bk = span_of(&in_bias, m->E, m->KV);
            bv = span_of(&in_bias, m->E + m->KV, m->KV);
            bo = L.bo32;
            conv_src[nconv] = &m->in_bias, conv_dst[nconv++] = &L.bin32;
            conv_src[nconv] = &m->bo, conv_dst[nconv++] = &L.bo32;
        }
    }
    const clattn_tensor *pin_bias = m->bias ? &in_bias : NULL, *pbq = m->bias ? &bq : NULL,
                        *pbk = m->bias ? &bk : NULL, *pbv = m->bias ? &bv : NULL,
                        *pbo = m->bias ? &bo : NULL;

    /* Validate every step (and build its kernels) before enqueuing the first. */
    clattn_sdpa_params sp = clattn_sdpa_params_default();
    sp.mask = fp.mask;
    sp.path = fp.path;
    sp.probs = fp.head_weights ? fp.head_weights : (fp.weights ? &L.probs : NULL);
    clattn_sdpa_call call = {0};
    bool have_call = false;
    if (L.staged)
        st = clattn__convert_prepare(ctx);
    if (st == CL_SUCCESS && L.self_attention) {
        st = clattn__linear_check(ctx, xq, &in_proj, pin_bias, &L.Yqkv);
    } else if (st == CL_SUCCESS && (st = clattn__linear_check(ctx, xq, &wq, pbq, &L.Yq)) == CL_SUCCESS &&
               (st = clattn__linear_check(ctx, xk, &wk, pbk, &L.Yk)) == CL_SUCCESS) {
        st = clattn__linear_check(ctx, xv, &wv, pbv, &L.Yv);
    }
    if (st == CL_SUCCESS && (st = clattn__sdpa_prepare(ctx, &L.Qh, &L.Kh, &L.Vh, &L.Oh, &sp, &call)) == CL_SUCCESS)
        have_call = true;
    if (st == CL_SUCCESS)
        st = clattn__linear_check(ctx, &L.Xo, &wo, pbo, out);
    if (st == CL_SUCCESS && fp.weights)
        st = clattn__program_prepare(ctx, "head_mean", "");

    clattn_chain chain = clattn__chain_start(num_wait, wait_list);
    for (int i = 0; i < nconv; i++)
        CLATTN_STEP(st, chain, clattn__convert_enqueue(ctx, queue, conv_src[i], conv_dst[i],
                                                       chain.nw, chain.wl, &chain.next));
    if (L.self_attention) {
        CLATTN_STEP(st, chain, clattn__linear_enqueue(ctx, queue, xq, &in_proj, pin_bias, &L.Yqkv,
                                                      chain.nw, chain.wl, &chain.next));
    } else {
        /* The three projections are independent; each waits for what came before (the
         * caller's list, or the conversions) and the attention waits for all three. */
        cl_event proj[3] = {NULL, NULL, NULL};
        if (st == CL_SUCCESS)
            st = clattn__linear_enqueue(ctx, queue, xq, &wq, pbq, &L.Yq, chain.nw, chain.wl, &proj[0]);
        if (st == CL_SUCCESS)
            st = clattn__linear_enqueue(ctx, queue, xk, &wk, pbk, &L.Yk, chain.nw, chain.wl, &proj[1]);
        if (st == CL_SUCCESS)
            st = clattn__linear_enqueue(ctx, queue, xv, &wv, pbv, &L.Yv, chain.nw, chain.wl, &proj[2]);
        if (st == CL_SUCCESS)
            CLATTN_STEP(st, chain, clEnqueueMarkerWithWaitList(queue, 3, proj, &chain.next));
        for (int i = 0; i < 3; i++)
            if (proj[i])
                clReleaseEvent(proj[i]);
    }
    if (have_call)
        CLATTN_STEP(st, chain, clattn__sdpa_enqueue(ctx, queue, &call, chain.nw, chain.wl,
                                                    &chain.next));
    CLATTN_STEP(st, chain, clattn__linear_enqueue(ctx, queue, &L.Xo, &wo, pbo, out, chain.nw,
                                                  chain.wl, &chain.next));
    if (L.staged)
        CLATTN_STEP(st, chain, clattn__convert_enqueue(ctx, queue, &L.out32, output, chain.nw,
                                                       chain.wl, &chain.next));
    if (fp.weights)
        CLATTN_STEP(st, chain, head_mean_enqueue(ctx, queue, sp.probs, fp.weights, chain.nw,
                                                 chain.wl, &chain.next));
    clattn__chain_end(&chain, st == CL_SUCCESS ? event_out : NULL);
    if (have_call)
        clattn__sdpa_release(&call);
    if (scratch)
        clReleaseMemObject(scratch);
    return st;
}
