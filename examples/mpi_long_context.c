/* Long-context attention over MPI ranks with clattn_mpi's ring attention.
 *
 *   mpirun -np 4 ./mpi_long_context [T]      (T tokens, default 4096; one head of 64)
 *
 * Each rank holds a contiguous chunk of the sequence's queries, keys and values on its own
 * device, and gets its chunk of the causal attention output; no rank ever holds the whole K/V.
 * To show that the answer is the whole sequence's, every rank then gathers all keys and values
 * (something a real program would not do) and compares its rows with clattn_sdpa over them. */
#include <clattn_mpi.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define D 64

static float value(size_t t, size_t d, unsigned which)
{
    /* deterministic inputs: every rank can make any token's */
    return sinf(0.013f * (float)(t * (which + 3)) + 0.71f * (float)d + (float)which);
}

static cl_mem buffer(clattn_context *ctx, cl_command_queue q, const float *x, size_t n)
{
    cl_int err;
    cl_mem m = clCreateBuffer(clattn_context_cl_context(ctx), CL_MEM_READ_WRITE,
                              (n ? n : 1) * sizeof(float), NULL, &err);
    if (err == CL_SUCCESS && x && n)
        err = clEnqueueWriteBuffer(q, m, CL_TRUE, 0, n * sizeof(float), x, 0, NULL, NULL);
    return err == CL_SUCCESS ? m : NULL;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, P;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    const size_t T = argc > 1 ? strtoul(argv[1], NULL, 10) : 4096;
    const size_t n = T / (size_t)P + ((size_t)rank < T % (size_t)P);
    size_t start = 0;
    for (int r = 0; r < rank; r++)
        start += T / (size_t)P + ((size_t)r < T % (size_t)P);

    clattn_context *ctx = NULL;
    clattn_status st = clattn_context_create(NULL, &ctx);
    if (st != CLATTN_SUCCESS) {
        fprintf(stderr, "rank %d: %s\n", rank, clattn_status_string(st));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    cl_int err;
    cl_command_queue q = clCreateCommandQueue(clattn_context_cl_context(ctx),
                                              clattn_context_cl_device(ctx), 0, &err);
    /* This rank's chunk: tokens start .. start + n - 1. */
    float *all = malloc(3 * T * D * sizeof *all); /* q, k, v of every token (for the check) */
    for (size_t t = 0; t < T; t++)
        for (size_t d = 0; d < D; d++)
            for (unsigned w = 0; w < 3; w++)
                all[(w * T + t) * D + d] = value(t, d, w);
    cl_mem bq = buffer(ctx, q, all + start * D, n * D);
    cl_mem bk = buffer(ctx, q, all + (T + start) * D, n * D);
    cl_mem bv = buffer(ctx, q, all + (2 * T + start) * D, n * D);
    cl_mem bo = buffer(ctx, q, NULL, n * D);
    const clattn_tensor Q = clattn_tensor_bhtd(bq, 0, 1, 1, n, D);
    const clattn_tensor K = clattn_tensor_bhtd(bk, 0, 1, 1, n, D);
    const clattn_tensor V = clattn_tensor_bhtd(bv, 0, 1, 1, n, D);
    const clattn_tensor O = clattn_tensor_bhtd(bo, 0, 1, 1, n, D);

    clattn_mpi_ring_params rp = clattn_mpi_ring_params_default();
    rp.layout = CLATTN_MPI_CONTIGUOUS;
    rp.attention.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
    clattn_mpi_stats stats;
    rp.stats = &stats;
    st = clattn_mpi_ring_attention(ctx, q, MPI_COMM_WORLD, &Q, &K, &V, &O, NULL, &rp, 0, NULL);
    if (st != CLATTN_SUCCESS) { /* the same status on every rank */
        if (rank == 0)
            fprintf(stderr, "ring attention: %s\n", clattn_status_string(st));
        MPI_Finalize();
        return 1;
    }

    /* The check: this rank's queries against the whole sequence's keys, one process's way. */
    cl_mem fk = buffer(ctx, q, all + T * D, T * D), fv = buffer(ctx, q, all + 2 * T * D, T * D);
    cl_mem fo = buffer(ctx, q, NULL, n * D);
    const clattn_tensor FK = clattn_tensor_bhtd(fk, 0, 1, 1, T, D);
    const clattn_tensor FV = clattn_tensor_bhtd(fv, 0, 1, 1, T, D);
    const clattn_tensor FO = clattn_tensor_bhtd(fo, 0, 1, 1, n, D);
    clattn_sdpa_params sp = clattn_sdpa_params_default();
    sp.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
    sp.mask.query_offset = (ptrdiff_t)start; /* the chunk's queries sit at start .. */
    st = clattn_sdpa(ctx, q, &Q, &FK, &FV, &FO, &sp, 0, NULL, NULL);
    float *o = malloc((n * D + 1) * sizeof *o), *f = malloc((n * D + 1) * sizeof *f);
    if (st == CLATTN_SUCCESS && n) {
        clEnqueueReadBuffer(q, bo, CL_TRUE, 0, n * D * sizeof *o, o, 0, NULL, NULL);
        clEnqueueReadBuffer(q, fo, CL_TRUE, 0, n * D * sizeof *f, f, 0, NULL, NULL);
    }
    double diff = 0.0, worst = 0.0;
    for (size_t i = 0; i < n * D; i++)
        diff = fmax(diff, fabs((double)o[i] - (double)f[i]));
    MPI_Reduce(&diff, &worst, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("%zu tokens over %d ranks: ring attention in %.3f s, %.2f MiB of K/V sent per "
               "rank; largest difference from one process's attention %.2e\n",
               T, P, stats.seconds, (double)stats.bytes_sent / 1048576.0, worst);
    free(all), free(o), free(f);
    cl_mem bufs[] = {bq, bk, bv, bo, fk, fv, fo};
    for (int i = 0; i < 7; i++)
        clReleaseMemObject(bufs[i]);
    clReleaseCommandQueue(q);
    clattn_context_destroy(&ctx);
    MPI_Finalize();
    return st == CLATTN_SUCCESS && worst < 1e-4 ? 0 : 1;
}
