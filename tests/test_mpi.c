/* clattn_mpi under mpirun -np 1..4, each rank with its own context on the device: every rank
 * draws the same whole problem, holds its chunk as the layout deals it, and checks its output
 * rows against the double-precision reference over the whole sequence (reference/ref.c). Each
 * case's verdict is agreed between the ranks, so that every rank reports the same. Error cases: a
 * bad argument on one rank, and a device failure injected on one rank in the middle of the ring
 * (the fault interposer of tests/faults, preloaded by meson), must give the same status on every
 * rank without a hang (meson's timeout catches one). */
#include "clattn_mpi.h"
#include "harness.h"
#include "ref.h"

#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SETUPS ""

static int g_rank, g_size;

/* The fault interposer's controls (tests/faults/interpose.c), when it is preloaded. */
static void (*f_arm)(int, long);
static long (*f_disarm)(void);
static long (*f_balance)(int);
static int g_fault_kinds = 1; /* what the interposer fails: 1 OpenCL calls, 2 allocations */

/* The interposer's count of OpenCL objects libclattn and libclattn_mpi hold (7 types). */
static long held_objects(void)
{
    long n = 0;
    for (int t = 0; f_balance && t < 7; t++)
        n += f_balance(t);
    return n;
}

typedef struct ring_case {
    clattn_mpi_layout layout;
    size_t B, Hq, Hkv, Tq, Tk, D, Dv;
    int causal;
    long wl, wr;
    size_t keep;
    float softcap;
    bool alibi, sinks, lengths, bthd_odd; /* bthd_odd: odd ranks hold K/V as [B, T, H, D] */
    bool lse;
    bool heads; /* clattn_mpi_head_split_attention instead of the ring */
    bool fp16;  /* Q, K, V, O stored as half */
} ring_case;

static ring_case base(clattn_mpi_layout layout, size_t T)
{
    ring_case c = {.layout = layout,
                   .B = 2,
                   .Hq = 4,
                   .Hkv = 2,
                   .Tq = T,
                   .Tk = T,
                   .D = 16,
                   .Dv = 16,
                   .causal = 1,
                   .wl = -1,
                   .wr = -1,
                   .bthd_odd = true,
                   .lse = true};
    return c;
}

/* The positions rank r holds (returned count; pos[] at least T long). Contiguous chunks are
 * uneven on purpose: rank 1 of three or more holds none. */
static size_t positions(clattn_mpi_layout layout, int r, int P, size_t T, size_t *pos)
{
    size_t n = 0;
    if (layout == CLATTN_MPI_STRIPED) {
        for (size_t t = (size_t)r; t < T; t += (size_t)P)
            pos[n++] = t;
    } else if (layout == CLATTN_MPI_ZIGZAG) {
        const size_t c = 2 * (size_t)P;
        for (size_t t = (size_t)r * T / c; t < ((size_t)r + 1) * T / c; t++)
            pos[n++] = t;
        for (size_t t = (c - 1 - (size_t)r) * T / c; t < (c - (size_t)r) * T / c; t++)
            pos[n++] = t;
    } else {
        size_t w[8], sum = 0, start = 0;
        for (int i = 0; i < P; i++)
            sum += (w[i] = (P >= 3 && i == 1) ? 0 : (size_t)(i + 2));
        for (int i = 0; i < P; i++) {
            const size_t cnt = i == P - 1 ? T - start : T * w[i] / sum;
            if (i == r)
                for (size_t t = start; t < start + cnt; t++)
                    pos[n++] = t;
            start += cnt;
        }
    }
    return n;
}

/* Rows pos[] of a dense [B, H, T, D] array, as floats in [B, H, n, D] or [B, n, H, D]. */
static float *gather(const float *all, size_t B, size_t H, size_t T, size_t D, const size_t *pos,
                     size_t n, bool bthd)
{
    float *out = malloc((B * H * n * D + 1) * sizeof *out);
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < H; h++)
            for (size_t i = 0; i < n; i++)
                for (size_t d = 0; d < D; d++) {
                    const size_t at =
                        bthd ? ((b * n + i) * H + h) * D + d : ((b * H + h) * n + i) * D + d;
                    out[at] = all[((b * H + h) * T + pos[i]) * D + d];
                }
    return out;
}

/* A device buffer with `pad` elements of decoys before the data (as half when `half`); the
 * view of it. */
