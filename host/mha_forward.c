/* The multi-head attention layer's forward: the Q/K/V projections on the prepared weights
 * straight into the packed [B, T, H·D] layout, sdpa on head views of it, the output ("value-up")
 * projection, and optionally the attention weights averaged over heads. */
#include "mha.h"

#include "steps.h"
#include "tensor.h"

#include <string.h>

clattn_mha_forward_params clattn_mha_forward_params_default(void)
{
    clattn_mha_forward_params p;
    memset(&p, 0, sizeof p);
    p.mask = clattn_mask_params_default();
    p.path = CLATTN_PATH_AUTO;
    return p;
}

/* Where one forward's intermediates live in its scratch, as views. */
typedef struct mha_layout {
    size_t elems;                 /* end of the layout in floats (from the workspace offset) */
    bool head_major;              /* Q, K, V written [B, heads, T, D] (else [B, T, heads·D]) */
    clattn_tensor Yq, Yk, Yv, Xo; /* projection outputs / out-projection input, [B, 1, T, n] */
    clattn_tensor Qh, Kh, Vh, Oh; /* head views of the same memory, [B, heads, T, D] */
    clattn_tensor probs;          /* per-head weights when only the average is wanted */
    /* An fp16 layer: float copies of its inputs (one for all three in self attention) and the
     * float output. */
    bool staged, one_input;
    clattn_tensor x32, k32, v32, out32;
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

/* A [B, 1, T, n] row-major view at `off` (elements). */
static clattn_tensor rows_view(cl_mem buf, size_t off, size_t B, size_t T, size_t n)
{
    clattn_tensor t = {buf, off, CLATTN_F32, {B, 1, T, n}, {T * n, T * n, n, 1}};
    return t;
}

/* A contiguous [B, heads, T, D] view. */
static clattn_tensor bhtd_view(cl_mem buf, size_t off, size_t B, size_t heads, size_t T, size_t D)
{
    clattn_tensor t = clattn_tensor_bhtd(buf, off, B, heads, T, D);
    return t;
}

/* The same rows as [B, heads, T, D]: head h starts at column h·D. */
static clattn_tensor heads_view(cl_mem buf, size_t off, size_t B, size_t T, size_t heads, size_t D)
{
    clattn_tensor t = {buf, off, CLATTN_F32, {B, heads, T, D}, {T * heads * D, D, heads * D, 1}};
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
    const size_t E = m->E, KV = m->KV, D = m->D;
    memset(L, 0, sizeof *L);
    L->elems = base;
    size_t oq, ok, ov, oa, op;
    if (!take(&L->elems, B, Lq, E, &oq) || !take(&L->elems, B, Lk, KV, &ok) ||
        !take(&L->elems, B, Lk, KV, &ov) || !take(&L->elems, B, Lq, E, &oa))
        return CLATTN_ERROR_SIZE_OVERFLOW;
    /* clattn's own engine writes the projections head-major, so that the attention reads each
     * head's rows contiguous (a quarter faster than rows E apart, on PoCL); CLBlast writes
     * rows, which the attention reads through head views. */
    L->head_major = m->w[MHA_Q].panels;
    L->Yq = rows_view(buf, oq, B, Lq, E);
    L->Yk = rows_view(buf, ok, B, Lk, KV);
    L->Yv = rows_view(buf, ov, B, Lk, KV);
    if (L->head_major) {
        L->Qh = bhtd_view(buf, oq, B, m->H, Lq, D);
        L->Kh = bhtd_view(buf, ok, B, m->Hkv, Lk, D);
        L->Vh = bhtd_view(buf, ov, B, m->Hkv, Lk, D);
    } else {
        L->Qh = heads_view(buf, oq, B, Lq, m->H, D);
        L->Kh = heads_view(buf, ok, B, Lk, m->Hkv, D);
        L->Vh = heads_view(buf, ov, B, Lk, m->Hkv, D);
    }
    L->Xo = rows_view(buf, oa, B, Lq, E);
    L->Oh = heads_view(buf, oa, B, Lq, m->H, D);
    if (fp->weights && !fp->head_weights) {
        if (!take(&L->elems, B * m->H, Lq, Lk, &op))
            return CLATTN_ERROR_SIZE_OVERFLOW;
        L->probs = (clattn_tensor){buf, op, CLATTN_F32, {B, m->H, Lq, Lk},
                                   {m->H * Lq * Lk, Lq * Lk, Lk, 1}};
    }
    if (m->dtype == CLATTN_F16) {
        L->staged = true;
        L->one_input = same_view(query, key) && same_view(query, value);
        size_t o1, o2, o3, o4;
        if (!take(&L->elems, B, Lq, E, &o1) || !take(&L->elems, B, Lq, E, &o2))
            return CLATTN_ERROR_SIZE_OVERFLOW;
        L->x32 = rows_view(buf, o1, B, Lq, E);
        L->out32 = rows_view(buf, o2, B, Lq, E);
        if (!L->one_input) {
            if (!take(&L->elems, B, Lk, m->kdim, &o3) || !take(&L->elems, B, Lk, m->vdim, &o4))
                return CLATTN_ERROR_SIZE_OVERFLOW;
            L->k32 = rows_view(buf, o3, B, Lk, m->kdim);
            L->v32 = rows_view(buf, o4, B, Lk, m->vdim);
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
    sp.logits = fp->logits;
    sp.probs = fp->head_weights ? fp->head_weights : (fp->weights ? &L->probs : NULL);
    sp.cu_seqlens_q = fp->cu_seqlens_q;
    sp.cu_seqlens_k = fp->cu_seqlens_k;
    sp.num_seqs = fp->num_seqs;
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

/* For an fp16 layer, appends the conversions of its inputs into their float copies; the
 * output's conversion back comes last (in mha_plan). */
static clattn_status stage_inputs(clattn_plan *p, const mha_layout *L, const clattn_tensor *query,
                                  const clattn_tensor *key, const clattn_tensor *value)
{
    clattn_status st = clattn__convert_plan(p, query, &L->x32);
    if (st == CL_SUCCESS && !L->one_input && (st = clattn__convert_plan(p, key, &L->k32)) == CL_SUCCESS)
        st = clattn__convert_plan(p, value, &L->v32);
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
        const clattn_logit_params *lp = &fp->logits;
        const clattn_tensor lens = clattn__lengths_view(&fp->mask, query->dims[0]);
        const clattn_tensor slopes = clattn__vector_view(lp->alibi_slopes,
                                                         lp->alibi_slopes_offset, m->H);
        const clattn_tensor sinks = clattn__vector_view(lp->sinks, lp->sinks_offset, m->H);
        const clattn_tensor *views[] = {query, key, value, output, fp->weights, fp->head_weights,
                                        fp->mask.additive, &lens, &slopes, &sinks};
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

    /* What the float pipeline reads and writes: the caller's tensors, or an fp16 layer's
     * float copies of them. */
    const clattn_tensor *xq = query, *xk = key, *xv = value, *out = output;
    if (L.staged) {
        if ((st = stage_inputs(p, &L, query, key, value)) != CL_SUCCESS)
            return st;
        xq = &L.x32;
        xk = L.one_input ? &L.x32 : &L.k32;
        xv = L.one_input ? &L.x32 : &L.v32;
        out = &L.out32;
    }
    const clattn_tensor *const x[3] = {xq, xk, xv}, *const y[3] = {&L.Yq, &L.Yk, &L.Yv};
    const clattn_tensor *const yh[3] = {&L.Qh, &L.Kh, &L.Vh};
    for (int i = MHA_Q; i <= MHA_V && st == CL_SUCCESS; i++) {
        const clattn_tensor *b = m->bias ? &m->b[i] : NULL;
        st = L.head_major ? clattn__linear_heads_plan(p, x[i], &m->w[i], b, yh[i])
                          : clattn__linear_plan(p, x[i], NULL, &m->w[i], b, y[i]);
    }
    if (st == CL_SUCCESS)
        st = clattn__sdpa_plan(p, &L.Qh, &L.Kh, &L.Vh, &L.Oh, &sp);
    if (st == CL_SUCCESS)
        st = clattn__linear_plan(p, &L.Xo, NULL, &m->w[MHA_O], m->bias ? &m->b[MHA_O] : NULL, out);
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
    if (fp.workspace)
        CLATTN_RETURN_PLANNED(m->ctx, queue, num_wait, wait_list, event_out,
                              mha_plan(&plan_, m, query, key, value, output, &fp));
    /* Without a workspace the intermediates live in the layer's kept scratch: one such forward
     * at a time plans and enqueues (each waits on the device for the one before, when it
     * reuses its buffers). */
    pthread_mutex_lock(&m->lock);
    clattn_plan plan;
    clattn_status st = clattn__plan_begin(&plan, m->ctx, queue, num_wait, wait_list);
    if (st == CL_SUCCESS) {
        plan.pool = &m->scratch;
        st = mha_plan(&plan, m, query, key, value, output, &fp);
    }
    st = clattn__plan_run(&plan, st, queue, num_wait, wait_list, event_out);
    pthread_mutex_unlock(&m->lock);
    return st;
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
