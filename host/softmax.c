/* Softmax step: row-wise, max-subtracted; fully hidden rows give 0; optional log-sum-exp. */
#include "program.h"
#include "steps.h"
#include "tensor.h"

#include <stdio.h>

/* Work-items per row: a power of two the device allows. CPUs run a work-group as one thread, so
 * a small group keeps the per-row reduction cheap; GPUs want a wide one. */
static size_t softmax_wg(const clattn_context *ctx)
{
    size_t want = (ctx->info.type & CL_DEVICE_TYPE_CPU) ? 16 : 128;
    while (want > 1 && want > ctx->info.max_work_group_size)
        want /= 2;
    return want;
}

static void softmax_options(const clattn_context *ctx, bool lse, char *buf, size_t cap)
{
    snprintf(buf, cap, "-DWG=%zu -DHAS_LSE=%d", softmax_wg(ctx), lse ? 1 : 0);
}

clattn_status clattn__softmax_check(clattn_context *ctx, const clattn_tensor *S,
                                    const clattn_tensor *P, const clattn_tensor *lse)
{
    clattn_status st;
    if ((st = clattn__view_check(ctx, S, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check(ctx, P, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS ||
        (lse && (st = clattn__view_check(ctx, lse, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS))
        return st;
    for (int d = 0; d < 4; d++)
        if (P->dims[d] != S->dims[d])
            return CLATTN_ERROR_INVALID_SHAPE;
    if (lse && (lse->dims[0] != S->dims[0] || lse->dims[1] != S->dims[1] ||
                lse->dims[2] != S->dims[2] || lse->dims[3] != 1))
        return CLATTN_ERROR_INVALID_SHAPE;
    if (S->dims[0] * S->dims[1] * S->dims[2] == 0)
        return CL_SUCCESS;
    char opts[64];
    softmax_options(ctx, lse != NULL, opts, sizeof opts);
    size_t wg = 0;
    st = clattn__kernel_work_group_size(ctx, "softmax", "softmax_rows", opts, &wg);
    if (st == CL_SUCCESS && wg < softmax_wg(ctx))
        st = CLATTN_ERROR_UNSUPPORTED_DEVICE;
    return st;
}

clattn_status clattn__softmax_enqueue(clattn_context *ctx, cl_command_queue q,
                                      const clattn_tensor *S, const clattn_tensor *P,
                                      const clattn_tensor *lse, cl_uint nw, const cl_event *wl,
                                      cl_event *ev)
{
    if (S->dims[0] * S->dims[1] * S->dims[2] == 0)
        return clattn__no_op(q, nw, wl, ev);
    char opts[64];
    softmax_options(ctx, lse != NULL, opts, sizeof opts);
    const clattn_tensor none = {0};
    const clattn_tensor *l = lse ? lse : &none;
    cl_ulong s_off = S->offset, ss0 = clattn__stride(S, 0), ss1 = clattn__stride(S, 1),
             ss2 = clattn__stride(S, 2), ss3 = clattn__stride(S, 3);
    cl_ulong p_off = P->offset, ps0 = clattn__stride(P, 0), ps1 = clattn__stride(P, 1),
             ps2 = clattn__stride(P, 2), ps3 = clattn__stride(P, 3);
    cl_ulong l_off = l->offset, ls0 = clattn__stride(l, 0), ls1 = clattn__stride(l, 1),
             ls2 = clattn__stride(l, 2);
    cl_ulong H = S->dims[1], Lk = S->dims[3];
    const clattn_karg args[] = {
        CLATTN_KARG(S->buffer), CLATTN_KARG(s_off), CLATTN_KARG(ss0), CLATTN_KARG(ss1),
        CLATTN_KARG(ss2),       CLATTN_KARG(ss3),   CLATTN_KARG(P->buffer), CLATTN_KARG(p_off),
        CLATTN_KARG(ps0),       CLATTN_KARG(ps1),   CLATTN_KARG(ps2), CLATTN_KARG(ps3),
        CLATTN_KARG(l->buffer), CLATTN_KARG(l_off), CLATTN_KARG(ls0), CLATTN_KARG(ls1),
        CLATTN_KARG(ls2),       CLATTN_KARG(H),     CLATTN_KARG(Lk)};
    const size_t wg = softmax_wg(ctx);
    const size_t global[3] = {wg, S->dims[2], S->dims[0] * S->dims[1]};
    const size_t local[3] = {wg, 1, 1};
    return clattn__launch(ctx, q, "softmax", "softmax_rows", opts, 3, global, local, args,
                          sizeof args / sizeof args[0], nw, wl, ev);
}

clattn_status clattn_softmax(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *S,
                             const clattn_tensor *P, const clattn_tensor *lse, cl_uint num_wait,
                             const cl_event *wait_list, cl_event *event_out)
{
    clattn_status st = clattn__check_call(ctx, queue, num_wait, wait_list);
    if (st == CL_SUCCESS)
        st = clattn__softmax_check(ctx, S, P, lse);
    if (st != CL_SUCCESS)
        return st;
    return clattn__softmax_enqueue(ctx, queue, S, P, lse, num_wait, wait_list, event_out);
}
