/* KV cache for decoding: device storage for K and V per sequence and head, appends straight from
 * the caller's tensors, and attention over the cache through the fused kernel, optionally split
 * over the keys and merged by log-sum-exp (flash-decoding). */
#include "program.h"
#include "steps.h"
#include "tensor.h"

#include <stdlib.h>
#include <string.h>

struct clattn_kv_cache {
    clattn_context *ctx;
    size_t B, Hkv, D, cap;
    clattn_dtype dtype;
    cl_mem k, v;     /* [B, Hkv, cap, D] each */
    cl_mem lengths;  /* int32 [B], what attention reads */
    size_t *len;     /* the same on the host, for capacity checks */
};

clattn_kv_cache_params clattn_kv_cache_params_default(void)
{
    clattn_kv_cache_params p;
    memset(&p, 0, sizeof p);
    p.dtype = CLATTN_F32;
    return p;
}

clattn_kv_attend_params clattn_kv_attend_params_default(void)
{
    clattn_kv_attend_params p;
    memset(&p, 0, sizeof p);
    p.scale = CLATTN_SCALE_DEFAULT;
    return p;
}

void clattn_kv_cache_destroy(clattn_kv_cache **cache)
{
    if (!cache || !*cache)
        return;
    clattn_kv_cache *c = *cache;
    if (c->k)
        clReleaseMemObject(c->k);
    if (c->v)
        clReleaseMemObject(c->v);
    if (c->lengths)
        clReleaseMemObject(c->lengths);
    free(c->len);
    free(c);
    *cache = NULL;
}

clattn_status clattn_kv_cache_create(clattn_context *ctx, const clattn_kv_cache_params *p,
                                     clattn_kv_cache **out)
{
    if (!out)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    if (!ctx || !p)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (!CLATTN_RESERVED_ZERO(p))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (p->dtype != CLATTN_F32 && p->dtype != CLATTN_F16)
        return CLATTN_ERROR_UNSUPPORTED_DTYPE;
    if (p->batch == 0 || p->num_kv_heads == 0 || p->head_dim == 0 || p->capacity == 0 ||
        p->capacity > 0x7fffffff)
        return CLATTN_ERROR_INVALID_SHAPE;
    /* Attention over the cache is the fused kernel's: head dims it takes (even, at most 256). */
    if (p->head_dim > 256 || p->head_dim % 2 != 0)
        return CLATTN_ERROR_UNSUPPORTED_PATH;
    size_t bytes = clattn_dtype_size(p->dtype);
    if (!clattn__mul(bytes, p->batch, &bytes) || !clattn__mul(bytes, p->num_kv_heads, &bytes) ||
        !clattn__mul(bytes, p->capacity, &bytes) || !clattn__mul(bytes, p->head_dim, &bytes))
        return CLATTN_ERROR_SIZE_OVERFLOW;
    if (bytes > ctx->info.max_mem_alloc_size)
        return CLATTN_ERROR_ALLOCATION_TOO_LARGE;
    clattn_status st = clattn__program_prepare(ctx, "kv_append",
                                               p->dtype == CLATTN_F16 ? "-DELEM=ushort" : "-DELEM=float");
    if (st != CL_SUCCESS)
        return st;

    clattn_kv_cache *c = calloc(1, sizeof *c);
    if (!c || !(c->len = calloc(p->batch, sizeof *c->len))) {
        free(c);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    c->ctx = ctx;
    c->B = p->batch;
    c->Hkv = p->num_kv_heads;
    c->D = p->head_dim;
    c->cap = p->capacity;
    c->dtype = p->dtype;
    int *zeros = calloc(p->batch, sizeof *zeros);
    cl_int err = zeros ? CL_SUCCESS : CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    if (err == CL_SUCCESS)
        c->k = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err == CL_SUCCESS)
        c->v = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err == CL_SUCCESS)
        c->lengths = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                    p->batch * sizeof(int), zeros, &err);
    free(zeros);
    if (err != CL_SUCCESS) {
        clattn_kv_cache_destroy(&c);
        return err;
    }
    *out = c;
    return CL_SUCCESS;
}

size_t clattn_kv_cache_length(const clattn_kv_cache *c, size_t b)
{
    return c && b < c->B ? c->len[b] : 0;
}

static clattn_status check_new(const clattn_kv_cache *c, const clattn_tensor *t)
{
    if (!t)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (t->dtype != c->dtype)
        return CLATTN_ERROR_UNSUPPORTED_DTYPE;
    clattn_status st = clattn__view_check_f16(c->ctx, t, CLATTN_VIEW_INPUT);
    if (st != CL_SUCCESS)
        return st;
    return (t->dims[0] == c->B && t->dims[1] == c->Hkv && t->dims[3] == c->D)
               ? CL_SUCCESS
               : CLATTN_ERROR_INVALID_SHAPE;
}

