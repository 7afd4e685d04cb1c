/* The fused attention path: flash_attention.cl, its variant and block sizes per device. */
#include "steps.h"
#include "tensor.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How the kernel is specialised for a device and head dims. */
typedef struct flash_config {
    int variant; /* 0: CPU (vectors per work-item), 1: GPU (local-memory tiles), 2: CPU decode */
    int block_k; /* keys per block */
    int wg;      /* variant 1: work-items (queries) per work-group */
    int vec;     /* variant 0: vector width along the value dim */
    int rows;    /* variant 0: query rows per weighted-sum pass */
} flash_config;

/* The largest private arrays the kernel keeps per query are HEAD_DIM and VALUE_DIM long. */
#define FLASH_MAX_DIM 512

#define LOG2E_F 1.4426950408889634f

static int pow2_floor(size_t x)
{
    int p = 1;
    while ((size_t)p * 2 <= x && p < 1024)
        p *= 2;
    return p;
}

/* Block sizes: a small table by device type and dims; the context's overrides (params, then
 * environment, resolved at create) take precedence. */
static flash_config choose(const clattn_context *ctx, size_t D, size_t Dv)
{
    const clattn_kernel_config *o = &ctx->kernels;
    flash_config c = {0};
    if (o->flash_variant != CLATTN_FLASH_VARIANT_AUTO)
        c.variant = o->flash_variant == CLATTN_FLASH_VARIANT_CPU ? 0 : 1;
    else
        c.variant = (ctx->info.type & CL_DEVICE_TYPE_CPU) ? 0 : 1;

    if (c.variant == 0) {
        /* Odd value dims are summed one float at a time (VEC 1). */
        c.vec = Dv % 16 == 0 ? 16 : Dv % 8 == 0 ? 8 : Dv % 4 == 0 ? 4 : Dv % 2 == 0 ? 2 : 1;
        /* About 16 vector accumulators for the weighted sum, the register file's half. */
        const size_t nv = Dv / (size_t)c.vec;
        c.rows = pow2_floor(nv >= 16 ? 1 : 16 / nv);
        if (c.rows > 16)
            c.rows = 16;
        c.block_k = o->flash_block_k ? (int)o->flash_block_k : 64;
        c.block_k = (c.block_k + 7) / 8 * 8; /* scores are accumulated 8 keys at a time */
    } else {
        c.wg = pow2_floor(ctx->info.max_work_group_size < 128 ? ctx->info.max_work_group_size : 128);
        if (o->flash_wg)
            c.wg = (int)o->flash_wg;
        /* K and V blocks in at most half the local memory. */
        int bk = 64;
        while (bk > 1 && (D + Dv) * (size_t)bk * sizeof(float) > ctx->info.local_mem_size / 2)
            bk /= 2;
        c.block_k = o->flash_block_k ? (int)o->flash_block_k : bk;
    }
    return c;
}

/* Query heads packed into the CPU variant's 16 lanes: with fewer than 16 queries (decoding),
 * the heads that share a kv head fill the lanes (the largest power of two dividing the group,
 * at most 16), so that K and V are read once for all of them. */
static size_t pack_heads(const flash_config *c, const clattn_tensor *Q, const clattn_tensor *V,
                         size_t rows)
{
    if (c->variant != 0 || rows >= 16 || V->dims[1] == 0)
        return 1;
    const size_t group = Q->dims[1] / V->dims[1];
    size_t g = 1;
    while (g < 16 && group % (g * 2) == 0)
        g *= 2;
    return g;
}

size_t clattn__flash_block_k(const clattn_context *ctx, size_t D, size_t Dv)
{
    return (size_t)choose(ctx, D, Dv).block_k;
}

clattn_status clattn__flash_supports(const clattn_context *ctx, size_t D, size_t Dv,
                                     clattn_dtype dtype)
{
    if (dtype != CLATTN_F32 && dtype != CLATTN_F16 && dtype != CLATTN_BF16 && dtype != CLATTN_Q8)
        return CLATTN_ERROR_UNSUPPORTED_DTYPE;
    (void)ctx;
    return D == 0 || D > FLASH_MAX_DIM || Dv == 0 || Dv > FLASH_MAX_DIM
               ? CLATTN_ERROR_UNSUPPORTED_PATH
               : CL_SUCCESS;
}

int clattn__kv_format(clattn_dtype dtype)
{
    return dtype == CLATTN_Q8 ? 3 : dtype == CLATTN_BF16 ? 2 : dtype == CLATTN_F16 ? 1 : 0;
}

