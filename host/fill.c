/* Filling an output view with one value (no keys -> zero output, -INFINITY log-sum-exp). */
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
