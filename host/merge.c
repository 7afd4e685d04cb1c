/* Merging partial attention results over disjoint key sets by their log-sum-exp. */
#include "program.h"
#include "steps.h"
#include "tensor.h"

static bool dims_are(const clattn_tensor *t, size_t B, size_t H, size_t Lq, size_t last)
{
    return t->dims[0] == B && t->dims[1] == H && t->dims[2] == Lq && t->dims[3] == last;
}

clattn_status clattn_merge(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *O1,
                           const clattn_tensor *lse1, const clattn_tensor *O2,
                           const clattn_tensor *lse2, const clattn_tensor *O,
                           const clattn_tensor *lse, cl_uint num_wait, const cl_event *wait_list,
                           cl_event *event_out)
{
    clattn_status st = clattn__check_call(ctx, queue, num_wait, wait_list);
    if (st != CL_SUCCESS)
        return st;
    if ((st = clattn__view_check(ctx, O1, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check(ctx, lse1, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check(ctx, O2, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check(ctx, lse2, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check(ctx, O, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS ||
        (lse && (st = clattn__view_check(ctx, lse, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS))
        return st;
    const size_t B = O->dims[0], H = O->dims[1], Lq = O->dims[2], Dv = O->dims[3];
    if (!dims_are(O1, B, H, Lq, Dv) || !dims_are(O2, B, H, Lq, Dv) ||
        !dims_are(lse1, B, H, Lq, 1) || !dims_are(lse2, B, H, Lq, 1) ||
        (lse && !dims_are(lse, B, H, Lq, 1)))
        return CLATTN_ERROR_INVALID_SHAPE;
    if (B * H * Lq == 0)
        return clattn__no_op(queue, num_wait, wait_list, event_out);
    const char *opts = lse ? "-DHAS_LSE=1" : "-DHAS_LSE=0";
    if ((st = clattn__program_prepare(ctx, "merge", opts)) != CL_SUCCESS)
        return st;

    const clattn_tensor none = {0};
    const clattn_tensor *l = lse ? lse : &none;
    const clattn_tensor *views[6] = {O1, lse1, O2, lse2, O, l};
    cl_ulong v[6][5];
    for (int t = 0; t < 6; t++) {
        v[t][0] = views[t]->offset;
        for (int d = 0; d < 4; d++)
            v[t][d + 1] = clattn__stride(views[t], d);
    }
    cl_ulong H_ = H, Dv_ = Dv;
    /* Per view: buffer, offset, then its strides (four for O views, three for lse views). */
    clattn_karg args[6 * 6 + 2];
    cl_uint n = 0;
    for (int t = 0; t < 6; t++) {
        args[n++] = (clattn_karg)CLATTN_KARG(views[t]->buffer);
        for (int k = 0; k < ((t % 2 == 0) ? 5 : 4); k++)
            args[n++] = (clattn_karg)CLATTN_KARG(v[t][k]);
    }
    args[n++] = (clattn_karg)CLATTN_KARG(H_);
    args[n++] = (clattn_karg)CLATTN_KARG(Dv_);
    const size_t global[2] = {Lq, B * H};
    return clattn__launch(ctx, queue, "merge", "merge", opts, 2, global, NULL, args, n, num_wait,
                          wait_list, event_out);
}
