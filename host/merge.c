/* Merging partial attention results over disjoint key sets by their log-sum-exp: two parts in
 * any views (clattn_merge), or the split parts of flash-decoding in one launch; and attention
 * sinks added once to a merged result (clattn_add_sinks). */
#include "steps.h"
#include "tensor.h"

#include <stdio.h>

static bool dims_are(const clattn_tensor *t, size_t B, size_t H, size_t Lq, size_t last)
{
    return t->dims[0] == B && t->dims[1] == H && t->dims[2] == Lq && t->dims[3] == last;
}

static clattn_status merge_plan(clattn_plan *p, const clattn_tensor *O1, const clattn_tensor *lse1,
                                const clattn_tensor *O2, const clattn_tensor *lse2,
                                const clattn_tensor *O, const clattn_tensor *lse)
{
    clattn_context *ctx = p->ctx;
    clattn_status st;
    if ((st = clattn__view_check_f16(ctx, O1, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check(ctx, lse1, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check_f16(ctx, O2, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check(ctx, lse2, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check_f16(ctx, O, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS ||
        (lse && (st = clattn__view_check(ctx, lse, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS))
        return st;
    const size_t B = O->dims[0], H = O->dims[1], Lq = O->dims[2], Dv = O->dims[3];
    if (!dims_are(O1, B, H, Lq, Dv) || !dims_are(O2, B, H, Lq, Dv) ||
        !dims_are(lse1, B, H, Lq, 1) || !dims_are(lse2, B, H, Lq, 1) ||
        (lse && !dims_are(lse, B, H, Lq, 1)))
        return CLATTN_ERROR_INVALID_SHAPE;
    if (B * H * Lq == 0)
        return CL_SUCCESS;
    clattn_kargs args = {0};
    const clattn_tensor *views[6] = {O1, lse1, O2, lse2, O, lse};
    for (int t = 0; t < 6; t++)
        clattn__arg_view(&args, views[t]);
    clattn__arg_ulong(&args, H);
    clattn__arg_ulong(&args, Dv);
    const size_t global[2] = {Lq, B * H};
    char opts[64];
    snprintf(opts, sizeof opts, "-DHAS_LSE=%d -DO1_FMT=%d -DO2_FMT=%d -DO_FMT=%d", lse != NULL,
             O1->dtype == CLATTN_F16, O2->dtype == CLATTN_F16, O->dtype == CLATTN_F16);
    return clattn__plan_kernel(p, "merge", opts, "merge", &args, 2, global, NULL);
}

clattn_status clattn__merge_parts_plan(clattn_plan *p, const clattn_tensor *part,
                                       const clattn_tensor *part_lse, size_t parts, size_t o_split,
                                       size_t l_split, const clattn_tensor *O,
                                       const clattn_tensor *lse, cl_mem sinks,
                                       size_t sinks_offset)
{
    const size_t B = O->dims[0], H = O->dims[1], Lq = O->dims[2];
    clattn_kargs args = {0};
    clattn__arg_view(&args, part);
    clattn__arg_view(&args, part_lse);
    clattn__arg_ulong(&args, parts);
    clattn__arg_ulong(&args, o_split);
    clattn__arg_ulong(&args, l_split);
    clattn__arg_view(&args, O);
    clattn__arg_view(&args, lse);
    clattn__arg_ulong(&args, H);
    clattn__arg_ulong(&args, O->dims[3]);
    clattn__arg_vector(&args, sinks, sinks_offset);
    const size_t global[2] = {Lq, B * H};
    char opts[32];
    snprintf(opts, sizeof opts, "-DHAS_LSE=%d -DHAS_SINKS=%d", lse != NULL, sinks != NULL);
    return clattn__plan_kernel(p, "merge", opts, "merge_parts", &args, 2, global, NULL);
}

clattn_status clattn_merge(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *O1,
                           const clattn_tensor *lse1, const clattn_tensor *O2,
                           const clattn_tensor *lse2, const clattn_tensor *O,
                           const clattn_tensor *lse, cl_uint num_wait, const cl_event *wait_list,
                           cl_event *event_out)
{
    CLATTN_RETURN_PLANNED(ctx, queue, num_wait, wait_list, event_out,
                          merge_plan(&plan_, O1, lse1, O2, lse2, O, lse));
}

static clattn_status add_sinks_plan(clattn_plan *p, const clattn_tensor *O,
                                    const clattn_tensor *lse, cl_mem sinks, size_t sinks_offset)
{
    clattn_context *ctx = p->ctx;
    clattn_status st;
    if ((st = clattn__view_check_f16(ctx, O, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS ||
        (st = clattn__view_check(ctx, lse, CLATTN_VIEW_INPUT)) != CL_SUCCESS)
        return st;
    if (!clattn__view_empty(O) && (st = clattn__buffer_readable(O->buffer)) != CL_SUCCESS)
        return st; /* scaled in place: read, then written */
    const size_t B = O->dims[0], H = O->dims[1], Lq = O->dims[2];
    if (!dims_are(lse, B, H, Lq, 1))
        return CLATTN_ERROR_INVALID_SHAPE;
    if (!sinks)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if ((st = clattn__vector_check(ctx, sinks, sinks_offset, H)) != CL_SUCCESS)
        return st;
    const clattn_tensor sv = clattn__vector_view(sinks, sinks_offset, H);
    if (!clattn__views_apart(O, lse) || !clattn__views_apart(O, &sv))
        return CLATTN_ERROR_INVALID_ARGUMENT; /* O is written while they are read */
    if (clattn__view_empty(O))
        return CL_SUCCESS;
    clattn_kargs args = {0};
    clattn__arg_view(&args, O);
    clattn__arg_view(&args, lse);
    clattn__arg_ulong(&args, H);
    clattn__arg_ulong(&args, O->dims[3]);
    clattn__arg_vector(&args, sinks, sinks_offset);
    const size_t global[2] = {Lq, B * H};
    return clattn__plan_kernel(p, "merge",
                               O->dtype == CLATTN_F16 ? "-DHAS_LSE=0 -DO_FMT=1" : "-DHAS_LSE=0",
                               "add_sinks", &args, 2, global, NULL);
}

clattn_status clattn_add_sinks(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *O,
                               const clattn_tensor *lse, cl_mem sinks, size_t sinks_offset,
                               cl_uint num_wait, const cl_event *wait_list, cl_event *event_out)
{
    CLATTN_RETURN_PLANNED(ctx, queue, num_wait, wait_list, event_out,
                          add_sinks_plan(&plan_, O, lse, sinks, sinks_offset));
}