clattn_status clattn_kv_cache_append(clattn_kv_cache *c, cl_command_queue queue,
                                     const clattn_tensor *K, const clattn_tensor *V,
                                     const size_t *counts, cl_uint num_wait,
                                     const cl_event *wait_list, cl_event *event_out)
{
    if (!c)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_context *ctx = c->ctx;
    clattn_status st = clattn__check_call(ctx, queue, num_wait, wait_list);
    if (st != CL_SUCCESS || (st = check_new(c, K)) != CL_SUCCESS || (st = check_new(c, V)) != CL_SUCCESS)
        return st;
    const size_t T = K->dims[2];
    if (V->dims[2] != T)
        return CLATTN_ERROR_INVALID_SHAPE;
    for (size_t b = 0; b < c->B; b++) {
        const size_t n = counts ? counts[b] : T;
        if (n > T)
            return CLATTN_ERROR_INVALID_SHAPE;
        if (n > c->cap - c->len[b])
            return CLATTN_ERROR_CACHE_FULL;
    }
    const char *opts = c->dtype == CLATTN_F16 ? "-DELEM=ushort" : "-DELEM=float";

    /* One launch per sequence that gains tokens, each writing its new length last. */
    clattn_chain chain = clattn__chain_start(num_wait, wait_list);
    for (size_t b = 0; b < c->B && st == CL_SUCCESS; b++) {
        const cl_uint n = (cl_uint)(counts ? counts[b] : T);
        if (n == 0)
            continue;
        cl_ulong k_off = K->offset + b * K->strides[0], ks1 = clattn__stride(K, 1),
                 ks2 = clattn__stride(K, 2), ks3 = clattn__stride(K, 3);
        cl_ulong v_off = V->offset + b * V->strides[0], vs1 = clattn__stride(V, 1),
                 vs2 = clattn__stride(V, 2), vs3 = clattn__stride(V, 3);
        cl_ulong c_off = b * c->Hkv * c->cap * c->D, cs1 = c->cap * c->D, cs2 = c->D;
        cl_ulong start = c->len[b], bb = b;
        const clattn_karg args[] = {
            CLATTN_KARG(K->buffer), CLATTN_KARG(k_off), CLATTN_KARG(ks1), CLATTN_KARG(ks2), CLATTN_KARG(ks3),
            CLATTN_KARG(V->buffer), CLATTN_KARG(v_off), CLATTN_KARG(vs1), CLATTN_KARG(vs2), CLATTN_KARG(vs3),
            CLATTN_KARG(c->k), CLATTN_KARG(c->v), CLATTN_KARG(c_off), CLATTN_KARG(cs1), CLATTN_KARG(cs2),
            CLATTN_KARG(start), CLATTN_KARG(n), CLATTN_KARG(c->lengths), CLATTN_KARG(bb)};
        const size_t global[3] = {c->D, n, c->Hkv};
        CLATTN_STEP(st, chain, clattn__launch(ctx, queue, "kv_append", "kv_append", opts, 3,
                                              global, NULL, args, sizeof args / sizeof args[0],
                                              chain.nw, chain.wl, &chain.next));
        if (st == CL_SUCCESS)
            c->len[b] += n;
    }
    if (st == CL_SUCCESS && !chain.last) /* nothing appended */
        st = clattn__no_op(queue, num_wait, wait_list, event_out);
    clattn__chain_end(&chain, st == CL_SUCCESS ? event_out : NULL);
    return st;
}

/* Splits for flash-decoding: enough work-groups to fill the device, each split at least 512
 * keys, at most 32 splits. */
static size_t auto_splits(const clattn_kv_cache *c, size_t groups, size_t max_len)
{
    const size_t want = (size_t)c->ctx->info.compute_units * 4;
    size_t s = groups >= want ? 1 : (want + groups - 1) / groups;
    size_t by_len = max_len / 512;
    if (s > by_len)
        s = by_len;
    if (s > 32)
        s = 32;
    return s ? s : 1;
}

