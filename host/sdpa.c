/* Scaled dot-product attention: picks a path and runs it. The unfused path is the composite
 * scores -> mask -> softmax -> weighted sum, with the score matrix in a workspace (or in the
 * caller's probabilities view, when it asks for them). */
#include "steps.h"
#include "tensor.h"

#include <string.h>

clattn_sdpa_params clattn_sdpa_params_default(void)
{
    clattn_sdpa_params p;
    memset(&p, 0, sizeof p);
    p.scale = CLATTN_SCALE_DEFAULT;
    p.mask = clattn_mask_params_default();
    p.path = CLATTN_PATH_AUTO;
    return p;
}

/* Checks the params and how Q, K, V, O (and probs, lse, mask) agree. */
static clattn_status check_args(clattn_context *ctx, const clattn_tensor *Q,
                                const clattn_tensor *K, const clattn_tensor *V,
                                const clattn_tensor *O, const clattn_sdpa_params *p)
{
    if (!CLATTN_RESERVED_ZERO(p))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (p->path != CLATTN_PATH_AUTO && p->path != CLATTN_PATH_UNFUSED &&
        p->path != CLATTN_PATH_FUSED)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_status st;
    if ((st = clattn__view_check_f16(ctx, Q, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check_f16(ctx, K, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check_f16(ctx, V, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check_f16(ctx, O, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS ||
        (p->probs && (st = clattn__view_check(ctx, p->probs, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS) ||
        (p->lse && (st = clattn__view_check(ctx, p->lse, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS))
        return st;
    const size_t B = Q->dims[0], Hq = Q->dims[1], Lq = Q->dims[2], Lk = K->dims[2];
    const size_t Hkv = K->dims[1];
    if (K->dims[0] != B || K->dims[3] != Q->dims[3] || V->dims[0] != B || V->dims[1] != Hkv ||
        V->dims[2] != Lk || O->dims[0] != B || O->dims[1] != Hq || O->dims[2] != Lq ||
        O->dims[3] != V->dims[3])
        return CLATTN_ERROR_INVALID_SHAPE;
    if (p->probs && (p->probs->dims[0] != B || p->probs->dims[1] != Hq ||
                     p->probs->dims[2] != Lq || p->probs->dims[3] != Lk))
        return CLATTN_ERROR_INVALID_SHAPE;
    if (p->lse && (p->lse->dims[0] != B || p->lse->dims[1] != Hq || p->lse->dims[2] != Lq ||
                   p->lse->dims[3] != 1))
        return CLATTN_ERROR_INVALID_SHAPE;
    if (Hkv == 0 ? Hq != 0 : Hq % Hkv != 0)
        return CLATTN_ERROR_HEAD_MISMATCH;
    /* fp16 storage: Q, K, V and O together, on the fused path only (its kernel converts on load
     * and store; the unfused steps are float products). */
    const bool f16 = Q->dtype == CLATTN_F16;
    if (K->dtype != Q->dtype || V->dtype != Q->dtype || O->dtype != Q->dtype ||
        (f16 && (p->probs || p->path == CLATTN_PATH_UNFUSED)))
        return CLATTN_ERROR_UNSUPPORTED_DTYPE;
    if (Q->dims[3] == 0 && B * Hq * Lq * Lk > 0)
        return CLATTN_ERROR_INVALID_SHAPE;
    const size_t sdims[4] = {B, Hq, Lq, Lk};
    return clattn__mask_validate(ctx, sdims, &p->mask);
}

/* Bytes of score matrix the unfused path needs, and whether it can have them. */
static clattn_status unfused_workspace(const clattn_context *ctx, const clattn_tensor *Q,
                                       const clattn_tensor *K, const clattn_sdpa_params *p,
                                       size_t *ws_bytes)
{
    *ws_bytes = 0;
    if (p->probs)
        return CL_SUCCESS;
    size_t n = sizeof(float);
    const size_t sdims[4] = {Q->dims[0], Q->dims[1], Q->dims[2], K->dims[2]};
    for (int d = 0; d < 4; d++)
        if (!clattn__mul(n, sdims[d], &n))
            return CLATTN_ERROR_SIZE_OVERFLOW;
    *ws_bytes = n;
    if (p->workspace) {
        size_t end;
        if (p->workspace_offset % sizeof(float) != 0)
            return CLATTN_ERROR_INVALID_ARGUMENT;
        if (!clattn__add(p->workspace_offset, n, &end))
            return CLATTN_ERROR_SIZE_OVERFLOW;
        clattn_status st = clattn__buffer_check(ctx, p->workspace, end);
        if (st != CL_SUCCESS)
            return st == CLATTN_ERROR_VIEW_OUT_OF_BOUNDS ? CLATTN_ERROR_WORKSPACE_TOO_SMALL : st;
    } else if (n > ctx->info.max_mem_alloc_size) {
        return CLATTN_ERROR_ALLOCATION_TOO_LARGE;
    }
    return CL_SUCCESS;
}

/* Picks the path: FUSED must be able to run, AUTO takes it when it can. */
static clattn_status choose_path(clattn_context *ctx, const clattn_tensor *Q,
                                 const clattn_tensor *K, const clattn_tensor *V,
                                 const clattn_tensor *O, const clattn_sdpa_params *p, bool *fused)
{
    *fused = false;
    if (p->path == CLATTN_PATH_UNFUSED)
        return CL_SUCCESS;
    clattn_status st = clattn__flash_check(ctx, Q, K, V, O, p);
    if (p->path == CLATTN_PATH_FUSED)
        return (*fused = st == CL_SUCCESS), st;
    if (Q->dtype == CLATTN_F16) /* AUTO, but only the fused path stores fp16 */
        return (*fused = st == CL_SUCCESS), st == CL_SUCCESS ? st : CLATTN_ERROR_UNSUPPORTED_DTYPE;
    *fused = st == CL_SUCCESS; /* AUTO: otherwise the unfused path */
    return CL_SUCCESS;
}

clattn_status clattn__sdpa_workspace(clattn_context *ctx, const clattn_tensor *Q,
                                     const clattn_tensor *K, const clattn_tensor *V,
                                     const clattn_tensor *O, const clattn_sdpa_params *params,
                                     size_t *bytes)
{
    clattn_sdpa_params p = *params;
    p.workspace = NULL; /* the question is how much, not whether the given one fits */
    bool fused = false;
    size_t n = 0;
    clattn_status st = choose_path(ctx, Q, K, V, O, &p, &fused);
    if (st == CL_SUCCESS && !fused) {
        st = unfused_workspace(ctx, Q, K, &p, &n);
        if (st == CLATTN_ERROR_ALLOCATION_TOO_LARGE)
            st = CL_SUCCESS; /* a caller's own buffer may still be that large */
    }
    if (st == CL_SUCCESS)
        *bytes = n;
    return st;
}

clattn_status clattn_sdpa_workspace_size(clattn_context *ctx, const clattn_tensor *Q,
                                         const clattn_tensor *K, const clattn_tensor *V,
                                         const clattn_tensor *O, const clattn_sdpa_params *params,
                                         size_t *bytes)
{
    if (!ctx || !bytes)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    const clattn_sdpa_params p = params ? *params : clattn_sdpa_params_default();
    clattn_status st = check_args(ctx, Q, K, V, O, &p);
    return st != CL_SUCCESS ? st : clattn__sdpa_workspace(ctx, Q, K, V, O, &p, bytes);
}

clattn_status clattn__sdpa_prepare(clattn_context *ctx, const clattn_tensor *Q,
                                   const clattn_tensor *K, const clattn_tensor *V,
                                   const clattn_tensor *O, const clattn_sdpa_params *params,
                                   clattn_sdpa_call *call)
{
    memset(call, 0, sizeof *call);
    call->p = params ? *params : clattn_sdpa_params_default();
    const clattn_sdpa_params *p = &call->p;
    clattn_status st = check_args(ctx, Q, K, V, O, p);
    if (st != CL_SUCCESS)
        return st;
    call->Q = *Q;
    call->K = *K;
    call->V = *V;
    call->O = *O;
    const size_t B = Q->dims[0], Hq = Q->dims[1], Lq = Q->dims[2], Lk = K->dims[2];
    call->no_op = B * Hq * Lq == 0 || (clattn__view_empty(O) && !p->probs && !p->lse);
    if (call->no_op)
        return CL_SUCCESS;
    if ((st = choose_path(ctx, Q, K, V, O, p, &call->fused)) != CL_SUCCESS || call->fused)
        return st;

    size_t ws_bytes = 0;
    if ((st = unfused_workspace(ctx, Q, K, p, &ws_bytes)) != CL_SUCCESS)
        return st;
    /* Where the scores live: the caller's probabilities view, its workspace, or our own buffer
     * (released after enqueuing; OpenCL keeps it alive until the steps that use it are done). */
    clattn_tensor S = {NULL, 0, CLATTN_F32, {B, Hq, Lq, Lk}, {Hq * Lq * Lk, Lq * Lk, Lk, 1}};
    if (p->probs) {
        S = *p->probs;
    } else if (p->workspace) {
        S.buffer = p->workspace;
        S.offset = p->workspace_offset / sizeof(float);
    } else if (ws_bytes > 0) {
        cl_int err;
        call->own = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, ws_bytes, NULL, &err);
        if (err != CL_SUCCESS)
            return err;
        S.buffer = call->own;
    }
    call->S = S;

    /* Every step validates (and builds its kernels) before the first one is enqueued. */
    if ((st = clattn__scores_check(ctx, Q, K, &S)) == CL_SUCCESS &&
        (st = clattn__mask_check(ctx, S.dims, &p->mask)) == CL_SUCCESS &&
        (st = clattn__softmax_check(ctx, &S, &S, p->lse)) == CL_SUCCESS)
        st = clattn__weighted_sum_check(ctx, &S, V, O);
    if (st != CL_SUCCESS)
        clattn__sdpa_release(call);
    return st;
}

void clattn__sdpa_release(clattn_sdpa_call *call)
{
    if (call->own)
        clReleaseMemObject(call->own);
    call->own = NULL;
}

clattn_status clattn__sdpa_enqueue(clattn_context *ctx, cl_command_queue queue,
                                   const clattn_sdpa_call *call, cl_uint num_wait,
                                   const cl_event *wait_list, cl_event *event_out)
{
    if (call->no_op)
        return clattn__no_op(queue, num_wait, wait_list, event_out);
    const clattn_sdpa_params *p = &call->p;
    if (call->fused)
        return clattn__flash_enqueue(ctx, queue, &call->Q, &call->K, &call->V, &call->O, p, NULL,
                                     num_wait, wait_list, event_out);
    const clattn_tensor *S = &call->S;
    clattn_status st = CL_SUCCESS;
    clattn_chain chain = clattn__chain_start(num_wait, wait_list);
    CLATTN_STEP(st, chain, clattn__scores_enqueue(ctx, queue, &call->Q, &call->K, S, p->scale,
                                                  chain.nw, chain.wl, &chain.next));
    CLATTN_STEP(st, chain, clattn__mask_enqueue(ctx, queue, S, &p->mask, chain.nw, chain.wl,
                                                &chain.next));
    CLATTN_STEP(st, chain, clattn__softmax_enqueue(ctx, queue, S, S, p->lse, chain.nw, chain.wl,
                                                   &chain.next));
    CLATTN_STEP(st, chain, clattn__weighted_sum_enqueue(ctx, queue, S, &call->V, &call->O,
                                                        chain.nw, chain.wl, &chain.next));
    clattn__chain_end(&chain, st == CL_SUCCESS ? event_out : NULL);
    return st;
}

clattn_status clattn_sdpa(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *Q,
                          const clattn_tensor *K, const clattn_tensor *V, const clattn_tensor *O,
                          const clattn_sdpa_params *params, cl_uint num_wait,
                          const cl_event *wait_list, cl_event *event_out)
{
    clattn_status st = clattn__check_call(ctx, queue, num_wait, wait_list);
    clattn_sdpa_call call;
    if (st != CL_SUCCESS || (st = clattn__sdpa_prepare(ctx, Q, K, V, O, params, &call)) != CL_SUCCESS)
        return st;
    st = clattn__sdpa_enqueue(ctx, queue, &call, num_wait, wait_list, event_out);
    clattn__sdpa_release(&call);
    return st;
}
