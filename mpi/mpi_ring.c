/* Ring attention (clattn_mpi_ring_attention): each rank keeps its queries and passes K/V blocks
 * around the ring, P − 1 steps; at each step the next block's transfer (host staging, MPI
 * non-blocking send and receive) overlaps the attention of the block in hand. Every (query
 * piece, key piece) pair is one clattn_sdpa with a query offset that puts the block at its
 * place in the whole sequence, into a partial result merged by log-sum-exp into an accumulator;
 * the caller's O and lse are written once, at the end. */
#include "mpi_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

clattn_mpi_ring_params clattn_mpi_ring_params_default(void)
{
    clattn_mpi_ring_params p;
    memset(&p, 0, sizeof p);
    p.layout = CLATTN_MPI_CONTIGUOUS;
    p.attention = clattn_sdpa_params_default();
    return p;
}

static int64_t floor_div(int64_t a, int64_t s)
{
    return a >= 0 ? a / s : -((-a + s - 1) / s);
}

static int64_t ceil_div(int64_t a, int64_t s)
{
    return -floor_div(-a, s);
}

static int64_t clamp64(int64_t x, int64_t lo, int64_t hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

typedef struct ring {
    clattn_context *ctx;
    cl_command_queue queue;
    const clattn_mpi_ring_params *rp;
    int r, P;
    int64_t Tq, Tk;
    int *lengths; /* host copy of the key lengths, or NULL */
    size_t B;
    clattn_tensor Q, acc, acc_lse, part, part_lse;
    cl_event last; /* the newest of the call's enqueued commands; each waits on the one before */
    clattn_mpi_stats stats;
} ring;

/* Enqueues `what` after r->last and makes its event the new last. */
#define CHAIN(r, call)                                                                             \
    do {                                                                                           \
        cl_event ev_ = NULL;                                                                       \
        const cl_uint nw_ = (r)->last ? 1u : 0u;                                                   \
        const cl_event *wl_ = (r)->last ? &(r)->last : NULL;                                       \
        clattn_status st_ = (call);                                                                \
        if (st_ != CLATTN_SUCCESS)                                                                 \
            return st_;                                                                            \
        clattn_mpi__release(&(r)->last);                                                           \
        (r)->last = ev_;                                                                           \
        (void)nw_, (void)wl_;                                                                      \
    } while (0)

/* One query piece against one key piece, for batch item b (all when b < 0): the attention of
 * the local rows with the mask moved to their place in the whole sequence, merged into acc. */
static clattn_status pair(ring *g, const clattn_mpi_piece *qp, const clattn_mpi_piece *kp,
                          const clattn_tensor *K, const clattn_tensor *V, long b)
{
    const clattn_sdpa_params *ap = &g->rp->attention;
    const clattn_mask_params *m = &ap->mask;
    const int64_t S = qp->stride, nq = (int64_t)qp->n;
    const int64_t Lk_b = g->lengths ? clamp64(g->lengths[b], 0, g->Tk) : g->Tk;
    const int64_t lk = clamp64(ceil_div(Lk_b - kp->pos0, S), 0, (int64_t)kp->n);
    /* Query i sits at global i' = pos0 + i·S + sh; key j at kpos0 + j·S; a = i' − kpos at i = j = 0. */
    const int64_t sh = m->causal == CLATTN_CAUSAL_TOP_LEFT ? 0 : Lk_b - g->Tq;
    const int64_t a = qp->pos0 - kp->pos0 + sh, off = floor_div(a, S);
    clattn_sdpa_params p = *ap;
    p.mask.key_lengths = NULL;
    p.mask.key_lengths_offset = 0;
    p.logits.sinks = NULL; /* added once, after the last merge */
    p.logits.sinks_offset = 0;
    p.mask.causal = m->causal == CLATTN_CAUSAL_NONE ? CLATTN_CAUSAL_NONE : CLATTN_CAUSAL_TOP_LEFT;
    /* Window sides past 2^40 are unbounded to clattn too; capped so that no sum overflows. */
    const int64_t open = (int64_t)1 << 40;
    const int64_t left = m->window_left > open ? open : m->window_left;
    const int64_t right = m->window_right > open ? open : m->window_right;
    const int64_t kept = m->window_keep_first > (size_t)open ? open : (int64_t)m->window_keep_first;
    int64_t wl = -1, wr = -1, keep = 0;
    if (m->window_left != CLATTN_WINDOW_UNBOUNDED) {
        wl = off - ceil_div(a - left, S);
        keep = clamp64(ceil_div(kept - kp->pos0, S), 0, lk);
    }
    if (m->window_right != CLATTN_WINDOW_UNBOUNDED)
        wr = floor_div(a + right, S) - off;
    /* Skip a pair whose every row is hidden (the kernels would give lse = −inf for each). */
    bool hidden = nq == 0 || lk == 0 || (m->window_left != CLATTN_WINDOW_UNBOUNDED && wl < 0);
    if (p.mask.causal != CLATTN_CAUSAL_NONE && nq - 1 + off < 0)
        hidden = true;
    if (wr >= 0 && nq - 1 + off + wr < 0)
        hidden = true;
    if (wl >= 0 && keep == 0 && off - wl > lk - 1)
        hidden = true;
    if (hidden) {
        g->stats.blocks_skipped++;
        return CLATTN_SUCCESS;
    }
    p.mask.window_left = wl;
    p.mask.window_right = wr;
    p.mask.window_keep_first = (size_t)keep;
    p.mask.query_offset =
        (ptrdiff_t)(p.mask.causal == CLATTN_CAUSAL_TOP_LEFT ? off : off - (lk - nq));
    const clattn_tensor q = clattn_mpi__rows(&g->Q, qp->local0, qp->n, b);
    const clattn_tensor k = clattn_mpi__rows(K, kp->local0, (size_t)lk, b);
    const clattn_tensor v = clattn_mpi__rows(V, kp->local0, (size_t)lk, b);
    const clattn_tensor o = clattn_mpi__rows(&g->part, qp->local0, qp->n, b);
    const clattn_tensor l = clattn_mpi__rows(&g->part_lse, qp->local0, qp->n, b);
    const clattn_tensor ao = clattn_mpi__rows(&g->acc, qp->local0, qp->n, b);
    const clattn_tensor al = clattn_mpi__rows(&g->acc_lse, qp->local0, qp->n, b);
    p.lse = &l;
    CHAIN(g, clattn_sdpa(g->ctx, g->queue, &q, &k, &v, &o, &p, nw_, wl_, &ev_));
    CHAIN(g, clattn_merge(g->ctx, g->queue, &ao, &al, &o, &l, &ao, &al, nw_, wl_, &ev_));
    g->stats.blocks_computed++;
    return CLATTN_SUCCESS;
}

/* Every pair of this rank's query pieces with the key pieces of rank src, held in K and V. */
static clattn_status block(ring *g, const clattn_mpi_piece *qp, int nqp, const int64_t *nk, int src,
                           const clattn_tensor *K, const clattn_tensor *V)
{
    clattn_mpi_piece kp[2];
    const int nkp = clattn_mpi__pieces(g->rp->layout, src, g->P, nk, kp);
    for (int i = 0; i < nqp; i++)
        for (int j = 0; j < nkp; j++)
            for (long b = g->lengths ? 0 : -1; b < (g->lengths ? (long)g->B : 0); b++) {
                clattn_status st = pair(g, &qp[i], &kp[j], K, V, b);
                if (st != CLATTN_SUCCESS)
                    return st;
            }
    return CLATTN_SUCCESS;
}

/* Rank src's K and V as they lie in a staging device buffer: K from byte 0, V from v_at. */
static void staged_views(const int64_t *m, cl_mem buf, size_t v_at, clattn_tensor *K,
                         clattn_tensor *V)
{
    const size_t es = clattn_dtype_size((clattn_dtype)m[M_DTYPE]);
    *K = clattn_tensor_bhtd(buf, 0, (size_t)m[M_B], (size_t)m[M_HKV], (size_t)m[M_NK],
                            (size_t)m[M_D]);
    *V = clattn_tensor_bhtd(buf, v_at / es, (size_t)m[M_B], (size_t)m[M_HKV], (size_t)m[M_NK],
                            (size_t)m[M_DV]);
    K->dtype = V->dtype = (clattn_dtype)m[M_DTYPE];
    for (int d = 0; d < 4; d++) {
        K->strides[d] = (size_t)m[M_KS + d];
        V->strides[d] = (size_t)m[M_VS + d];
    }
}

typedef struct resources {
    MPI_Comm comm;
    int64_t *meta, *nq, *nk;
    unsigned char *host[2];
    cl_mem dev, acc, acc_lse, part, part_lse;
} resources;

static void resources_free(resources *res)
{
    free(res->meta), free(res->nq), free(res->nk);
    free(res->host[0]), free(res->host[1]);
    cl_mem *m[] = {&res->dev, &res->acc, &res->acc_lse, &res->part, &res->part_lse};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (*m[i])
            clReleaseMemObject(*m[i]);
    if (res->comm != MPI_COMM_NULL)
        MPI_Comm_free(&res->comm);
}

/* The steps, once everything is allocated and every rank agreed to go. */
static clattn_status run(ring *g, resources *res, const clattn_tensor *K, const clattn_tensor *V,
                         size_t v_at, const clattn_tensor *O, const clattn_tensor *lse)
{
    const int r = g->r, P = g->P, next = (r + 1) % P, prev = (r + P - 1) % P;
    clattn_mpi_piece qp[2];
    const int nqp = clattn_mpi__pieces(g->rp->layout, r, P, res->nq, qp);
    clattn_status st = CLATTN_SUCCESS;
    cl_int rc;
    /* acc = 0 with lse = −inf: the merge of no part at all. */
    const float zero = 0.0f, minus_inf = -INFINITY;
    cl_event e1 = NULL, e2 = NULL;
    const size_t rows = g->acc_lse.dims[0] * g->acc_lse.strides[0]; /* B · Hq · n_q */
    if (rows) {
        rc = clEnqueueFillBuffer(g->queue, res->acc, &zero, sizeof zero, 0,
                                 rows * g->acc.dims[3] * sizeof(float), 0, NULL, &e1);
        if (rc != CL_SUCCESS)
            return rc;
        rc = clEnqueueFillBuffer(g->queue, res->acc_lse, &minus_inf, sizeof minus_inf, 0,
                                 rows * sizeof(float), 1, &e1, &e2);
        clattn_mpi__release(&e1);
        if (rc != CL_SUCCESS)
            return rc;
        g->last = e2;
    }
    for (int s = 0; s < P; s++) {
        const int src = (r - s + P) % P, incoming = (r - s - 1 + 2 * P) % P;
        MPI_Request req[4];
        int nreq = 0;
        const int64_t *ms = res->meta + (size_t)src * M_N, *mi = res->meta + (size_t)incoming * M_N;
        unsigned char *out = res->host[s % 2], *in = res->host[(s + 1) % 2];
        if (s < P - 1) {
            if (MPI_Irecv(in, (int)mi[M_KSPAN], MPI_BYTE, prev, 1, res->comm, &req[nreq++]) ||
                MPI_Irecv(in + v_at, (int)mi[M_VSPAN], MPI_BYTE, prev, 2, res->comm,
                          &req[nreq++]) ||
                MPI_Isend(out, (int)ms[M_KSPAN], MPI_BYTE, next, 1, res->comm, &req[nreq++]) ||
                MPI_Isend(out + v_at, (int)ms[M_VSPAN], MPI_BYTE, next, 2, res->comm, &req[nreq++]))
                return CLATTN_ERROR_COMMUNICATION;
            g->stats.bytes_sent += (uint64_t)(ms[M_KSPAN] + ms[M_VSPAN]);
            g->stats.bytes_received += (uint64_t)(mi[M_KSPAN] + mi[M_VSPAN]);
        }
        clattn_tensor k = *K, v = *V;
        if (s > 0)
            staged_views(ms, res->dev, v_at, &k, &v);
        const uint64_t before = g->stats.blocks_computed;
        st = block(g, qp, nqp, res->nk, src, &k, &v);
        if (st == CLATTN_SUCCESS && g->stats.blocks_computed != before)
            clFlush(g->queue);
        /* The device may fail at this step while the transfers are under way: finish them
         * anyway, so that no rank waits on a message that never comes. */
        clattn_status wst = clattn_mpi__wait(st == CLATTN_SUCCESS ? g->last : NULL, req, nreq,
                                             &g->stats.seconds_waiting);
        if (st == CLATTN_SUCCESS)
            st = wst;
        if (s < P - 1 && st == CLATTN_SUCCESS) {
            /* The block just received goes to the device for the next step; the host copy is
             * what this rank forwards then. */
            cl_event w1 = NULL, w2 = NULL;
            rc = clEnqueueWriteBuffer(g->queue, res->dev, CL_FALSE, 0, (size_t)mi[M_KSPAN], in,
                                      g->last ? 1 : 0, g->last ? &g->last : NULL, &w1);
            if (rc == CL_SUCCESS)
                rc = clEnqueueWriteBuffer(g->queue, res->dev, CL_FALSE, v_at, (size_t)mi[M_VSPAN],
                                          in + v_at, 1, &w1, &w2);
            clattn_mpi__release(&w1);
            if (rc != CL_SUCCESS)
                st = rc;
            else {
                clattn_mpi__release(&g->last);
                g->last = w2;
            }
        }
        st = clattn_mpi__agree(res->comm, st);
        if (st != CLATTN_SUCCESS)
            return st;
    }
    /* The last phase writes the caller's O (and lse): acc merged with a part that saw no key
     * (lse −inf) is acc itself, exactly; then the sinks, once. */
    if (rows == 0)
        return CLATTN_SUCCESS;
    const clattn_tensor *lse_out = lse ? lse : &g->acc_lse;
    st = clattn_mpi__store(g->ctx, g->queue, &g->acc, &g->acc_lse, res->part_lse, O, lse_out,
                           &g->last);
    if (st != CLATTN_SUCCESS)
        return st;
    const clattn_logit_params *lp = &g->rp->attention.logits;
    if (lp->sinks)
        CHAIN(g, clattn_add_sinks(g->ctx, g->queue, O, lse_out, lp->sinks, lp->sinks_offset, nw_,
                                  wl_, &ev_));
    rc = g->last ? clWaitForEvents(1, &g->last) : CL_SUCCESS;
    return rc;
}

clattn_status clattn_mpi_ring_attention(clattn_context *ctx, cl_command_queue queue, MPI_Comm comm,
                                        const clattn_tensor *Q, const clattn_tensor *K,
                                        const clattn_tensor *V, const clattn_tensor *O,
                                        const clattn_tensor *lse,
                                        const clattn_mpi_ring_params *params, cl_uint num_wait,
                                        const cl_event *wait_list)
{
    const double t0 = MPI_Wtime();
    resources res = {.comm = MPI_COMM_NULL};
    int r = 0, P = 1;
    if (clattn_mpi__open(comm, &res.comm, &r, &P) != CLATTN_SUCCESS)
        return CLATTN_ERROR_COMMUNICATION;
    clattn_status st = clattn_mpi__validate(ctx, queue, Q, K, V, O, lse, params);
    if (st == CLATTN_SUCCESS && (num_wait > 0) != (wait_list != NULL))
        st = CLATTN_ERROR_INVALID_ARGUMENT;
    res.meta = calloc((size_t)P * M_N, sizeof *res.meta);
    res.nq = calloc((size_t)P, sizeof *res.nq);
    res.nk = calloc((size_t)P, sizeof *res.nk);
    if (st == CLATTN_SUCCESS && (!res.meta || !res.nq || !res.nk))
        st = CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    st = clattn_mpi__agree(res.comm, st);
    if (st != CLATTN_SUCCESS) {
        resources_free(&res);
        return st;
    }
    int64_t mine[M_N];
    clattn_mpi__describe(mine, Q, K, V, params);
    if (MPI_Allgather(mine, M_N, MPI_INT64_T, res.meta, M_N, MPI_INT64_T, res.comm)) {
        resources_free(&res);
        return CLATTN_ERROR_COMMUNICATION;
    }
    ring g = {.ctx = ctx, .queue = queue, .rp = params, .r = r, .P = P, .B = Q->dims[0]};
    st = clattn_mpi__consistent(res.meta, P, params, res.nq, res.nk, &g.Tq, &g.Tk);
    if (st != CLATTN_SUCCESS) {
        resources_free(&res);
        return st;
    }
    if (P == 1) {
        /* One rank holds the whole sequence, in order whatever the layout: clattn_sdpa itself,
         * with no accumulator or staging. */
        clattn_sdpa_params p = params->attention;
        p.lse = lse;
        cl_event done = NULL;
        st = clattn_sdpa(ctx, queue, Q, K, V, O, &p, num_wait, wait_list, &done);
        if (st == CLATTN_SUCCESS)
            st = clWaitForEvents(1, &done);
        clattn_mpi__release(&done);
        g.stats.blocks_computed = st == CLATTN_SUCCESS;
        g.stats.seconds = MPI_Wtime() - t0;
        if (params->stats)
            *params->stats = g.stats;
        resources_free(&res);
        return st;
    }
    /* Staging: two host buffers and one device buffer, each K at 0 and V at v_at, sized for the
     * largest block of any rank. */
    size_t kmax = 0, vmax = 0;
    for (int i = 0; i < P; i++) {
        const int64_t *m = res.meta + (size_t)i * M_N;
        kmax = (size_t)m[M_KSPAN] > kmax ? (size_t)m[M_KSPAN] : kmax;
        vmax = (size_t)m[M_VSPAN] > vmax ? (size_t)m[M_VSPAN] : vmax;
    }
    const size_t v_at = (kmax + 63) / 64 * 64, staged = v_at + vmax;
    if (kmax > INT32_MAX || vmax > INT32_MAX)
        st = CLATTN_ERROR_SIZE_OVERFLOW; /* one MPI message each; the same on every rank */
    const size_t B = Q->dims[0], Hq = Q->dims[1], nq = Q->dims[2], Dv = V->dims[3];
    cl_context cc = clattn_context_cl_context(ctx);
    if (st == CLATTN_SUCCESS) {
        /* Two host buffers (one sent from while the other receives) but one device buffer:
         * the next block is written to it only after the attention on the one it holds. */
        for (int i = 0; i < 2; i++) {
            res.host[i] = malloc(staged ? staged : 1);
            if (!res.host[i] && st == CLATTN_SUCCESS)
                st = CLATTN_ERROR_OUT_OF_HOST_MEMORY;
        }
        res.dev = clattn_mpi__buffer(cc, staged, &st);
        res.acc = clattn_mpi__buffer(cc, B * Hq * nq * Dv * sizeof(float), &st);
        /* the parts in the call's type (clattn_sdpa writes O as Q is), the sums in float */
        res.part = clattn_mpi__buffer(cc, B * Hq * nq * Dv * clattn_dtype_size(Q->dtype), &st);
        res.acc_lse = clattn_mpi__buffer(cc, B * Hq * nq * sizeof(float), &st);
        res.part_lse = clattn_mpi__buffer(cc, B * Hq * nq * sizeof(float), &st);
    }
    g.stats.host_bytes = 2 * staged;
    g.stats.device_bytes =
        staged +
        B * Hq * nq * (Dv * (sizeof(float) + clattn_dtype_size(Q->dtype)) + 2 * sizeof(float));
    g.Q = *Q;
    g.acc = clattn_mpi__dense(res.acc, CLATTN_F32, B, Hq, nq, Dv);
    g.part = clattn_mpi__dense(res.part, Q->dtype, B, Hq, nq, Dv);
    g.acc_lse = clattn_mpi__dense(res.acc_lse, CLATTN_F32, B, Hq, nq, 1);
    g.part_lse = clattn_mpi__dense(res.part_lse, CLATTN_F32, B, Hq, nq, 1);
    /* The caller's wait list, then this rank's own block, read once into the host buffer it
     * is first sent from, and the key lengths, which every rank must hold alike. */
    if (st == CLATTN_SUCCESS && num_wait)
        st = clWaitForEvents(num_wait, wait_list);
    const clattn_mask_params *mk = &params->attention.mask;
    int *lo = NULL, *hi = NULL;
    if (st == CLATTN_SUCCESS && mk->key_lengths) {
        g.lengths = malloc(B * sizeof *g.lengths);
        lo = malloc(B * sizeof *lo), hi = malloc(B * sizeof *hi);
        if (!g.lengths || !lo || !hi)
            st = CLATTN_ERROR_OUT_OF_HOST_MEMORY;
        else
            st = clEnqueueReadBuffer(queue, mk->key_lengths, CL_TRUE,
                                     mk->key_lengths_offset * sizeof(int), B * sizeof(int),
                                     g.lengths, 0, NULL, NULL);
    }
    if (st == CLATTN_SUCCESS) {
        size_t kb, ke, vb, ve;
        clattn_mpi__span(K, &kb, &ke);
        clattn_mpi__span(V, &vb, &ve);
        if (ke > kb)
            st = clEnqueueReadBuffer(queue, K->buffer, CL_TRUE, kb, ke - kb, res.host[0], 0, NULL,
                                     NULL);
        if (st == CLATTN_SUCCESS && ve > vb)
            st = clEnqueueReadBuffer(queue, V->buffer, CL_TRUE, vb, ve - vb, res.host[0] + v_at, 0,
                                     NULL, NULL);
    }
    st = clattn_mpi__agree(res.comm, st);
    if (st == CLATTN_SUCCESS && mk->key_lengths) {
        if (MPI_Allreduce(g.lengths, lo, (int)B, MPI_INT, MPI_MIN, res.comm) ||
            MPI_Allreduce(g.lengths, hi, (int)B, MPI_INT, MPI_MAX, res.comm))
            st = CLATTN_ERROR_COMMUNICATION;
        for (size_t b = 0; st == CLATTN_SUCCESS && b < B; b++)
            if (lo[b] != hi[b])
                st = CLATTN_ERROR_INVALID_ARGUMENT; /* the same verdict on every rank */
    }
    free(lo), free(hi);
    if (st == CLATTN_SUCCESS)
        st = run(&g, &res, K, V, v_at, O, lse);
    if (g.last) /* nothing may still read the host staging buffers when they are freed */
        clWaitForEvents(1, &g.last);
    clattn_mpi__release(&g.last);
    st = clattn_mpi__agree(res.comm, st);
    g.stats.seconds = MPI_Wtime() - t0;
    if (params && params->stats)
        *params->stats = g.stats;
    free(g.lengths);
    resources_free(&res);
    return st;
}
