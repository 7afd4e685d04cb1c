/* KV cache for decoding: device storage for K and V per sequence and head (contiguous, or pages
 * of a pool with the bookkeeping in kv_pages.c), appends straight from the caller's tensors, and
 * attention over the cache through the fused kernel, optionally split over the keys and merged
 * by log-sum-exp in one launch (flash-decoding). */
#include "kv_pages.h"
#include "steps.h"
#include "tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct clattn_kv_cache {
    clattn_context *ctx;
    size_t B, Hkv, D, cap;
    clattn_dtype dtype;
    cl_mem k, v;     /* [B, Hkv, cap, D] each; paged: [Hkv, num_pages, page_size, D] */
    cl_mem lengths;  /* int32 [B], what attention reads (contiguous; paged caches upload theirs
                      * with their block tables at every call) */
    bool paged;
    clattn_kv_pages pg;
    size_t *len;     /* the same on the host, for capacity checks */
    cl_mem scratch;  /* split partial results, kept between calls; grown when needed */
    size_t scratch_bytes;
    /* What the call being planned changes once it is enqueued (its plan's commit). */
    size_t *pending;     /* tokens each sequence gains */
    cl_mem grown;        /* a larger scratch, and its size */
    size_t grown_bytes;
    /* RoPE the cache applies (has_rope), its params (inv_freq retained) and rotary dim. */
    bool has_rope;
    clattn_rope_params rope;
    size_t rotary;
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
    p.window_left = CLATTN_WINDOW_UNBOUNDED;
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
    if (c->scratch)
        clReleaseMemObject(c->scratch);
    if (c->has_rope && c->rope.inv_freq)
        clReleaseMemObject(c->rope.inv_freq);
    free(c->len);
    free(c->pending);
    clattn__kv_pages_free(&c->pg);
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
    if (p->dtype != CLATTN_F32 && p->dtype != CLATTN_F16 && p->dtype != CLATTN_BF16 &&
        p->dtype != CLATTN_Q8)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (p->batch == 0 || p->num_kv_heads == 0 || p->head_dim == 0 || p->capacity == 0 ||
        p->capacity > 0x7fffffff)
        return CLATTN_ERROR_INVALID_SHAPE;
    /* Paged: pages and their numbers fit the kernels' int32 tables. */
    const bool paged = p->page_size > 0;
    if (paged ? p->num_pages == 0 || p->num_pages > 0x7fffffff || p->page_size > 0x7fffffff
              : p->num_pages != 0)
        return CLATTN_ERROR_INVALID_SHAPE;
    /* Attention over the cache is the fused kernel's: the head dims it takes here. */
    clattn_status st = clattn__flash_supports(ctx, p->head_dim, p->head_dim, p->dtype);
    if (st != CL_SUCCESS)
        return st;
    /* A head's rows of a page, in bytes, fit an int too (the copy on write counts them). */
    if (paged && p->page_size > 0x7fffffff / clattn__kv_row_bytes(p->dtype, p->head_dim))
        return CLATTN_ERROR_INVALID_SHAPE;
    size_t rotary = 0;
    if (p->rope && (p->rope->positions ||
                    (st = clattn__rope_check(ctx, p->rope, p->head_dim, p->batch, &rotary)) !=
                        CL_SUCCESS))
        return p->rope->positions ? CLATTN_ERROR_INVALID_ARGUMENT : st;
    size_t bytes = clattn__kv_row_bytes(p->dtype, p->head_dim);
    if (!clattn__mul(bytes, paged ? p->num_pages : p->batch, &bytes) ||
        !clattn__mul(bytes, p->num_kv_heads, &bytes) ||
        !clattn__mul(bytes, paged ? p->page_size : p->capacity, &bytes))
        return CLATTN_ERROR_SIZE_OVERFLOW;
    if (bytes > ctx->info.max_mem_alloc_size)
        return CLATTN_ERROR_ALLOCATION_TOO_LARGE;

    clattn_kv_cache *c = calloc(1, sizeof *c);
    if (!c || !(c->len = calloc(p->batch, sizeof *c->len)) ||
        !(c->pending = calloc(p->batch, sizeof *c->pending))) {
        if (c)
            free(c->len);
        free(c);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    c->ctx = ctx;
    c->B = p->batch;
    c->Hkv = p->num_kv_heads;
    c->D = p->head_dim;
    c->cap = p->capacity;
    c->dtype = p->dtype;
    c->paged = paged;
    if (paged && (st = clattn__kv_pages_init(&c->pg, p->batch, p->page_size, p->num_pages,
                                             p->capacity)) != CL_SUCCESS) {
        free(c->len);
        free(c->pending);
        free(c);
        return st;
    }
    if (p->rope) {
        c->rope = *p->rope;
        c->rotary = rotary;
    }
    int *zeros = calloc(p->batch, sizeof *zeros);
    cl_int err = zeros ? CL_SUCCESS : CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    if (err == CL_SUCCESS)
        c->k = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err == CL_SUCCESS)
        c->v = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err == CL_SUCCESS && !paged)
        c->lengths = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                    p->batch * sizeof(int), zeros, &err);
    free(zeros);
    if (err == CL_SUCCESS && p->rope && p->rope->inv_freq)
        err = clRetainMemObject(p->rope->inv_freq);
    if (err != CL_SUCCESS) {
        clattn_kv_cache_destroy(&c);
        return err;
    }
    c->has_rope = p->rope != NULL; /* from here on destroy releases inv_freq */
    *out = c;
    return CL_SUCCESS;
}

