/* Scores step: S = scale · Q·Kᵀ per (batch, query head), batched GEMM with the GQA head mapping. */
#include "steps.h"
#include "tensor.h"

#include <math.h>

clattn_status clattn__scores_plan(clattn_plan *p, const clattn_tensor *Q, const clattn_tensor *K,
                                  const clattn_tensor *S, float scale)
{
    clattn_context *ctx = p->ctx;
    clattn_status st;
    if ((st = clattn__view_check(ctx, Q, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check(ctx, K, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check(ctx, S, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS)
        return st;
    const size_t B = Q->dims[0], Hq = Q->dims[1], Lq = Q->dims[2], D = Q->dims[3];
    const size_t Hkv = K->dims[1], Lk = K->dims[2];
    if (K->dims[0] != B || K->dims[3] != D || S->dims[0] != B || S->dims[1] != Hq ||
        S->dims[2] != Lq || S->dims[3] != Lk)
        return CLATTN_ERROR_INVALID_SHAPE;
    if (Hkv == 0 ? Hq != 0 : Hq % Hkv != 0)
        return CLATTN_ERROR_HEAD_MISMATCH;
    if (clattn__view_empty(S))
        return CL_SUCCESS;
    if (D == 0)
        return CLATTN_ERROR_INVALID_SHAPE;
    if (!clattn__gemm_layout_ok(Lq, D, Q->strides[2], Q->strides[3]) ||
        !clattn__gemm_layout_ok(Lk, D, K->strides[2], K->strides[3]) ||
        !clattn__gemm_layout_ok(Lq, Lk, S->strides[2], S->strides[3]))
        return CLATTN_ERROR_UNSUPPORTED_LAYOUT;
    if (!clattn__gemm_view_ok(Q) || !clattn__gemm_view_ok(K) || !clattn__gemm_view_ok(S))
        return CLATTN_ERROR_UNSUPPORTED_LAYOUT; /* past CLBlast's 32-bit element indices */

    if (isnan(scale))
        scale = 1.0f / sqrtf((float)D);
    const clattn_operand a = {Q->buffer, Q->offset, {clattn__stride(Q, 0), clattn__stride(Q, 1)},
                              1, Lq, D, Q->strides[2], Q->strides[3]};
    /* Kᵀ: D x Lk, element (d, j) = K[j, d]. */
    const clattn_operand b = {K->buffer, K->offset, {clattn__stride(K, 0), clattn__stride(K, 1)},
                              Hq / Hkv, D, Lk, K->strides[3], K->strides[2]};
    const clattn_operand c = {S->buffer, S->offset, {clattn__stride(S, 0), clattn__stride(S, 1)},
                              1, Lq, Lk, S->strides[2], S->strides[3]};
    return clattn__product_plan(p, B, Hq, scale, &a, &b, &c, NULL);
}

clattn_status clattn_scores(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *Q,
                            const clattn_tensor *K, const clattn_tensor *S, float scale,
                            cl_uint num_wait, const cl_event *wait_list, cl_event *event_out)
{
    CLATTN_RETURN_PLANNED(ctx, queue, num_wait, wait_list, event_out,
                          clattn__scores_plan(&plan_, Q, K, S, scale));
}
