/* The all-to-all head split (clattn_mpi_head_split_attention): one all-to-all turns "my tokens,
 * every head" into "every token, my heads", clattn_sdpa runs on the whole sequence for those
 * heads, and a second all-to-all turns the outputs back. Data moves through host memory. */
#include "mpi_common.h"

#include <stdlib.h>
#include <string.h>

typedef struct heads {
    size_t B, Hq, Hkv, D, Dv, Hg, Hk; /* Hg, Hk: query and key/value heads per rank */
    int P;
    const int64_t *nq, *nk;
    int64_t *q0, *k0; /* each rank's first position */
    int64_t Tq, Tk;
} heads;

/* Copies between rows [t0, t0 + n) of `big` [B, Hbig, T, D] and `small` [B, ·, n, D], both
 * dense, for H heads: when small_is_slice, small holds just those H heads (0 .. H − 1) and they
 * are heads h0 .. h0 + H − 1 of big; otherwise small has Hsmall heads and the heads are h0 ..
 * in small and 0 .. H − 1 in big. to_small: big to small, else small to big. */
static void move_rows(float *big, size_t Hbig, size_t T, size_t t0, float *small, size_t Hsmall,
                      size_t h0, size_t H, size_t n, size_t B, size_t D, bool to_small,
                      bool small_is_slice)
{
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < H; h++) {
            const size_t hs = small_is_slice ? h : h0 + h, hb = small_is_slice ? h0 + h : h;
            float *s = small + ((b * (small_is_slice ? H : Hsmall) + hs) * n) * D;
            float *g = big + ((b * Hbig + hb) * T + t0) * D;
            if (to_small)
                memcpy(s, g, n * D * sizeof *s);
            else
                memcpy(g, s, n * D * sizeof *s);
        }
}

static size_t send_count(const heads *h, int from)
{
    return h->B *
           (h->Hg * (size_t)h->nq[from] * h->D + h->Hk * (size_t)h->nk[from] * (h->D + h->Dv));
}

