/* Weighted-sum step: O = P·V per (batch, query head), batched GEMM with the GQA head mapping. */
#include "steps.h"
#include "tensor.h"

clattn_status clattn__weighted_sum_plan(clattn_plan *p, const clattn_tensor *P,
                                        const clattn_tensor *V, const clattn_tensor *O)
{
    clattn_context *ctx = p->ctx;
    clattn_status st;
    if ((st = clattn__view_check(ctx, P, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check(ctx, V, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check(ctx, O, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS)
        return st;
    const size_t B = P->dims[0], Hq = P->dims[1], Lq = P->dims[2], Lk = P->dims[3];
    const size_t Hkv = V->dims[1], Dv = V->dims[3];
    if (V->dims[0] != B || V->dims[2] != Lk || O->dims[0] != B || O->dims[1] != Hq ||
        O->dims[2] != Lq || O->dims[3] != Dv)
        return CLATTN_ERROR_INVALID_SHAPE;
    if (Hkv == 0 ? Hq != 0 : Hq % Hkv != 0)
        return CLATTN_ERROR_HEAD_MISMATCH;
    if (clattn__view_empty(O))
        return CL_SUCCESS;
    if (Lk == 0) /* no keys: the empty sum */
        return clattn__fill_plan(p, O, 0.0f);
    if (!clattn__gemm_layout_ok(Lq, Lk, P->strides[2], P->strides[3]) ||
        !clattn__gemm_layout_ok(Lk, Dv, V->strides[2], V->strides[3]) ||
        !clattn__gemm_layout_ok(Lq, Dv, O->strides[2], O->strides[3]))
        return CLATTN_ERROR_UNSUPPORTED_LAYOUT;
    if (!clattn__gemm_view_ok(P) || !clattn__gemm_view_ok(V) || !clattn__gemm_view_ok(O))
        return CLATTN_ERROR_UNSUPPORTED_LAYOUT; /* past CLBlast's 32-bit element indices */

    const clattn_operand a = {P->buffer, P->offset, {clattn__stride(P, 0), clattn__stride(P, 1)},
                              1, Lq, Lk, P->strides[2], P->strides[3]};
    const clattn_operand b = {V->buffer, V->offset, {clattn__stride(V, 0), clattn__stride(V, 1)},
                              Hq / Hkv, Lk, Dv, V->strides[2], V->strides[3]};
    const clattn_operand c = {O->buffer, O->offset, {clattn__stride(O, 0), clattn__stride(O, 1)},
                              1, Lq, Dv, O->strides[2], O->strides[3]};
    return clattn__product_plan(p, B, Hq, 1.0f, &a, &b, &c, NULL);
}

clattn_status clattn_weighted_sum(clattn_context *ctx, cl_command_queue queue,
                                  const clattn_tensor *P, const clattn_tensor *V,
                                  const clattn_tensor *O, cl_uint num_wait,
                                  const cl_event *wait_list, cl_event *event_out)
{
    CLATTN_RETURN_PLANNED(ctx, queue, num_wait, wait_list, event_out,
                          clattn__weighted_sum_plan(&plan_, P, V, O));
}
