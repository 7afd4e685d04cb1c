/* Reliability: one context used by 8 threads at once, determinism, create/destroy cycles that
 * leave no reference behind, refused allocations, and NaN/Inf reaching exactly the outputs whose
 * computation they enter. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "ref.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The setups every case of this file runs under (see harness.h). */
#define SETUPS ""

/* --- every operation, once, on one queue ------------------------------------------------------ */

enum { B = 2, HQ = 4, HKV = 2, LQ = 33, LK = 47, D = 32, E = 32, NOUT = 40 };

/* Host inputs shared by every thread (read only once made). */
typedef struct inputs {
    float *q, *k, *v, *x, *w, *bias, *mask, *in_proj, *in_bias, *out_w, *out_b;
    int lens[B];
} inputs;

static size_t nq(void) { return (size_t)B * HQ * LQ * D; }
static size_t nk(void) { return (size_t)B * HKV * LK * D; }

static float *rnd(size_t n, uint64_t *seed, float scale)
{
    float *x = malloc(n * sizeof *x);
    fill_uniform(x, n, seed, -scale, scale);
    return x;
}

static void make_inputs(inputs *in)
{
    uint64_t seed = 2024;
    in->q = rnd(nq(), &seed, 1), in->k = rnd(nk(), &seed, 1), in->v = rnd(nk(), &seed, 1);
    in->x = rnd((size_t)B * LQ * E, &seed, 1), in->w = rnd((size_t)NOUT * E, &seed, 0.2f);
    in->bias = rnd(NOUT, &seed, 0.1f), in->mask = rnd((size_t)LQ * LK, &seed, 2);
    in->in_proj = rnd((size_t)3 * E * E, &seed, 0.2f), in->in_bias = rnd(3 * E, &seed, 0.1f);
    in->out_w = rnd((size_t)E * E, &seed, 0.2f), in->out_b = rnd(E, &seed, 0.1f);
    in->lens[0] = 30, in->lens[1] = LK;
}

