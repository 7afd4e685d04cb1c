/* Scaled dot-product attention: picks a path and runs it. The unfused path is the composite
 * scores -> mask -> softmax -> weighted sum, with the score matrix in a workspace (or in the
 * caller's probabilities view, when it asks for them). */
#include "steps.h"
#include "tensor.h"

#include <string.h>

clattn_sdpa_params clattn_sdpa_params_default(void)
{
    clattn_sdpa_params p;
    memset(&p, 0, sizeof p);
    p.scale = CLATTN_SCALE_DEFAULT;
    p.mask = clattn_mask_params_default();
    p.path = CLATTN_PATH_AUTO;
    return p;
}

bool clattn__offsets_valid(const size_t *cu, size_t num, size_t total)
{
    if (cu[0] != 0 || cu[num] != total)
        return false;
    for (size_t b = 0; b < num; b++)
        if (cu[b + 1] < cu[b])
            return false;
    return true;
}

/* A packed batch's parameters (clattn_sdpa_params.cu_seqlens_q) against views of one item. */
static clattn_status varlen_check(const clattn_sdpa_params *p, size_t B, size_t Lq, size_t Lk)
{
    if (!p->cu_seqlens_q)
        return p->cu_seqlens_k || p->num_seqs ? CLATTN_ERROR_INVALID_ARGUMENT : CL_SUCCESS;
    if (p->mask.additive)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (B != 1 || (!p->cu_seqlens_k && Lk != Lq))
        return CLATTN_ERROR_INVALID_SHAPE;
    if (p->num_seqs >= SIZE_MAX / 2 || !clattn__offsets_valid(p->cu_seqlens_q, p->num_seqs, Lq) ||
        (p->cu_seqlens_k && !clattn__offsets_valid(p->cu_seqlens_k, p->num_seqs, Lk)))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    return p->probs || p->path == CLATTN_PATH_UNFUSED ? CLATTN_ERROR_UNSUPPORTED_PATH : CL_SUCCESS;
}

