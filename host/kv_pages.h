/* The pages of a paged KV cache, on the host: the pool's free pages, how many sequences hold each
 * page, and every sequence's block table. Pure bookkeeping (no OpenCL): the cache plans an append
 * here (which pages it takes, which shared pages it copies), enqueues the work, and only then
 * commits it, so that a failed append changes nothing. */
#ifndef CLATTN_KV_PAGES_H
#define CLATTN_KV_PAGES_H
#include "clattn.h"

#include <stdbool.h>

/* A table entry the append being planned changes: sequence b's page `index` becomes `page`;
 * `from` is the shared page it copies (copy on write), or -1 for a fresh page. */
typedef struct clattn_kv_page_change {
    size_t b, index;
    int page, from;
} clattn_kv_page_change;

typedef struct clattn_kv_pages {
    size_t B, page_size, num_pages;
    size_t max_pages;  /* a block table's length: the capacity in pages */
    int *table;        /* [B * max_pages]; sequence b's first ceil(len / page_size) entries count */
    int *refs;         /* [num_pages]: sequences holding each page */
    int *free_list;    /* a stack of the num_free free pages */
    size_t num_free;
    clattn_kv_page_change *changes; /* the append being planned: at most num_pages */
    size_t num_changes;
} clattn_kv_pages;

/* Sets up an empty pool (every page free); CLATTN_ERROR_OUT_OF_HOST_MEMORY or
 * CLATTN_ERROR_SIZE_OVERFLOW on failure, with nothing to free. */
clattn_status clattn__kv_pages_init(clattn_kv_pages *pg, size_t B, size_t page_size,
                                    size_t num_pages, size_t capacity);
void clattn__kv_pages_free(clattn_kv_pages *pg);

/* Plans an append of n[b] tokens to sequences holding len[b]: the pages it takes from the pool
 * and the shared partial pages it copies, as `changes`. CLATTN_ERROR_POOL_EXHAUSTED when the
 * pool has too few free pages. Changes nothing but `changes` (valid until the next plan). */
clattn_status clattn__kv_pages_plan(clattn_kv_pages *pg, const size_t *len, const size_t *n);
/* Makes the planned changes the tables'. */
void clattn__kv_pages_commit(clattn_kv_pages *pg);

/* The block tables as a call's kernels read them (`planned`: with the changes of the append
 * just planned): int32 [B] lengths (`len`), then B tables of `*stride` entries (the most pages
 * any sequence holds after the call, `after[b]` tokens), every entry checked to lie in the pool
 * (CLATTN_ERROR_INTERNAL otherwise). *out (malloc'd, *ints long) is the caller's to free. */
clattn_status clattn__kv_pages_snapshot(const clattn_kv_pages *pg, const size_t *len,
                                        const size_t *after, bool planned, int **out,
                                        size_t *stride, size_t *ints);

/* Sequence b, holding len tokens, lets go of its pages. */
void clattn__kv_pages_release(clattn_kv_pages *pg, size_t b, size_t len);
/* Sequence dst (holding nothing) shares the pages of src, which holds len tokens. */
void clattn__kv_pages_fork(clattn_kv_pages *pg, size_t src, size_t dst, size_t len);

#endif
