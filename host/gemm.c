/* Matrix products through CLBlast (row-major). The one file that includes clblast_c.h. */
#include "gemm.h"

#include <clblast_c.h>
#include <limits.h>
#include <stdlib.h>

/* How CLBlast sees one matrix: stored row-major with leading dimension `ld`, transposed or not. */
typedef struct blas_view {
    CLBlastTranspose trans;
    size_t ld;
} blas_view;

static bool to_blas(size_t rows, size_t cols, size_t rs, size_t cs, blas_view *out)
{
    /* A single row or column has no meaningful stride along its length-1 dim. */
    if (rows == 1)
        rs = cols;
    if (cols == 1)
        cs = rows;
    if (cs == 1 || cols == 1) {
        if (rs >= cols) {
            out->trans = CLBlastTransposeNo;
            out->ld = rs;
            return true;
        }
    }
    if (rs == 1 || rows == 1) {
        if (cs >= rows) {
            out->trans = CLBlastTransposeYes;
            out->ld = cs;
            return true;
        }
    }
    return false;
}

bool clattn__gemm_layout_ok(size_t rows, size_t cols, size_t rs, size_t cs)
{
    blas_view v;
    return to_blas(rows, cols, rs, cs, &v);
}

static clattn_operand transposed(const clattn_operand *x)
{
    clattn_operand t = *x;
    t.rows = x->cols;
    t.cols = x->rows;
    t.rs = x->cs;
    t.cs = x->rs;
    return t;
}

static size_t item_offset(const clattn_operand *x, size_t i0, size_t i1)
{
    return x->offset + i0 * x->batch_stride[0] + (i1 / x->head_div) * x->batch_stride[1];
}

static clattn_status from_blas(clattn_context *ctx, CLBlastStatusCode code)
{
    if (code == CLBlastSuccess)
        return CL_SUCCESS;
    if (code > -1000) /* an OpenCL error code, passed through */
        return code;
    clattn__log(ctx, CLATTN_LOG_ERROR, "clattn: CLBlast SGEMM failed with status %d", (int)code);
    return CLATTN_ERROR_BLAS;
}

/* One strided-batched product: `count` items, item t at offsets a0 + t*as (and b, c alike). */
typedef struct strided_run {
    size_t a0, as, b0, bs, c0, cs, count;
} strided_run;

