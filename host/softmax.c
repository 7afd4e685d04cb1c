/* Softmax step: row-wise, max-subtracted; fully hidden rows give 0; optional log-sum-exp. */
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

clattn_status clattn__softmax_plan(clattn_plan *p, const clattn_tensor *S, const clattn_tensor *P,
                                   const clattn_tensor *lse, cl_mem sinks, size_t sinks_offset)
{
    clattn_context *ctx = p->ctx;
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
    /* Nothing to write: no rows, or rows of no scores and no lse asked for. (The row count is
     * bounded by what P or lse reach, once either has elements; an empty S alone is not: its
     * other dims may be anything.) */
    if (S->dims[0] == 0 || S->dims[1] == 0 || S->dims[2] == 0 || (S->dims[3] == 0 && !lse))
        return CL_SUCCESS;
    const size_t wg = softmax_wg(ctx);
    char opts[64];
    snprintf(opts, sizeof opts, "-DWG=%zu -DHAS_LSE=%d -DHAS_SINKS=%d", wg, lse != NULL,
             sinks != NULL);
    clattn_kargs args = {0};
    clattn__arg_view(&args, S);
    clattn__arg_view(&args, P);
    clattn__arg_view(&args, lse);
    clattn__arg_ulong(&args, S->dims[1]);
    clattn__arg_ulong(&args, S->dims[3]);
    clattn__arg_vector(&args, sinks, sinks_offset);
    const size_t global[3] = {wg, S->dims[2], S->dims[0] * S->dims[1]};
    const size_t local[3] = {wg, 1, 1};
    return clattn__plan_kernel(p, "softmax", opts, "softmax_rows", &args, 3, global, local);
}

clattn_status clattn_softmax(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *S,
                             const clattn_tensor *P, const clattn_tensor *lse, cl_uint num_wait,
                             const cl_event *wait_list, cl_event *event_out)
{
    CLATTN_RETURN_PLANNED(ctx, queue, num_wait, wait_list, event_out,
                          clattn__softmax_plan(&plan_, S, P, lse, NULL, 0));
}
