/* Shared by clattn_mpi's calls (mpi_common.h). */
#define _POSIX_C_SOURCE 200809L
#include "mpi_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

clattn_status clattn_mpi__open(MPI_Comm comm, MPI_Comm *own, int *rank, int *size)
{
    if (MPI_Comm_dup(comm, own) != MPI_SUCCESS)
        return CLATTN_ERROR_COMMUNICATION;
    if (MPI_Comm_rank(*own, rank) != MPI_SUCCESS || MPI_Comm_size(*own, size) != MPI_SUCCESS) {
        MPI_Comm_free(own);
        return CLATTN_ERROR_COMMUNICATION;
    }
    return CLATTN_SUCCESS;
}

clattn_status clattn_mpi__agree(MPI_Comm comm, clattn_status local)
{
    int P = 0;
    if (MPI_Comm_size(comm, &P) != MPI_SUCCESS || P < 1)
        return CLATTN_ERROR_COMMUNICATION;
    int32_t *all = malloc((size_t)P * sizeof *all);
    int32_t mine = local;
    /* Without memory for the gather this rank cannot agree: it says so in a status of its own
     * through a smaller collective every rank makes anyway. */
    int32_t worst = 0, failed = all ? 0 : 1;
    if (MPI_Allreduce(&failed, &worst, 1, MPI_INT32_T, MPI_MAX, comm) != MPI_SUCCESS) {
        free(all);
        return CLATTN_ERROR_COMMUNICATION;
    }
    if (worst) {
        free(all);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    if (MPI_Allgather(&mine, 1, MPI_INT32_T, all, 1, MPI_INT32_T, comm) != MPI_SUCCESS) {
        free(all);
        return CLATTN_ERROR_COMMUNICATION;
    }
    clattn_status st = CLATTN_SUCCESS;
    for (int i = 0; i < P && st == CLATTN_SUCCESS; i++)
        st = all[i];
    free(all);
    return st;
}

clattn_status clattn_mpi__wait(cl_event event, MPI_Request *reqs, int n, double *waiting)
{
    bool dev_done = event == NULL, comm_done = n == 0;
    double idle_since = -1.0;
    const struct timespec nap = {0, 20000}; /* 20 us: MPI progress without burning a core */
    while (!dev_done || !comm_done) {
        if (!comm_done) {
            int flag = 0;
            if (MPI_Testall(n, reqs, &flag, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
                return CLATTN_ERROR_COMMUNICATION;
            comm_done = flag != 0;
        }
        if (!dev_done) {
            cl_int exec = CL_QUEUED;
            cl_int rc =
                clGetEventInfo(event, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL);
            if (rc != CL_SUCCESS)
                return rc;
            if (exec < 0)
                return exec;
            dev_done = exec == CL_COMPLETE;
        }
        if (dev_done && !comm_done && idle_since < 0.0)
            idle_since = MPI_Wtime();
        if (!dev_done || !comm_done)
            nanosleep(&nap, NULL);
    }
    if (idle_since >= 0.0 && waiting)
        *waiting += MPI_Wtime() - idle_since;
    return CLATTN_SUCCESS;
}

void clattn_mpi__span(const clattn_tensor *t, size_t *begin, size_t *end)
{
    const size_t es = clattn_dtype_size(t->dtype);
    size_t last = t->offset;
    for (int d = 0; d < 4; d++) {
        if (t->dims[d] == 0) {
            *begin = *end = 0;
            return;
        }
        last += (t->dims[d] - 1) * t->strides[d];
    }
    *begin = t->offset * es;
    *end = (last + 1) * es;
}

int64_t clattn_mpi__layout_count(clattn_mpi_layout layout, int r, int P, int64_t T)
{
    if (layout == CLATTN_MPI_ZIGZAG) {
        const int64_t c = 2 * (int64_t)P;
        return ((int64_t)(r + 1) * T / c - (int64_t)r * T / c) +
               ((int64_t)(c - r) * T / c - (int64_t)(c - 1 - r) * T / c);
    }
    if (layout == CLATTN_MPI_STRIPED)
        return T > r ? (T - r + P - 1) / P : 0;
    return -1;
}

int clattn_mpi__pieces(clattn_mpi_layout layout, int r, int P, const int64_t *counts,
                       clattn_mpi_piece pieces[2])
{
    int64_t T = 0;
    for (int i = 0; i < P; i++)
        T += counts[i];
    if (layout == CLATTN_MPI_ZIGZAG) {
        const int64_t c = 2 * (int64_t)P;
        const int64_t a0 = (int64_t)r * T / c, a1 = (int64_t)(r + 1) * T / c;
        const int64_t b0 = (int64_t)(c - 1 - r) * T / c, b1 = (int64_t)(c - r) * T / c;
        pieces[0] = (clattn_mpi_piece){0, (size_t)(a1 - a0), a0, 1};
        pieces[1] = (clattn_mpi_piece){(size_t)(a1 - a0), (size_t)(b1 - b0), b0, 1};
        return 2;
    }
    if (layout == CLATTN_MPI_STRIPED) {
        pieces[0] = (clattn_mpi_piece){0, (size_t)counts[r], r, P};
        return 1;
    }
    int64_t start = 0;
    for (int i = 0; i < r; i++)
        start += counts[i];
    pieces[0] = (clattn_mpi_piece){0, (size_t)counts[r], start, 1};
    return 1;
}

clattn_tensor clattn_mpi__rows(const clattn_tensor *t, size_t first, size_t n, long b)
{
    clattn_tensor v = *t;
    v.offset += first * t->strides[2];
    v.dims[2] = n;
    if (b >= 0) {
        v.offset += (size_t)b * t->strides[0];
        v.dims[0] = 1;
    }
    return v;
}

clattn_tensor clattn_mpi__dense(cl_mem buf, clattn_dtype dtype, size_t B, size_t H, size_t T,
                                size_t D)
{
    clattn_tensor t = clattn_tensor_bhtd(buf, 0, B, H, T, D);
    t.dtype = dtype;
    return t;
}

void clattn_mpi__release(cl_event *e)
{
    if (*e)
        clReleaseEvent(*e);
    *e = NULL;
}

static bool dims_are(const clattn_tensor *t, size_t d0, size_t d1, size_t d2, size_t d3)
{
    return t->dims[0] == d0 && t->dims[1] == d1 && t->dims[2] == d2 && t->dims[3] == d3;
}

/* What one rank can check alone: everything but the agreement between ranks. */
clattn_status clattn_mpi__validate(clattn_context *ctx, cl_command_queue queue,
                                   const clattn_tensor *Q, const clattn_tensor *K,
                                   const clattn_tensor *V, const clattn_tensor *O,
                                   const clattn_tensor *lse, const clattn_mpi_ring_params *rp)
{
    if (!ctx || !queue || !Q || !K || !V || !O || !rp)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    for (size_t i = 0; i < sizeof rp->reserved / sizeof rp->reserved[0]; i++)
        if (rp->reserved[i])
            return CLATTN_ERROR_INVALID_ARGUMENT;
    const clattn_sdpa_params *ap = &rp->attention;
    if (rp->layout != CLATTN_MPI_CONTIGUOUS && rp->layout != CLATTN_MPI_ZIGZAG &&
        rp->layout != CLATTN_MPI_STRIPED)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (ap->mask.additive || ap->probs || ap->lse || ap->workspace || ap->cu_seqlens_q ||
        ap->cu_seqlens_k || ap->num_seqs || ap->mask.query_offset)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (rp->layout == CLATTN_MPI_STRIPED && (ap->logits.alibi_slopes || ap->mask.window_keep_first))
        return CLATTN_ERROR_UNSUPPORTED_PATH;
    /* all float or all half (K/V then travel as half) */
    if ((Q->dtype != CLATTN_F32 && Q->dtype != CLATTN_F16) || K->dtype != Q->dtype ||
        V->dtype != Q->dtype || O->dtype != Q->dtype)
        return CLATTN_ERROR_UNSUPPORTED_DTYPE;
    if (lse && !dims_are(lse, O->dims[0], O->dims[1], O->dims[2], 1))
        return CLATTN_ERROR_INVALID_SHAPE;
    /* The local block against its own keys: clattn's own validation of shapes, views, the
     * mask and logits (and the kernels it needs, built now). */
    clattn_sdpa_params p = *ap;
    p.lse = lse;
    size_t bytes = 0;
    return clattn_sdpa_workspace_size(ctx, Q, K, V, O, &p, &bytes);
}

/* The ranks' descriptions must agree; the same verdict on every rank (same data). */
clattn_status clattn_mpi__consistent(const int64_t *meta, int P, const clattn_mpi_ring_params *rp,
                                     int64_t *nq, int64_t *nk, int64_t *Tq, int64_t *Tk)
{
    const int64_t *m0 = meta;
    *Tq = *Tk = 0;
    for (int i = 0; i < P; i++) {
        const int64_t *m = meta + (size_t)i * M_N;
        for (int f = M_B; f <= M_FLAGS; f++)
            if (f != M_NQ && f != M_NK && m[f] != m0[f])
                return f <= M_DV ? CLATTN_ERROR_INVALID_SHAPE : CLATTN_ERROR_INVALID_ARGUMENT;
        nq[i] = m[M_NQ];
        nk[i] = m[M_NK];
        *Tq += nq[i];
        *Tk += nk[i];
    }
    for (int i = 0; i < P; i++) {
        const int64_t cq = clattn_mpi__layout_count(rp->layout, i, P, *Tq);
        const int64_t ck = clattn_mpi__layout_count(rp->layout, i, P, *Tk);
        if ((cq >= 0 && cq != nq[i]) || (ck >= 0 && ck != nk[i]))
            return CLATTN_ERROR_INVALID_SHAPE;
    }
    return CLATTN_SUCCESS;
}

void clattn_mpi__describe(int64_t *m, const clattn_tensor *Q, const clattn_tensor *K,
                          const clattn_tensor *V, const clattn_mpi_ring_params *rp)
{
    memset(m, 0, M_N * sizeof *m);
    if (!Q || !K || !V || !rp)
        return;
    const clattn_mask_params *mk = &rp->attention.mask;
    m[M_B] = (int64_t)Q->dims[0], m[M_HQ] = (int64_t)Q->dims[1], m[M_HKV] = (int64_t)K->dims[1];
    m[M_D] = (int64_t)Q->dims[3], m[M_DV] = (int64_t)V->dims[3];
    m[M_NQ] = (int64_t)Q->dims[2], m[M_NK] = (int64_t)K->dims[2];
    m[M_DTYPE] = K->dtype, m[M_LAYOUT] = rp->layout, m[M_CAUSAL] = mk->causal;
    m[M_WL] = mk->window_left, m[M_WR] = mk->window_right;
    m[M_KEEP] = (int64_t)mk->window_keep_first;
    const clattn_logit_params *lp = &rp->attention.logits;
    m[M_FLAGS] = (mk->key_lengths != NULL) | (lp->alibi_slopes != NULL) << 1 |
                 (lp->sinks != NULL) << 2 | (lp->softcap > 0.0f) << 3;
    size_t b, e;
    clattn_mpi__span(K, &b, &e);
    m[M_KSPAN] = (int64_t)(e - b);
    clattn_mpi__span(V, &b, &e);
    m[M_VSPAN] = (int64_t)(e - b);
    for (int d = 0; d < 4; d++) {
        m[M_KS + d] = (int64_t)K->strides[d];
        m[M_VS + d] = (int64_t)V->strides[d];
    }
}

clattn_status clattn_mpi__read_dense(cl_command_queue queue, const clattn_tensor *t, float *out)
{
    size_t begin, end;
    clattn_mpi__span(t, &begin, &end);
    if (end == begin)
        return CLATTN_SUCCESS;
    float *span = malloc(end - begin);
    if (!span)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    cl_int rc =
        clEnqueueReadBuffer(queue, t->buffer, CL_TRUE, begin, end - begin, span, 0, NULL, NULL);
    if (rc == CL_SUCCESS) {
        size_t n = 0;
        for (size_t a = 0; a < t->dims[0]; a++)
            for (size_t b = 0; b < t->dims[1]; b++)
                for (size_t c = 0; c < t->dims[2]; c++)
                    for (size_t d = 0; d < t->dims[3]; d++)
                        out[n++] = span[a * t->strides[0] + b * t->strides[1] + c * t->strides[2] +
                                        d * t->strides[3]];
    }
    free(span);
    return rc;
}

cl_mem clattn_mpi__buffer(cl_context context, size_t bytes, clattn_status *st)
{
    cl_int rc = CL_SUCCESS;
    cl_mem m = clCreateBuffer(context, CL_MEM_READ_WRITE, bytes ? bytes : 4, NULL, &rc);
    if (rc != CL_SUCCESS && *st == CLATTN_SUCCESS)
        *st = rc;
    return rc == CL_SUCCESS ? m : NULL;
}

clattn_status clattn_mpi__store(clattn_context *ctx, cl_command_queue queue, const clattn_tensor *O,
                                const clattn_tensor *lse, cl_mem neg, const clattn_tensor *O_out,
                                const clattn_tensor *lse_out, cl_event *last)
{
    const size_t rows = O->dims[0] * O->dims[1] * O->dims[2];
    if (rows == 0)
        return CLATTN_SUCCESS;
    const float minus_inf = -INFINITY;
    cl_event fill = NULL, merged = NULL;
    cl_int rc =
        clEnqueueFillBuffer(queue, neg, &minus_inf, sizeof minus_inf, 0, rows * sizeof(float),
                            *last ? 1 : 0, *last ? last : NULL, &fill);
    if (rc != CL_SUCCESS)
        return rc;
    const clattn_tensor none = clattn_tensor_bhtd(neg, 0, O->dims[0], O->dims[1], O->dims[2], 1);
    /* The part's O is never read where its lse is −inf: O itself stands in for it. */
    clattn_status st =
        clattn_merge(ctx, queue, O, lse, O, &none, O_out, lse_out, 1, &fill, &merged);
    clReleaseEvent(fill);
    if (st != CLATTN_SUCCESS)
        return st;
    clattn_mpi__release(last);
    *last = merged;
    return CLATTN_SUCCESS;
}