static clattn_tensor upload_as(test_env *e, const float *x, size_t B, size_t H, size_t T, size_t D,
                               bool bthd, size_t pad, cl_mem *buf, bool half)
{
    const size_t n = B * H * T * D;
    float *all = malloc((n + pad + 1) * sizeof *all);
    for (size_t i = 0; i < pad; i++)
        all[i] = 1e4f;
    memcpy(all + pad, x, n * sizeof *x);
    all[n + pad] = 0.0f;
    if (half) {
        uint16_t *h = malloc((n + pad + 1) * sizeof *h);
        for (size_t i = 0; i < n + pad + 1; i++)
            h[i] = half_from_float(all[i]);
        *buf = buf_new(e, (n + pad + 1) * sizeof *h);
        buf_write(e, *buf, 0, h, (n + pad + 1) * sizeof *h);
        free(h);
    } else {
        *buf = buf_new(e, (n + pad + 1) * sizeof *all);
        buf_write(e, *buf, 0, all, (n + pad + 1) * sizeof *all);
    }
    free(all);
    clattn_tensor t = bthd ? clattn_tensor_bthd(*buf, pad, B, T, H, D)
                           : clattn_tensor_bhtd(*buf, pad, B, H, T, D);
    t.dtype = half ? CLATTN_F16 : CLATTN_F32;
    return t;
}

static clattn_tensor upload(test_env *e, const float *x, size_t B, size_t H, size_t T, size_t D,
                            bool bthd, size_t pad, cl_mem *buf)
{
    return upload_as(e, x, B, H, T, D, bthd, pad, buf, false);
}

static bool agreed(bool ok)
{
    int mine = ok, all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    return all != 0;
}

static int lengths_of(const ring_case *c, size_t b)
{
    /* the last batch item sees no key at all; the first a prefix that ends inside a chunk */
    return b == c->B - 1 && c->B > 1 ? 0 : (int)(c->Tk - c->Tk / 3 - b);
}

typedef struct ring_run {
    clattn_status status;
    bool ok;
    long calls;  /* on rank fault_rank: the calls the interposer counted */
    long leaked; /* on rank fault_rank: objects the libraries held after than before */
} ring_run;

/* Runs one case. On rank fault_rank the interposer is armed around the call alone: fault_at 0
 * counts, fault_at > 0 fails that call (fault_at < 0: not armed). */