static void free_inputs(inputs *in)
{
    float *all[] = {in->q, in->k, in->v, in->x, in->w, in->bias, in->mask, in->in_proj, in->in_bias, in->out_w, in->out_b};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

static cl_mem upload(cl_context c, cl_command_queue q, const void *src, size_t bytes)
{
    cl_int err;
    cl_mem b = clCreateBuffer(c, CL_MEM_READ_WRITE, bytes, NULL, &err);
    CL_OK(err);
    CL_OK(clEnqueueWriteBuffer(q, b, CL_TRUE, 0, bytes, src, 0, NULL, NULL));
    return b;
}

/* Output sizes, in floats, of everything run_all writes, in order. */
#define N_OUTPUTS 10
static size_t out_sizes[N_OUTPUTS];
static size_t out_total(void)
{
    const size_t ns = (size_t)B * HQ * LQ * LK, nl = (size_t)B * HQ * LQ;
    const size_t s[N_OUTPUTS] = {(size_t)B * LQ * NOUT, ns, ns, nl, nq(), nq(), ns, nq(), nl, (size_t)B * LQ * E};
    size_t t = 0;
    for (int i = 0; i < N_OUTPUTS; i++)
        t += (out_sizes[i] = s[i]);
    return t;
}

/* Runs linear, scores, mask, softmax, weighted sum, sdpa (both paths), merge and the MHA layer on
 * a fresh queue and fresh buffers of `cc`'s context; fills `result` with every output. */
static clattn_status run_all(clattn_context *cc, const inputs *in, float *result)
{
    cl_context c = clattn_context_cl_context(cc);
    cl_device_id dev = clattn_context_cl_device(cc);
    cl_int err;
    cl_command_queue q = clCreateCommandQueue(c, dev, 0, &err);
    CL_OK(err);
    cl_mem bq = upload(c, q, in->q, nq() * 4), bk = upload(c, q, in->k, nk() * 4),
           bv = upload(c, q, in->v, nk() * 4), bx = upload(c, q, in->x, (size_t)B * LQ * E * 4),
           bw = upload(c, q, in->w, (size_t)NOUT * E * 4), bb = upload(c, q, in->bias, NOUT * 4),
           bm = upload(c, q, in->mask, (size_t)LQ * LK * 4), bl = upload(c, q, in->lens, sizeof in->lens),
           bip = upload(c, q, in->in_proj, (size_t)3 * E * E * 4), bib = upload(c, q, in->in_bias, 3 * E * 4),
           bow = upload(c, q, in->out_w, (size_t)E * E * 4), bob = upload(c, q, in->out_b, E * 4);
    const size_t total = out_total();
    float *zero = calloc(total, sizeof *zero);
    cl_mem out[N_OUTPUTS];
    for (int i = 0; i < N_OUTPUTS; i++)
        out[i] = upload(c, q, zero, out_sizes[i] * 4);
    free(zero);

    clattn_tensor Q = clattn_tensor_bhtd(bq, 0, B, HQ, LQ, D), K = clattn_tensor_bhtd(bk, 0, B, HKV, LK, D),
                  V = clattn_tensor_bhtd(bv, 0, B, HKV, LK, D), X = clattn_tensor_bhtd(bx, 0, B, 1, LQ, E),
                  W = clattn_tensor_bhtd(bw, 0, 1, 1, NOUT, E), Bi = clattn_tensor_bhtd(bb, 0, 1, 1, 1, NOUT),
                  M = clattn_tensor_bhtd(bm, 0, 1, 1, LQ, LK);
    clattn_tensor Y = clattn_tensor_bhtd(out[0], 0, B, 1, LQ, NOUT);
    clattn_tensor S = clattn_tensor_bhtd(out[1], 0, B, HQ, LQ, LK), P = clattn_tensor_bhtd(out[2], 0, B, HQ, LQ, LK);
    clattn_tensor L = clattn_tensor_bhtd(out[3], 0, B, HQ, LQ, 1), O1 = clattn_tensor_bhtd(out[4], 0, B, HQ, LQ, D);
    clattn_tensor O2 = clattn_tensor_bhtd(out[5], 0, B, HQ, LQ, D), P2 = clattn_tensor_bhtd(out[6], 0, B, HQ, LQ, LK);
    clattn_tensor O3 = clattn_tensor_bhtd(out[7], 0, B, HQ, LQ, D), L3 = clattn_tensor_bhtd(out[8], 0, B, HQ, LQ, 1);
    clattn_tensor Y2 = clattn_tensor_bhtd(out[9], 0, B, 1, LQ, E);
    clattn_mask_params mp = clattn_mask_params_default();
    mp.causal = CLATTN_CAUSAL_BOTTOM_RIGHT;
    mp.additive = &M;
    mp.key_lengths = bl;

    clattn_status st = clattn_linear(cc, q, &X, &W, &Bi, &Y, 0, NULL, NULL);
    if (st == CL_SUCCESS)
        st = clattn_scores(cc, q, &Q, &K, &S, NAN, 0, NULL, NULL);
    if (st == CL_SUCCESS)
        st = clattn_mask(cc, q, &S, &mp, 0, NULL, NULL);
    if (st == CL_SUCCESS)
        st = clattn_softmax(cc, q, &S, &P, &L, 0, NULL, NULL);
    if (st == CL_SUCCESS)
        st = clattn_weighted_sum(cc, q, &P, &V, &O1, 0, NULL, NULL);
    clattn_sdpa_params sp = clattn_sdpa_params_default();
    sp.mask = mp;
    sp.path = CLATTN_PATH_UNFUSED;
    sp.probs = &P2;
    if (st == CL_SUCCESS)
        st = clattn_sdpa(cc, q, &Q, &K, &V, &O2, &sp, 0, NULL, NULL);
    /* Fused over the first 20 keys, then merged with the fused result over the rest. */
    clattn_sdpa_params fp = clattn_sdpa_params_default();
    fp.path = CLATTN_PATH_FUSED;
    fp.lse = &L3;
    clattn_tensor K1 = K, V1 = V, K2 = K, V2 = V;
    K1.dims[2] = V1.dims[2] = 20;
    K2.dims[2] = V2.dims[2] = LK - 20;
    K2.offset = V2.offset = 20 * D;
    if (st == CL_SUCCESS)
        st = clattn_sdpa(cc, q, &Q, &K1, &V1, &O3, &fp, 0, NULL, NULL);
    cl_mem tmp_o = upload(c, q, in->q, nq() * 4), tmp_l = upload(c, q, in->q, (size_t)B * HQ * LQ * 4);
    clattn_tensor O4 = clattn_tensor_bhtd(tmp_o, 0, B, HQ, LQ, D), L4 = clattn_tensor_bhtd(tmp_l, 0, B, HQ, LQ, 1);
    fp.lse = &L4;
    if (st == CL_SUCCESS)
        st = clattn_sdpa(cc, q, &Q, &K2, &V2, &O4, &fp, 0, NULL, NULL);
    if (st == CL_SUCCESS)
        st = clattn_merge(cc, q, &O3, &L3, &O4, &L4, &O3, &L3, 0, NULL, NULL);
    /* The multi-head layer, self attention, causal. */
    clattn_tensor ip = clattn_tensor_bhtd(bip, 0, 1, 1, 3 * E, E), ib = clattn_tensor_bhtd(bib, 0, 1, 1, 1, 3 * E),
                  ow = clattn_tensor_bhtd(bow, 0, 1, 1, E, E), ob = clattn_tensor_bhtd(bob, 0, 1, 1, 1, E);
    clattn_mha_params mhp = clattn_mha_params_default();
    mhp.embed_dim = E, mhp.num_heads = 4, mhp.in_proj_weight = &ip, mhp.in_proj_bias = &ib;
    mhp.out_proj_weight = &ow, mhp.out_proj_bias = &ob;
    clattn_mha *mha = NULL;
    if (st == CL_SUCCESS)
        st = clattn_mha_create(cc, &mhp, &mha);
    clattn_mha_forward_params mf = clattn_mha_forward_params_default();
    mf.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
    if (st == CL_SUCCESS)
        st = clattn_mha_forward(mha, q, &X, &X, &X, &Y2, &mf, 0, NULL, NULL);
    clFinish(q);
    clattn_mha_destroy(&mha);
    size_t at = 0;
    for (int i = 0; i < N_OUTPUTS; i++) {
        CL_OK(clEnqueueReadBuffer(q, out[i], CL_TRUE, 0, out_sizes[i] * 4, result + at, 0, NULL, NULL));
        at += out_sizes[i];
        clReleaseMemObject(out[i]);
    }
    cl_mem all[] = {bq, bk, bv, bx, bw, bb, bm, bl, bip, bib, bow, bob, tmp_o, tmp_l};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        clReleaseMemObject(all[i]);
    clReleaseCommandQueue(q);
    return st;
}

/* --- concurrency and determinism -------------------------------------------------------------- */

typedef struct worker {
    clattn_context *cc;
    const inputs *in;
    const float *expect;
    size_t n;
    int mismatches, failures;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    float *got = malloc(w->n * sizeof *got);
    for (int rep = 0; rep < 3; rep++) {
        if (run_all(w->cc, w->in, got) != CL_SUCCESS)
            w->failures++;
        else if (memcmp(got, w->expect, w->n * sizeof *got) != 0)
            w->mismatches++;
    }
    free(got);
    return NULL;
}

static bool threads_match_single_thread(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    inputs in;
    make_inputs(&in);
    const size_t n = out_total();
    float *first = malloc(n * sizeof *first), *second = malloc(n * sizeof *second);
    EXPECT_STATUS(run_all(e.cc, &in, first), CLATTN_SUCCESS);
    EXPECT_STATUS(run_all(e.cc, &in, second), CLATTN_SUCCESS);
    /* Determinism: the same calls give the same bits. */
    EXPECT(memcmp(first, second, n * sizeof *first) == 0);
    /* And the single-threaded run is right: the fused+merged result equals the reference. */
    enum { T = 8 };
    pthread_t th[T];
    worker w[T];
    for (int t = 0; t < T; t++) {
        w[t] = (worker){e.cc, &in, first, n, 0, 0};
        EXPECT(pthread_create(&th[t], NULL, work, &w[t]) == 0);
    }
    int mism = 0, fail = 0;
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        mism += w[t].mismatches;
        fail += w[t].failures;
    }
    printf("8 threads x 3 runs of every operation: %d failed calls, %d results differing from the "
           "single-threaded run\n", fail, mism);
    EXPECT(fail == 0 && mism == 0);

    /* The merged fused result over two key sets against the reference (non-causal, no mask). */
    double *q = malloc(nq() * sizeof *q), *k = malloc(nk() * sizeof *k), *v = malloc(nk() * sizeof *v);
    for (size_t i = 0; i < nq(); i++)
        q[i] = in.q[i];
    for (size_t i = 0; i < nk(); i++)
        k[i] = in.k[i], v[i] = in.v[i];
    double *ro = malloc(nq() * sizeof *ro), *got = malloc(nq() * sizeof *got);
    ref_sdpa(B, HQ, HKV, LQ, LK, D, D, 1.0 / sqrt((double)D), 0, NULL, NULL, q, k, v, ro, NULL, NULL);
    size_t off = 0;
    for (int i = 0; i < 7; i++)
        off += out_sizes[i];
    for (size_t i = 0; i < nq(); i++)
        got[i] = first[off + i];
    ok &= check_close("fused+merged O", got, ro, nq(), TOL);
    free(q), free(k), free(v), free(ro), free(got);
    free(first), free(second);
    free_inputs(&in);
    env_close(&e);
    return ok;
}

