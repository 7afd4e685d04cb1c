/* What shapes the scores beyond the mask (clattn_logit_params: soft-capping, ALiBi, sinks) and
 * the sliding window: their checks, the standard ALiBi slopes, and how kernels receive them (the
 * -D flags and arguments the prelude's rules read). */
#include "steps.h"
#include "tensor.h"

#include <math.h>
#include <string.h>

/* An unbounded window side, as kernels get it: far past any key index (keys < 2^31), and far
 * from overflowing a long when a position is added. */
#define WINDOW_OPEN ((cl_long)1 << 40)

clattn_logit_params clattn_logit_params_default(void)
{
    clattn_logit_params p;
    memset(&p, 0, sizeof p);
    return p;
}

clattn_status clattn_alibi_slopes(size_t num_heads, float *slopes)
{
    if (num_heads > 0 && !slopes)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    size_t n = 1; /* the largest power of two <= num_heads */
    while (n <= num_heads / 2)
        n *= 2;
    for (size_t h = 0; h < num_heads && h < n; h++)
        slopes[h] = (float)exp2(-8.0 * (double)(h + 1) / (double)n);
    for (size_t h = n; h < num_heads; h++) /* odd k of the slopes for 2n heads */
        slopes[h] = (float)exp2(-8.0 * (double)(2 * (h - n) + 1) / (double)(2 * n));
    return CL_SUCCESS;
}

clattn_status clattn__logits_check(const clattn_context *ctx, const clattn_logit_params *lp,
                                   size_t heads)
{
    /* 0 (off), or a cap whose kernel forms (times log2(e), and its inverse) are finite too. */
    const float cap = lp->softcap;
    if (!CLATTN_RESERVED_ZERO(lp))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (!(cap == 0.0f || (cap > 0.0f && isfinite(cap * 1.4426950408889634f) &&
                          isfinite(1.0f / cap))))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_status st = CL_SUCCESS;
    if (lp->alibi_slopes)
        st = clattn__vector_check(ctx, lp->alibi_slopes, lp->alibi_slopes_offset, heads);
    if (st == CL_SUCCESS && lp->sinks)
        st = clattn__vector_check(ctx, lp->sinks, lp->sinks_offset, heads);
    return st;
}

clattn_status clattn__window_check(int64_t left, int64_t right)
{
    return left < CLATTN_WINDOW_UNBOUNDED || right < CLATTN_WINDOW_UNBOUNDED
               ? CLATTN_ERROR_INVALID_ARGUMENT
               : CL_SUCCESS;
}

bool clattn__window_on(const clattn_mask_params *m)
{
    return m->window_left != CLATTN_WINDOW_UNBOUNDED || m->window_right != CLATTN_WINDOW_UNBOUNDED;
}

static cl_long window_side(int64_t side)
{
    return side == CLATTN_WINDOW_UNBOUNDED || side > WINDOW_OPEN ? WINDOW_OPEN : (cl_long)side;
}

void clattn__arg_window(clattn_kargs *a, const clattn_mask_params *m)
{
    const size_t keep = m->window_keep_first;
    clattn__arg_long(a, window_side(m->window_left));
    clattn__arg_long(a, window_side(m->window_right));
    clattn__arg_long(a, keep > (size_t)WINDOW_OPEN ? WINDOW_OPEN : (cl_long)keep);
    clattn__arg_long(a, (cl_long)m->query_offset);
}

void clattn__arg_softcap(clattn_kargs *a, const clattn_logit_params *lp, float unit)
{
    clattn__arg_float(a, lp->softcap > 0.0f ? lp->softcap * unit : 0.0f);
    clattn__arg_float(a, lp->softcap > 0.0f ? 1.0f / lp->softcap : 0.0f);
}

void clattn__arg_vector(clattn_kargs *a, cl_mem buf, size_t offset)
{
    clattn__arg_mem(a, buf);
    clattn__arg_ulong(a, buf ? offset : 0);
}

clattn_tensor clattn__vector_view(cl_mem buf, size_t offset, size_t count)
{
    const clattn_tensor t = {buf, offset, CLATTN_F32, {1, 1, 1, count}, {count, count, count, 1}};
    return t;
}