clattn_status clattn__gemm(clattn_context *ctx, cl_command_queue queue, size_t d0, size_t d1,
                           float alpha, const clattn_operand *A_, const clattn_operand *B_,
                           float beta, const clattn_operand *C_, cl_uint num_wait,
                           const cl_event *wait_list, cl_event *event_out)
{
    clattn_operand A = *A_, B = *B_, C = *C_;
    blas_view cv;
    if (!to_blas(C.rows, C.cols, C.rs, C.cs, &cv))
        return CLATTN_ERROR_UNSUPPORTED_LAYOUT;
    if (cv.trans == CLBlastTransposeYes) {
        /* CLBlast writes C row-major only: compute Cᵀ = Bᵀ·Aᵀ instead. */
        clattn_operand nA = transposed(&B), nB = transposed(&A);
        A = nA;
        B = nB;
        C = transposed(&C);
        to_blas(C.rows, C.cols, C.rs, C.cs, &cv);
    }
    blas_view av, bv;
    if (!to_blas(A.rows, A.cols, A.rs, A.cs, &av) || !to_blas(B.rows, B.cols, B.rs, B.cs, &bv))
        return CLATTN_ERROR_UNSUPPORTED_LAYOUT;
    const size_t m = C.rows, n = C.cols, k = A.cols;

    /* The items as runs of evenly spaced ones, for CLBlast's strided-batched routine (its
     * offset-array routine uploads the offsets with a blocking write and a clFinish, which
     * would wait on the caller's queue). All items at once when they are evenly spaced; else
     * per i0, and per query head within a kv-head group when several share one (GQA). */
    const size_t div = A.head_div > B.head_div ? A.head_div : B.head_div;
    size_t nruns = 1;
    bool all_even = true;
    {
        size_t prev[3] = {0, 0, 0}, step[3] = {0, 0, 0};
        for (size_t i = 0; all_even && i < d0 * d1; i++) {
            size_t o[3] = {item_offset(&A, i / d1, i % d1), item_offset(&B, i / d1, i % d1),
                           item_offset(&C, i / d1, i % d1)};
            for (int t = 0; t < 3; t++) {
                if (i > 0 && o[t] < prev[t])
                    all_even = false; /* CLBlast's batch strides cannot be negative */
                else if (i == 1)
                    step[t] = o[t] - prev[t];
                else if (i > 1 && o[t] - prev[t] != step[t])
                    all_even = false;
                prev[t] = o[t];
            }
        }
    }
    if (!all_even)
        nruns = d0 * (div > 1 ? div : 1);
    strided_run *runs = malloc(nruns * sizeof *runs);
    cl_event *evs = malloc(nruns * sizeof *evs);
    if (!runs || !evs) {
        free(runs);
        free(evs);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    if (all_even) {
        size_t c1 = d0 * d1 > 1 ? 1 : 0;
        runs[0] = (strided_run){item_offset(&A, 0, 0), item_offset(&A, c1 / d1, c1 % d1) - item_offset(&A, 0, 0),
                                item_offset(&B, 0, 0), item_offset(&B, c1 / d1, c1 % d1) - item_offset(&B, 0, 0),
                                item_offset(&C, 0, 0), item_offset(&C, c1 / d1, c1 % d1) - item_offset(&C, 0, 0),
                                d0 * d1};
    } else {
        /* Fixed i0 and residue r of i1 modulo div: i1 = r, r + div, ... is evenly spaced for
         * every operand (the shared kv head advances by one each step). */
        const size_t dv = div > 1 ? div : 1;
        size_t t = 0;
        for (size_t i0 = 0; i0 < d0; i0++)
            for (size_t r = 0; r < dv; r++, t++) {
                size_t cnt = d1 > r ? (d1 - r + dv - 1) / dv : 0;
                size_t nx = cnt > 1 ? r + dv : r;
                runs[t] = (strided_run){item_offset(&A, i0, r), item_offset(&A, i0, nx) - item_offset(&A, i0, r),
                                        item_offset(&B, i0, r), item_offset(&B, i0, nx) - item_offset(&B, i0, r),
                                        item_offset(&C, i0, r), item_offset(&C, i0, nx) - item_offset(&C, i0, r),
                                        cnt};
            }
    }

    atomic_store(&ctx->blas_used, 1);
    clattn_status st = CL_SUCCESS;
    if (num_wait > 0)
        st = clEnqueueBarrierWithWaitList(queue, num_wait, wait_list, NULL);
    size_t nev = 0;
    for (size_t t = 0; t < nruns && st == CL_SUCCESS; t++) {
        const strided_run *u = &runs[t];
        if (u->count == 0)
            continue;
        cl_event e = NULL;
        CLBlastStatusCode code;
        if (u->count == 1)
            code = CLBlastSgemm(CLBlastLayoutRowMajor, av.trans, bv.trans, m, n, k, alpha, A.buffer,
                                u->a0, av.ld, B.buffer, u->b0, bv.ld, beta, C.buffer, u->c0, cv.ld,
                                &queue, &e);
        else
            code = CLBlastSgemmStridedBatched(CLBlastLayoutRowMajor, av.trans, bv.trans, m, n, k,
                                              alpha, A.buffer, u->a0, av.ld, u->as, B.buffer, u->b0,
                                              bv.ld, u->bs, beta, C.buffer, u->c0, cv.ld, u->cs,
                                              u->count, &queue, &e);
        st = from_blas(ctx, code);
        if (st == CL_SUCCESS && e)
            evs[nev++] = e;
    }
    /* One event for all runs (they are independent: on an out-of-order queue they may overlap). */
    if (st == CL_SUCCESS && event_out) {
        if (nev == 1) {
            *event_out = evs[0];
            nev = 0;
        } else {
            st = clEnqueueMarkerWithWaitList(queue, (cl_uint)nev, nev ? evs : NULL, event_out);
        }
    }
    for (size_t t = 0; t < nev; t++)
        clReleaseEvent(evs[t]);
    free(runs);
    free(evs);
    return st;
}

bool clattn__gemm_view_ok(const clattn_tensor *t)
{
    /* CLBlast addresses elements, strides and sizes with 32-bit ints. */
    size_t last = t->offset;
    for (int d = 0; d < 4; d++) {
        if (t->dims[d] > INT_MAX)
            return false;
        if (t->dims[d] > 0)
            last += (t->dims[d] - 1) * t->strides[d]; /* no overflow: the view was checked */
    }
    return last <= INT_MAX;
}

void clattn__gemm_forget_context(clattn_context *ctx)
{
    /* CLBlast 1.5 can only clear its whole cache: other contexts recompile on their next
     * product (their programs in use stay alive: the cache holds shared pointers). */
    if (atomic_load(&ctx->blas_used))
        CLBlastClearCache();
}