static ring_run run_ring(const ring_case *c, int bad_rank, int fault_rank, long fault_at)
{
    const long held_before = held_objects();
    test_env e;
    env_open(&e, false);
    const size_t B = c->B, Hq = c->Hq, Hkv = c->Hkv, Tq = c->Tq, Tk = c->Tk, D = c->D, Dv = c->Dv;
    float *q = malloc(B * Hq * Tq * D * sizeof *q), *k = malloc(B * Hkv * Tk * D * sizeof *k);
    float *v = malloc(B * Hkv * Tk * Dv * sizeof *v);
    uint64_t seed = 1234 + Tq * 7 + Tk;
    fill_uniform(q, B * Hq * Tq * D, &seed, -1.0f, 1.0f);
    fill_uniform(k, B * Hkv * Tk * D, &seed, -1.0f, 1.0f);
    fill_uniform(v, B * Hkv * Tk * Dv, &seed, -1.0f, 1.0f);
    if (c->fp16) { /* the reference sees the values as stored */
        for (size_t i = 0; i < B * Hq * Tq * D; i++)
            q[i] = half_to_float(half_from_float(q[i]));
        for (size_t i = 0; i < B * Hkv * Tk * D; i++)
            k[i] = half_to_float(half_from_float(k[i]));
        for (size_t i = 0; i < B * Hkv * Tk * Dv; i++)
            v[i] = half_to_float(half_from_float(v[i]));
    }
    double sinks[32], slopes[32];
    float fs[32];
    fill_uniform(fs, Hq, &seed, -1.0f, 2.0f);
    for (size_t h = 0; h < Hq; h++)
        sinks[h] = fs[h];
    /* The reference over the whole sequence. */
    double *qd = malloc(B * Hq * Tq * D * sizeof *qd), *kd = malloc(B * Hkv * Tk * D * sizeof *kd);
    double *vd = malloc(B * Hkv * Tk * Dv * sizeof *vd);
    for (size_t i = 0; i < B * Hq * Tq * D; i++)
        qd[i] = q[i];
    for (size_t i = 0; i < B * Hkv * Tk * D; i++)
        kd[i] = k[i];
    for (size_t i = 0; i < B * Hkv * Tk * Dv; i++)
        vd[i] = v[i];
    int lens[8];
    for (size_t b = 0; b < B; b++)
        lens[b] = lengths_of(c, b);
    ref_variant rv = ref_variant_none();
    rv.window_left = c->wl, rv.window_right = c->wr, rv.keep_first = c->keep;
    rv.softcap = c->softcap;
    if (c->alibi) {
        ref_alibi_slopes(Hq, slopes);
        rv.alibi = slopes;
    }
    rv.sinks = c->sinks ? sinks : NULL;
    double *ref_o = malloc(B * Hq * Tq * Dv * sizeof *ref_o),
           *ref_l = malloc(B * Hq * Tq * sizeof *ref_l);
    ref_sdpa_variant(B, Hq, Hkv, Tq, Tk, D, Dv, 1.0 / sqrt((double)D), c->causal, NULL,
                     c->lengths ? lens : NULL, &rv, qd, kd, vd, ref_o, NULL, ref_l);
    /* This rank's chunk. */
    size_t *qpos = malloc((Tq + 1) * sizeof *qpos), *kpos = malloc((Tk + 1) * sizeof *kpos);
    const size_t nq = positions(c->layout, g_rank, g_size, Tq, qpos);
    const size_t nk = positions(c->layout, g_rank, g_size, Tk, kpos);
    const bool bthd = c->bthd_odd && g_rank % 2 == 1;
    float *ql = gather(q, B, Hq, Tq, D, qpos, nq, false);
    float *kl = gather(k, B, Hkv, Tk, D, kpos, nk, bthd);
    float *vl = gather(v, B, Hkv, Tk, Dv, kpos, nk, bthd);
    cl_mem bq, bk, bv, bo, bl, blen = NULL, bslope = NULL, bsink = NULL;
    clattn_tensor Q = upload_as(&e, ql, B, Hq, nq, D, false, 3, &bq, c->fp16);
    clattn_tensor K = upload_as(&e, kl, B, Hkv, nk, D, bthd, 5 + (size_t)g_rank, &bk, c->fp16);
    clattn_tensor V = upload_as(&e, vl, B, Hkv, nk, Dv, bthd, 1, &bv, c->fp16);
    float *zeros = calloc(B * Hq * (nq + 1) * Dv + 1, sizeof *zeros);
    clattn_tensor O = upload_as(&e, zeros, B, Hq, nq, Dv, false, 2, &bo, c->fp16);
    clattn_tensor L = upload(&e, zeros, B, Hq, nq, 1, false, 0, &bl);
    clattn_mpi_ring_params rp = clattn_mpi_ring_params_default();
    rp.layout = c->layout;
    clattn_sdpa_params *ap = &rp.attention;
    ap->mask.causal = (clattn_causal)c->causal;
    ap->mask.window_left = c->wl, ap->mask.window_right = c->wr;
    ap->mask.window_keep_first = c->keep;
    ap->logits.softcap = c->softcap;
    ap->path = test_path();
    if (c->lengths) {
        blen = buf_new(&e, sizeof lens);
        buf_write(&e, blen, 0, lens, sizeof lens);
        ap->mask.key_lengths = blen;
    }
    if (c->alibi) {
        float f[32];
        CL_OK(clattn_alibi_slopes(Hq, f));
        bslope = buf_new(&e, Hq * sizeof *f);
        buf_write(&e, bslope, 0, f, Hq * sizeof *f);
        ap->logits.alibi_slopes = bslope;
    }
    if (c->sinks) {
        bsink = buf_new(&e, Hq * sizeof *fs);
        buf_write(&e, bsink, 0, fs, Hq * sizeof *fs);
        ap->logits.sinks = bsink;
    }
    clattn_tensor Qarg = Q;
    if (g_rank == bad_rank)
        Qarg.dims[3] = D + 1; /* a head dim the keys do not have */
    if (fault_at >= 0 && g_rank == fault_rank && f_arm)
        f_arm(g_fault_kinds, fault_at);
    clattn_mpi_stats stats;
    rp.stats = &stats;
    ring_run res = {c->heads
                        ? clattn_mpi_head_split_attention(e.cc, e.queue, MPI_COMM_WORLD, &Qarg, &K,
                                                          &V, &O, c->lse ? &L : NULL, &rp, 0, NULL)
                        : clattn_mpi_ring_attention(e.cc, e.queue, MPI_COMM_WORLD, &Qarg, &K, &V,
                                                    &O, c->lse ? &L : NULL, &rp, 0, NULL),
                    true, 0, 0};
    if (fault_at >= 0 && g_rank == fault_rank && f_disarm)
        res.calls = f_disarm();
    if (res.status == CLATTN_SUCCESS) {
        float *o = malloc((B * Hq * nq * Dv + 1) * sizeof *o),
              *l = malloc((B * Hq * nq + 1) * sizeof *l);
        if (c->fp16) {
            uint16_t *h = malloc((B * Hq * nq * Dv + 1) * sizeof *h);
            CL_OK(clEnqueueReadBuffer(e.queue, bo, CL_TRUE, 2 * sizeof *h,
                                      B * Hq * nq * Dv * sizeof *h, h, 0, NULL, NULL));
            for (size_t i = 0; i < B * Hq * nq * Dv; i++)
                o[i] = half_to_float(h[i]);
            free(h);
        } else {
            CL_OK(clEnqueueReadBuffer(e.queue, bo, CL_TRUE, 2 * sizeof(float),
                                      B * Hq * nq * Dv * sizeof *o, o, 0, NULL, NULL));
        }
        CL_OK(clEnqueueReadBuffer(e.queue, bl, CL_TRUE, 0, B * Hq * nq * sizeof *l, l, 0, NULL,
                                  NULL));
        double *got = malloc((B * Hq * nq * Dv + 1) * sizeof *got),
               *want = malloc((B * Hq * nq * Dv + 1) * sizeof *want);
        double *gl = malloc((B * Hq * nq + 1) * sizeof *gl),
               *wl = malloc((B * Hq * nq + 1) * sizeof *wl);
        for (size_t b = 0; b < B; b++)
            for (size_t h = 0; h < Hq; h++)
                for (size_t i = 0; i < nq; i++) {
                    const size_t row = (b * Hq + h) * nq + i, grow = (b * Hq + h) * Tq + qpos[i];
                    for (size_t d = 0; d < Dv; d++) {
                        got[row * Dv + d] = o[row * Dv + d];
                        want[row * Dv + d] = ref_o[grow * Dv + d];
                    }
                    gl[row] = l[row];
                    wl[row] = ref_l[grow];
                }
        char what[64];
        snprintf(what, sizeof what, "rank %d O", g_rank);
        /* fp16: the output's own rounding (2^-11) and the fp16 partial results' */
        res.ok = check_close(what, got, want, B * Hq * nq * Dv, c->fp16 ? 2e-3 : TOL);
        if (c->lse) {
            snprintf(what, sizeof what, "rank %d lse", g_rank);
            res.ok = check_close(what, gl, wl, B * Hq * nq, TOL) && res.ok;
        }
        if (g_rank == 0)
            printf("  P=%d computed %llu skipped %llu pairs, sent %llu bytes\n", g_size,
                   (unsigned long long)stats.blocks_computed,
                   (unsigned long long)stats.blocks_skipped, (unsigned long long)stats.bytes_sent);
        free(o), free(l), free(got), free(want), free(gl), free(wl);
    }
    cl_mem bufs[] = {bq, bk, bv, bo, bl, blen, bslope, bsink};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i])
            clReleaseMemObject(bufs[i]);
    free(q), free(k), free(v), free(qd), free(kd), free(vd), free(ref_o), free(ref_l);
    free(qpos), free(kpos), free(ql), free(kl), free(vl), free(zeros);
    env_close(&e);
    res.leaked = held_objects() - held_before;
    return res;
}

