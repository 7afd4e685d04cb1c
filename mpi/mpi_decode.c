/* Decoding over a sharded KV cache (clattn_mpi_kv_attend): root's query broadcast, each rank's
 * attention over its shard with log-sum-exp, and an all-reduce whose MPI operation merges two
 * partial rows (O, lse) into the row over the union of their keys. */
#include "mpi_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

clattn_mpi_decode_params clattn_mpi_decode_params_default(void)
{
    clattn_mpi_decode_params p;
    memset(&p, 0, sizeof p);
    p.attend = clattn_kv_attend_params_default();
    return p;
}

/* The MPI operation: records of (lse, O[0 .. n)), n from the datatype. inout = in ⊕ inout, the
 * log-sum-exp merge (commutative; associative up to rounding). A part that saw no key (lse
 * −inf) adds nothing, its O not even read; a NaN lse stays NaN. */
static void merge_rows(void *in, void *inout, int *len, MPI_Datatype *type)
{
    int bytes = 0;
    MPI_Type_size(*type, &bytes);
    const int n = bytes / (int)sizeof(float) - 1;
    float *a = in, *b = inout;
    for (int r = 0; r < *len; r++, a += n + 1, b += n + 1) {
        const double la = a[0], lb = b[0];
        if (isnan(la) || isnan(lb)) {
            b[0] = NAN;
            continue;
        }
        const double mx = la > lb ? la : lb;
        if (mx == -INFINITY)
            continue; /* neither saw a key: b stays O = 0, lse = −inf */
        const double wa = la == -INFINITY ? 0.0 : exp(la - mx);
        const double wb = lb == -INFINITY ? 0.0 : exp(lb - mx);
        const double sum = wa + wb;
        for (int d = 1; d <= n; d++) {
            double o = 0.0;
            if (wa != 0.0)
                o += wa * a[d];
            if (wb != 0.0)
                o += wb * b[d];
            b[d] = (float)(o / sum);
        }
        b[0] = (float)(mx + log(sum));
    }
}

static clattn_status validate(clattn_context *ctx, clattn_kv_cache *cache, cl_command_queue queue,
                              const clattn_tensor *Q, const clattn_tensor *O,
                              const clattn_mpi_decode_params *p, int P)
{
    if (!ctx || !cache || !queue || !Q || !O || !p)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    for (size_t i = 0; i < sizeof p->reserved / sizeof p->reserved[0]; i++)
        if (p->reserved[i])
            return CLATTN_ERROR_INVALID_ARGUMENT;
    const clattn_kv_attend_params *a = &p->attend;
    if (a->lse || a->workspace || a->cu_seqlens_q || a->num_seqs || p->root < 0 || p->root >= P)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (a->window_left != CLATTN_WINDOW_UNBOUNDED || a->logits.alibi_slopes)
        return CLATTN_ERROR_UNSUPPORTED_PATH;
    if (!a->cross && Q->dims[2] != 1)
        return CLATTN_ERROR_UNSUPPORTED_PATH;
    if (Q->dtype != CLATTN_F32 || O->dtype != CLATTN_F32)
        return CLATTN_ERROR_UNSUPPORTED_DTYPE;
    const clattn_tensor *l = p->lse;
    if (l && (l->dims[0] != O->dims[0] || l->dims[1] != O->dims[1] || l->dims[2] != O->dims[2] ||
              l->dims[3] != 1))
        return CLATTN_ERROR_INVALID_SHAPE;
    clattn_kv_attend_params ap = *a;
    ap.lse = l;
    size_t bytes = 0;
    return clattn_kv_cache_workspace_size(cache, Q, O, &ap, &bytes);
}

