/* Filling an output view with one value (no keys -> zero output), and copying a view into
 * another (between fp16 storage and float, or float to float). */
#include "steps.h"
#include "tensor.h"

#include <stdio.h>

clattn_status clattn__fill_plan(clattn_plan *p, const clattn_tensor *t, float value)
{
    clattn_kargs args = {0};
    clattn__arg_view(&args, t);
    clattn__arg_ulong(&args, t->dims[1]);
    clattn__arg_float(&args, value);
    const size_t global[3] = {t->dims[3], t->dims[2], t->dims[0] * t->dims[1]};
    return clattn__plan_kernel(p, "fill", "", "fill", &args, 3, global, NULL);
}

clattn_status clattn__convert_plan(clattn_plan *p, const clattn_tensor *src, const clattn_tensor *dst)
{
    if (clattn__view_empty(dst))
        return CL_SUCCESS;
    clattn_kargs args = {0};
    clattn__arg_view(&args, src);
    clattn__arg_view(&args, dst);
    clattn__arg_ulong(&args, dst->dims[1]);
    const size_t global[3] = {dst->dims[3], dst->dims[2], dst->dims[0] * dst->dims[1]};
    char opts[40];
    snprintf(opts, sizeof opts, "-DSRC_HALF=%d -DDST_HALF=%d", src->dtype == CLATTN_F16,
             dst->dtype == CLATTN_F16);
    return clattn__plan_kernel(p, "convert", opts, "convert", &args, 3, global, NULL);
}