static bool ring_ok(const ring_case *c)
{
    ring_run r = run_ring(c, -1, -1, -1);
    if (r.status != CLATTN_SUCCESS)
        fprintf(stderr, "rank %d: %s\n", g_rank, clattn_status_name(r.status));
    return agreed(r.status == CLATTN_SUCCESS && r.ok);
}

#define RING_CASE(fname, layout, T, ...)                                                           \
    static bool fname(void)                                                                        \
    {                                                                                              \
        ring_case c = base(layout, T);                                                             \
        __VA_ARGS__;                                                                               \
        return ring_ok(&c);                                                                        \
    }

/* The three layouts, causal, GQA, K/V strides differing between ranks. */
RING_CASE(contiguous_causal, CLATTN_MPI_CONTIGUOUS, 70, (void)0)
RING_CASE(zigzag_causal, CLATTN_MPI_ZIGZAG, 83, (void)0)
RING_CASE(striped_causal, CLATTN_MPI_STRIPED, 77, (void)0)
/* fp16 storage: K/V travel as half, partial results merge into a float accumulator. */
RING_CASE(zigzag_fp16_gqa, CLATTN_MPI_ZIGZAG, 75, c.fp16 = true; c.Hq = 8; c.Hkv = 2;
          c.sinks = true)
RING_CASE(striped_fp16_lengths, CLATTN_MPI_STRIPED, 66, c.fp16 = true; c.lengths = true;
          c.causal = 2; c.Dv = 24)