/* --- lifetimes -------------------------------------------------------------------------------- */

static bool create_destroy_cycles(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    clattn_context_destroy(&e.cc);
    const cl_uint base = ctx_refs(e.context);
    clattn_context_params p = clattn_context_params_default();
    p.context = e.context;
    p.device = e.device;
    for (int i = 0; i < 1000; i++) {
        clattn_context *cc = NULL;
        EXPECT_STATUS(clattn_context_create(&p, &cc), CLATTN_SUCCESS);
        clattn_context_destroy(&cc);
    }
    EXPECT(ctx_refs(e.context) == base);
    for (int i = 0; i < 1000; i++) { /* the default path: clattn's own context each time */
        clattn_context *cc = NULL;
        EXPECT_STATUS(clattn_context_create(NULL, &cc), CLATTN_SUCCESS);
        clattn_context_destroy(&cc);
    }
    /* Contexts that ran every operation, CLBlast's products included, let go of the caller's
     * context and buffers too. */
    inputs in;
    make_inputs(&in);
    float *res = malloc(out_total() * sizeof *res);
    for (int i = 0; i < 3; i++) {
        clattn_context *cc = NULL;
        EXPECT_STATUS(clattn_context_create(&p, &cc), CLATTN_SUCCESS);
        EXPECT_STATUS(run_all(cc, &in, res), CLATTN_SUCCESS);
        clattn_context_destroy(&cc);
        EXPECT(ctx_refs(e.context) == base);
    }
    printf("context references after 2000 create/destroy cycles and 3 with work: %u (before: %u)\n",
           ctx_refs(e.context), base);
    free(res);
    free_inputs(&in);
    env_close(&e);
    return ok;
}

