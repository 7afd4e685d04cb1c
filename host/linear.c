/* Projection step: Y = X·Wᵀ (+ bias), W a view or prepared weights. */
#include "gemm_cpu.h"
#include "steps.h"
#include "tensor.h"
#include "weights.h"

clattn_status clattn__linear_plan(clattn_plan *p, const clattn_tensor *X, const clattn_tensor *W,
                                  const clattn_weights *Wp, const clattn_tensor *bias,
                                  const clattn_tensor *Y)
{
    clattn_context *ctx = p->ctx;
    clattn_status st;
    if (!W && (!Wp || Wp->ctx != ctx))
        return Wp ? CLATTN_ERROR_CONTEXT_MISMATCH : CLATTN_ERROR_INVALID_ARGUMENT;
    if ((st = clattn__view_check(ctx, X, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (W && (st = clattn__view_check(ctx, W, CLATTN_VIEW_INPUT)) != CL_SUCCESS) ||
        (bias && (st = clattn__view_check(ctx, bias, CLATTN_VIEW_INPUT)) != CL_SUCCESS) ||
        (st = clattn__view_check(ctx, Y, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS)
        return st;
    const size_t M = X->dims[2], K = X->dims[3], N = W ? W->dims[2] : Wp->N;
    if ((W ? W->dims[0] != 1 || W->dims[1] != 1 || W->dims[3] != K : Wp->K != K) ||
        Y->dims[0] != X->dims[0] || Y->dims[1] != X->dims[1] || Y->dims[2] != M || Y->dims[3] != N)
        return CLATTN_ERROR_INVALID_SHAPE;
    if (bias && (bias->dims[0] != 1 || bias->dims[1] != 1 || bias->dims[2] != 1 ||
                 bias->dims[3] != N))
        return CLATTN_ERROR_INVALID_SHAPE;
    if (clattn__view_empty(Y))
        return CL_SUCCESS;
    if (K == 0)
        return CLATTN_ERROR_INVALID_SHAPE;
    if (!clattn__gemm_layout_ok(M, K, X->strides[2], X->strides[3]) ||
        (W && !clattn__gemm_layout_ok(N, K, W->strides[2], W->strides[3])) ||
        !clattn__gemm_layout_ok(M, N, Y->strides[2], Y->strides[3]))
        return CLATTN_ERROR_UNSUPPORTED_LAYOUT;
    if (!clattn__gemm_view_ok(X) || (W && !clattn__gemm_view_ok(W)) || !clattn__gemm_view_ok(Y))
        return CLATTN_ERROR_UNSUPPORTED_LAYOUT; /* past CLBlast's 32-bit element indices */

    clattn_operand a = {X->buffer, X->offset, {clattn__stride(X, 0), clattn__stride(X, 1)},
                        1, M, K, X->strides[2], X->strides[3]};
    clattn_operand c = {Y->buffer, Y->offset, {clattn__stride(Y, 0), clattn__stride(Y, 1)},
                        1, M, N, Y->strides[2], Y->strides[3]};
    size_t d0 = Y->dims[0], d1 = Y->dims[1], xstep, ystep;
    /* All tokens of all batch items as the rows of one product, when the views allow it. */
    if (clattn__view_rows_flat(X, &xstep) && clattn__view_rows_flat(Y, &ystep) &&
        clattn__gemm_layout_ok(d0 * d1 * M, K, xstep, a.cs) &&
        clattn__gemm_layout_ok(d0 * d1 * M, N, ystep, c.cs)) {
        a.rows = c.rows = d0 * d1 * M;
        a.rs = xstep;
        c.rs = ystep;
        d0 = d1 = 1;
    }
    if (Wp)
        return clattn__product_weights_plan(p, d0, d1, &a, Wp, &c, bias);
    /* Wᵀ: K x N, element (k, n) = W[n, k]. */
    const clattn_operand b = {W->buffer, W->offset, {0, 0}, 1, K, N, W->strides[3], W->strides[2]};
    return clattn__product_plan(p, d0, d1, 1.0f, &a, &b, &c, bias);
}

clattn_status clattn__linear_heads_plan(clattn_plan *p, const clattn_tensor *X,
                                        const clattn_weights *w, const clattn_tensor *bias,
                                        const clattn_tensor *Yh)
{
    /* X [B, 1, T, K] (a checked view of the layer's); Yh [B, heads, T, D] of the layer's scratch. */
    if (!w->panels || X->dims[1] != 1 || X->dims[3] != w->K || Yh->dims[0] != X->dims[0] ||
        Yh->dims[2] != X->dims[2] || Yh->dims[1] * Yh->dims[3] != w->N)
        return CLATTN_ERROR_INTERNAL;
    if (clattn__view_empty(Yh))
        return CL_SUCCESS;
    const clattn_operand a = {X->buffer, X->offset, {clattn__stride(X, 0), 0}, 1, X->dims[2],
                              w->K, X->strides[2], X->strides[3]};
    const clattn_operand c = {Yh->buffer, Yh->offset, {clattn__stride(Yh, 0), 0}, 1, Yh->dims[2],
                              w->N, Yh->strides[2], Yh->strides[3]};
    const clattn_packed B = {w->buffer, w->K, w->N, 0, 0, 1};
    return clattn__gemm_cpu_product_plan(p, X->dims[0], 1, 1.0f, &a, &B, &c, bias, Yh->dims[3],
                                         Yh->strides[1]);
}

clattn_status clattn_linear(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *X,
                            const clattn_tensor *W, const clattn_tensor *bias,
                            const clattn_tensor *Y, cl_uint num_wait, const cl_event *wait_list,
                            cl_event *event_out)
{
    CLATTN_RETURN_PLANNED(ctx, queue, num_wait, wait_list, event_out,
                          W ? clattn__linear_plan(&plan_, X, W, NULL, bias, Y)
                            : CLATTN_ERROR_INVALID_ARGUMENT);
}

clattn_status clattn_linear_prepared(clattn_context *ctx, cl_command_queue queue,
                                     const clattn_tensor *X, const clattn_weights *W,
                                     const clattn_tensor *bias, const clattn_tensor *Y,
                                     cl_uint num_wait, const cl_event *wait_list,
                                     cl_event *event_out)
{
    CLATTN_RETURN_PLANNED(ctx, queue, num_wait, wait_list, event_out,
                          W ? clattn__linear_plan(&plan_, X, NULL, W, bias, Y)
                            : CLATTN_ERROR_INVALID_ARGUMENT);
}

clattn_status clattn_linear_prepare(clattn_context *ctx, const clattn_tensor *X,
                                    const clattn_tensor *W, const clattn_tensor *bias,
                                    const clattn_tensor *Y)
{
    CLATTN_RETURN_PREPARED(ctx, W ? clattn__linear_plan(&plan_, X, W, NULL, bias, Y)
                                  : CLATTN_ERROR_INVALID_ARGUMENT);
}