RING_CASE(contiguous_no_mask, CLATTN_MPI_CONTIGUOUS, 50, c.causal = 0; c.Dv = 8)
/* Bottom-right with fewer queries than keys (a prompt's continuation), both alignments. */
RING_CASE(contiguous_bottom_right, CLATTN_MPI_CONTIGUOUS, 0, c.Tq = 30; c.Tk = 90; c.causal = 2)
RING_CASE(zigzag_top_left_fewer_queries, CLATTN_MPI_ZIGZAG, 0, c.Tq = 40; c.Tk = 64; c.causal = 1)
/* Key lengths (one batch item sees no key: fully masked rows), with windows and the model
 * variants measured in whole-sequence positions. */
RING_CASE(contiguous_lengths_window, CLATTN_MPI_CONTIGUOUS, 90, c.causal = 2; c.lengths = true;
          c.wl = 20)
RING_CASE(zigzag_window_alibi_sinks_softcap, CLATTN_MPI_ZIGZAG, 96, c.wl = 25; c.keep = 3;
          c.alibi = true; c.sinks = true; c.softcap = 2.0f; c.Hq = 6; c.Hkv = 3)
RING_CASE(striped_window_sinks_lengths, CLATTN_MPI_STRIPED, 81, c.wl = 9; c.sinks = true;
          c.lengths = true)
RING_CASE(striped_two_sided_window, CLATTN_MPI_STRIPED, 64, c.causal = 0; c.wl = 6; c.wr = 3)
RING_CASE(contiguous_alibi_no_causal_window, CLATTN_MPI_CONTIGUOUS, 60, c.causal = 0;
          c.alibi = true; c.wl = 12; c.wr = 5; c.lse = false)

/* The all-to-all head split: heads divisible by 1..4 ranks; GQA, the variants, key lengths. */
RING_CASE(heads_causal, CLATTN_MPI_CONTIGUOUS, 45, c.heads = true; c.Hq = c.Hkv = 12; c.D = 8;
          c.Dv = 8)
RING_CASE(heads_gqa_variants, CLATTN_MPI_CONTIGUOUS, 50, c.heads = true; c.Hq = 24; c.Hkv = 12;
          c.D = 8; c.Dv = 4; c.causal = 2; c.Tq = 20; c.lengths = true; c.wl = 15; c.alibi = true;
          c.sinks = true; c.softcap = 3.0f; c.bthd_odd = true)

/* Heads that do not divide among the ranks: the same error everywhere (and none on one rank). */
static bool heads_not_divisible(void)
{
    ring_case c = base(CLATTN_MPI_CONTIGUOUS, 30);
    c.heads = true;
    c.Hq = c.Hkv = 5;
    ring_run r = run_ring(&c, -1, -1, -1);
    const clattn_status want = g_size == 1 ? CLATTN_SUCCESS : CLATTN_ERROR_HEAD_MISMATCH;
    return agreed(r.status == want && r.ok);
}

/* Decoding over a sharded cache: sequence b's L_b keys dealt in contiguous shards (rank 1 of
 * three or more holds none), root's query broadcast (the other ranks' Q hold decoys), against
 * the reference over all keys (over the int8 rows' dequantized values for a CLATTN_Q8 cache). */
typedef struct decode_case {
    clattn_dtype dtype;
    size_t Hq, Hkv, D, Lq;
    bool cross, sinks;
    float softcap;
    int root;    /* -1: the last rank */
    long window; /* refused: UNSUPPORTED_PATH on every rank */
} decode_case;