size_t clattn_kv_cache_length(const clattn_kv_cache *c, size_t b)
{
    return c && b < c->B ? c->len[b] : 0;
}

size_t clattn_kv_cache_free_pages(const clattn_kv_cache *c)
{
    return c && c->paged ? c->pg.num_free : 0;
}

clattn_status clattn_kv_cache_release(clattn_kv_cache *c, size_t b)
{
    if (!c || b >= c->B)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (!c->paged)
        return CLATTN_ERROR_UNSUPPORTED_PATH;
    clattn__kv_pages_release(&c->pg, b, c->len[b]);
    c->len[b] = 0;
    return CL_SUCCESS;
}

clattn_status clattn_kv_cache_fork(clattn_kv_cache *c, size_t src, size_t dst)
{
    if (!c || src >= c->B || dst >= c->B || src == dst)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (!c->paged)
        return CLATTN_ERROR_UNSUPPORTED_PATH;
    if (c->len[dst] != 0)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn__kv_pages_fork(&c->pg, src, dst, c->len[src]);
    c->len[dst] = c->len[src];
    return CL_SUCCESS;
}

/* The dtypes appends take: the cache's own; float too into a bfloat16 cache (rounded as it is
 * stored); float, half or bfloat16 into an int8 one (quantized). */
static unsigned takes(clattn_dtype cache)
{
    const unsigned floats = CLATTN_DTYPE_BIT(CLATTN_F32) | CLATTN_DTYPE_BIT(CLATTN_F16) |
                            CLATTN_DTYPE_BIT(CLATTN_BF16);
    return cache == CLATTN_Q8     ? floats
           : cache == CLATTN_BF16 ? CLATTN_DTYPE_BIT(CLATTN_BF16) | CLATTN_DTYPE_BIT(CLATTN_F32)
                                  : CLATTN_DTYPE_BIT(cache);
}

static clattn_status check_new(const clattn_kv_cache *c, const clattn_tensor *t)
{
    if (!t)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_status st = clattn__view_check_dtypes(c->ctx, t, CLATTN_VIEW_INPUT, takes(c->dtype));
    if (st != CL_SUCCESS)
        return st;
    return (t->dims[0] == c->B && t->dims[1] == c->Hkv && t->dims[3] == c->D)
               ? CL_SUCCESS
               : CLATTN_ERROR_INVALID_SHAPE;
}

/* The -D options of the append kernels, for new tokens of dtype `src`. */
static void append_options(const clattn_kv_cache *c, clattn_dtype src, bool has_counts, char *buf,
                           size_t cap)
{
    snprintf(buf, cap, "-DSRC_FMT=%d -DC_FMT=%d -DHAS_COUNTS=%d -DHAS_ROPE=%d -DROPE_GPTJ=%d "
             "-DROW_DIM=%zu -DPAGE_SIZE=%zu", clattn__kv_format(src), clattn__kv_format(c->dtype),
             has_counts, c->has_rope, c->has_rope && c->rope.layout == CLATTN_ROPE_GPTJ,
             c->dtype == CLATTN_Q8 ? c->D : 0, c->paged ? c->pg.page_size : 0);
}