size_t clattn__kv_row_bytes(clattn_dtype dtype, size_t n)
{
    /* prelude.cl's Q8_ROW_BYTES: the values padded to 4 bytes, then the float scale */
    return dtype == CLATTN_Q8 ? (n + 3) / 4 * 4 + sizeof(float) : n * clattn_dtype_size(dtype);
}

/* A packed batch's offsets (validated by sdpa) into a buffer of the call's own: num_seqs + 1
 * query offsets, then as many key offsets; *seqs and *rows get the sequence count and the most
 * queries any sequence has. */
static clattn_status varlen_offsets(clattn_plan *p, const clattn_sdpa_params *params,
                                    size_t *seqs, size_t *rows, cl_mem *buf)
{
    const size_t n = params->num_seqs;
    const size_t *cq = params->cu_seqlens_q, *ck = params->cu_seqlens_k ? params->cu_seqlens_k : cq;
    cl_int *host = malloc(2 * (n + 1) * sizeof *host);
    if (!host)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    size_t most = 0;
    for (size_t b = 0; b <= n; b++) { /* each at most Lq or Lk, which fit an int */
        host[b] = (cl_int)cq[b];
        host[n + 1 + b] = (cl_int)ck[b];
        if (b < n && cq[b + 1] - cq[b] > most)
            most = cq[b + 1] - cq[b];
    }
    clattn_status st = clattn__plan_buffer_copy(p, 2 * (n + 1) * sizeof *host, host, buf);
    free(host);
    *seqs = n;
    *rows = most;
    return st;
}

bool clattn__flash_rules_out(clattn_status st)
{
    return st == CLATTN_ERROR_UNSUPPORTED_PATH || st == CLATTN_ERROR_UNSUPPORTED_LAYOUT ||
           st == CLATTN_ERROR_UNSUPPORTED_DEVICE || st == CLATTN_ERROR_BUILD_FAILED;
}