static bool run_decode(const decode_case *c)
{
    test_env e;
    env_open(&e, false);
    const size_t B = 2, Hq = c->Hq, Hkv = c->Hkv, D = c->D, Lq = c->Lq, Lmax = 53;
    const size_t lens[2] = {53, 29};
    const int root = c->root < 0 ? g_size - 1 : c->root;
    float *k = malloc(B * Hkv * Lmax * D * sizeof *k), *v = malloc(B * Hkv * Lmax * D * sizeof *v);
    float *q = malloc(B * Hq * Lq * D * sizeof *q);
    uint64_t seed = 99 + D;
    fill_uniform(k, B * Hkv * Lmax * D, &seed, -1.0f, 1.0f);
    fill_uniform(v, B * Hkv * Lmax * D, &seed, -1.0f, 1.0f);
    fill_uniform(q, B * Hq * Lq * D, &seed, -1.0f, 1.0f);
    float fs[32];
    fill_uniform(fs, Hq, &seed, -1.0f, 2.0f);
    double *kd = malloc(B * Hkv * Lmax * D * sizeof *kd),
           *vd = malloc(B * Hkv * Lmax * D * sizeof *vd);
    double *qd = malloc(B * Hq * Lq * D * sizeof *qd), sinks[32];
    for (size_t i = 0; i < B * Hkv * Lmax * D; i++)
        kd[i] = k[i], vd[i] = v[i];
    for (size_t i = 0; i < B * Hq * Lq * D; i++)
        qd[i] = q[i];
    for (size_t h = 0; h < Hq; h++)
        sinks[h] = fs[h];
    if (c->dtype == CLATTN_Q8) {
        ref_quantize_q8(B * Hkv * Lmax, D, kd, kd);
        ref_quantize_q8(B * Hkv * Lmax, D, vd, vd);
    }
    int ilens[2] = {(int)lens[0], (int)lens[1]};
    ref_variant rv = ref_variant_none();
    rv.softcap = c->softcap;
    rv.sinks = c->sinks ? sinks : NULL;
    double *ro = malloc(B * Hq * Lq * D * sizeof *ro), *rl = malloc(B * Hq * Lq * sizeof *rl);
    ref_sdpa_variant(B, Hq, Hkv, Lq, Lmax, D, D, 1.0 / sqrt((double)D), c->cross ? 0 : 2, NULL,
                     ilens, &rv, qd, kd, vd, ro, NULL, rl);
    /* This rank's shard of each sequence, appended as [B, Hkv, T, D] with counts. */
    size_t first[2], count[2], T = 0, pos[64];
    for (size_t b = 0; b < B; b++) {
        count[b] = positions(CLATTN_MPI_CONTIGUOUS, g_rank, g_size, lens[b], pos);
        first[b] = count[b] ? pos[0] : 0;
        T = count[b] > T ? count[b] : T;
    }
    clattn_kv_cache_params kp = clattn_kv_cache_params_default();
    kp.batch = B, kp.num_kv_heads = Hkv, kp.head_dim = D, kp.capacity = Lmax, kp.dtype = c->dtype;
    clattn_kv_cache *cache = NULL;
    CL_OK(clattn_kv_cache_create(e.cc, &kp, &cache));
    float *kn = calloc(B * Hkv * (T + 1) * D, sizeof *kn),
          *vn = calloc(B * Hkv * (T + 1) * D, sizeof *vn);
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < Hkv; h++)
            for (size_t t = 0; t < count[b]; t++)
                for (size_t d = 0; d < D; d++) {
                    const size_t src = ((b * Hkv + h) * Lmax + first[b] + t) * D + d;
                    kn[((b * Hkv + h) * T + t) * D + d] = k[src];
                    vn[((b * Hkv + h) * T + t) * D + d] = v[src];
                }
    cl_mem bk, bv, bq, bo, bl, bs = NULL;
    const clattn_tensor KN = upload(&e, kn, B, Hkv, T, D, false, 0, &bk);
    const clattn_tensor VN = upload(&e, vn, B, Hkv, T, D, false, 0, &bv);
    if (T)
        CL_OK(clattn_kv_cache_append(cache, e.queue, &KN, &VN, count, 0, NULL, NULL));
    if (g_rank != root)
        for (size_t i = 0; i < B * Hq * Lq * D; i++)
            q[i] = 1e3f; /* decoys: root's query must be the one used */
    const clattn_tensor Q = upload(&e, q, B, Hq, Lq, D, false, 1, &bq);
    float *zeros = calloc(B * Hq * Lq * D + 8, sizeof *zeros);
    const clattn_tensor O = upload(&e, zeros, B, Hq, Lq, D, false, 3, &bo);
    const clattn_tensor Lt = upload(&e, zeros, B, Hq, Lq, 1, false, 0, &bl);
    clattn_mpi_decode_params p = clattn_mpi_decode_params_default();
    p.root = root;
    p.lse = &Lt;
    p.attend.cross = c->cross;
    p.attend.logits.softcap = c->softcap;
    if (c->window >= 0)
        p.attend.window_left = c->window;
    if (c->sinks) {
        bs = buf_new(&e, Hq * sizeof *fs);
        buf_write(&e, bs, 0, fs, Hq * sizeof *fs);
        p.attend.logits.sinks = bs;
    }
    const clattn_status st =
        clattn_mpi_kv_attend(e.cc, cache, e.queue, MPI_COMM_WORLD, &Q, &O, &p, 0, NULL);
    bool ok;
    if (c->window >= 0) {
        ok = st == CLATTN_ERROR_UNSUPPORTED_PATH;
    } else if (st != CLATTN_SUCCESS) {
        fprintf(stderr, "rank %d: %s\n", g_rank, clattn_status_name(st));
        ok = false;
    } else {
        const size_t n = B * Hq * Lq;
        float *o = malloc((n * D + 3) * sizeof *o), *l = malloc(n * sizeof *l);
        buf_read(&e, bo, 0, o, (n * D + 3) * sizeof *o);
        buf_read(&e, bl, 0, l, n * sizeof *l);
        double *go = malloc(n * D * sizeof *go), *gl = malloc(n * sizeof *gl);
        for (size_t i = 0; i < n * D; i++)
            go[i] = o[i + 3];
        for (size_t i = 0; i < n; i++)
            gl[i] = l[i];
        const double tol = TOL; /* int8: against the dequantized values, so as tight as fp32 */
        char what[48];
        snprintf(what, sizeof what, "rank %d O", g_rank);
        ok = check_close(what, go, ro, n * D, tol);
        snprintf(what, sizeof what, "rank %d lse", g_rank);
        ok = check_close(what, gl, rl, n, tol) && ok;
        free(o), free(l), free(go), free(gl);
    }
    clattn_kv_cache_destroy(&cache);
    cl_mem bufs[] = {bk, bv, bq, bo, bl, bs};
    for (size_t i = 0; i < 6; i++)
        if (bufs[i])
            clReleaseMemObject(bufs[i]);
    free(k), free(v), free(q), free(kd), free(vd), free(qd), free(ro), free(rl), free(kn), free(vn);
    free(zeros);
    env_close(&e);
    return agreed(ok);
}