clattn_status clattn_kv_cache_attend(clattn_kv_cache *c, cl_command_queue queue,
                                     const clattn_tensor *Q, const clattn_tensor *O,
                                     const clattn_kv_attend_params *params, cl_uint num_wait,
                                     const cl_event *wait_list, cl_event *event_out)
{
    if (!c)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_context *ctx = c->ctx;
    const clattn_kv_attend_params ap = params ? *params : clattn_kv_attend_params_default();
    clattn_status st = clattn__check_call(ctx, queue, num_wait, wait_list);
    if (st != CL_SUCCESS)
        return st;
    if (!CLATTN_RESERVED_ZERO(&ap))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if ((st = clattn__view_check(ctx, Q, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check(ctx, O, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS ||
        (ap.lse && (st = clattn__view_check(ctx, ap.lse, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS))
        return st;
    const size_t B = Q->dims[0], Hq = Q->dims[1], Lq = Q->dims[2];
    if (B != c->B || Q->dims[3] != c->D || O->dims[0] != B || O->dims[1] != Hq ||
        O->dims[2] != Lq || O->dims[3] != c->D)
        return CLATTN_ERROR_INVALID_SHAPE;
    if (ap.lse && (ap.lse->dims[0] != B || ap.lse->dims[1] != Hq || ap.lse->dims[2] != Lq ||
                   ap.lse->dims[3] != 1))
        return CLATTN_ERROR_INVALID_SHAPE;
    if (Hq % c->Hkv != 0)
        return CLATTN_ERROR_HEAD_MISMATCH;
    if (Hq == 0 || Lq == 0)
        return clattn__no_op(queue, num_wait, wait_list, event_out);

    clattn_tensor K = clattn_tensor_bhtd(c->k, 0, c->B, c->Hkv, c->cap, c->D);
    clattn_tensor V = clattn_tensor_bhtd(c->v, 0, c->B, c->Hkv, c->cap, c->D);
    K.dtype = V.dtype = c->dtype;
    size_t max_len = 0;
    for (size_t b = 0; b < B; b++)
        max_len = c->len[b] > max_len ? c->len[b] : max_len;
    const size_t groups = B * Hq * ((Lq + 15) / 16);
    size_t S = ap.splits ? ap.splits : auto_splits(c, groups, max_len);
    const size_t bk = (size_t)clattn__flash_block_k(ctx, c->D, c->D);
    /* Whole key blocks per split, over the keys the longest sequence holds. */
    const size_t blocks = (max_len + bk - 1) / bk;
    if (S > blocks)
        S = blocks ? blocks : 1;
    const size_t per = (blocks + S - 1) / S * bk;
    S = per ? (max_len + per - 1) / per : 1;
    if (S == 0)
        S = 1;

    clattn_sdpa_params p = clattn_sdpa_params_default();
    p.scale = ap.scale;
    p.mask.causal = CLATTN_CAUSAL_BOTTOM_RIGHT;
    p.mask.key_lengths = c->lengths;
    if (S == 1) {
        p.lse = ap.lse;
        if ((st = clattn__flash_check(ctx, Q, &K, &V, O, &p)) != CL_SUCCESS)
            return st;
        return clattn__flash_enqueue(ctx, queue, Q, &K, &V, O, &p, NULL, num_wait, wait_list,
                                     event_out);
    }

    /* S partial results [S][B, Hq, Lq, D] and their lse, then S - 1 merges into O. */
    const size_t n_o = B * Hq * Lq * c->D, n_l = B * Hq * Lq;
    size_t bytes;
    if (!clattn__mul(S, n_o + n_l, &bytes) || !clattn__mul(bytes, sizeof(float), &bytes))
        return CLATTN_ERROR_SIZE_OVERFLOW;
    if (bytes > ctx->info.max_mem_alloc_size)
        return CLATTN_ERROR_ALLOCATION_TOO_LARGE;
    cl_int err;
    cl_mem scratch = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err != CL_SUCCESS)
        return err;
    clattn_tensor part = clattn_tensor_bhtd(scratch, 0, B, Hq, Lq, c->D);
    clattn_tensor part_lse = clattn_tensor_bhtd(scratch, S * n_o, B, Hq, Lq, 1);
    p.lse = &part_lse;
    st = clattn__flash_check(ctx, Q, &K, &V, &part, &p);
    /* The merges' kernels too, before anything is enqueued. */
    if (st == CL_SUCCESS)
        st = clattn__program_prepare(ctx, "merge", "-DHAS_LSE=1");
    if (st == CL_SUCCESS)
        st = clattn__program_prepare(ctx, "merge", "-DHAS_LSE=0");
    const clattn_flash_split split = {per, S, n_o, n_l};
    clattn_chain chain = clattn__chain_start(num_wait, wait_list);
    CLATTN_STEP(st, chain, clattn__flash_enqueue(ctx, queue, Q, &K, &V, &part, &p, &split,
                                                 chain.nw, chain.wl, &chain.next));
    for (size_t s = 1; s < S && st == CL_SUCCESS; s++) {
        clattn_tensor ps = part, ls = part_lse;
        ps.offset += s * n_o;
        ls.offset += s * n_l;
        const bool last = s + 1 == S;
        CLATTN_STEP(st, chain, clattn_merge(ctx, queue, &part, &part_lse, &ps, &ls,
                                            last ? O : &part, last ? ap.lse : &part_lse,
                                            chain.nw, chain.wl, &chain.next));
    }
    clReleaseMemObject(scratch);
    clattn__chain_end(&chain, st == CL_SUCCESS ? event_out : NULL);
    return st;
}
