/* Matrix products through CLBlast (row-major). The one file that includes clblast_c.h. */
#include "gemm.h"

#include <clblast_c.h>
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

    const size_t count = d0 * d1;
    size_t *offs = malloc(3 * count * sizeof *offs);
    if (!offs)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    size_t *ao = offs, *bo = offs + count, *co = offs + 2 * count;
    for (size_t i0 = 0; i0 < d0; i0++) {
        for (size_t i1 = 0; i1 < d1; i1++) {
            size_t i = i0 * d1 + i1;
            ao[i] = item_offset(&A, i0, i1);
            bo[i] = item_offset(&B, i0, i1);
            co[i] = item_offset(&C, i0, i1);
        }
    }
    /* Evenly spaced items can use the strided-batched routine, which needs no offset arrays. */
    bool even = true;
    size_t as = count > 1 ? ao[1] - ao[0] : 0, bs = count > 1 ? bo[1] - bo[0] : 0,
           cs = count > 1 ? co[1] - co[0] : 0;
    for (size_t i = 1; even && i < count; i++)
        even = ao[i] - ao[i - 1] == as && bo[i] - bo[i - 1] == bs && co[i] - co[i - 1] == cs;

    atomic_store(&ctx->blas_used, 1);
    if (num_wait > 0) {
        cl_int err = clEnqueueBarrierWithWaitList(queue, num_wait, wait_list, NULL);
        if (err != CL_SUCCESS) {
            free(offs);
            return err;
        }
    }
    CLBlastStatusCode code;
    if (count == 1) {
        code = CLBlastSgemm(CLBlastLayoutRowMajor, av.trans, bv.trans, m, n, k, alpha, A.buffer,
                            ao[0], av.ld, B.buffer, bo[0], bv.ld, beta, C.buffer, co[0], cv.ld,
                            &queue, event_out);
    } else if (even) {
        code = CLBlastSgemmStridedBatched(CLBlastLayoutRowMajor, av.trans, bv.trans, m, n, k, alpha,
                                          A.buffer, ao[0], av.ld, as, B.buffer, bo[0], bv.ld, bs,
                                          beta, C.buffer, co[0], cv.ld, cs, count, &queue,
                                          event_out);
    } else {
        float *ab = malloc(2 * count * sizeof *ab);
        if (!ab) {
            free(offs);
            return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
        }
        for (size_t i = 0; i < count; i++) {
            ab[i] = alpha;
            ab[count + i] = beta;
        }
        code = CLBlastSgemmBatched(CLBlastLayoutRowMajor, av.trans, bv.trans, m, n, k, ab, A.buffer,
                                   ao, av.ld, B.buffer, bo, bv.ld, ab + count, C.buffer, co, cv.ld,
                                   count, &queue, event_out);
        free(ab);
    }
    free(offs);
    return from_blas(ctx, code);
}

void clattn__gemm_forget_context(clattn_context *ctx)
{
    /* CLBlast 1.5 can only clear its whole cache: other contexts recompile on their next
     * product (their programs in use stay alive: the cache holds shared pointers). */
    if (atomic_load(&ctx->blas_used))
        CLBlastClearCache();
}