clattn_status clattn_mpi_kv_attend(clattn_context *ctx, clattn_kv_cache *cache,
                                   cl_command_queue queue, MPI_Comm comm, const clattn_tensor *Q,
                                   const clattn_tensor *O, const clattn_mpi_decode_params *params,
                                   cl_uint num_wait, const cl_event *wait_list)
{
    const double t0 = MPI_Wtime();
    MPI_Comm c;
    int r = 0, P = 1;
    if (clattn_mpi__open(comm, &c, &r, &P) != CLATTN_SUCCESS)
        return CLATTN_ERROR_COMMUNICATION;
    clattn_status st = validate(ctx, cache, queue, Q, O, params, P);
    if (st == CLATTN_SUCCESS && (num_wait > 0) != (wait_list != NULL))
        st = CLATTN_ERROR_INVALID_ARGUMENT;
    st = clattn_mpi__agree(c, st);
    if (st != CLATTN_SUCCESS) {
        MPI_Comm_free(&c);
        return st;
    }
    /* Every rank's shapes and settings must be root's. */
    const clattn_kv_attend_params *a = &params->attend;
    enum { F_B, F_H, F_L, F_D, F_DV, F_ROOT, F_CROSS, F_SINKS, F_N };
    int64_t mine[F_N] = {(int64_t)Q->dims[0], (int64_t)Q->dims[1],    (int64_t)Q->dims[2],
                         (int64_t)Q->dims[3], (int64_t)O->dims[3],    params->root,
                         a->cross != 0,       a->logits.sinks != NULL};
    int64_t lo[F_N], hi[F_N];
    if (MPI_Allreduce(mine, lo, F_N, MPI_INT64_T, MPI_MIN, c) ||
        MPI_Allreduce(mine, hi, F_N, MPI_INT64_T, MPI_MAX, c)) {
        MPI_Comm_free(&c);
        return CLATTN_ERROR_COMMUNICATION;
    }
    if (memcmp(lo, hi, sizeof lo) != 0) {
        MPI_Comm_free(&c);
        return CLATTN_ERROR_INVALID_SHAPE; /* the same verdict everywhere: the same data */
    }
    const size_t B = Q->dims[0], H = Q->dims[1], L = Q->dims[2], D = Q->dims[3], Dv = O->dims[3],
                 rows = B * H * L;
    clattn_mpi_stats stats = {0};
    float *q = malloc((rows * D + 1) * sizeof *q);
    float *o = malloc((rows * Dv + 1) * sizeof *o), *l = malloc((rows + 1) * sizeof *l);
    float *rec = malloc((rows * (Dv + 1) + 1) * sizeof *rec);
    if (!q || !o || !l || !rec)
        st = CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    cl_context cc = clattn_context_cl_context(ctx);
    cl_mem bq = clattn_mpi__buffer(cc, rows * D * sizeof(float), &st);
    cl_mem bo = clattn_mpi__buffer(cc, rows * Dv * sizeof(float), &st);
    cl_mem bl = clattn_mpi__buffer(cc, rows * sizeof(float), &st);
    cl_mem neg = clattn_mpi__buffer(cc, rows * sizeof(float), &st);
    stats.host_bytes = rows * (D + 2 * Dv + 3) * sizeof(float);
    stats.device_bytes = rows * (D + Dv + 2) * sizeof(float);
    if (rows * (Dv + 1) > INT32_MAX || rows * D > INT32_MAX)
        st = CLATTN_ERROR_SIZE_OVERFLOW;
    if (st == CLATTN_SUCCESS && num_wait)
        st = clWaitForEvents(num_wait, wait_list);
    if (st == CLATTN_SUCCESS && r == params->root)
        st = clattn_mpi__read_dense(queue, Q, q);
    MPI_Datatype row_type = MPI_DATATYPE_NULL;
    MPI_Op op = MPI_OP_NULL;
    cl_event last = NULL;
    if ((st = clattn_mpi__agree(c, st)) != CLATTN_SUCCESS)
        goto done;
    if (MPI_Bcast(q, (int)(rows * D), MPI_FLOAT, params->root, c) != MPI_SUCCESS) {
        st = CLATTN_ERROR_COMMUNICATION;
        goto done;
    }
    stats.bytes_sent = r == params->root ? (uint64_t)(P - 1) * rows * D * sizeof(float) : 0;
    stats.bytes_received = r == params->root ? 0 : rows * D * sizeof(float);
    /* This rank's shard: partial O and lse, without the sinks (added once, at the end). */
    const clattn_tensor tq = clattn_tensor_bhtd(bq, 0, B, H, L, D);
    const clattn_tensor to = clattn_tensor_bhtd(bo, 0, B, H, L, Dv);
    const clattn_tensor tl = clattn_tensor_bhtd(bl, 0, B, H, L, 1);
    clattn_kv_attend_params ap = *a;
    ap.lse = &tl;
    ap.logits.sinks = NULL;
    ap.logits.sinks_offset = 0;
    cl_event wrote = NULL;
    st = rows ? clEnqueueWriteBuffer(queue, bq, CL_FALSE, 0, rows * D * sizeof(float), q, 0, NULL,
                                     &wrote)
              : CLATTN_SUCCESS;
    if (st == CLATTN_SUCCESS && rows)
        st = clattn_kv_cache_attend(cache, queue, &tq, &to, &ap, 1, &wrote, &last);
    if (wrote)
        clWaitForEvents(1, &wrote); /* q must outlive the write */
    clattn_mpi__release(&wrote);
    if (st == CLATTN_SUCCESS && rows) {
        st = clEnqueueReadBuffer(queue, bo, CL_FALSE, 0, rows * Dv * sizeof(float), o, 1, &last,
                                 NULL);
        if (st == CLATTN_SUCCESS)
            st =
                clEnqueueReadBuffer(queue, bl, CL_TRUE, 0, rows * sizeof(float), l, 1, &last, NULL);
    }
    clattn_mpi__release(&last);
    if ((st = clattn_mpi__agree(c, st)) != CLATTN_SUCCESS)
        goto done;
    for (size_t i = 0; i < rows; i++) {
        rec[i * (Dv + 1)] = l[i];
        memcpy(rec + i * (Dv + 1) + 1, o + i * Dv, Dv * sizeof *o);
    }
    if (MPI_Type_contiguous((int)(Dv + 1), MPI_FLOAT, &row_type) || MPI_Type_commit(&row_type) ||
        MPI_Op_create(merge_rows, 1, &op) ||
        MPI_Allreduce(MPI_IN_PLACE, rec, (int)rows, row_type, op, c)) {
        st = CLATTN_ERROR_COMMUNICATION;
        goto done;
    }
    /* A reduction moves about twice the data each way, whatever MPI's algorithm. */
    stats.bytes_sent += 2 * rows * (Dv + 1) * sizeof(float);
    stats.bytes_received += 2 * rows * (Dv + 1) * sizeof(float);
    for (size_t i = 0; i < rows; i++) {
        l[i] = rec[i * (Dv + 1)];
        memcpy(o + i * Dv, rec + i * (Dv + 1) + 1, Dv * sizeof *o);
    }
    st = rows ? clEnqueueWriteBuffer(queue, bo, CL_TRUE, 0, rows * Dv * sizeof(float), o, 0, NULL,
                                     NULL)
              : CLATTN_SUCCESS;
    if (st == CLATTN_SUCCESS && rows)
        st = clEnqueueWriteBuffer(queue, bl, CL_TRUE, 0, rows * sizeof(float), l, 0, NULL, NULL);
    const clattn_tensor *lse_out = params->lse ? params->lse : &tl;
    if (st == CLATTN_SUCCESS)
        st = clattn_mpi__store(ctx, queue, &to, &tl, neg, O, lse_out, &last);
    if (st == CLATTN_SUCCESS && a->logits.sinks && rows) {
        cl_event ev = NULL;
        st = clattn_add_sinks(ctx, queue, O, lse_out, a->logits.sinks, a->logits.sinks_offset,
                              last ? 1 : 0, last ? &last : NULL, &ev);
        if (st == CLATTN_SUCCESS) {
            clattn_mpi__release(&last);
            last = ev;
        }
    }
    if (st == CLATTN_SUCCESS && last)
        st = clWaitForEvents(1, &last);
    st = clattn_mpi__agree(c, st);
done:
    if (last)
        clWaitForEvents(1, &last);
    clattn_mpi__release(&last);
    if (op != MPI_OP_NULL)
        MPI_Op_free(&op);
    if (row_type != MPI_DATATYPE_NULL)
        MPI_Type_free(&row_type);
    cl_mem bufs[] = {bq, bo, bl, neg};
    for (size_t i = 0; i < 4; i++)
        if (bufs[i])
            clReleaseMemObject(bufs[i]);
    free(q), free(o), free(l), free(rec);
    stats.seconds = MPI_Wtime() - t0;
    if (params->stats)
        *params->stats = stats;
    MPI_Comm_free(&c);
    return st;
}
