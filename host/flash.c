/* The fused attention path: flash_attention.cl, its variant and block sizes per device. */
#include "program.h"
#include "steps.h"
#include "tensor.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How the kernel is specialised for a device and head dims. */
typedef struct flash_config {
    int variant; /* 0: CPU (vectors per work-item), 1: GPU (local-memory tiles) */
    int block_k; /* keys per block */
    int wg;      /* variant 1: work-items (queries) per work-group */
    int vec;     /* variant 0: vector width along the value dim */
    int rows;    /* variant 0: query rows per weighted-sum pass */
} flash_config;

/* The largest private arrays the kernel keeps per query are HEAD_DIM and VALUE_DIM long. */
#define FLASH_MAX_DIM 256

static int env_int(const char *name, int fallback)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return fallback;
    char *end;
    long v = strtol(s, &end, 10);
    return (*end == '\0' && v > 0 && v <= 4096) ? (int)v : fallback;
}

static int pow2_floor(size_t x)
{
    int p = 1;
    while ((size_t)p * 2 <= x && p < 1024)
        p *= 2;
    return p;
}

/* Block sizes: a small table by device type and dims, each overridable from the environment for
 * tuning (CLATTN_FLASH_VARIANT=cpu|gpu, CLATTN_FLASH_BLOCK_K, CLATTN_FLASH_WG). */
static flash_config choose(const clattn_context *ctx, size_t D, size_t Dv)
{
    flash_config c = {0};
    const char *var = getenv("CLATTN_FLASH_VARIANT");
    if (var && strcmp(var, "cpu") == 0)
        c.variant = 0;
    else if (var && strcmp(var, "gpu") == 0)
        c.variant = 1;
    else
        c.variant = (ctx->info.type & CL_DEVICE_TYPE_CPU) ? 0 : 1;

    if (c.variant == 0) {
        c.vec = Dv % 16 == 0 ? 16 : Dv % 8 == 0 ? 8 : Dv % 4 == 0 ? 4 : 2;
        /* About 16 vector accumulators for the weighted sum, the register file's half. */
        size_t nv = Dv / (size_t)c.vec; /* 0 for Dv = 1, which flash_check then refuses */
        c.rows = pow2_floor(nv >= 16 || nv == 0 ? 1 : 16 / nv);
        if (c.rows > 16)
            c.rows = 16;
        c.block_k = env_int("CLATTN_FLASH_BLOCK_K", 64);
        c.block_k = (c.block_k + 7) / 8 * 8; /* scores are accumulated 8 keys at a time */
    } else {
        c.wg = pow2_floor(ctx->info.max_work_group_size < 128 ? ctx->info.max_work_group_size : 128);
        c.wg = env_int("CLATTN_FLASH_WG", c.wg);
        /* K and V blocks in at most half the local memory. */
        int bk = 64;
        while (bk > 1 && (D + Dv) * (size_t)bk * sizeof(float) > ctx->info.local_mem_size / 2)
            bk /= 2;
        c.block_k = env_int("CLATTN_FLASH_BLOCK_K", bk);
    }
    (void)D;
    return c;
}

/* Query heads packed into the CPU variant's 16 lanes: with fewer than 16 queries (decoding),
 * the heads that share a kv head fill the lanes (the largest power of two dividing the group,
 * at most 16), so that K and V are read once for all of them. */
static size_t pack_heads(const flash_config *c, const clattn_tensor *Q, const clattn_tensor *V)
{
    if (c->variant != 0 || Q->dims[2] >= 16 || V->dims[1] == 0)
        return 1;
    const size_t group = Q->dims[1] / V->dims[1];
    size_t g = 1;
    while (g < 16 && group % (g * 2) == 0)
        g *= 2;
    return g;
}

static void options(const flash_config *c, const clattn_tensor *Q, const clattn_tensor *V,
                    const clattn_sdpa_params *p, bool lse, char *buf, size_t cap)
{
    const clattn_mask_params *m = &p->mask;
    snprintf(buf, cap,
             "-DHEAD_DIM=%zu -DVALUE_DIM=%zu -DVARIANT=%d -DBLOCK_K=%d -DWG=%d -DVEC=%d -DROWS=%d "
             "-DCAUSAL=%d -DHAS_ADDITIVE=%d -DHAS_LENGTHS=%d -DHAS_LSE=%d -DHALF_QO=%d -DHALF_KV=%d "
             "-DPACK=%zu",
             Q->dims[3], V->dims[3], c->variant, c->block_k, c->wg ? c->wg : 1, c->vec ? c->vec : 16,
             c->rows ? c->rows : 1, (int)m->causal, m->additive != NULL, m->key_lengths != NULL,
             lse ? 1 : 0, Q->dtype == CLATTN_F16, V->dtype == CLATTN_F16, pack_heads(c, Q, V));
}

int clattn__flash_block_k(const clattn_context *ctx, size_t D, size_t Dv)
{
    return choose(ctx, D, Dv).block_k;
}