static bool refused_allocations(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    clattn_device_info info;
    CL_OK(clattn_context_device_info(e.cc, &info));
    const cl_uint cbase = ctx_refs(e.context);
    cl_event ev = (cl_event)(uintptr_t)1;

    /* sdpa on the unfused path: a 16 GiB score matrix, refused, a hundred times over. */
    const size_t T = 65536, Dh = 16;
    cl_mem qb = buf_new(&e, T * Dh * 4), ob = buf_new(&e, T * Dh * 4);
    clattn_tensor q = clattn_tensor_bhtd(qb, 0, 1, 1, T, Dh), o = clattn_tensor_bhtd(ob, 0, 1, 1, T, Dh);
    clattn_sdpa_params sp = clattn_sdpa_params_default();
    sp.path = CLATTN_PATH_UNFUSED;
    for (int i = 0; i < 100; i++)
        EXPECT_STATUS(clattn_sdpa(e.cc, e.queue, &q, &q, &q, &o, &sp, 0, NULL, &ev), CLATTN_ERROR_ALLOCATION_TOO_LARGE);
    EXPECT(mem_refs(qb) == 1 && mem_refs(ob) == 1);

    /* An MHA layer whose intermediates (4 x T x E floats) pass the largest allowed buffer while
     * its output (T x E) fits: refused before anything runs. */
    const size_t Eb = 64, Tm = (size_t)(info.max_mem_alloc_size / (4 * Eb * sizeof(float))) + 64;
    cl_mem w = buf_new(&e, 3 * Eb * Eb * 4), wo = buf_new(&e, Eb * Eb * 4), xb = buf_new(&e, Eb * 4);
    cl_mem big = buf_new(&e, Tm * Eb * 4);
    clattn_tensor ip = clattn_tensor_bhtd(w, 0, 1, 1, 3 * Eb, Eb), ow = clattn_tensor_bhtd(wo, 0, 1, 1, Eb, Eb);
    clattn_mha_params mp = clattn_mha_params_default();
    mp.embed_dim = Eb, mp.num_heads = 4, mp.bias = 0, mp.in_proj_weight = &ip, mp.out_proj_weight = &ow;
    clattn_mha *m = NULL;
    EXPECT_STATUS(clattn_mha_create(e.cc, &mp, &m), CLATTN_SUCCESS);
    EXPECT(mem_refs(w) > 1); /* the layer holds references while it lives */
    clattn_tensor x = {xb, 0, CLATTN_F32, {1, 1, Tm, Eb}, {0, 0, 0, 1}}; /* one token, broadcast */
    clattn_tensor out = clattn_tensor_bhtd(big, 0, 1, 1, Tm, Eb);
    EXPECT_STATUS(clattn_mha_forward(m, e.queue, &x, &x, &x, &out, NULL, 0, NULL, &ev),
                  CLATTN_ERROR_ALLOCATION_TOO_LARGE);
    EXPECT(ev == (cl_event)(uintptr_t)1);
    size_t need = 0;
    EXPECT_STATUS(clattn_mha_workspace_size(m, &x, &x, &x, NULL, &need), CLATTN_SUCCESS);
    printf("MHA intermediates needed: %zu MiB; largest buffer allowed: %llu MiB\n", need >> 20,
           (unsigned long long)(info.max_mem_alloc_size >> 20));
    EXPECT(need > info.max_mem_alloc_size);
    clattn_mha_destroy(&m);
    EXPECT(mem_refs(w) == 1 && mem_refs(big) == 1 && mem_refs(xb) == 1);
    cl_mem all[] = {qb, ob, w, wo, xb, big};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        clReleaseMemObject(all[i]);
    /* Every buffer gone with the caller's releases; the clattn context's own reference and its
     * compiled programs' go with it. */
    CL_OK(clFinish(e.queue));
    clattn_context_destroy(&e.cc);
    printf("context references: %u at the start (clattn context alive), %u after destroying it\n",
           cbase, ctx_refs(e.context));
    EXPECT(ctx_refs(e.context) == cbase - 1);
    env_close(&e);
    return ok;
}