/* The cache's K or V storage as a view [B, Hkv, cap, D] of its dtype, or a paged cache's pool
 * as a view [num_pages, Hkv, page_size, D] stored head-major (int8 rows: each row Q8_ROW_BYTES
 * long, its scale after the values). */
static clattn_tensor storage_view(const clattn_kv_cache *c, cl_mem buf)
{
    const size_t row = c->dtype == CLATTN_Q8 ? clattn__kv_row_bytes(c->dtype, c->D) : c->D;
    if (c->paged) { /* a head's pages side by side: read as one stream when taken in order */
        const size_t P = c->pg.page_size, n = c->pg.num_pages;
        clattn_tensor t = {buf, 0, c->dtype, {n, c->Hkv, P, c->D}, {P * row, n * P * row, row, 1}};
        return t;
    }
    clattn_tensor t = {buf, 0, c->dtype, {c->B, c->Hkv, c->cap, c->D},
                       {c->Hkv * c->cap * row, c->cap * row, row, 1}};
    return t;
}

/* A paged cache's lengths and block tables (`planned`: after the append being planned, whose
 * sequences then hold `after`) in a buffer of the call's own, as the kernels read them. */
static clattn_status upload_tables(clattn_plan *p, const clattn_kv_cache *c, const size_t *after,
                                   bool planned, cl_mem *buf, size_t *stride)
{
    int *host;
    size_t ints;
    clattn_status st = clattn__kv_pages_snapshot(&c->pg, c->len, after, planned, &host, stride,
                                                 &ints);
    if (st != CL_SUCCESS)
        return st;
    st = clattn__plan_buffer_copy(p, ints * sizeof *host, host, buf);
    free(host);
    return st;
}

/* The host lengths advance with the device's, and a paged cache's tables take the pages the
 * append took: only once the whole append is enqueued. */
static void commit_append(clattn_plan *p, void *arg)
{
    (void)p;
    clattn_kv_cache *c = arg;
    for (size_t b = 0; b < c->B; b++)
        c->len[b] += c->pending[b];
    if (c->paged)
        clattn__kv_pages_commit(&c->pg);
}

/* A paged append's block tables and copies on write: the pages it takes are planned (none is
 * taken yet), the tables it writes through uploaded, and the shared pages it writes into copied
 * first. *tables and *stride: the uploaded tables, for the append kernel. */
static clattn_status page_steps(clattn_plan *p, clattn_kv_cache *c, const char *opts,
                                cl_mem *tables, size_t *stride)
{
    clattn_kv_pages *pg = &c->pg;
    size_t *after = malloc(c->B * sizeof *after);
    if (!after)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    for (size_t b = 0; b < c->B; b++)
        after[b] = c->len[b] + c->pending[b];
    clattn_status st = clattn__kv_pages_plan(pg, c->len, c->pending);
    if (st == CL_SUCCESS)
        st = upload_tables(p, c, after, true, tables, stride);
    free(after);
    size_t copies = 0;
    for (size_t i = 0; st == CL_SUCCESS && i < pg->num_changes; i++)
        copies += pg->changes[i].from >= 0;
    if (st != CL_SUCCESS || copies == 0)
        return st;
    /* Rows are a whole number of 16-bit words in every storage format; a head's rows of a page
     * are `words` of them, heads `head` words apart. Only the rows the sequence holds are
     * copied (the rest were never written). */
    const clattn_tensor pool = storage_view(c, c->k);
    const size_t row = pool.strides[2] * clattn_dtype_size(c->dtype) / 2;
    const size_t words = pool.strides[0] * clattn_dtype_size(c->dtype) / 2;
    cl_int *copy = malloc(3 * copies * sizeof *copy);
    if (!copy)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    size_t n = 0;
    for (size_t i = 0; i < pg->num_changes; i++)
        if (pg->changes[i].from >= 0) {
            copy[n++] = pg->changes[i].from;
            copy[n++] = pg->changes[i].page;
            copy[n++] = (cl_int)(c->len[pg->changes[i].b] % pg->page_size * row);
        }
    cl_mem copy_buf;
    st = clattn__plan_buffer_copy(p, n * sizeof *copy, copy, &copy_buf);
    free(copy);
    if (st != CL_SUCCESS)
        return st;
    clattn_kargs args = {0};
    clattn__arg_mem(&args, c->k);
    clattn__arg_mem(&args, c->v);
    clattn__arg_mem(&args, copy_buf);
    clattn__arg_ulong(&args, words);
    clattn__arg_ulong(&args, pool.strides[1] * clattn_dtype_size(c->dtype) / 2);
    const size_t global[3] = {words, c->Hkv, copies};
    return clattn__plan_kernel(p, "kv_append", opts, "kv_copy_pages", &args, 3, global, NULL);
}