#define DECODE_CASE(fname, ...)                                                                    \
    static bool fname(void)                                                                        \
    {                                                                                              \
        decode_case c = {CLATTN_F32, 4, 2, 16, 1, false, false, 0.0f, 0, -1};                      \
        __VA_ARGS__;                                                                               \
        return run_decode(&c);                                                                     \
    }

DECODE_CASE(decode_f32, (void)0)
DECODE_CASE(decode_sinks_softcap_root_last, c.sinks = true; c.softcap = 2.0f; c.root = -1)
DECODE_CASE(decode_q8_gqa, c.dtype = CLATTN_Q8; c.Hq = 8; c.Hkv = 2; c.D = 32)
DECODE_CASE(decode_cross_chunk, c.cross = true; c.Lq = 3; c.sinks = true)
DECODE_CASE(decode_window_refused, c.window = 8)

/* A bad argument on the last rank only: every rank returns the same error, nothing hangs. */
static bool bad_argument_one_rank(void)
{
    ring_case c = base(CLATTN_MPI_CONTIGUOUS, 40);
    ring_run r = run_ring(&c, g_size - 1, -1, -1);
    int st = r.status, lo = 0, hi = 0;
    MPI_Allreduce(&st, &lo, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&st, &hi, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (g_rank == 0)
        printf("  status on every rank: %s .. %s\n", clattn_status_name(lo),
               clattn_status_name(hi));
    return agreed(lo == hi && st == CLATTN_ERROR_INVALID_SHAPE);
}

/* A device-side failure on the last rank in the middle of the ring (the fault interposer fails
 * the Nth OpenCL call libclattn and libclattn_mpi make there): every rank returns that status.
 * A run with the interposer counting first finds how many calls the ring makes on that rank.
 * Some calls' failures are survived: from the middle on, points are tried until one fails the
 * call, each survived one checked for the right answer on every rank. */
static bool failure_mid_ring(void)
{
    if (!f_arm || !f_disarm) {
        fprintf(stderr, "the fault interposer is not preloaded\n");
        return false;
    }
    ring_case c = base(CLATTN_MPI_CONTIGUOUS, 64);
    c.causal = 0; /* every block computed at every step */
    const int victim = g_size - 1;
    /* Once to fill the kernel caches, so that the counted run and the failing ones make the
     * same calls (a cold cache's builds add hundreds). */
    if (!agreed(run_ring(&c, -1, -1, -1).ok))
        return false;
    ring_run dry = run_ring(&c, -1, victim, 0); /* counts */
    long calls = dry.calls;
    MPI_Bcast(&calls, 1, MPI_LONG, victim, MPI_COMM_WORLD);
    if (!agreed(dry.status == CLATTN_SUCCESS && dry.ok) || calls < 2)
        return false;
    const long step = calls / 50 > 1 ? calls / 50 : 1;
    for (long k = calls / 2 + 1; k <= calls; k += step) {
        ring_run r = run_ring(&c, -1, victim, k);
        int st = r.status, lo = 0, hi = 0;
        MPI_Allreduce(&st, &lo, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        MPI_Allreduce(&st, &hi, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        if (!agreed(lo == hi && (st != CLATTN_SUCCESS || r.ok)))
            return false;
        if (st != CLATTN_SUCCESS) {
            if (g_rank == 0)
                printf("  %ld calls on rank %d, the %ld-th failed: %s on every rank\n", calls,
                       victim, k, clattn_status_name(lo));
            return true;
        }
    }
    if (g_rank == 0)
        printf("  no failure from call %ld on was reported\n", calls / 2 + 1);
    return false;
}

/* The fault sweep over the ring (tests/faults' checks, across ranks): on the last rank, each
 * OpenCL call and host allocation libclattn and libclattn_mpi make in one ring call fails in
 * turn; every rank must return the same status (or, where a failure is survivable, the right
 * answer), nothing may hang, and the last rank must hold no object it did not hold before.
 * A deterministic sample of at most 40 points; CLATTN_MPI_FAULT_EVERY=1 sweeps every one. */
static bool fault_sweep_ring(void)
{
    if (!f_arm || !f_disarm || !f_balance) {
        fprintf(stderr, "the fault interposer is not preloaded\n");
        return false;
    }
    ring_case c = base(CLATTN_MPI_CONTIGUOUS, 24);
    c.Hq = 2, c.Hkv = 1, c.D = c.Dv = 8, c.lengths = true, c.sinks = true;
    const int victim = g_size - 1;
    if (!agreed(run_ring(&c, -1, -1, -1).ok)) /* warm caches: the same calls in every run */
        return false;
    g_fault_kinds = 3;
    ring_run dry = run_ring(&c, -1, victim, 0);
    long calls = dry.calls;
    MPI_Bcast(&calls, 1, MPI_LONG, victim, MPI_COMM_WORLD);
    if (dry.leaked)
        fprintf(stderr, "rank %d: %ld objects leaked without a fault\n", g_rank, dry.leaked);
    bool ok = agreed(dry.status == CLATTN_SUCCESS && dry.ok && dry.leaked == 0);
    const char *every = getenv("CLATTN_MPI_FAULT_EVERY");
    const long step = every ? atol(every) : (calls + 39) / 40;
    long points = 0, failed_everywhere = 0;
    for (long k = 1; ok && k <= calls; k += step > 0 ? step : 1, points++) {
        ring_run r = run_ring(&c, -1, victim, k);
        int st = r.status, lo = 0, hi = 0;
        MPI_Allreduce(&st, &lo, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        MPI_Allreduce(&st, &hi, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        const bool here = lo == hi && (st != CLATTN_SUCCESS || r.ok) && r.leaked == 0;
        if (!here)
            fprintf(stderr, "rank %d, point %ld: %s (everywhere %s .. %s), %ld objects leaked\n",
                    g_rank, k, clattn_status_name(st), clattn_status_name(lo),
                    clattn_status_name(hi), r.leaked);
        ok = agreed(here);
        failed_everywhere += st != CLATTN_SUCCESS;
    }
    g_fault_kinds = 1;
    if (g_rank == 0)
        printf("  %ld calls on rank %d, %ld points failed in turn, %ld returned an error on "
               "every rank\n",
               calls, victim, points, failed_everywhere);
    return ok;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    *(void **)&f_arm = dlsym(RTLD_DEFAULT, "fault_arm");
    *(void **)&f_disarm = dlsym(RTLD_DEFAULT, "fault_disarm");
    *(void **)&f_balance = dlsym(RTLD_DEFAULT, "fault_balance");
    static const test_case cases[] = {
        CASE(contiguous_causal),
        CASE(zigzag_causal),
        CASE(striped_causal),
        CASE(zigzag_fp16_gqa),
        CASE(striped_fp16_lengths),
        CASE(contiguous_no_mask),
        CASE(contiguous_bottom_right),
        CASE(zigzag_top_left_fewer_queries),
        CASE(contiguous_lengths_window),
        CASE(zigzag_window_alibi_sinks_softcap),
        CASE(striped_window_sinks_lengths),
        CASE(striped_two_sided_window),
        CASE(contiguous_alibi_no_causal_window),
        CASE(heads_causal),
        CASE(heads_gqa_variants),
        CASE(heads_not_divisible),
        CASE(decode_f32),
        CASE(decode_sinks_softcap_root_last),
        CASE(decode_q8_gqa),
        CASE(decode_cross_chunk),
        CASE(decode_window_refused),
        CASE(bad_argument_one_rank),
        CASE(failure_mid_ring),
        CASE(fault_sweep_ring),
    };
    int rc = run_cases(argc, argv, cases, sizeof cases / sizeof cases[0]), worst = 0;
    MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return worst;
}