clattn_status clattn__flash_plan(clattn_plan *p, const clattn_tensor *Q, const clattn_tensor *K,
                                 const clattn_tensor *V, const clattn_tensor *O,
                                 const clattn_sdpa_params *params, const clattn_flash_split *split,
                                 const clattn_rope_params *rope, bool keys_batched,
                                 const clattn_flash_pages *pages)
{
    if (params->probs)
        return CLATTN_ERROR_UNSUPPORTED_PATH; /* the fused kernel never forms P */
    const size_t D = Q->dims[3], Dv = V->dims[3], Hq = Q->dims[1];
    /* K and V may be stored as bfloat16 or int8 rows (a KV cache); Q and O are float or half. */
    if (Q->dtype == CLATTN_BF16 || O->dtype == CLATTN_BF16 || Q->dtype == CLATTN_Q8 ||
        O->dtype == CLATTN_Q8)
        return CLATTN_ERROR_UNSUPPORTED_DTYPE;
    clattn_status st = clattn__flash_supports(p->ctx, D, Dv, V->dtype);
    if (st != CL_SUCCESS)
        return st;
    const size_t Lk = pages ? pages->keys : K->dims[2];
    if (Q->dims[2] > INT_MAX || Lk > INT_MAX)
        return CLATTN_ERROR_UNSUPPORTED_PATH;
    const clattn_tensor *all[] = {Q, K, V, O};
    for (int t = 0; t < 4; t++) /* rows are read and written as contiguous vectors */
        if (all[t]->dims[3] > 1 && all[t]->strides[3] != 1)
            return CLATTN_ERROR_UNSUPPORTED_LAYOUT;

    /* A packed batch: its offsets (queries, then keys) as int32 on the device; the launch
     * covers the longest sequence's queries. */
    size_t seqs = Q->dims[0], rows = Q->dims[2];
    cl_mem cu = NULL;
    if (params->cu_seqlens_q && (st = varlen_offsets(p, params, &seqs, &rows, &cu)) != CL_SUCCESS)
        return st;
    flash_config c = choose(p->ctx, D, Dv);
    /* One query per sequence on a CPU (decoding): the decode layout, a work-item per kv head
     * reading (and converting) each K and V row once, as vectors, for its whole group of query
     * heads. Where it sums 16 keys' dot products at once (vectors of 16 along the head dim,
     * blocks of a multiple of 16 keys) it is faster than variant 0 for every storage format;
     * one key at a time, only for those that convert (BENCHMARKS.md, 2026-11-29). */
    const size_t group = K->dims[1] ? Hq / K->dims[1] : 1;
    const bool key_lanes = c.vec == 16 && c.block_k % 16 == 0;
    if (c.variant == 0 && rows == 1 && D == Dv && group <= 16 && !params->mask.additive &&
        (key_lanes || V->dtype != CLATTN_F32))
        c.variant = 2;
    const size_t pack = c.variant == 2 ? group : pack_heads(&c, Q, V, rows);
    const clattn_mask_params *m = &params->mask;
    const clattn_logit_params *lp = &params->logits;
    char opts[512];
    snprintf(opts, sizeof opts,
             "-DHEAD_DIM=%zu -DVALUE_DIM=%zu -DVARIANT=%d -DBLOCK_K=%d -DWG=%d -DVEC=%d -DROWS=%d "
             "-DCAUSAL=%d -DHAS_ADDITIVE=%d -DHAS_LENGTHS=%d -DHAS_LSE=%d -DHALF_QO=%d -DKV_FMT=%d "
             "-DPACK=%zu -DHAS_WINDOW=%d -DHAS_SOFTCAP=%d -DHAS_ALIBI=%d -DHAS_SINKS=%d "
             "-DHAS_ROPE=%d -DROPE_GPTJ=%d -DVARLEN=%d -DGROUP=%zu -DPAGE_SIZE=%zu",
             D, Dv, c.variant, c.block_k, c.wg ? c.wg : 1, c.vec ? c.vec : 16,
             c.rows ? c.rows : 1, (int)m->causal, m->additive != NULL, m->key_lengths != NULL,
             params->lse != NULL, Q->dtype == CLATTN_F16,
             clattn__kv_format(V->dtype), pack,
             clattn__window_on(m), lp->softcap > 0.0f, lp->alibi_slopes != NULL,
             lp->sinks != NULL, rope != NULL, rope && rope->layout == CLATTN_ROPE_GPTJ,
             cu == NULL ? 0 : keys_batched ? 2 : 1, c.variant == 2 ? group : 0,
             pages ? pages->page_size : 0);

    const clattn_flash_split one = {0, 1, 0, 0};
    if (!split)
        split = &one;
    const float scale = isnan(params->scale) ? 1.0f / sqrtf((float)D) : params->scale;
    clattn_kargs args = {0};
    const clattn_tensor *views[] = {Q, K, V, O, params->lse, m->additive};
    for (int t = 0; t < 6; t++)
        clattn__arg_view(&args, views[t]);
    clattn__arg_mem(&args, m->key_lengths);
    clattn__arg_ulong(&args, m->key_lengths_offset);
    clattn__arg_ulong(&args, Hq);
    clattn__arg_ulong(&args, Hq / K->dims[1]);
    clattn__arg_ulong(&args, Q->dims[2]);
    clattn__arg_ulong(&args, Lk);
    /* Scores in base 2 (exp2): through q, or, with soft-capping, through the cap. */
    clattn__arg_float(&args, lp->softcap > 0.0f ? scale : scale * LOG2E_F);
    clattn__arg_ulong(&args, split->keys);
    clattn__arg_ulong(&args, split->o_stride);
    clattn__arg_ulong(&args, split->lse_stride);
    clattn__arg_window(&args, m);
    clattn__arg_softcap(&args, lp, LOG2E_F);
    clattn__arg_vector(&args, lp->alibi_slopes, lp->alibi_slopes_offset);
    clattn__arg_vector(&args, lp->sinks, lp->sinks_offset);
    clattn__arg_rope(&args, rope, rope && rope->rotary_dim ? rope->rotary_dim : D);
    clattn__arg_mem(&args, cu);
    clattn__arg_ulong(&args, seqs + 1);
    clattn__arg_mem(&args, pages ? pages->table : NULL);
    clattn__arg_ulong(&args, pages ? pages->offset : 0);
    clattn__arg_ulong(&args, pages ? pages->stride : 0);

    const size_t per = c.variant == 0 ? 16 / pack : c.variant == 2 ? 1 : (size_t)c.wg;
    const size_t blocks = (rows + per - 1) / per;
    const size_t global[3] = {c.variant == 1 ? blocks * per : blocks, seqs * Hq / pack,
                              split->count};
    const size_t local[3] = {c.variant == 1 ? per : 1, 1, 1};
    return clattn__plan_kernel(p, "flash_attention", opts, "flash_attention", &args, 3, global,
                               local);
}