/* Appends the copy of the new tokens and then the advance of the device lengths. */
static clattn_status append_plan(clattn_plan *p, clattn_kv_cache *c, const clattn_tensor *K,
                                 const clattn_tensor *V, const size_t *counts)
{
    if (!c)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_status st;
    if ((st = check_new(c, K)) != CL_SUCCESS || (st = check_new(c, V)) != CL_SUCCESS)
        return st;
    const size_t T = K->dims[2];
    if (V->dims[2] != T)
        return CLATTN_ERROR_INVALID_SHAPE;
    if (V->dtype != K->dtype)
        return CLATTN_ERROR_UNSUPPORTED_DTYPE;
    /* Nothing planned yet: an append that failed after planning its pages left them there,
     * and this call's commit must not take them (an append of no tokens plans none). */
    c->pg.num_changes = 0;
    size_t most = 0;
    bool uniform = true;
    for (size_t b = 0; b < c->B; b++) {
        const size_t n = counts ? counts[b] : T;
        if (n > T)
            return CLATTN_ERROR_INVALID_SHAPE;
        if (n > c->cap - c->len[b])
            return CLATTN_ERROR_CACHE_FULL;
        most = n > most ? n : most;
        uniform &= n == (counts ? counts[0] : T);
        c->pending[b] = n;
    }
    p->commit = commit_append;
    p->commit_arg = c;
    if (most == 0)
        return CL_SUCCESS; /* nothing appended */
    /* Per-sequence counts travel in a small buffer of the call's own (copied at creation, so the
     * caller's array is free when the call returns); equal counts in a kernel argument. */
    cl_mem counts_buf = NULL;
    if (!uniform) {
        cl_int *host = malloc(c->B * sizeof *host);
        if (!host)
            return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
        for (size_t b = 0; b < c->B; b++)
            host[b] = (cl_int)counts[b];
        st = clattn__plan_buffer_copy(p, c->B * sizeof *host, host, &counts_buf);
        free(host);
        if (st != CL_SUCCESS)
            return st;
    }
    char opts[192];
    append_options(c, K->dtype, !uniform, opts, sizeof opts);
    /* Paged: the lengths travel with the block tables, which the host advances at commit. */
    cl_mem tables = NULL;
    size_t stride = 0;
    if (c->paged && (st = page_steps(p, c, opts, &tables, &stride)) != CL_SUCCESS)
        return st;
    const clattn_tensor ck = storage_view(c, c->k), cv = storage_view(c, c->v);
    clattn_kargs args = {0};
    clattn__arg_view(&args, K);
    clattn__arg_view(&args, V);
    clattn__arg_view(&args, &ck);
    clattn__arg_view(&args, &cv);
    clattn__arg_ulong(&args, c->Hkv);
    clattn__arg_mem(&args, c->paged ? tables : c->lengths);
    clattn__arg_mem(&args, counts_buf);
    clattn__arg_uint(&args, (cl_uint)most);
    clattn__arg_rope(&args, c->has_rope ? &c->rope : NULL, c->rotary);
    clattn__arg_mem(&args, tables);
    clattn__arg_ulong(&args, c->B);
    clattn__arg_ulong(&args, stride);
    /* int8 rows: one work-item per row (it finds the row's scale) */
    const size_t global[3] = {c->dtype == CLATTN_Q8 ? 1 : c->D, most, c->B * c->Hkv};
    if ((st = clattn__plan_kernel(p, "kv_append", opts, "kv_append", &args, 3, global, NULL)) !=
            CL_SUCCESS ||
        c->paged)
        return st;
    clattn_kargs adv = {0};
    clattn__arg_mem(&adv, c->lengths);
    clattn__arg_mem(&adv, counts_buf);
    clattn__arg_uint(&adv, (cl_uint)most);
    const size_t one[1] = {c->B};
    return clattn__plan_kernel(p, "kv_append", opts, "kv_advance", &adv, 1, one, NULL);
}

