/* Batched matrix products on the device. gemm.c is the only file that knows CLBlast. */
#ifndef CLATTN_GEMM_H
#define CLATTN_GEMM_H
#include "context.h"
#include "events.h"

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
 * B k x n, C m x n, as the runs of evenly spaced items the GEMM engine takes in one call.
 *
 * CLBlast takes no wait list, and releases the events of the kernels it enqueues at once. So
 * that neither constrains the caller's queue nor lets a failed event reach CLBlast's commands
 * (PoCL 3.1 aborts when a failure propagates to an event whose last reference was released), a
 * product planned for a caller's queue runs on a queue of the library's (a "lane") behind a
 * gate: a user event of the library's that a callback opens, always successfully, once a marker
 * on the caller's queue (the caller's wait list, and on an in-order queue everything enqueued
 * before) has completed. A second marker on the caller's queue joins the products' events with
 * the first marker: it is the step's event, and carries a failure of the wait list on. A lane
 * is shared only when no gate on it is closed, or when the closed ones belong to calls on the
 * same in-order queue (which the new call already waits for): a product never waits for
 * another caller's work. */
typedef struct clattn_gemm {
    bool trans_a, trans_b;   /* the row-major operands as the engine reads them */
    size_t m, n, k, lda, ldb, ldc;
    float alpha, beta;
    cl_mem a, b, c;
    struct clattn_gemm_run *runs;
    size_t num_runs;
    bool in_order;              /* the caller's queue */
    struct clattn_blas_gate *gate; /* NULL: no caller's queue (work of the library's own) */
    struct blas_lane *busy_lane;   /* the lane held for this product until it is released */
} clattn_gemm;

/* Works out the runs for d0 x d1 items (m, n, k > 0; layouts checked with
 * clattn__gemm_layout_ok), compiles CLBlast's routines for them, and for a call on `queue`
 * (NULL: planned only, or the library's own queue) reserves a lane and makes its gate. `call`
 * identifies the call (its plan): products of one call may share a lane while they wait to be
 * enqueued, another call's may not. Nothing is enqueued. */
clattn_status clattn__gemm_prepare(clattn_context *ctx, cl_command_queue queue, const void *call,
                                   size_t d0, size_t d1, float alpha, const clattn_operand *A,
                                   const clattn_operand *B, float beta, const clattn_operand *C,
                                   clattn_gemm *out);
/* The most events clattn__gemm_enqueue keeps. */
size_t clattn__gemm_event_count(const clattn_gemm *g);
/* Enqueues the products after the wait list (see above). Every event made goes to `keep`, which
 * holds its reference; *done (one of them, or NULL when there was nothing to do) completes or
 * fails with the step, on `queue`. */
clattn_status clattn__gemm_enqueue(clattn_context *ctx, cl_command_queue queue, clattn_gemm *g,
                                   cl_uint num_wait, const cl_event *wait_list,
                                   clattn_events *keep, cl_event *done);
/* Blocks until every product enqueued on the context's lanes has ended (clattn_context_finish). */
clattn_status clattn__gemm_finish(clattn_context *ctx);
/* Frees the runs; a gate never enqueued gives its lane back. */
void clattn__gemm_release(clattn_gemm *g);

/* Applies CLBlast Xgemm parameters ("NAME=VALUE ...", all 16) for the context's device and single
 * precision, process-wide (CLBlastOverrideParameters). Refuses GEMMK=1 with MWG != NWG, which
 * CLBlast before 1.6.3 computes wrongly. */
clattn_status clattn__gemm_use_xgemm(clattn_context *ctx, const char *params);

/* Called by clattn_context_destroy: releases the warm-up's buffer and the lanes (each lives on
 * until its last gate has opened), and clears CLBlast's process-wide program cache (its programs
 * hold a reference to their cl_context, which would then never be freed). */
void clattn__gemm_forget_context(clattn_context *ctx);

#endif
