/* clattn-bench --mpi-ring: ring attention (clattn_mpi) timed under mpirun, one head of a long
 * sequence dealt among the ranks. Rank 0 prints, for the ranks' worst case: the call's median
 * time, the device and host memory each rank held against what one process needs for the whole
 * sequence, the K/V bytes each rank sent, and the share of the call spent waiting on
 * communication after the device had finished its block. Built when MPI is found. */
#include "bench_mpi.h"

#include "clattn_mpi.h"
#include "tool_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static clattn_mpi_layout layout_named(const char *name)
{
    return strcmp(name, "zigzag") == 0    ? CLATTN_MPI_ZIGZAG
           : strcmp(name, "striped") == 0 ? CLATTN_MPI_STRIPED
                                          : CLATTN_MPI_CONTIGUOUS;
}

static cl_mem upload(cl_context c, cl_command_queue q, size_t n, unsigned seed)
{
    cl_int err = CL_SUCCESS;
    cl_mem m = clCreateBuffer(c, CL_MEM_READ_WRITE, (n ? n : 1) * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS)
        return NULL;
    if (n) {
        float *x = tool_random_floats(n, seed, 1.0f);
        err = x ? clEnqueueWriteBuffer(q, m, CL_TRUE, 0, n * sizeof(float), x, 0, NULL, NULL)
                : CL_OUT_OF_HOST_MEMORY;
        free(x);
    }
    if (err != CL_SUCCESS) {
        clReleaseMemObject(m);
        return NULL;
    }
    return m;
}

int bench_mpi_ring(int *argc, char ***argv, size_t T, size_t H, size_t D, bool causal,
                   const char *layout_name, int reps)
{
    MPI_Init(argc, argv);
    int r = 0, P = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    const clattn_mpi_layout layout = layout_named(layout_name);
    /* This rank's count under the layout (contiguous: as even as it gets). */
    size_t n = T / (size_t)P + ((size_t)r < T % (size_t)P);
    if (layout == CLATTN_MPI_STRIPED)
        n = T > (size_t)r ? (T - (size_t)r + (size_t)P - 1) / (size_t)P : 0;
    if (layout == CLATTN_MPI_ZIGZAG) {
        const size_t c = 2 * (size_t)P;
        n = ((size_t)r + 1) * T / c - (size_t)r * T / c + (c - (size_t)r) * T / c -
            (c - 1 - (size_t)r) * T / c;
    }
    clattn_context *ctx = NULL;
    clattn_context_params cp = clattn_context_params_default();
    clattn_status st = clattn_context_create(&cp, &ctx);
    cl_command_queue q = NULL;
    cl_mem bq = NULL, bk = NULL, bv = NULL, bo = NULL, bl = NULL;
    if (st == CLATTN_SUCCESS) {
        cl_int err;
        q = clCreateCommandQueue(clattn_context_cl_context(ctx), clattn_context_cl_device(ctx), 0,
                                 &err);
        st = err;
    }
    if (st == CLATTN_SUCCESS) {
        cl_context c = clattn_context_cl_context(ctx);
        bq = upload(c, q, H * n * D, 1 + (unsigned)r);
        bk = upload(c, q, H * n * D, 101 + (unsigned)r);
        bv = upload(c, q, H * n * D, 201 + (unsigned)r);
        bo = upload(c, q, H * n * D, 0);
        bl = upload(c, q, H * n, 0);
        if (!bq || !bk || !bv || !bo || !bl)
            st = CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    const clattn_tensor Q = clattn_tensor_bhtd(bq, 0, 1, H, n, D);
    const clattn_tensor K = clattn_tensor_bhtd(bk, 0, 1, H, n, D);
    const clattn_tensor V = clattn_tensor_bhtd(bv, 0, 1, H, n, D);
    const clattn_tensor O = clattn_tensor_bhtd(bo, 0, 1, H, n, D);
    const clattn_tensor L = clattn_tensor_bhtd(bl, 0, 1, H, n, 1);
    clattn_mpi_ring_params rp = clattn_mpi_ring_params_default();
    rp.layout = layout;
    rp.attention.mask.causal = causal ? CLATTN_CAUSAL_TOP_LEFT : CLATTN_CAUSAL_NONE;
    clattn_mpi_stats stats;
    rp.stats = &stats;
    double *times = calloc((size_t)reps + 1, sizeof *times);
    double wait_share = 0.0;
    /* One call to warm up (kernels built, buffers touched), then the timed ones. */
    for (int i = 0; i <= reps && st == CLATTN_SUCCESS; i++) {
        MPI_Barrier(MPI_COMM_WORLD);
        const double t0 = tool_now();
        st = clattn_mpi_ring_attention(ctx, q, MPI_COMM_WORLD, &Q, &K, &V, &O, &L, &rp, 0, NULL);
        double dt = tool_now() - t0, worst = 0.0;
        MPI_Allreduce(&dt, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (i > 0) {
            times[i - 1] = worst;
            wait_share += stats.seconds_waiting / stats.seconds;
        }
    }
    /* Device bytes per rank: its chunks (Q, K, V, O, lse) plus what the call allocated. */
    const double mine = (double)(H * n * (4 * D + 1) * sizeof(float) + stats.device_bytes);
    const double whole = (double)(H * T * (4 * D + 1) * sizeof(float));
    double most = 0.0, sent = 0.0, share = reps ? wait_share / reps : 0.0, share_max = 0.0;
    MPI_Reduce(&mine, &most, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    const double s = (double)stats.bytes_sent;
    MPI_Reduce(&s, &sent, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    MPI_Reduce(&share, &share_max, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    if (r == 0 && st != CLATTN_SUCCESS)
        printf("mpi-ring: %s\n", clattn_status_name(st));
    else if (r == 0)
        printf("mpi-ring T=%zu H=%zu D=%zu %s %s ranks=%d: median %.3f s (%d reps), device "
               "memory per rank %.1f MiB (one process, the whole sequence's Q/K/V/O/lse: %.1f "
               "MiB, %.2fx), host staging %.1f MiB, sent per rank %.1f MiB, waiting on "
               "communication %.1f %% of the call (the worst rank)\n",
               T, H, D, causal ? "causal" : "full", layout_name, P,
               tool_median(times, (size_t)reps), reps, most / 1048576.0, whole / 1048576.0,
               most / whole, (double)stats.host_bytes / 1048576.0, sent / 1048576.0,
               100.0 * share_max);
    free(times);
    cl_mem bufs[] = {bq, bk, bv, bo, bl};
    for (int i = 0; i < 5; i++)
        if (bufs[i])
            clReleaseMemObject(bufs[i]);
    if (q)
        clReleaseCommandQueue(q);
    clattn_context_destroy(&ctx);
    MPI_Finalize();
    return st == CLATTN_SUCCESS ? 0 : 1;
}
