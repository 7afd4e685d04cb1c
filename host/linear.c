/* Projection step: Y = X·Wᵀ (+ bias), GEMM through CLBlast and a bias kernel. */
#include "gemm.h"
#include "program.h"
#include "steps.h"
#include "tensor.h"

clattn_status clattn__linear_check(clattn_context *ctx, const clattn_tensor *X,
                                   const clattn_tensor *W, const clattn_tensor *bias,
                                   const clattn_tensor *Y)
{
    clattn_status st;
    if ((st = clattn__view_check(ctx, X, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check(ctx, W, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (bias && (st = clattn__view_check(ctx, bias, CLATTN_VIEW_INPUT)) != CL_SUCCESS) ||
        (st = clattn__view_check(ctx, Y, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS)
        return st;
    const size_t M = X->dims[2], K = X->dims[3], N = W->dims[2];
    if (W->dims[0] != 1 || W->dims[1] != 1 || W->dims[3] != K || Y->dims[0] != X->dims[0] ||
        Y->dims[1] != X->dims[1] || Y->dims[2] != M || Y->dims[3] != N)
        return CLATTN_ERROR_INVALID_SHAPE;
    if (bias && (bias->dims[0] != 1 || bias->dims[1] != 1 || bias->dims[2] != 1 ||
                 bias->dims[3] != N))
        return CLATTN_ERROR_INVALID_SHAPE;
    if (clattn__view_empty(Y))
        return CL_SUCCESS;
    if (K == 0)
        return CLATTN_ERROR_INVALID_SHAPE;
    if (!clattn__gemm_layout_ok(M, K, X->strides[2], X->strides[3]) ||
        !clattn__gemm_layout_ok(N, K, W->strides[2], W->strides[3]) ||
        !clattn__gemm_layout_ok(M, N, Y->strides[2], Y->strides[3]))
        return CLATTN_ERROR_UNSUPPORTED_LAYOUT;
    if (!clattn__gemm_view_ok(X) || !clattn__gemm_view_ok(W) || !clattn__gemm_view_ok(Y))
        return CLATTN_ERROR_UNSUPPORTED_LAYOUT; /* past CLBlast's 32-bit element indices */
    return bias ? clattn__program_prepare(ctx, "bias", "") : CL_SUCCESS;
}

static clattn_status bias_enqueue(clattn_context *ctx, cl_command_queue q, const clattn_tensor *b,
                                  const clattn_tensor *Y, cl_uint nw, const cl_event *wl,
                                  cl_event *ev)
{
    cl_ulong y_off = Y->offset, ys0 = clattn__stride(Y, 0), ys1 = clattn__stride(Y, 1),
             ys2 = clattn__stride(Y, 2), ys3 = clattn__stride(Y, 3), d1 = Y->dims[1];
    cl_ulong b_off = b->offset, bs = clattn__stride(b, 3);
    const clattn_karg args[] = {CLATTN_KARG(Y->buffer), CLATTN_KARG(y_off), CLATTN_KARG(ys0),
                                CLATTN_KARG(ys1),       CLATTN_KARG(ys2),   CLATTN_KARG(ys3),
                                CLATTN_KARG(d1),        CLATTN_KARG(b->buffer), CLATTN_KARG(b_off),
                                CLATTN_KARG(bs)};
    const size_t global[3] = {Y->dims[3], Y->dims[2], Y->dims[0] * Y->dims[1]};
    return clattn__launch(ctx, q, "bias", "bias_add", "", 3, global, NULL, args,
                          sizeof args / sizeof args[0], nw, wl, ev);
}

clattn_status clattn__linear_enqueue(clattn_context *ctx, cl_command_queue q,
                                     const clattn_tensor *X, const clattn_tensor *W,
                                     const clattn_tensor *bias, const clattn_tensor *Y,
                                     cl_uint nw, const cl_event *wl, cl_event *ev)
{
    if (clattn__view_empty(Y))
        return clattn__no_op(q, nw, wl, ev);
    const size_t K = X->dims[3], N = W->dims[2];
    /* Wᵀ: K x N, element (k, n) = W[n, k]. */
    const clattn_operand b = {W->buffer, W->offset, {0, 0}, 1, K, N, W->strides[3], W->strides[2]};
    clattn_operand a = {X->buffer, X->offset, {clattn__stride(X, 0), clattn__stride(X, 1)},
                        1, X->dims[2], K, X->strides[2], X->strides[3]};
    clattn_operand c = {Y->buffer, Y->offset, {clattn__stride(Y, 0), clattn__stride(Y, 1)},
                        1, Y->dims[2], N, Y->strides[2], Y->strides[3]};
    size_t d0 = Y->dims[0], d1 = Y->dims[1], xstep, ystep;
    if (clattn__view_rows_flat(X, &xstep) && clattn__view_rows_flat(Y, &ystep)) {
        /* All tokens of all batch items as the rows of one product. */
        a.rows = c.rows = d0 * d1 * Y->dims[2];
        a.rs = xstep;
        c.rs = ystep;
        d0 = d1 = 1;
        if (!clattn__gemm_layout_ok(a.rows, K, a.rs, a.cs) ||
            !clattn__gemm_layout_ok(c.rows, N, c.rs, c.cs)) {
            a.rows = c.rows = Y->dims[2];
            a.rs = X->strides[2];
            c.rs = Y->strides[2];
            d0 = Y->dims[0];
            d1 = Y->dims[1];
        }
    }
    clattn_status st = CL_SUCCESS;
    clattn_chain chain = clattn__chain_start(nw, wl);
    CLATTN_STEP(st, chain, clattn__gemm(ctx, q, d0, d1, 1.0f, &a, &b, 0.0f, &c, chain.nw,
                                        chain.wl, (bias || ev) ? &chain.next : NULL));
    if (bias)
        CLATTN_STEP(st, chain, bias_enqueue(ctx, q, bias, Y, chain.nw, chain.wl,
                                            ev ? &chain.next : NULL));
    clattn__chain_end(&chain, st == CL_SUCCESS ? ev : NULL);
    return st;
}

clattn_status clattn_linear(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *X,
                            const clattn_tensor *W, const clattn_tensor *bias,
                            const clattn_tensor *Y, cl_uint num_wait, const cl_event *wait_list,
                            cl_event *event_out)
{
    clattn_status st = clattn__check_call(ctx, queue, num_wait, wait_list);
    if (st == CL_SUCCESS)
        st = clattn__linear_check(ctx, X, W, bias, Y);
    if (st != CL_SUCCESS)
        return st;
    return clattn__linear_enqueue(ctx, queue, X, W, bias, Y, num_wait, wait_list, event_out);
}