clattn_status clattn_kv_cache_append(clattn_kv_cache *c, cl_command_queue queue,
                                     const clattn_tensor *K, const clattn_tensor *V,
                                     const size_t *counts, cl_uint num_wait,
                                     const cl_event *wait_list, cl_event *event_out)
{
    CLATTN_RETURN_PLANNED(c ? c->ctx : NULL, queue, num_wait, wait_list, event_out,
                          append_plan(&plan_, c, K, V, counts));
}

/* Splits for flash-decoding: enough work-groups to fill the device, each split at least 512
 * keys, at most 32 splits. */
static size_t auto_splits(const clattn_kv_cache *c, size_t groups, size_t max_len)
{
    const size_t want = (size_t)c->ctx->info.compute_units * 4;
    size_t s = groups == 0 || groups >= want ? 1 : (want + groups - 1) / groups;
    size_t by_len = max_len / 512;
    if (s > by_len)
        s = by_len;
    if (s > 32)
        s = 32;
    return s ? s : 1;
}

/* A checked attend call, and how its keys are split. */
typedef struct attend_call {
    clattn_kv_attend_params ap;
    size_t splits;    /* 1: one pass */
    size_t per;       /* keys per split (whole kernel blocks) */
    size_t n_o, n_l;  /* elements of one split's partial O and lse */
    size_t bytes;     /* of all partial results */
} attend_call;