clattn_status clattn__flash_check(clattn_context *ctx, const clattn_tensor *Q,
                                  const clattn_tensor *K, const clattn_tensor *V,
                                  const clattn_tensor *O, const clattn_sdpa_params *p)
{
    if (p->probs)
        return CLATTN_ERROR_UNSUPPORTED_PATH; /* the fused kernel never forms P */
    const size_t D = Q->dims[3], Dv = V->dims[3];
    if (D == 0 || D > FLASH_MAX_DIM || Dv == 0 || Dv > FLASH_MAX_DIM ||
        Q->dims[2] > INT_MAX || K->dims[2] > INT_MAX)
        return CLATTN_ERROR_UNSUPPORTED_PATH;
    const clattn_tensor *all[] = {Q, K, V, O};
    for (int t = 0; t < 4; t++) /* rows are read and written as contiguous vectors */
        if (all[t]->dims[3] > 1 && all[t]->strides[3] != 1)
            return CLATTN_ERROR_UNSUPPORTED_LAYOUT;
    flash_config c = choose(ctx, D, Dv);
    if (c.variant == 0 && Dv % 2 != 0)
        return CLATTN_ERROR_UNSUPPORTED_PATH;
    char opts[320];
    options(&c, Q, V, p, p->lse != NULL, opts, sizeof opts);
    size_t wg = 0;
    clattn_status st = clattn__kernel_work_group_size(ctx, "flash_attention", "flash_attention",
                                                      opts, &wg);
    if (st == CL_SUCCESS && wg < (size_t)(c.variant == 1 ? c.wg : 1))
        st = CLATTN_ERROR_UNSUPPORTED_DEVICE;
    return st;
}

clattn_status clattn__flash_enqueue(clattn_context *ctx, cl_command_queue queue,
                                    const clattn_tensor *Q, const clattn_tensor *K,
                                    const clattn_tensor *V, const clattn_tensor *O,
                                    const clattn_sdpa_params *p, const clattn_flash_split *split,
                                    cl_uint nw, const cl_event *wl, cl_event *ev)
{
    const size_t D = Q->dims[3], Dv = V->dims[3], Hq = Q->dims[1];
    const flash_config c = choose(ctx, D, Dv);
    char opts[320];
    options(&c, Q, V, p, p->lse != NULL, opts, sizeof opts);
    const clattn_flash_split none_split = {0, 1, 0, 0};
    if (!split)
        split = &none_split;
    cl_ulong split_keys = split->keys, o_split = split->o_stride, l_split = split->lse_stride;
    float scale = isnan(p->scale) ? 1.0f / sqrtf((float)D) : p->scale;
    float qscale = scale * 1.4426950408889634f; /* scores in base 2: exp2 in the kernel */

    const clattn_tensor none = {0};
    const clattn_tensor *l = p->lse ? p->lse : &none;
    const clattn_tensor *m = p->mask.additive ? p->mask.additive : &none;
    cl_ulong q_off = Q->offset, qs0 = clattn__stride(Q, 0), qs1 = clattn__stride(Q, 1), qs2 = clattn__stride(Q, 2);
    cl_ulong k_off = K->offset, ks0 = clattn__stride(K, 0), ks1 = clattn__stride(K, 1), ks2 = clattn__stride(K, 2);
    cl_ulong v_off = V->offset, vs0 = clattn__stride(V, 0), vs1 = clattn__stride(V, 1), vs2 = clattn__stride(V, 2);
    cl_ulong o_off = O->offset, os0 = clattn__stride(O, 0), os1 = clattn__stride(O, 1), os2 = clattn__stride(O, 2);
    cl_ulong l_off = l->offset, ls0 = clattn__stride(l, 0), ls1 = clattn__stride(l, 1), ls2 = clattn__stride(l, 2);
    cl_ulong m_off = m->offset, ms0 = clattn__stride(m, 0), ms1 = clattn__stride(m, 1),
             ms2 = clattn__stride(m, 2), ms3 = clattn__stride(m, 3);
    cl_ulong len_off = p->mask.key_lengths_offset, H = Hq, group = Hq / K->dims[1];
    cl_ulong Lq = Q->dims[2], Lk = K->dims[2];
    const clattn_karg args[] = {
        CLATTN_KARG(Q->buffer), CLATTN_KARG(q_off), CLATTN_KARG(qs0), CLATTN_KARG(qs1), CLATTN_KARG(qs2),
        CLATTN_KARG(K->buffer), CLATTN_KARG(k_off), CLATTN_KARG(ks0), CLATTN_KARG(ks1), CLATTN_KARG(ks2),
        CLATTN_KARG(V->buffer), CLATTN_KARG(v_off), CLATTN_KARG(vs0), CLATTN_KARG(vs1), CLATTN_KARG(vs2),
        CLATTN_KARG(O->buffer), CLATTN_KARG(o_off), CLATTN_KARG(os0), CLATTN_KARG(os1), CLATTN_KARG(os2),
        CLATTN_KARG(l->buffer), CLATTN_KARG(l_off), CLATTN_KARG(ls0), CLATTN_KARG(ls1), CLATTN_KARG(ls2),
        CLATTN_KARG(m->buffer), CLATTN_KARG(m_off), CLATTN_KARG(ms0), CLATTN_KARG(ms1), CLATTN_KARG(ms2),
        CLATTN_KARG(ms3),
        CLATTN_KARG(p->mask.key_lengths), CLATTN_KARG(len_off), CLATTN_KARG(H), CLATTN_KARG(group),
        CLATTN_KARG(Lq), CLATTN_KARG(Lk), CLATTN_KARG(qscale), CLATTN_KARG(split_keys),
        CLATTN_KARG(o_split), CLATTN_KARG(l_split)};
    const size_t pack = pack_heads(&c, Q, V);
    const size_t per = c.variant == 0 ? 16 / pack : (size_t)c.wg;
    const size_t blocks = (Q->dims[2] + per - 1) / per;
    const size_t global[3] = {c.variant == 0 ? blocks : blocks * per, Q->dims[0] * Hq / pack,
                              split->count};
    const size_t local[3] = {c.variant == 0 ? 1 : per, 1, 1};
    return clattn__launch(ctx, queue, "flash_attention", "flash_attention", opts, 3, global, local,
                          args, sizeof args / sizeof args[0], nw, wl, ev);
}