clattn_status clattn__sdpa_check(const clattn_context *ctx, const clattn_tensor *Q,
                                 const clattn_tensor *K, const clattn_tensor *V,
                                 const clattn_tensor *O, const clattn_sdpa_params *p)
{
    if (!CLATTN_RESERVED_ZERO(p))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (p->path != CLATTN_PATH_AUTO && p->path != CLATTN_PATH_UNFUSED &&
        p->path != CLATTN_PATH_FUSED)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_status st;
    if ((st = clattn__view_check_f16(ctx, Q, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check_f16(ctx, K, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check_f16(ctx, V, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check_f16(ctx, O, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS ||
        (p->probs && (st = clattn__view_check(ctx, p->probs, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS) ||
        (p->lse && (st = clattn__view_check(ctx, p->lse, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS))
        return st;
    const size_t B = Q->dims[0], Hq = Q->dims[1], Lq = Q->dims[2], Lk = K->dims[2];
    const size_t Hkv = K->dims[1];
    if (K->dims[0] != B || K->dims[3] != Q->dims[3] || V->dims[0] != B || V->dims[1] != Hkv ||
        V->dims[2] != Lk || O->dims[0] != B || O->dims[1] != Hq || O->dims[2] != Lq ||
        O->dims[3] != V->dims[3])
        return CLATTN_ERROR_INVALID_SHAPE;
    if (p->probs && (p->probs->dims[0] != B || p->probs->dims[1] != Hq ||
                     p->probs->dims[2] != Lq || p->probs->dims[3] != Lk))
        return CLATTN_ERROR_INVALID_SHAPE;
    if (p->lse && (p->lse->dims[0] != B || p->lse->dims[1] != Hq || p->lse->dims[2] != Lq ||
                   p->lse->dims[3] != 1))
        return CLATTN_ERROR_INVALID_SHAPE;
    if (Hkv == 0 ? Hq != 0 : Hq % Hkv != 0)
        return CLATTN_ERROR_HEAD_MISMATCH;
    /* fp16 storage: Q, K, V and O together, on the fused path only (its kernel converts on load
     * and store; the unfused steps are float products). */
    const bool f16 = Q->dtype == CLATTN_F16;
    if (K->dtype != Q->dtype || V->dtype != Q->dtype || O->dtype != Q->dtype ||
        (f16 && (p->probs || p->path == CLATTN_PATH_UNFUSED)))
        return CLATTN_ERROR_UNSUPPORTED_DTYPE;
    if (Q->dims[3] == 0 && B * Hq * Lq * Lk > 0)
        return CLATTN_ERROR_INVALID_SHAPE;
    if ((st = varlen_check(p, B, Lq, Lk)) != CL_SUCCESS)
        return st;
    /* a packed batch: the mask's per-item parts (key lengths) are per sequence */
    const size_t sdims[4] = {p->cu_seqlens_q ? p->num_seqs : B, Hq, Lq, Lk};
    if ((st = clattn__logits_check(ctx, &p->logits, Hq)) != CL_SUCCESS)
        return st;
    return clattn__mask_validate(ctx, sdims, &p->mask);
}

/* Bytes of score matrix the unfused path needs: [B, Hq, Lq, Lk] floats. */
static clattn_status score_bytes(const clattn_tensor *Q, const clattn_tensor *K, size_t *bytes)
{
    size_t n = sizeof(float);
    const size_t sdims[4] = {Q->dims[0], Q->dims[1], Q->dims[2], K->dims[2]};
    for (int d = 0; d < 4; d++)
        if (!clattn__mul(n, sdims[d], &n))
            return CLATTN_ERROR_SIZE_OVERFLOW;
    *bytes = n;
    return CL_SUCCESS;
}

/* Appends the fused path when the call asks for it or AUTO can take it (*fused says which); on
 * AUTO, a fact that rules the fused kernel out leaves the unfused path to run the call. */
static clattn_status try_fused(clattn_plan *p, const clattn_tensor *Q, const clattn_tensor *K,
                               const clattn_tensor *V, const clattn_tensor *O,
                               const clattn_sdpa_params *sp, bool *fused)
{
    *fused = false;
    if (sp->path == CLATTN_PATH_UNFUSED)
        return CL_SUCCESS;
    clattn_status st = clattn__flash_plan(p, Q, K, V, O, sp, NULL, NULL, false, NULL);
    *fused = st == CL_SUCCESS;
    /* AUTO falls back only on facts; fp16 storage and packed batches have no other path. */
    if (sp->path == CLATTN_PATH_AUTO && Q->dtype == CLATTN_F32 && !sp->cu_seqlens_q &&
        clattn__flash_rules_out(st))
        return CL_SUCCESS;
    return st;
}

clattn_status clattn__sdpa_workspace(clattn_context *ctx, const clattn_tensor *Q,
                                     const clattn_tensor *K, const clattn_tensor *V,
                                     const clattn_tensor *O, const clattn_sdpa_params *params,
                                     size_t *bytes)
{
    *bytes = 0;
    if (params->probs || Q->dims[0] * Q->dims[1] * Q->dims[2] == 0)
        return CL_SUCCESS;
    clattn_plan plan;
    clattn__plan_init(&plan, ctx);
    bool fused;
    clattn_status st = try_fused(&plan, Q, K, V, O, params, &fused);
    clattn__plan_release(&plan);
    return st != CL_SUCCESS || fused ? st : score_bytes(Q, K, bytes);
}

clattn_status clattn__sdpa_plan(clattn_plan *p, const clattn_tensor *Q, const clattn_tensor *K,
                                const clattn_tensor *V, const clattn_tensor *O,
                                const clattn_sdpa_params *params)
{
    clattn_context *ctx = p->ctx;
    clattn_status st = clattn__sdpa_check(ctx, Q, K, V, O, params);
    if (st != CL_SUCCESS)
        return st;
    const size_t B = Q->dims[0], Hq = Q->dims[1], Lq = Q->dims[2], Lk = K->dims[2];
    if (B * Hq * Lq == 0 || (clattn__view_empty(O) && !params->probs && !params->lse))
        return CL_SUCCESS; /* nothing to compute */
    bool fused;
    if ((st = try_fused(p, Q, K, V, O, params, &fused)) != CL_SUCCESS || fused)
        return st;

    /* The unfused path. Where the scores live: the caller's probabilities view, its workspace,
     * or a buffer of the call's own. */
    clattn_tensor S = {NULL, 0, CLATTN_F32, {B, Hq, Lq, Lk}, {Hq * Lq * Lk, Lq * Lk, Lk, 1}};
    if (params->probs) {
        S = *params->probs;
    } else {
        size_t bytes;
        if ((st = score_bytes(Q, K, &bytes)) != CL_SUCCESS)
            return st;
        if (params->workspace) {
            const clattn_logit_params *lp = &params->logits;
            const clattn_tensor lens = clattn__lengths_view(&params->mask, B);
            const clattn_tensor slopes = clattn__vector_view(lp->alibi_slopes,
                                                             lp->alibi_slopes_offset, Hq);
            const clattn_tensor sinks = clattn__vector_view(lp->sinks, lp->sinks_offset, Hq);
            const clattn_tensor *views[] = {Q,   K,     V,       O,     params->lse,
                                            params->mask.additive, &lens, &slopes, &sinks};
            if ((st = clattn__workspace_check(ctx, params->workspace, params->workspace_offset,
                                              bytes, views, 9)) != CL_SUCCESS)
                return st;
            S.buffer = params->workspace;
            S.offset = params->workspace_offset / sizeof(float);
        } else if (bytes > 0 && (st = clattn__plan_buffer(p, bytes, &S.buffer)) != CL_SUCCESS) {
            return st;
        }
    }
    if ((st = clattn__scores_plan(p, Q, K, &S, params->scale)) == CL_SUCCESS &&
        (st = clattn__mask_plan(p, &S, &params->mask, &params->logits)) == CL_SUCCESS &&
        (st = clattn__softmax_plan(p, &S, &S, params->lse, params->logits.sinks,
                                   params->logits.sinks_offset)) == CL_SUCCESS)
        st = clattn__weighted_sum_plan(p, &S, V, O);
    return st;
}

clattn_status clattn_sdpa_workspace_size(clattn_context *ctx, const clattn_tensor *Q,
                                         const clattn_tensor *K, const clattn_tensor *V,
                                         const clattn_tensor *O, const clattn_sdpa_params *params,
                                         size_t *bytes)
{
    if (!ctx || !bytes)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_sdpa_params p = params ? *params : clattn_sdpa_params_default();
    p.workspace = NULL; /* the question is how much, not whether the given one fits */
    clattn_status st = clattn__sdpa_check(ctx, Q, K, V, O, &p);
    return st != CL_SUCCESS ? st : clattn__sdpa_workspace(ctx, Q, K, V, O, &p, bytes);
}

clattn_status clattn_sdpa(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *Q,
                          const clattn_tensor *K, const clattn_tensor *V, const clattn_tensor *O,
                          const clattn_sdpa_params *params, cl_uint num_wait,
                          const cl_event *wait_list, cl_event *event_out)
{
    const clattn_sdpa_params p = params ? *params : clattn_sdpa_params_default();
    CLATTN_RETURN_PLANNED(ctx, queue, num_wait, wait_list, event_out,
                          clattn__sdpa_plan(&plan_, Q, K, V, O, &p));
}

clattn_status clattn_sdpa_prepare(clattn_context *ctx, const clattn_tensor *Q,
                                  const clattn_tensor *K, const clattn_tensor *V,
                                  const clattn_tensor *O, const clattn_sdpa_params *params)
{
    const clattn_sdpa_params p = params ? *params : clattn_sdpa_params_default();
    CLATTN_RETURN_PREPARED(ctx, clattn__sdpa_plan(&plan_, Q, K, V, O, &p));
}