static clattn_status attend_check(const clattn_kv_cache *c, const clattn_tensor *Q,
                                  const clattn_tensor *O, const clattn_kv_attend_params *params,
                                  attend_call *a)
{
    clattn_context *ctx = c->ctx;
    a->ap = params ? *params : clattn_kv_attend_params_default();
    const clattn_kv_attend_params *ap = &a->ap;
    if (!CLATTN_RESERVED_ZERO(ap))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    clattn_status st;
    if ((st = clattn__window_check(ap->window_left, CLATTN_WINDOW_UNBOUNDED)) != CL_SUCCESS ||
        (st = clattn__view_check(ctx, Q, CLATTN_VIEW_INPUT)) != CL_SUCCESS ||
        (st = clattn__view_check(ctx, O, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS ||
        (ap->lse && (st = clattn__view_check(ctx, ap->lse, CLATTN_VIEW_OUTPUT)) != CL_SUCCESS))
        return st;
    const size_t B = Q->dims[0], Hq = Q->dims[1], Lq = Q->dims[2];
    /* mixed steps: the queries of every sequence packed in one batch item */
    if (!ap->cu_seqlens_q && ap->num_seqs)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (ap->cu_seqlens_q && (ap->num_seqs != c->B ||
                             !clattn__offsets_valid(ap->cu_seqlens_q, ap->num_seqs, Lq)))
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if ((ap->cu_seqlens_q ? B != 1 : B != c->B) || Q->dims[3] != c->D || O->dims[0] != B ||
        O->dims[1] != Hq || O->dims[2] != Lq || O->dims[3] != c->D)
        return CLATTN_ERROR_INVALID_SHAPE;
    if (ap->lse && (ap->lse->dims[0] != B || ap->lse->dims[1] != Hq || ap->lse->dims[2] != Lq ||
                    ap->lse->dims[3] != 1))
        return CLATTN_ERROR_INVALID_SHAPE;
    if (Hq % c->Hkv != 0)
        return CLATTN_ERROR_HEAD_MISMATCH;
    if ((st = clattn__logits_check(ctx, &ap->logits, Hq)) != CL_SUCCESS)
        return st;
    /* O is written in one pass or through the merge: the fused kernel's layout either way, so
     * that whether a view is taken does not depend on the cache's length. */
    if (O->dims[3] > 1 && O->strides[3] != 1)
        return CLATTN_ERROR_UNSUPPORTED_LAYOUT;
    a->splits = 1;
    a->per = a->n_o = a->n_l = a->bytes = 0;
    if (Hq == 0 || Lq == 0)
        return CL_SUCCESS; /* nothing to attend */

    /* The splits cover the longest sequence's keys: every sequence's, also in mixed steps
     * (whose queries sit in one batch item). */
    size_t max_len = 0;
    for (size_t b = 0; b < c->B; b++)
        max_len = c->len[b] > max_len ? c->len[b] : max_len;
    const size_t groups = B * Hq * ((Lq + 15) / 16);
    size_t S = ap->splits ? ap->splits : auto_splits(c, groups, max_len);
    const size_t bk = clattn__flash_block_k(ctx, c->D, c->D);
    /* Whole key blocks per split, over the keys the longest sequence holds. */
    const size_t blocks = (max_len + bk - 1) / bk;
    if (S > blocks)
        S = blocks ? blocks : 1;
    a->per = (blocks + S - 1) / S * bk;
    S = a->per ? (max_len + a->per - 1) / a->per : 1;
    a->splits = S ? S : 1;
    a->n_o = B * Hq * Lq * c->D;
    a->n_l = B * Hq * Lq;
    a->bytes = 0;
    if (a->splits > 1 && (!clattn__mul(a->splits, a->n_o + a->n_l, &a->bytes) ||
                          !clattn__mul(a->bytes, sizeof(float), &a->bytes)))
        return CLATTN_ERROR_SIZE_OVERFLOW;
    return CL_SUCCESS;
}

/* Appends the attention: one pass, or `splits` partial results in `scratch` from element `off`
 * merged in one launch. */
static clattn_status attend_steps(clattn_plan *p, const clattn_kv_cache *c, const clattn_tensor *Q,
                                  const clattn_tensor *O, const attend_call *a, cl_mem scratch,
                                  size_t off)
{
    const size_t B = Q->dims[0], Hq = Q->dims[1], Lq = Q->dims[2];
    if (Hq == 0 || Lq == 0)
        return CL_SUCCESS;
    const clattn_tensor K = storage_view(c, c->k), V = storage_view(c, c->v);
    clattn_sdpa_params sp = clattn_sdpa_params_default();
    sp.scale = a->ap.scale;
    sp.mask.causal = a->ap.cross ? CLATTN_CAUSAL_NONE : CLATTN_CAUSAL_BOTTOM_RIGHT;
    sp.mask.key_lengths = c->lengths;
    /* Paged: the lengths and block tables as they are now, uploaded with the call. */
    clattn_flash_pages pages = {NULL, c->B, 0, c->paged ? c->pg.page_size : 0, c->cap};
    if (c->paged) {
        clattn_status st = upload_tables(p, c, c->len, false, &pages.table, &pages.stride);
        if (st != CL_SUCCESS)
            return st;
        sp.mask.key_lengths = pages.table;
    }
    const clattn_flash_pages *paging = c->paged ? &pages : NULL;
    sp.mask.window_left = a->ap.window_left;
    sp.mask.window_keep_first = a->ap.window_keep_first;
    sp.logits = a->ap.logits;
    /* mixed steps: the queries packed, the keys the cache's per sequence */
    const bool mixed = a->ap.cu_seqlens_q != NULL;
    sp.cu_seqlens_q = a->ap.cu_seqlens_q;
    sp.num_seqs = a->ap.num_seqs;
    const clattn_rope_params *rope = c->has_rope ? &c->rope : NULL;
    if (a->splits == 1) {
        sp.lse = a->ap.lse;
        return clattn__flash_plan(p, Q, &K, &V, O, &sp, NULL, rope, mixed, paging);
    }
    const clattn_tensor part = clattn_tensor_bhtd(scratch, off, B, Hq, Lq, c->D);
    const clattn_tensor part_lse = clattn_tensor_bhtd(scratch, off + a->splits * a->n_o, B, Hq, Lq, 1);
    sp.lse = &part_lse;
    sp.logits.sinks = NULL; /* partial results exclude the sinks; the merge adds them once */
    const clattn_flash_split split = {a->per, a->splits, a->n_o, a->n_l};
    clattn_status st = clattn__flash_plan(p, Q, &K, &V, &part, &sp, &split, rope, mixed, paging);
    return st != CL_SUCCESS ? st
                            : clattn__merge_parts_plan(p, &part, &part_lse, a->splits, a->n_o,
                                                       a->n_l, O, a->ap.lse, a->ap.logits.sinks,
                                                       a->ap.logits.sinks_offset);
}

/* A scratch grown for this call becomes the cache's once the call is enqueued. */
static void commit_scratch(clattn_plan *p, void *arg)
{
    clattn_kv_cache *c = arg;
    if (c->scratch) /* OpenCL keeps it alive while queued work uses it */
        clReleaseMemObject(c->scratch);
    clattn__plan_keep_buffer(p, c->grown);
    c->scratch = c->grown;
    c->scratch_bytes = c->grown_bytes;
}

static clattn_status attend_plan(clattn_plan *p, clattn_kv_cache *c, const clattn_tensor *Q,
                                 const clattn_tensor *O, const clattn_kv_attend_params *params)
{
    if (!c)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    attend_call a;
    clattn_status st = attend_check(c, Q, O, params, &a);
    cl_mem scratch = c->scratch;
    size_t off = 0;
    if (st == CL_SUCCESS && a.bytes > 0) {
        if (a.ap.workspace) {
            const clattn_logit_params *lp = &a.ap.logits;
            const size_t Hq = Q->dims[1];
            const clattn_tensor slopes = clattn__vector_view(lp->alibi_slopes,
                                                             lp->alibi_slopes_offset, Hq);
            const clattn_tensor sinks = clattn__vector_view(lp->sinks, lp->sinks_offset, Hq);
            const clattn_tensor freq = clattn__vector_view(c->has_rope ? c->rope.inv_freq : NULL,
                                                           c->rope.inv_freq_offset, c->rotary / 2);
            const clattn_tensor *views[] = {Q, O, a.ap.lse, &slopes, &sinks, &freq};
            st = clattn__workspace_check(c->ctx, a.ap.workspace, a.ap.workspace_offset, a.bytes,
                                         views, 6);
            scratch = a.ap.workspace;
            off = a.ap.workspace_offset / sizeof(float);
        } else if (a.bytes > c->scratch_bytes &&
                   (st = clattn__plan_buffer(p, a.bytes, &scratch)) == CL_SUCCESS) {
            c->grown = scratch;
            c->grown_bytes = a.bytes;
            p->commit = commit_scratch;
            p->commit_arg = c;
        }
    }
    return st != CL_SUCCESS ? st : attend_steps(p, c, Q, O, &a, scratch, off);
}

clattn_status clattn_kv_cache_attend(clattn_kv_cache *c, cl_command_queue queue,
                                     const clattn_tensor *Q, const clattn_tensor *O,
                                     const clattn_kv_attend_params *params, cl_uint num_wait,
                                     const cl_event *wait_list, cl_event *event_out)
{
    CLATTN_RETURN_PLANNED(c ? c->ctx : NULL, queue, num_wait, wait_list, event_out,
                          attend_plan(&plan_, c, Q, O, params));
}

clattn_status clattn_kv_cache_workspace_size(clattn_kv_cache *c, const clattn_tensor *Q,
                                             const clattn_tensor *O,
                                             const clattn_kv_attend_params *params, size_t *bytes)
{
    if (!c || !bytes)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    attend_call a;
    clattn_status st = attend_check(c, Q, O, params, &a);
    if (st == CL_SUCCESS)
        *bytes = a.bytes;
    return st;
}

clattn_status clattn_kv_cache_prepare(clattn_kv_cache *c, const clattn_tensor *Q,
                                      const clattn_tensor *O, const clattn_kv_attend_params *params)
{
    if (!c)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    attend_call a;
    clattn_status st = attend_check(c, Q, O, params, &a);
    char opts[128];
    /* Appends of every dtype the cache takes. */
    const clattn_dtype srcs[] = {CLATTN_F32, CLATTN_F16, CLATTN_BF16};
    for (int has_counts = 0; st == CL_SUCCESS && has_counts < 2; has_counts++)
        for (int s = 0; st == CL_SUCCESS && s < 3; s++)
            if (takes(c->dtype) & CLATTN_DTYPE_BIT(srcs[s])) {
                append_options(c, srcs[s], has_counts, opts, sizeof opts);
                st = clattn__program_build(c->ctx, "kv_append", opts);
            }
    /* Attention in one pass and split: two builds of the fused kernel (the split one writes
     * partial results and their lse, without sinks) and the merge; the split count itself is
     * only an argument. */
    for (size_t splits = 1; st == CL_SUCCESS && splits <= 2; splits++) {
        a.splits = splits;
        a.per = clattn__flash_block_k(c->ctx, c->D, c->D);
        clattn_plan plan;
        clattn__plan_init(&plan, c->ctx);
        st = attend_steps(&plan, c, Q, O, &a, NULL, 0);
        clattn__plan_release(&plan);
    }
    return st;
}
