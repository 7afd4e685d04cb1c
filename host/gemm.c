/* Matrix products through CLBlast (row-major). The one file that includes clblast_c.h. */
#include "gemm.h"

#include <clblast_c.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
typedef struct clattn_gemm_run {
    size_t a0, as, b0, bs, c0, cs, count;
} clattn_gemm_run;

/* Whether every operand's items are evenly spaced (and ascending: CLBlast's batch strides cannot
 * be negative) over all d0 x d1 items, so that one strided-batched call covers them. */
static bool all_even(const clattn_operand *const ops[3], size_t d0, size_t d1)
{
    size_t prev[3] = {0, 0, 0}, step[3] = {0, 0, 0};
    for (size_t i = 0; i < d0 * d1; i++) {
        for (int t = 0; t < 3; t++) {
            const size_t o = item_offset(ops[t], i / d1, i % d1);
            if (i > 0 && o < prev[t])
                return false;
            if (i == 1)
                step[t] = o - prev[t];
            else if (i > 1 && o - prev[t] != step[t])
                return false;
            prev[t] = o;
        }
    }
    return true;
}

/* A run of `count` items: the first is item (i0, i1), the second (j0, j1), and so on evenly. */
static clattn_gemm_run run_of(const clattn_operand *const ops[3], size_t i0, size_t i1, size_t j0,
                              size_t j1, size_t count)
{
    size_t o0[3], o1[3];
    for (int t = 0; t < 3; t++) {
        o0[t] = item_offset(ops[t], i0, i1);
        o1[t] = count > 1 ? item_offset(ops[t], j0, j1) : o0[t];
    }
    return (clattn_gemm_run){o0[0], o1[0] - o0[0], o0[1], o1[1] - o0[1], o0[2], o1[2] - o0[2],
                             count};
}

/* CLBlast compiles a routine's kernels during its first call in a context (seconds on PoCL).
 * A plan makes sure that each routine its products use has run once in the context, on a queue
 * of the library's own: the call then compiles nothing after its first enqueue, and a failure
 * to compile is an error before it. (Another context's destroy clears CLBlast's cache: the next
 * product here compiles again, inside the enqueue.) The warm-up runs on the context's own queue;
 * its small buffer lives as long as the context: a buffer released and made again at once
 * showed Oclgrind 21.10 stale "uninitialised" state in later buffers. */
static clattn_status warm_up(clattn_context *ctx, bool batched)
{
    atomic_int *warm = &ctx->blas_warm[batched];
    if (atomic_load(warm))
        return CL_SUCCESS;
    cl_command_queue q;
    cl_int err = clattn__own_queue_begin(ctx, &q);
    if (err != CL_SUCCESS)
        return err;
    static const float zeros[8] = {0};
    if (!ctx->blas_scratch)
        ctx->blas_scratch = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                           sizeof zeros, (void *)zeros, &err);
    if (err == CL_SUCCESS && !atomic_load(warm)) {
        atomic_store(&ctx->blas_used, 1);
        const CLBlastTranspose no = CLBlastTransposeNo;
        cl_mem m = ctx->blas_scratch;
        /* A = m[0..1], B = m[2..3], C = m[4..5]: one or two 1 x 1 x 1 products. */
        CLBlastStatusCode code =
            batched ? CLBlastSgemmStridedBatched(CLBlastLayoutRowMajor, no, no, 1, 1, 1, 1.0f, m, 0,
                                                 1, 1, m, 2, 1, 1, 0.0f, m, 4, 1, 1, 2, &q, NULL)
                    : CLBlastSgemm(CLBlastLayoutRowMajor, no, no, 1, 1, 1, 1.0f, m, 0, 1, m, 2, 1,
                                   0.0f, m, 4, 1, &q, NULL);
        err = from_blas(ctx, code);
        if (err == CL_SUCCESS)
            err = clFinish(q);
        if (err == CL_SUCCESS)
            atomic_store(warm, 1);
    }
    clattn__own_queue_end(ctx);
    return err;
}

