/* Batched matrix products on the device. gemm.c is the only file that knows CLBlast. */
#ifndef CLATTN_GEMM_H
#define CLATTN_GEMM_H
#include "context.h"

#include <stdbool.h>

/* One operand of a batch of products over items (i0 < d0, i1 < d1). Item (i0, i1) is the
 * rows x cols matrix at element offset + i0*batch_stride[0] + (i1/head_div)*batch_stride[1],
 * with element (r, c) at + r*rs + c*cs. head_div > 1 lets several query heads share one kv head. */
typedef struct clattn_operand {
    cl_mem buffer;
    size_t offset;
    size_t batch_stride[2];
    size_t head_div;
    size_t rows, cols;
    size_t rs, cs;
} clattn_operand;

/* Whether a rows x cols matrix with strides (rs, cs) can be a GEMM operand or result: one of the
 * two dims must be contiguous and the rows (or columns) must not overlap. */
bool clattn__gemm_layout_ok(size_t rows, size_t cols, size_t rs, size_t cs);

/* Whether a (checked) view's elements, dims and strides fit CLBlast's 32-bit ints. */
bool clattn__gemm_view_ok(const clattn_tensor *t);

/* A prepared batch of products: for every item, C = alpha * A * B + beta * C, with A m x k,
 * B k x n, C m x n, as the runs of evenly spaced items the GEMM engine takes in one call. */
typedef struct clattn_gemm {
    bool trans_a, trans_b;   /* the row-major operands as the engine reads them */
    size_t m, n, k, lda, ldb, ldc;
    float alpha, beta;
    cl_mem a, b, c;
    struct clattn_gemm_run *runs;
    size_t num_runs;
    cl_event *events;        /* one per run, filled by clattn__gemm_enqueue */
} clattn_gemm;

/* Works out the runs for d0 x d1 items (m, n, k > 0; layouts checked with
 * clattn__gemm_layout_ok). Allocates; nothing is enqueued. */
clattn_status clattn__gemm_prepare(clattn_context *ctx, size_t d0, size_t d1, float alpha,
                                   const clattn_operand *A, const clattn_operand *B, float beta,
                                   const clattn_operand *C, clattn_gemm *out);
/* Enqueues the runs after the wait list (through a barrier: CLBlast takes none). g->events[0 ..
 * *num_events) then complete when their runs have; they belong to the caller. */
clattn_status clattn__gemm_enqueue(clattn_context *ctx, cl_command_queue queue, clattn_gemm *g,
                                   cl_uint num_wait, const cl_event *wait_list,
                                   size_t *num_events);
void clattn__gemm_release(clattn_gemm *g);

/* Applies CLBlast Xgemm parameters ("NAME=VALUE ...", all 16) for the context's device and single
 * precision, process-wide (CLBlastOverrideParameters). Refuses GEMMK=1 with MWG != NWG, which
 * CLBlast before 1.6.3 computes wrongly. */
clattn_status clattn__gemm_use_xgemm(clattn_context *ctx, const char *params);

/* Called by clattn_context_destroy: releases the warm-up's queue and buffer, and clears
 * CLBlast's process-wide program cache (its programs hold a reference to their cl_context,
 * which would then never be freed). */
void clattn__gemm_forget_context(clattn_context *ctx);

#endif
