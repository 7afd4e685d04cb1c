/* Shared by clattn_mpi's calls (mpi_common.h). */
#define _POSIX_C_SOURCE 200809L
#include "mpi_common.h"

#include <stdlib.h>
#include <time.h>

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
            cl_int rc = clGetEventInfo(event, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec,
                                       &exec, NULL);
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
