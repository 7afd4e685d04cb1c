/* Rotary position embedding: clattn_rope, and the checks and kernel arguments the KV cache uses
 * to rotate keys as it appends them and queries as it attends (the rules: kernels/prelude.cl). */
#include "steps.h"
#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

clattn_rope_params clattn_rope_params_default(void)
{
    clattn_rope_params p;
    memset(&p, 0, sizeof p);
    p.layout = CLATTN_ROPE_NEOX;
    p.theta = 10000.0f;
    return p;
}

clattn_status clattn__rope_check(const clattn_context *ctx, const clattn_rope_params *r,
                                 size_t head_dim, size_t batch, size_t *rotary)
{
    if (!CLATTN_RESERVED_ZERO(r))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (r->layout != CLATTN_ROPE_NEOX && r->layout != CLATTN_ROPE_GPTJ)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    const size_t R = r->rotary_dim ? r->rotary_dim : head_dim;
    if (R == 0 || R % 2 != 0 || R > head_dim || R > (size_t)INT32_MAX)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (!r->inv_freq && !(isfinite(r->theta) && r->theta > 0.0f))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_status st;
    if (r->inv_freq &&
        (st = clattn__vector_check(ctx, r->inv_freq, r->inv_freq_offset, R / 2)) != CL_SUCCESS)
        return st;
    if (r->positions &&
        (st = clattn__vector_check(ctx, r->positions, r->positions_offset, batch)) != CL_SUCCESS)
        return st;
    *rotary = R;
    return CL_SUCCESS;
}

void clattn__arg_rope(clattn_kargs *a, const clattn_rope_params *r, size_t rotary)
{
    clattn__arg_int(a, r ? (cl_int)rotary : 0);
    clattn__arg_float(a, r ? r->theta : 0.0f);
    clattn__arg_vector(a, r ? r->inv_freq : NULL, r ? r->inv_freq_offset : 0);
    clattn__arg_int(a, r && r->inv_freq ? 1 : 0);
}

static clattn_status rope_plan(clattn_plan *p, const clattn_tensor *X, const clattn_tensor *Y,
                               const clattn_rope_params *r)
{
    clattn_context *ctx = p->ctx;
    clattn_status st;
    if ((st = clattn__view_check_f16(ctx, X, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check_f16(ctx, Y, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS)
        return st;
    if (X->dtype != Y->dtype)
        return CLATTN_ERROR_UNSUPPORTED_DTYPE;
    for (int d = 0; d < 4; d++)
        if (X->dims[d] != Y->dims[d])
            return CLATTN_ERROR_INVALID_SHAPE;
    const size_t B = X->dims[0], H = X->dims[1], T = X->dims[2], D = X->dims[3];
    /* The params are checked whatever the view; an empty one (D = 0 too) rotates nothing. */
    size_t R;
    const size_t D_check = D ? D : (r->rotary_dim ? r->rotary_dim : 2);
    if ((st = clattn__rope_check(ctx, r, D_check, B, &R)) != CL_SUCCESS ||
        clattn__view_empty(X))
        return st;
    /* In place takes the same view; any other overlap would read what another item wrote. */
    const bool same = X->buffer == Y->buffer && X->offset == Y->offset &&
                      memcmp(X->strides, Y->strides, sizeof X->strides) == 0;
    if (!same && !clattn__views_apart(X, Y))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (T > (size_t)INT32_MAX)
        return CLATTN_ERROR_UNSUPPORTED_PATH;
    char opts[48];
    snprintf(opts, sizeof opts, "-DHALF=%d -DROPE_GPTJ=%d", X->dtype == CLATTN_F16,
             r->layout == CLATTN_ROPE_GPTJ);
    clattn_kargs args = {0};
    clattn__arg_view(&args, X);
    clattn__arg_view(&args, Y);
    clattn__arg_ulong(&args, H);
    clattn__arg_ulong(&args, D);
    clattn__arg_vector(&args, r->positions, r->positions_offset);
    clattn__arg_int(&args, r->positions != NULL);
    clattn__arg_rope(&args, r, R);
    const size_t global[3] = {R / 2 + (same ? 0 : D - R), T, B * H};
    if (global[0] == 0)
        return CL_SUCCESS;
    return clattn__plan_kernel(p, "rope", opts, "rope", &args, 3, global, NULL);
}

clattn_status clattn_rope(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *X,
                          const clattn_tensor *Y, const clattn_rope_params *params,
                          cl_uint num_wait, const cl_event *wait_list, cl_event *event_out)
{
    const clattn_rope_params r = params ? *params : clattn_rope_params_default();
    CLATTN_RETURN_PLANNED(ctx, queue, num_wait, wait_list, event_out, rope_plan(&plan_, X, Y, &r));
}
