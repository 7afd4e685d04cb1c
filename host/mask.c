/* Mask step: causal (both alignments), additive float mask with broadcasting, key lengths. */
#include "program.h"
#include "steps.h"
#include "tensor.h"

#include <stdio.h>
#include <string.h>

clattn_mask_params clattn_mask_params_default(void)
{
    clattn_mask_params m;
    memset(&m, 0, sizeof m);
    m.causal = CLATTN_CAUSAL_NONE;
    return m;
}

static bool mask_any(const clattn_mask_params *m)
{
    return m->causal != CLATTN_CAUSAL_NONE || m->additive || m->key_lengths;
}

static void mask_options(const clattn_mask_params *m, char *buf, size_t cap)
{
    snprintf(buf, cap, "-DCAUSAL=%d -DHAS_ADDITIVE=%d -DHAS_LENGTHS=%d", (int)m->causal,
             m->additive != NULL, m->key_lengths != NULL);
}

clattn_status clattn__mask_validate(clattn_context *ctx, const size_t sdims[4],
                                    const clattn_mask_params *m)
{
    if (!m)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (!CLATTN_RESERVED_ZERO(m))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (m->causal != CLATTN_CAUSAL_NONE && m->causal != CLATTN_CAUSAL_TOP_LEFT &&
        m->causal != CLATTN_CAUSAL_BOTTOM_RIGHT)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_status st;
    if (m->additive) {
        if ((st = clattn__view_check(ctx, m->additive, CLATTN_VIEW_INPUT)) != CL_SUCCESS)
            return st;
        for (int d = 0; d < 4; d++)
            if (m->additive->dims[d] != sdims[d] && m->additive->dims[d] != 1)
                return CLATTN_ERROR_MASK_SHAPE;
    }
    if (m->key_lengths) {
        size_t bytes;
        if (!clattn__add(m->key_lengths_offset, sdims[0], &bytes) ||
            !clattn__mul(bytes, sizeof(cl_int), &bytes))
            return CLATTN_ERROR_SIZE_OVERFLOW;
        if ((st = clattn__buffer_check(ctx, m->key_lengths, bytes)) != CL_SUCCESS)
            return st;
    }
    return CL_SUCCESS;
}

clattn_status clattn__mask_check(clattn_context *ctx, const size_t sdims[4],
                                 const clattn_mask_params *m)
{
    clattn_status st = clattn__mask_validate(ctx, sdims, m);
    if (st != CL_SUCCESS || !mask_any(m) || sdims[0] * sdims[1] * sdims[2] * sdims[3] == 0)
        return st;
    char opts[128];
    mask_options(m, opts, sizeof opts);
    return clattn__program_prepare(ctx, "mask", opts);
}

clattn_status clattn__mask_enqueue(clattn_context *ctx, cl_command_queue q, const clattn_tensor *S,
                                   const clattn_mask_params *m, cl_uint nw, const cl_event *wl,
                                   cl_event *ev)
{
    if (!mask_any(m) || clattn__view_empty(S))
        return clattn__no_op(q, nw, wl, ev);
    char opts[128];
    mask_options(m, opts, sizeof opts);

    /* The additive mask's size-1 dims broadcast: clattn__stride gives them stride 0. */
    const clattn_tensor none = {0};
    const clattn_tensor *a = m->additive ? m->additive : &none;
    cl_ulong s_off = S->offset, ss0 = clattn__stride(S, 0), ss1 = clattn__stride(S, 1),
             ss2 = clattn__stride(S, 2), ss3 = clattn__stride(S, 3);
    cl_ulong H = S->dims[1], Lq = S->dims[2], Lk = S->dims[3];
    cl_ulong m_off = a->offset, ms0 = clattn__stride(a, 0), ms1 = clattn__stride(a, 1),
             ms2 = clattn__stride(a, 2), ms3 = clattn__stride(a, 3);
    cl_ulong l_off = m->key_lengths_offset;
    const clattn_karg args[] = {
        CLATTN_KARG(S->buffer), CLATTN_KARG(s_off),          CLATTN_KARG(ss0), CLATTN_KARG(ss1),
        CLATTN_KARG(ss2),       CLATTN_KARG(ss3),            CLATTN_KARG(H),   CLATTN_KARG(Lq),
        CLATTN_KARG(Lk),        CLATTN_KARG(a->buffer),      CLATTN_KARG(m_off), CLATTN_KARG(ms0),
        CLATTN_KARG(ms1),       CLATTN_KARG(ms2),            CLATTN_KARG(ms3), CLATTN_KARG(m->key_lengths),
        CLATTN_KARG(l_off)};
    const size_t global[3] = {S->dims[3], S->dims[2], S->dims[0] * S->dims[1]};
    return clattn__launch(ctx, q, "mask", "mask_apply", opts, 3, global, NULL, args,
                          sizeof args / sizeof args[0], nw, wl, ev);
}

clattn_status clattn_mask(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *S,
                          const clattn_mask_params *mask, cl_uint num_wait,
                          const cl_event *wait_list, cl_event *event_out)
{
    clattn_status st = clattn__check_call(ctx, queue, num_wait, wait_list);
    if (st == CL_SUCCESS)
        st = clattn__view_check(ctx, S, CLATTN_VIEW_OUTPUT);
    if (st == CL_SUCCESS)
        st = clattn__mask_check(ctx, S->dims, mask);
    if (st != CL_SUCCESS)
        return st;
    return clattn__mask_enqueue(ctx, queue, S, mask, num_wait, wait_list, event_out);
}