/* --- a compile holds up only the calls that need that program -------------------------------- */

/* The build of a broken softmax.cl reports its log from inside the build; the callback then
 * waits for another thread to finish a call that needs only an already built kernel. Were the
 * context locked while compiling, that call could not finish and the wait would time out. */
typedef struct gate {
    pthread_mutex_t m;
    pthread_cond_t c;
    int in_build; /* the build's log callback is running */
    int other_done;
    int timed_out;
} gate;

static void wait_in_build(void *user, clattn_log_level level, const char *msg)
{
    (void)level;
    (void)msg;
    gate *g = user;
    pthread_mutex_lock(&g->m);
    g->in_build = 1;
    pthread_cond_broadcast(&g->c);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 60;
    while (!g->other_done && !g->timed_out)
        g->timed_out = pthread_cond_timedwait(&g->c, &g->m, &until) != 0;
    pthread_mutex_unlock(&g->m);
}

typedef struct build_job {
    clattn_context *cc;
    cl_command_queue q;
    const clattn_tensor *S, *P;
    clattn_status st;
} build_job;

static void *broken_softmax(void *arg)
{
    build_job *j = arg;
    j->st = clattn_softmax(j->cc, j->q, j->S, j->P, NULL, 0, NULL, NULL);
    return NULL;
}

