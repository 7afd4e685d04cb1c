/* Mask step: causal (both alignments), additive float mask with broadcasting, key lengths, the
 * sliding window; on the unfused path also soft-capping and ALiBi (logits.c). */
#include "steps.h"
#include "tensor.h"

#include <stdio.h>
#include <string.h>

clattn_mask_params clattn_mask_params_default(void)
{
    clattn_mask_params m;
    memset(&m, 0, sizeof m);
    m.causal = CLATTN_CAUSAL_NONE;
    m.window_left = m.window_right = CLATTN_WINDOW_UNBOUNDED;
    return m;
}

clattn_status clattn__mask_validate(const clattn_context *ctx, const size_t sdims[4],
                                    const clattn_mask_params *m)
{
    if (!m)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (!CLATTN_RESERVED_ZERO(m))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (m->causal != CLATTN_CAUSAL_NONE && m->causal != CLATTN_CAUSAL_TOP_LEFT &&
        m->causal != CLATTN_CAUSAL_BOTTOM_RIGHT)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_status st = clattn__window_check(m->window_left, m->window_right);
    if (st != CL_SUCCESS)
        return st;
    if (m->query_offset > CLATTN__QUERY_OFFSET_MAX || m->query_offset < -CLATTN__QUERY_OFFSET_MAX)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (m->additive) {
        if ((st = clattn__view_check(ctx, m->additive, CLATTN_VIEW_INPUT)) != CL_SUCCESS)
            return st;
        for (int d = 0; d < 4; d++)
            if (m->additive->dims[d] != sdims[d] && m->additive->dims[d] != 1)
                return CLATTN_ERROR_MASK_SHAPE;
    }
    return m->key_lengths
               ? clattn__vector_check(ctx, m->key_lengths, m->key_lengths_offset, sdims[0])
               : CL_SUCCESS;
}

clattn_status clattn__mask_plan(clattn_plan *p, const clattn_tensor *S, const clattn_mask_params *m,
                                const clattn_logit_params *lp)
{
    const clattn_logit_params none = {0};
    if (!lp)
        lp = &none;
    clattn_status st = clattn__view_check(p->ctx, S, CLATTN_VIEW_OUTPUT); /* read and written */
    if (st == CL_SUCCESS && !clattn__view_empty(S))
        st = clattn__buffer_readable(S->buffer);
    if (st == CL_SUCCESS)
        st = clattn__mask_validate(p->ctx, S->dims, m);
    const bool window = st == CL_SUCCESS && clattn__window_on(m);
    if (st != CL_SUCCESS || clattn__view_empty(S) ||
        (m->causal == CLATTN_CAUSAL_NONE && !m->additive && !m->key_lengths && !window &&
         lp->softcap == 0.0f && !lp->alibi_slopes))
        return st;
    char opts[160];
    snprintf(opts, sizeof opts,
             "-DCAUSAL=%d -DHAS_ADDITIVE=%d -DHAS_LENGTHS=%d -DHAS_WINDOW=%d -DHAS_SOFTCAP=%d "
             "-DHAS_ALIBI=%d",
             (int)m->causal, m->additive != NULL, m->key_lengths != NULL, window,
             lp->softcap > 0.0f, lp->alibi_slopes != NULL);
    /* The additive mask's size-1 dims broadcast: its view passes stride 0 for them. */
    clattn_kargs args = {0};
    clattn__arg_view(&args, S);
    clattn__arg_ulong(&args, S->dims[1]);
    clattn__arg_ulong(&args, S->dims[2]);
    clattn__arg_ulong(&args, S->dims[3]);
    clattn__arg_view(&args, m->additive);
    clattn__arg_mem(&args, m->key_lengths);
    clattn__arg_ulong(&args, m->key_lengths_offset);
    clattn__arg_window(&args, m);
    clattn__arg_softcap(&args, lp, 1.0f);
    clattn__arg_vector(&args, lp->alibi_slopes, lp->alibi_slopes_offset);
    const size_t global[3] = {S->dims[3], S->dims[2], S->dims[0] * S->dims[1]};
    return clattn__plan_kernel(p, "mask", opts, "mask_apply", &args, 3, global, NULL);
}

clattn_status clattn_mask(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *S,
                          const clattn_mask_params *mask, cl_uint num_wait,
                          const cl_event *wait_list, cl_event *event_out)
{
    CLATTN_RETURN_PLANNED(ctx, queue, num_wait, wait_list, event_out,
                          clattn__mask_plan(&plan_, S, mask, NULL));
}
