/* Filling an output view with one value (no keys -> zero output, -INFINITY log-sum-exp), and
 * copying a view between fp16 storage and float. */
#include "program.h"
#include "steps.h"
#include "tensor.h"

clattn_status clattn__no_op(cl_command_queue q, cl_uint nw, const cl_event *wl, cl_event *ev)
{
    return ev ? clEnqueueMarkerWithWaitList(q, nw, wl, ev) : CL_SUCCESS;
}

clattn_status clattn__fill_prepare(clattn_context *ctx)
{
    return clattn__program_prepare(ctx, "fill", "");
}

clattn_status clattn__fill_enqueue(clattn_context *ctx, cl_command_queue q, const clattn_tensor *t,
                                   float value, cl_uint nw, const cl_event *wl, cl_event *ev)
{
    cl_ulong off = t->offset, s0 = clattn__stride(t, 0), s1 = clattn__stride(t, 1),
             s2 = clattn__stride(t, 2), s3 = clattn__stride(t, 3), d1 = t->dims[1];
    const clattn_karg args[] = {CLATTN_KARG(t->buffer), CLATTN_KARG(off), CLATTN_KARG(s0),
                                CLATTN_KARG(s1),        CLATTN_KARG(s2),  CLATTN_KARG(s3),
                                CLATTN_KARG(d1),        CLATTN_KARG(value)};
    const size_t global[3] = {t->dims[3], t->dims[2], t->dims[0] * t->dims[1]};
    return clattn__launch(ctx, q, "fill", "fill", "", 3, global, NULL, args, 8, nw, wl, ev);
}

clattn_status clattn__convert_prepare(clattn_context *ctx)
{
    clattn_status st = clattn__program_prepare(ctx, "convert", "-DTO_HALF=0");
    return st == CL_SUCCESS ? clattn__program_prepare(ctx, "convert", "-DTO_HALF=1") : st;
}

clattn_status clattn__convert_enqueue(clattn_context *ctx, cl_command_queue q,
                                      const clattn_tensor *src, const clattn_tensor *dst,
                                      cl_uint nw, const cl_event *wl, cl_event *ev)
{
    if (clattn__view_empty(dst))
        return clattn__no_op(q, nw, wl, ev);
    cl_ulong s_off = src->offset, ss0 = clattn__stride(src, 0), ss1 = clattn__stride(src, 1),
             ss2 = clattn__stride(src, 2), ss3 = clattn__stride(src, 3);
    cl_ulong d_off = dst->offset, ds0 = clattn__stride(dst, 0), ds1 = clattn__stride(dst, 1),
             ds2 = clattn__stride(dst, 2), ds3 = clattn__stride(dst, 3), d1 = dst->dims[1];
    const clattn_karg args[] = {CLATTN_KARG(src->buffer), CLATTN_KARG(s_off), CLATTN_KARG(ss0),
                                CLATTN_KARG(ss1),        CLATTN_KARG(ss2),   CLATTN_KARG(ss3),
                                CLATTN_KARG(dst->buffer), CLATTN_KARG(d_off), CLATTN_KARG(ds0),
                                CLATTN_KARG(ds1),        CLATTN_KARG(ds2),   CLATTN_KARG(ds3),
                                CLATTN_KARG(d1)};
    const size_t global[3] = {dst->dims[3], dst->dims[2], dst->dims[0] * dst->dims[1]};
    const char *opts = dst->dtype == CLATTN_F16 ? "-DTO_HALF=1" : "-DTO_HALF=0";
    return clattn__launch(ctx, q, "convert", "convert", opts, 3, global, NULL, args,
                          sizeof args / sizeof args[0], nw, wl, ev);
}