clattn_status clattn__gemm_prepare(clattn_context *ctx, size_t d0, size_t d1, float alpha,
                                   const clattn_operand *A_, const clattn_operand *B_, float beta,
                                   const clattn_operand *C_, clattn_gemm *g)
{
    memset(g, 0, sizeof *g);
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

    /* The items as runs of evenly spaced ones, for CLBlast's strided-batched routine (its
     * offset-array routine uploads the offsets with a blocking write and a clFinish, which
     * would wait on the caller's queue). All items at once when they are evenly spaced; else
     * per i0, and per query head within a kv-head group when several share one (GQA). */
    const clattn_operand *const ops[3] = {&A, &B, &C};
    const size_t div = A.head_div > B.head_div ? A.head_div : B.head_div;
    const size_t dv = div > 1 ? div : 1;
    const bool even = all_even(ops, d0, d1);
    const size_t nruns = even ? 1 : d0 * dv;
    g->runs = malloc(nruns * sizeof *g->runs);
    g->events = malloc(nruns * sizeof *g->events);
    if (!g->runs || !g->events) {
        clattn__gemm_release(g);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    if (even) {
        g->runs[0] = run_of(ops, 0, 0, d1 > 1 ? 0 : 1, d1 > 1 ? 1 : 0, d0 * d1);
    } else {
        /* Fixed i0 and residue r of i1 modulo div: i1 = r, r + div, ... is evenly spaced for
         * every operand (the shared kv head advances by one each step). */
        size_t t = 0;
        for (size_t i0 = 0; i0 < d0; i0++)
            for (size_t r = 0; r < dv; r++, t++)
                g->runs[t] = run_of(ops, i0, r, i0, r + dv, d1 > r ? (d1 - r + dv - 1) / dv : 0);
    }
    g->num_runs = nruns;
    clattn_status st = CL_SUCCESS;
    for (size_t t = 0; t < nruns && st == CL_SUCCESS; t++)
        if (g->runs[t].count > 0)
            st = warm_up(ctx, g->runs[t].count > 1);
    if (st != CL_SUCCESS) {
        clattn__gemm_release(g);
        return st;
    }
    g->trans_a = av.trans == CLBlastTransposeYes;
    g->trans_b = bv.trans == CLBlastTransposeYes;
    g->m = C.rows;
    g->n = C.cols;
    g->k = A.cols;
    g->lda = av.ld;
    g->ldb = bv.ld;
    g->ldc = cv.ld;
    g->alpha = alpha;
    g->beta = beta;
    g->a = A.buffer;
    g->b = B.buffer;
    g->c = C.buffer;
    return CL_SUCCESS;
}

clattn_status clattn__gemm_enqueue(clattn_context *ctx, cl_command_queue queue, clattn_gemm *g,
                                   cl_uint num_wait, const cl_event *wait_list,
                                   size_t *num_events)
{
    atomic_store(&ctx->blas_used, 1);
    const CLBlastTranspose ta = g->trans_a ? CLBlastTransposeYes : CLBlastTransposeNo;
    const CLBlastTranspose tb = g->trans_b ? CLBlastTransposeYes : CLBlastTransposeNo;
    clattn_status st = CL_SUCCESS;
    if (num_wait > 0)
        st = clEnqueueBarrierWithWaitList(queue, num_wait, wait_list, NULL);
    size_t nev = 0;
    for (size_t t = 0; t < g->num_runs && st == CL_SUCCESS; t++) {
        const clattn_gemm_run *u = &g->runs[t];
        if (u->count == 0)
            continue;
        cl_event e = NULL;
        CLBlastStatusCode code;
        if (u->count == 1)
            code = CLBlastSgemm(CLBlastLayoutRowMajor, ta, tb, g->m, g->n, g->k, g->alpha, g->a,
                                u->a0, g->lda, g->b, u->b0, g->ldb, g->beta, g->c, u->c0, g->ldc,
                                &queue, &e);
        else
            code = CLBlastSgemmStridedBatched(CLBlastLayoutRowMajor, ta, tb, g->m, g->n, g->k,
                                              g->alpha, g->a, u->a0, g->lda, u->as, g->b, u->b0,
                                              g->ldb, u->bs, g->beta, g->c, u->c0, g->ldc, u->cs,
                                              u->count, &queue, &e);
        st = from_blas(ctx, code);
        if (st == CL_SUCCESS && e)
            g->events[nev++] = e;
    }
    if (st != CL_SUCCESS) {
        for (size_t t = 0; t < nev; t++)
            clReleaseEvent(g->events[t]);
        nev = 0;
    }
    *num_events = nev;
    return st;
}

void clattn__gemm_release(clattn_gemm *g)
{
    free(g->runs);
    free(g->events);
    g->runs = NULL;
    g->events = NULL;
    g->num_runs = 0;
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

clattn_status clattn__gemm_use_xgemm(clattn_context *ctx, const char *params)
{
    static const char *names[] = {"GEMMK", "KREG", "KWG",  "KWI", "MDIMA", "MDIMC", "MWG", "NDIMB",
                                  "NDIMC", "NWG",  "SA",   "SB",  "STRM",  "STRN",  "VWM", "VWN"};
    enum { N = sizeof names / sizeof names[0] };
    size_t values[N];
    bool seen[N] = {false};
    char copy[512];
    if (snprintf(copy, sizeof copy, "%s", params) >= (int)sizeof copy)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    char *save = NULL;
    for (char *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            return CLATTN_ERROR_INVALID_ARGUMENT;
        *eq = '\0';
        int i = 0;
        while (i < N && strcmp(names[i], tok) != 0)
            i++;
        char *end;
        const unsigned long v = strtoul(eq + 1, &end, 10);
        if (i == N || *end != '\0' || v > 1024)
            return CLATTN_ERROR_INVALID_ARGUMENT;
        values[i] = v;
        seen[i] = true;
    }
    for (int i = 0; i < N; i++)
        if (!seen[i])
            return CLATTN_ERROR_INVALID_ARGUMENT;
#if CLBLAST_VERSION_MAJOR == 1 && (CLBLAST_VERSION_MINOR < 6 || (CLBLAST_VERSION_MINOR == 6 && CLBLAST_VERSION_PATCH < 3))
    if (values[0] == 1 && values[6] != values[9]) /* GEMMK=1 with MWG != NWG: wrong results */
        return CLATTN_ERROR_INVALID_ARGUMENT;
#endif
    return from_blas(ctx, CLBlastOverrideParameters(ctx->device, "Xgemm", CLBlastPrecisionSingle, N,
                                                    names, values));
}

void clattn__gemm_forget_context(clattn_context *ctx)
{
    if (ctx->blas_scratch)
        clReleaseMemObject(ctx->blas_scratch);
    /* CLBlast 1.5 can only clear its whole cache: other contexts recompile on their next
     * product (their programs in use stay alive: the cache holds shared pointers). */
    if (atomic_load(&ctx->blas_used))
        CLBlastClearCache();
}