static bool compile_outside_lock(void)
{
    bool ok = true;
    char dir[64];
    kernel_dir_new(dir);
    kernel_dir_copy(dir, "prelude");
    kernel_dir_copy(dir, "fill");
    kernel_dir_write(dir, "softmax.cl", "__kernel void softmax_rows(__global float *x) { not OpenCL C }\n");
    test_env e;
    env_open(&e, false);
    gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};
    clattn_context *cc = kernel_dir_context(&e, dir, wait_in_build, &g);
    /* A weighted sum over no keys runs the fill kernel; the first call builds it. */
    uint64_t seed = 9;
    view_buf Pz = vb_new(&e, LAYOUT_BHTD, 1, 1, 4, 0, 0, 1, &seed, true);
    view_buf Vz = vb_new(&e, LAYOUT_BHTD, 1, 1, 0, 8, 0, 1, &seed, true);
    view_buf O = vb_new(&e, LAYOUT_BHTD, 1, 1, 4, 8, 0, 0, &seed, false);
    view_buf S = vb_new(&e, LAYOUT_BHTD, 1, 1, 4, 8, 0, 0, &seed, true);
    view_buf P = vb_new(&e, LAYOUT_BHTD, 1, 1, 4, 8, 0, 0, &seed, false);
    EXPECT_STATUS(clattn_weighted_sum(cc, e.queue, &Pz.t, &Vz.t, &O.t, 0, NULL, NULL), CLATTN_SUCCESS);

    build_job j = {cc, e.queue, &S.t, &P.t, CL_SUCCESS};
    pthread_t th;
    EXPECT(pthread_create(&th, NULL, broken_softmax, &j) == 0);
    pthread_mutex_lock(&g.m);
    while (!g.in_build)
        pthread_cond_wait(&g.c, &g.m);
    pthread_mutex_unlock(&g.m);
    /* The softmax build is in progress (its log callback is waiting on us). */
    EXPECT_STATUS(clattn_weighted_sum(cc, e.queue, &Pz.t, &Vz.t, &O.t, 0, NULL, NULL), CLATTN_SUCCESS);
    pthread_mutex_lock(&g.m);
    g.other_done = 1;
    pthread_cond_broadcast(&g.c);
    pthread_mutex_unlock(&g.m);
    pthread_join(th, NULL);
    EXPECT(!g.timed_out);
    EXPECT_STATUS(j.st, CLATTN_ERROR_BUILD_FAILED);
    clFinish(e.queue);
    float back[32];
    buf_read(&e, O.t.buffer, 0, back, sizeof back);
    for (int i = 0; i < 32; i++)
        EXPECT(back[i] == 0.0f);
    vb_free(&Pz), vb_free(&Vz), vb_free(&O), vb_free(&S), vb_free(&P);
    clattn_context_destroy(&cc);
    env_close(&e);
    kernel_dir_remove(dir);
    return ok;
}

int main(int argc, char **argv)
{
    static const test_case cases[] = {
        CASE(threads_match_single_thread),
        CASE(create_destroy_cycles),
        CASE(refused_allocations),
        CASE(compile_outside_lock),
    };
    return run_cases(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
