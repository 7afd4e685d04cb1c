/* The multi-head attention layer: its description checked, its weights and biases prepared
 * once in the layout the context's matrix-product engine reads, and copied again on request.
 * The forward is in mha_forward.c. */
#include "mha.h"

#include "steps.h"
#include "tensor.h"

#include <stdlib.h>
#include <string.h>

clattn_mha_params clattn_mha_params_default(void)
{
    clattn_mha_params p;
    memset(&p, 0, sizeof p);
    p.bias = 1;
    p.dtype = CLATTN_F32;
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

/* The layer's description: its dims, and the caller's weight and bias views, checked. */
static clattn_status describe(clattn_context *ctx, const clattn_mha_params *p, clattn_mha *m)
{
    if (!CLATTN_RESERVED_ZERO(p))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if ((p->dtype != CLATTN_F32 && p->dtype != CLATTN_F16) ||
        (p->weight_dtype != 0 && p->weight_dtype != CLATTN_F32 && p->weight_dtype != CLATTN_F16))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    const clattn_dtype wt = p->weight_dtype ? p->weight_dtype : p->dtype;
    const size_t E = p->embed_dim, H = p->num_heads;
    const size_t Hkv = p->num_kv_heads ? p->num_kv_heads : H;
    if (E == 0 || H == 0 || E % H != 0)
        return CLATTN_ERROR_INVALID_SHAPE;
    if (H % Hkv != 0)
        return CLATTN_ERROR_HEAD_MISMATCH;
    memset(m, 0, sizeof *m);
    m->ctx = ctx;
    m->E = E;
    m->H = H;
    m->Hkv = Hkv;
    m->D = E / H;
    m->KV = Hkv * m->D;
    m->kdim = p->kdim ? p->kdim : E;
    m->vdim = p->vdim ? p->vdim : E;
    m->dtype = p->dtype;
    m->bias = p->bias != 0;
    const size_t KV = m->KV, W3 = E + 2 * KV;

    clattn_status st;
    if (p->in_proj_weight) {
        if (p->q_proj_weight || p->k_proj_weight || p->v_proj_weight)
            return CLATTN_ERROR_INVALID_ARGUMENT; /* one form or the other */
        if (m->kdim != E || m->vdim != E)
            return CLATTN_ERROR_INVALID_SHAPE; /* as in PyTorch: packed needs kdim = vdim = E */
        if ((st = check_matrix(ctx, p->in_proj_weight, W3, E, wt)) != CL_SUCCESS)
            return st;
        m->src_w[MHA_Q] = rows_of(p->in_proj_weight, 0, E);
        m->src_w[MHA_K] = rows_of(p->in_proj_weight, E, KV);
        m->src_w[MHA_V] = rows_of(p->in_proj_weight, E + KV, KV);
    } else {
        if ((st = check_matrix(ctx, p->q_proj_weight, E, E, wt)) != CL_SUCCESS ||
            (st = check_matrix(ctx, p->k_proj_weight, KV, m->kdim, wt)) != CL_SUCCESS ||
            (st = check_matrix(ctx, p->v_proj_weight, KV, m->vdim, wt)) != CL_SUCCESS)
            return st;
        m->src_w[MHA_Q] = *p->q_proj_weight;
        m->src_w[MHA_K] = *p->k_proj_weight;
        m->src_w[MHA_V] = *p->v_proj_weight;
    }
    if ((st = check_matrix(ctx, p->out_proj_weight, E, E, wt)) != CL_SUCCESS)
        return st;
    m->src_w[MHA_O] = *p->out_proj_weight;

    const bool separate = p->q_proj_bias || p->k_proj_bias || p->v_proj_bias;
    if (!m->bias)
        return (p->in_proj_bias || separate || p->out_proj_bias) ? CLATTN_ERROR_INVALID_ARGUMENT
                                                                  : CL_SUCCESS;
    if (separate == (p->in_proj_bias != NULL))
        return CLATTN_ERROR_INVALID_ARGUMENT; /* in_proj_bias, or q/k/v_proj_bias */
    if (separate) {
        if ((st = check_matrix(ctx, p->q_proj_bias, 1, E, wt)) != CL_SUCCESS ||
            (st = check_matrix(ctx, p->k_proj_bias, 1, KV, wt)) != CL_SUCCESS ||
            (st = check_matrix(ctx, p->v_proj_bias, 1, KV, wt)) != CL_SUCCESS)
            return st;
        m->src_b[MHA_Q] = *p->q_proj_bias;
        m->src_b[MHA_K] = *p->k_proj_bias;
        m->src_b[MHA_V] = *p->v_proj_bias;
    } else {
        if ((st = check_matrix(ctx, p->in_proj_bias, 1, W3, wt)) != CL_SUCCESS)
            return st;
        m->src_b[MHA_Q] = span_of(p->in_proj_bias, 0, E);
        m->src_b[MHA_K] = span_of(p->in_proj_bias, E, KV);
        m->src_b[MHA_V] = span_of(p->in_proj_bias, E + KV, KV);
    }
    if ((st = check_matrix(ctx, p->out_proj_bias, 1, E, wt)) != CL_SUCCESS)
        return st;
    m->src_b[MHA_O] = *p->out_proj_bias;
    return CL_SUCCESS;
}

/* The caller's buffers the layer keeps: one retain per source view, undone on failure. */
static void release_sources(clattn_mha *m, int n)
{
    for (int i = 0; i < n; i++) {
        const clattn_tensor *t = i < 4 ? &m->src_w[i] : &m->src_b[i - 4];
        if (t->buffer)
            clReleaseMemObject(t->buffer);
    }
}

static clattn_status retain_sources(clattn_mha *m)
{
    for (int i = 0; i < 8; i++) {
        const clattn_tensor *t = i < 4 ? &m->src_w[i] : &m->src_b[i - 4];
        cl_int err = t->buffer ? clRetainMemObject(t->buffer) : CL_SUCCESS;
        if (err != CL_SUCCESS) {
            release_sources(m, i);
            return err;
        }
    }
    return CL_SUCCESS;
}

/* The copies of every weight and bias into the layer's own memory. */
static clattn_status copy_plan(clattn_plan *p, const clattn_mha *m)
{
    clattn_status st = CL_SUCCESS;
    for (int i = 0; i < 4 && st == CL_SUCCESS; i++)
        st = clattn__weights_copy_plan(p, &m->src_w[i], &m->w[i]);
    for (int i = 0; i < 4 && st == CL_SUCCESS && m->bias; i++)
        st = clattn__convert_plan(p, &m->src_b[i], &m->b[i]);
    return st;
}

static void free_prepared(clattn_mha *m)
{
    for (int i = 0; i < 4; i++)
        clattn__weights_free(&m->w[i]);
    if (m->biases)
        clReleaseMemObject(m->biases);
    m->biases = NULL;
}

/* The layer's own memory: each projection's weights, and the biases [E | KV | KV | E]. */
static clattn_status allocate(clattn_mha *m)
{
    const size_t rows[4] = {m->E, m->KV, m->KV, m->E};
    const size_t cols[4] = {m->E, m->kdim, m->vdim, m->E};
    clattn_status st = CL_SUCCESS;
    for (int i = 0; i < 4 && st == CL_SUCCESS; i++)
        st = clattn__weights_init(m->ctx, rows[i], cols[i], &m->w[i]);
    if (st != CL_SUCCESS || !m->bias)
        return st;
    const size_t n = 2 * (m->E + m->KV);
    m->biases = clCreateBuffer(m->ctx->context, CL_MEM_READ_WRITE, n * sizeof(float), NULL, &st);
    for (size_t i = 0, off = 0; i < 4 && st == CL_SUCCESS; off += rows[i], i++)
        m->b[i] = (clattn_tensor){m->biases, off, CLATTN_F32, {1, 1, 1, rows[i]}, {n, n, n, 1}};
    return st;
}

clattn_status clattn_mha_create(clattn_context *ctx, const clattn_mha_params *params,
                                clattn_mha **out)
{
    if (!out)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    if (!ctx || !params)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_mha *m = calloc(1, sizeof *m);
    if (!m)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    clattn_status st = describe(ctx, params, m);
    if (st == CL_SUCCESS)
        st = allocate(m);
    if (st == CL_SUCCESS) {
        /* The copies run on the context's own queue; create returns once they are done. */
        clattn_plan plan;
        clattn__plan_init(&plan, ctx);
        st = clattn__plan_run_own(&plan, copy_plan(&plan, m));
    }
    if (st == CL_SUCCESS)
        st = retain_sources(m);
    if (st != CL_SUCCESS) {
        free_prepared(m);
        pthread_mutex_destroy(&m->lock);
        free(m);
        return st;
    }
    *out = m;
    return CL_SUCCESS;
}

clattn_status clattn_mha_update_weights(clattn_mha *m, cl_command_queue queue, cl_uint num_wait,
                                        const cl_event *wait_list, cl_event *event_out)
{
    if (!m)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    CLATTN_RETURN_PLANNED(m->ctx, queue, num_wait, wait_list, event_out, copy_plan(&plan_, m));
}

size_t clattn_mha_bytes(const clattn_mha *m)
{
    if (!m)
        return 0;
    size_t bytes = m->bias ? 2 * (m->E + m->KV) * sizeof(float) : 0;
    for (int i = 0; i < 4; i++)
        bytes += m->w[i].bytes;
    clattn_mha *mm = (clattn_mha *)m; /* the lock is the layer's own, not part of its value */
    pthread_mutex_lock(&mm->lock);
    bytes += clattn__pool_bytes(&mm->scratch);
    pthread_mutex_unlock(&mm->lock);
    return bytes;
}

void clattn_mha_destroy(clattn_mha **mha)
{
    if (!mha || !*mha)
        return;
    release_sources(*mha, 8);
    free_prepared(*mha);
    clattn__pool_clear(&(*mha)->scratch); /* forwards still queued keep their buffers alive */
    pthread_mutex_destroy(&(*mha)->lock);
    free(*mha);
    *mha = NULL;
}
