/* Page bookkeeping of a paged KV cache (kv_pages.h). */
#include "kv_pages.h"
#include "tensor.h"

#include <stdlib.h>
#include <string.h>

static size_t pages_for(const clattn_kv_pages *pg, size_t tokens)
{
    return (tokens + pg->page_size - 1) / pg->page_size;
}

clattn_status clattn__kv_pages_init(clattn_kv_pages *pg, size_t B, size_t page_size,
                                    size_t num_pages, size_t capacity)
{
    memset(pg, 0, sizeof *pg);
    pg->B = B;
    pg->page_size = page_size;
    pg->num_pages = num_pages;
    pg->max_pages = (capacity + page_size - 1) / page_size;
    size_t entries;
    if (!clattn__mul(B, pg->max_pages, &entries) || entries > SIZE_MAX / sizeof(int) ||
        num_pages > SIZE_MAX / sizeof(clattn_kv_page_change))
        return CLATTN_ERROR_SIZE_OVERFLOW;
    pg->table = calloc(entries, sizeof *pg->table);
    pg->refs = calloc(num_pages, sizeof *pg->refs);
    pg->free_list = malloc(num_pages * sizeof *pg->free_list);
    pg->changes = malloc(num_pages * sizeof *pg->changes);
    if (!pg->table || !pg->refs || !pg->free_list || !pg->changes) {
        clattn__kv_pages_free(pg);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    /* Pages are taken from the top: page 0 first. */
    for (size_t i = 0; i < num_pages; i++)
        pg->free_list[i] = (int)(num_pages - 1 - i);
    pg->num_free = num_pages;
    return CL_SUCCESS;
}

void clattn__kv_pages_free(clattn_kv_pages *pg)
{
    free(pg->table);
    free(pg->refs);
    free(pg->free_list);
    free(pg->changes);
    memset(pg, 0, sizeof *pg);
}

static int *entry(const clattn_kv_pages *pg, size_t b, size_t i)
{
    return &pg->table[b * pg->max_pages + i];
}

clattn_status clattn__kv_pages_plan(clattn_kv_pages *pg, const size_t *len, const size_t *n)
{
    size_t taken = 0;
    pg->num_changes = 0;
    for (size_t b = 0; b < pg->B; b++) {
        if (n[b] == 0)
            continue;
        const size_t have = pages_for(pg, len[b]), need = pages_for(pg, len[b] + n[b]);
        size_t fresh = need - have;
        /* A partly filled last page that other sequences hold too is copied before it is
         * written; the last holder in this call writes it in place. */
        int from = -1;
        if (len[b] % pg->page_size != 0) {
            const int last = *entry(pg, b, have - 1);
            int holders = pg->refs[last];
            for (size_t c = 0; c < pg->num_changes; c++)
                holders -= pg->changes[c].from == last;
            if (holders > 1) {
                from = last;
                fresh++;
            }
        }
        if (fresh > pg->num_free - taken) {
            pg->num_changes = 0;
            return CLATTN_ERROR_POOL_EXHAUSTED;
        }
        for (size_t i = from >= 0 ? have - 1 : have; i < need; i++) {
            clattn_kv_page_change *ch = &pg->changes[pg->num_changes++];
            ch->b = b;
            ch->index = i;
            ch->page = pg->free_list[pg->num_free - 1 - taken++];
            ch->from = i == have - 1 ? from : -1;
        }
    }
    return CL_SUCCESS;
}

void clattn__kv_pages_commit(clattn_kv_pages *pg)
{
    for (size_t c = 0; c < pg->num_changes; c++) {
        const clattn_kv_page_change *ch = &pg->changes[c];
        *entry(pg, ch->b, ch->index) = ch->page;
        pg->refs[ch->page] = 1;
        if (ch->from >= 0)
            pg->refs[ch->from]--; /* still held: the last holder never copies */
    }
    pg->num_free -= pg->num_changes;
    pg->num_changes = 0;
}

clattn_status clattn__kv_pages_snapshot(const clattn_kv_pages *pg, const size_t *len,
                                        const size_t *after, bool planned, int **out,
                                        size_t *stride, size_t *ints)
{
    size_t most = 1; /* a table of at least one entry, so that the buffer is never empty */
    for (size_t b = 0; b < pg->B; b++)
        if (pages_for(pg, after[b]) > most)
            most = pages_for(pg, after[b]);
    const size_t total = pg->B + pg->B * most; /* at most B * (max_pages + 1): no overflow */
    int *t = calloc(total, sizeof *t);
    if (!t)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    for (size_t b = 0; b < pg->B; b++) {
        t[b] = (int)len[b];
        memcpy(t + pg->B + b * most, entry(pg, b, 0), pages_for(pg, len[b]) * sizeof *t);
    }
    for (size_t c = 0; planned && c < pg->num_changes; c++)
        t[pg->B + pg->changes[c].b * most + pg->changes[c].index] = pg->changes[c].page;
    /* The kernels read pages by these numbers: each must lie in the pool. */
    for (size_t b = 0; b < pg->B; b++)
        for (size_t i = 0; i < pages_for(pg, after[b]); i++) {
            const int page = t[pg->B + b * most + i];
            if (page < 0 || (size_t)page >= pg->num_pages) {
                free(t);
                return CLATTN_ERROR_INTERNAL;
            }
        }
    *out = t;
    *stride = most;
    *ints = total;
    return CL_SUCCESS;
}

void clattn__kv_pages_release(clattn_kv_pages *pg, size_t b, size_t len)
{
    for (size_t i = 0; i < pages_for(pg, len); i++) {
        int *e = entry(pg, b, i);
        if (--pg->refs[*e] == 0)
            pg->free_list[pg->num_free++] = *e;
        *e = 0;
    }
}

void clattn__kv_pages_fork(clattn_kv_pages *pg, size_t src, size_t dst, size_t len)
{
    for (size_t i = 0; i < pages_for(pg, len); i++) {
        const int page = *entry(pg, src, i);
        *entry(pg, dst, i) = page;
        pg->refs[page]++;
    }
}