clattn_status clattn_mpi_head_split_attention(clattn_context *ctx, cl_command_queue queue,
                                              MPI_Comm comm, const clattn_tensor *Q,
                                              const clattn_tensor *K, const clattn_tensor *V,
                                              const clattn_tensor *O, const clattn_tensor *lse,
                                              const clattn_mpi_ring_params *params,
                                              cl_uint num_wait, const cl_event *wait_list)
{
    const double t0 = MPI_Wtime();
    MPI_Comm c;
    int r = 0, P = 1;
    if (clattn_mpi__open(comm, &c, &r, &P) != CLATTN_SUCCESS)
        return CLATTN_ERROR_COMMUNICATION;
    clattn_status st = clattn_mpi__validate(ctx, queue, Q, K, V, O, lse, params);
    if (st == CLATTN_SUCCESS && params->layout != CLATTN_MPI_CONTIGUOUS)
        st = CLATTN_ERROR_INVALID_ARGUMENT;
    if (st == CLATTN_SUCCESS && Q->dtype != CLATTN_F32)
        st = CLATTN_ERROR_UNSUPPORTED_DTYPE;
    if (st == CLATTN_SUCCESS && (num_wait > 0) != (wait_list != NULL))
        st = CLATTN_ERROR_INVALID_ARGUMENT;
    int64_t *meta = calloc((size_t)P * M_N, sizeof *meta);
    int64_t *nq = calloc((size_t)P, sizeof *nq), *nk = calloc((size_t)P, sizeof *nk);
    int64_t *q0 = calloc((size_t)P, sizeof *q0), *k0 = calloc((size_t)P, sizeof *k0);
    int *sc = calloc((size_t)P * 4, sizeof *sc); /* send counts, displs, receive counts, displs */
    if (st == CLATTN_SUCCESS && (!meta || !nq || !nk || !q0 || !k0 || !sc))
        st = CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    float *mine = NULL, *sendbuf = NULL, *recvbuf = NULL, *qg = NULL, *kg = NULL, *vg = NULL;
    float *og = NULL, *lg = NULL, *od = NULL, *ld = NULL;
    cl_mem bq = NULL, bk = NULL, bv = NULL, bo = NULL, bl = NULL, bod = NULL, bld = NULL,
           neg = NULL;
    cl_event last = NULL;
    clattn_mpi_stats stats = {0};
    heads h = {0};
    st = clattn_mpi__agree(c, st);
    if (st != CLATTN_SUCCESS)
        goto done;
    int64_t desc[M_N];
    clattn_mpi__describe(desc, Q, K, V, params);
    if (MPI_Allgather(desc, M_N, MPI_INT64_T, meta, M_N, MPI_INT64_T, c) != MPI_SUCCESS) {
        st = CLATTN_ERROR_COMMUNICATION;
        goto done;
    }
    h = (heads){Q->dims[0], Q->dims[1], K->dims[1], Q->dims[3], V->dims[3], 0, 0,
                P,          nq,         nk,         q0,         k0,         0, 0};
    if ((st = clattn_mpi__consistent(meta, P, params, nq, nk, &h.Tq, &h.Tk)) != CLATTN_SUCCESS)
        goto done;
    if (h.Hq % (size_t)P || h.Hkv % (size_t)P) {
        st = CLATTN_ERROR_HEAD_MISMATCH; /* the same on every rank: the same shapes */
        goto done;
    }
    h.Hg = h.Hq / (size_t)P, h.Hk = h.Hkv / (size_t)P;
    for (int i = 1; i < P; i++)
        q0[i] = q0[i - 1] + nq[i - 1], k0[i] = k0[i - 1] + nk[i - 1];
    /* Counts in floats for both all-to-alls, checked against int (MPI's counts). */
    size_t total_in = 0, total_out = 0, back_in = 0, back_out = 0;
    for (int i = 0; i < P; i++) {
        total_out += send_count(&h, r);
        total_in += send_count(&h, i);
        back_out += h.B * h.Hg * (size_t)nq[i] * (h.Dv + 1);
        back_in += h.B * h.Hg * (size_t)nq[r] * (h.Dv + 1);
    }
    if (total_in > INT32_MAX || total_out > INT32_MAX || back_in > INT32_MAX ||
        back_out > INT32_MAX) {
        st = CLATTN_ERROR_SIZE_OVERFLOW;
        goto done;
    }
    const size_t B = h.B, D = h.D, Dv = h.Dv, Hg = h.Hg, Hk = h.Hk;
    const size_t n_q = (size_t)nq[r], n_k = (size_t)nk[r], Tq = (size_t)h.Tq, Tk = (size_t)h.Tk;
    const size_t qn = B * h.Hq * n_q * D, kn = B * h.Hkv * n_k * D, vn = B * h.Hkv * n_k * Dv;
    mine = malloc((qn + kn + vn + 1) * sizeof *mine);
    sendbuf = malloc((total_out > back_out ? total_out : back_out) * sizeof *sendbuf + 4);
    recvbuf = malloc((total_in > back_in ? total_in : back_in) * sizeof *recvbuf + 4);
    qg = malloc((B * Hg * Tq * D + 1) * sizeof *qg);
    kg = malloc((B * Hk * Tk * D + 1) * sizeof *kg);
    vg = malloc((B * Hk * Tk * Dv + 1) * sizeof *vg);
    og = malloc((B * Hg * Tq * Dv + 1) * sizeof *og);
    lg = malloc((B * Hg * Tq + 1) * sizeof *lg);
    od = malloc((B * h.Hq * n_q * Dv + 1) * sizeof *od);
    ld = malloc((B * h.Hq * n_q + 1) * sizeof *ld);
    if (!mine || !sendbuf || !recvbuf || !qg || !kg || !vg || !og || !lg || !od || !ld)
        st = CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    cl_context cc = clattn_context_cl_context(ctx);
    bq = clattn_mpi__buffer(cc, B * Hg * Tq * D * sizeof(float), &st);
    bk = clattn_mpi__buffer(cc, B * Hk * Tk * D * sizeof(float), &st);
    bv = clattn_mpi__buffer(cc, B * Hk * Tk * Dv * sizeof(float), &st);
    bo = clattn_mpi__buffer(cc, B * Hg * Tq * Dv * sizeof(float), &st);
    bl = clattn_mpi__buffer(cc, B * Hg * Tq * sizeof(float), &st);
    bod = clattn_mpi__buffer(cc, B * h.Hq * n_q * Dv * sizeof(float), &st);
    bld = clattn_mpi__buffer(cc, B * h.Hq * n_q * sizeof(float), &st);
    neg = clattn_mpi__buffer(cc, B * h.Hq * n_q * sizeof(float), &st);
    stats.host_bytes = (qn + kn + vn + total_out + total_in + B * Hg * Tq * (D + 2 * Dv + 2) +
                        B * Hk * Tk * (D + Dv) + B * h.Hq * n_q * (Dv + 1)) *
                       sizeof(float);
    stats.device_bytes =
        (B * Hg * Tq * (D + Dv + 1) + B * Hk * Tk * (D + Dv) + B * h.Hq * n_q * (Dv + 2)) *
        sizeof(float);
    if (st == CLATTN_SUCCESS && num_wait)
        st = clWaitForEvents(num_wait, wait_list);
    if (st == CLATTN_SUCCESS)
        st = clattn_mpi__read_dense(queue, Q, mine);
    if (st == CLATTN_SUCCESS)
        st = clattn_mpi__read_dense(queue, K, mine + qn);
    if (st == CLATTN_SUCCESS)
        st = clattn_mpi__read_dense(queue, V, mine + qn + kn);
    if ((st = clattn_mpi__agree(c, st)) != CLATTN_SUCCESS)
        goto done;
    /* Out: to rank t, my tokens of its heads (Q, then K, then V). */
    int *scount = sc, *sdisp = sc + P, *rcount = sc + 2 * P, *rdisp = sc + 3 * P;
    size_t at = 0;
    for (int t = 0; t < P; t++) {
        sdisp[t] = (int)at;
        move_rows(mine, h.Hq, n_q, 0, sendbuf + at, Hg, (size_t)t * Hg, Hg, n_q, B, D, true, true);
        at += B * Hg * n_q * D;
        move_rows(mine + qn, h.Hkv, n_k, 0, sendbuf + at, Hk, (size_t)t * Hk, Hk, n_k, B, D, true,
                  true);
        at += B * Hk * n_k * D;
        move_rows(mine + qn + kn, h.Hkv, n_k, 0, sendbuf + at, Hk, (size_t)t * Hk, Hk, n_k, B, Dv,
                  true, true);
        at += B * Hk * n_k * Dv;
        scount[t] = (int)(at - (size_t)sdisp[t]);
    }
    at = 0;
    for (int s = 0; s < P; s++) {
        rdisp[s] = (int)at;
        rcount[s] = (int)send_count(&h, s);
        at += (size_t)rcount[s];
    }
    if (MPI_Alltoallv(sendbuf, scount, sdisp, MPI_FLOAT, recvbuf, rcount, rdisp, MPI_FLOAT, c)) {
        st = CLATTN_ERROR_COMMUNICATION;
        goto done;
    }
    stats.bytes_sent = (uint64_t)(total_out - (size_t)scount[r]) * sizeof(float);
    stats.bytes_received = (uint64_t)(total_in - (size_t)rcount[r]) * sizeof(float);
    for (int s = 0; s < P; s++) {
        float *in = recvbuf + rdisp[s];
        const size_t sq = (size_t)nq[s], sk = (size_t)nk[s];
        move_rows(qg, Hg, Tq, (size_t)q0[s], in, Hg, 0, Hg, sq, B, D, false, false);
        in += B * Hg * sq * D;
        move_rows(kg, Hk, Tk, (size_t)k0[s], in, Hk, 0, Hk, sk, B, D, false, false);
        in += B * Hk * sk * D;
        move_rows(vg, Hk, Tk, (size_t)k0[s], in, Hk, 0, Hk, sk, B, Dv, false, false);
    }
    /* The whole sequence for this rank's heads. */
    const clattn_tensor tq = clattn_tensor_bhtd(bq, 0, B, Hg, Tq, D);
    const clattn_tensor tk = clattn_tensor_bhtd(bk, 0, B, Hk, Tk, D);
    const clattn_tensor tv = clattn_tensor_bhtd(bv, 0, B, Hk, Tk, Dv);
    const clattn_tensor to = clattn_tensor_bhtd(bo, 0, B, Hg, Tq, Dv);
    const clattn_tensor tl = clattn_tensor_bhtd(bl, 0, B, Hg, Tq, 1);
    clattn_sdpa_params p = params->attention;
    p.lse = &tl;
    if (p.logits.alibi_slopes)
        p.logits.alibi_slopes_offset += (size_t)r * Hg;
    if (p.logits.sinks)
        p.logits.sinks_offset += (size_t)r * Hg;
    cl_event w[3] = {NULL, NULL, NULL}, done_ev = NULL;
    cl_int rc = CL_SUCCESS;
    if (B * Hg * Tq * D != 0)
        rc = clEnqueueWriteBuffer(queue, bq, CL_FALSE, 0, B * Hg * Tq * D * sizeof(float), qg, 0,
                                  NULL, &w[0]);
    if (rc == CL_SUCCESS && B * Hk * Tk * D != 0)
        rc = clEnqueueWriteBuffer(queue, bk, CL_FALSE, 0, B * Hk * Tk * D * sizeof(float), kg, 0,
                                  NULL, &w[1]);
    if (rc == CL_SUCCESS && B * Hk * Tk * Dv != 0)
        rc = clEnqueueWriteBuffer(queue, bv, CL_FALSE, 0, B * Hk * Tk * Dv * sizeof(float), vg, 0,
                                  NULL, &w[2]);
    cl_uint nw = 0;
    cl_event wl[3];
    for (int i = 0; i < 3; i++)
        if (w[i])
            wl[nw++] = w[i];
    st = rc;
    if (st == CLATTN_SUCCESS)
        st = clattn_sdpa(ctx, queue, &tq, &tk, &tv, &to, &p, nw, nw ? wl : NULL, &done_ev);
    if (st == CLATTN_SUCCESS && done_ev)
        st = clWaitForEvents(1, &done_ev);
    else if (nw)
        clWaitForEvents(nw, wl); /* the host copies must outlive the writes */
    for (int i = 0; i < 3; i++)
        clattn_mpi__release(&w[i]);
    clattn_mpi__release(&done_ev);
    if (st == CLATTN_SUCCESS && B * Hg * Tq != 0) {
        st = clEnqueueReadBuffer(queue, bo, CL_TRUE, 0, B * Hg * Tq * Dv * sizeof(float), og, 0,
                                 NULL, NULL);
        if (st == CLATTN_SUCCESS)
            st = clEnqueueReadBuffer(queue, bl, CL_TRUE, 0, B * Hg * Tq * sizeof(float), lg, 0,
                                     NULL, NULL);
    }
    if ((st = clattn_mpi__agree(c, st)) != CLATTN_SUCCESS)
        goto done;
    /* Back: to rank t, its tokens' outputs (O, then lse) for this rank's heads. */
    at = 0;
    for (int t = 0; t < P; t++) {
        const size_t tn = (size_t)nq[t];
        sdisp[t] = (int)at;
        move_rows(og, Hg, Tq, (size_t)q0[t], sendbuf + at, Hg, 0, Hg, tn, B, Dv, true, false);
        at += B * Hg * tn * Dv;
        move_rows(lg, Hg, Tq, (size_t)q0[t], sendbuf + at, Hg, 0, Hg, tn, B, 1, true, false);
        at += B * Hg * tn;
        scount[t] = (int)(at - (size_t)sdisp[t]);
        rdisp[t] = (int)((size_t)t * B * Hg * n_q * (Dv + 1));
        rcount[t] = (int)(B * Hg * n_q * (Dv + 1));
    }
    if (MPI_Alltoallv(sendbuf, scount, sdisp, MPI_FLOAT, recvbuf, rcount, rdisp, MPI_FLOAT, c)) {
        st = CLATTN_ERROR_COMMUNICATION;
        goto done;
    }
    stats.bytes_sent += (uint64_t)(back_out - (size_t)scount[r]) * sizeof(float);
    stats.bytes_received += (uint64_t)(back_in - (size_t)rcount[r]) * sizeof(float);
    for (int s = 0; s < P; s++) {
        float *in = recvbuf + rdisp[s];
        move_rows(od, h.Hq, n_q, 0, in, Hg, (size_t)s * Hg, Hg, n_q, B, Dv, false, true);
        move_rows(ld, h.Hq, n_q, 0, in + B * Hg * n_q * Dv, Hg, (size_t)s * Hg, Hg, n_q, B, 1,
                  false, true);
    }
    const clattn_tensor tod = clattn_tensor_bhtd(bod, 0, B, h.Hq, n_q, Dv);
    const clattn_tensor tld = clattn_tensor_bhtd(bld, 0, B, h.Hq, n_q, 1);
    if (B * h.Hq * n_q != 0) {
        rc = clEnqueueWriteBuffer(queue, bod, CL_TRUE, 0, B * h.Hq * n_q * Dv * sizeof(float), od,
                                  0, NULL, NULL);
        if (rc == CL_SUCCESS)
            rc = clEnqueueWriteBuffer(queue, bld, CL_TRUE, 0, B * h.Hq * n_q * sizeof(float), ld, 0,
                                      NULL, NULL);
        st = rc;
        if (st == CLATTN_SUCCESS)
            st = clattn_mpi__store(ctx, queue, &tod, &tld, neg, O, lse, &last);
        if (st == CLATTN_SUCCESS && last)
            st = clWaitForEvents(1, &last);
    }
    st = clattn_mpi__agree(c, st);
done:
    if (last)
        clWaitForEvents(1, &last);
    clattn_mpi__release(&last);
    stats.seconds = MPI_Wtime() - t0;
    if (params && params->stats)
        *params->stats = stats;
    cl_mem bufs[] = {bq, bk, bv, bo, bl, bod, bld, neg};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i])
            clReleaseMemObject(bufs[i]);
    free(meta), free(nq), free(nk), free(q0), free(k0), free(sc);
    free(mine), free(sendbuf), free(recvbuf), free(qg), free(kg), free(vg), free(og), free(lg);
    free(od), free(ld);
    MPI_Comm_free(&c);
    return st;
}
