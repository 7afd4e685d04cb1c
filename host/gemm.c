/* Matrix products through CLBlast (row-major). The one file that includes clblast_c.h. */
#include "gemm.h"

#include <clblast_c.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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


/* ---- Lanes: the library's queues for CLBlast, and the gates in front of its products -------- */

typedef struct blas_lane {
    pthread_mutex_t lock;    /* owner, closed, refs */
    pthread_mutex_t enqueue; /* held while a product puts its barrier and kernels on the queue */
    cl_command_queue queue;  /* in-order, the library's */
    cl_command_queue owner; /* the caller's in-order queue whose calls hold its closed gates
                             * (retained while they do), or NULL */
    unsigned closed;        /* gates reserved here and not yet open */
    unsigned busy;          /* products planned here and not yet enqueued (their calls' plans
                             * not released), all of one call: `busy_call` */
    const void *busy_call;
    unsigned refs;          /* the pool's, one per gate, one per busy product */
} blas_lane;

struct clattn_blas_lanes {
    pthread_mutex_t lock;
    blas_lane **lane;
    size_t n, cap;
    /* Gates enqueued behind a marker and perhaps not open yet: PoCL 3.1 calls no callback on an
     * event that fails, so each call that reserves a lane (and clattn_context_finish) looks at
     * their markers and opens those that have ended. Room for every gate made is kept, so that
     * listing one at its enqueue never allocates. */
    struct clattn_blas_gate **armed;
    size_t n_armed, cap_armed, unarmed;
};

typedef struct clattn_blas_gate {
    cl_event user; /* what the lane's barrier waits for; set CL_COMPLETE, never a failure */
    cl_event mark; /* the caller-queue marker it opens on (retained once armed) */
    blas_lane *lane;
    struct clattn_blas_lanes *pool;
    bool armed;    /* enqueued: it opens when its marker ends, by callback or by a later look */
    atomic_flag opened;
    atomic_int refs; /* once armed: the callback's, the list's and the enqueuer's */
} clattn_blas_gate;

static void lane_unref(blas_lane *l)
{
    pthread_mutex_lock(&l->lock);
    const bool last = --l->refs == 0;
    pthread_mutex_unlock(&l->lock);
    if (last) {
        clReleaseCommandQueue(l->queue);
        pthread_mutex_destroy(&l->enqueue);
        pthread_mutex_destroy(&l->lock);
        free(l);
    }
}

/* A new lane: its queue and locks, one closed gate (`owner`'s, retained when in order), busy with
 * one product of `call`, and three references (the pool's, the gate's, the busy product's). */
static clattn_status lane_new(clattn_context *ctx, cl_command_queue owner, bool in_order,
                              const void *call, blas_lane **out)
{
    blas_lane *l = calloc(1, sizeof *l);
    if (!l)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    if (pthread_mutex_init(&l->lock, NULL) != 0) {
        free(l);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    if (pthread_mutex_init(&l->enqueue, NULL) != 0) {
        pthread_mutex_destroy(&l->lock);
        free(l);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    cl_int err;
    l->queue = clCreateCommandQueue(ctx->context, ctx->device, 0, &err);
    if (err == CL_SUCCESS && in_order && (err = clRetainCommandQueue(owner)) == CL_SUCCESS)
        l->owner = owner;
    if (err != CL_SUCCESS) {
        if (l->queue)
            clReleaseCommandQueue(l->queue);
        pthread_mutex_destroy(&l->enqueue);
        pthread_mutex_destroy(&l->lock);
        free(l);
        return err;
    }
    l->closed = 1;
    l->busy = 1;
    l->busy_call = call;
    l->refs = 3;
    *out = l;
    return CL_SUCCESS;
}

/* A gate opens (or was never enqueued): the lane has one closed gate fewer. */
static void lane_open_one(blas_lane *l)
{
    pthread_mutex_lock(&l->lock);
    cl_command_queue owner = NULL;
    if (--l->closed == 0) {
        owner = l->owner;
        l->owner = NULL;
    }
    pthread_mutex_unlock(&l->lock);
    if (owner)
        clReleaseCommandQueue(owner);
    lane_unref(l);
}

/* The product of a call has been enqueued, or will never be (its plan is released). */
static void lane_done(blas_lane *l)
{
    pthread_mutex_lock(&l->lock);
    if (--l->busy == 0)
        l->busy_call = NULL;
    pthread_mutex_unlock(&l->lock);
    lane_unref(l);
}

/* A lane for a product of `call` on `caller`, with one more closed gate and one more busy
 * product: one that no other call has products planned on and not yet enqueued (they would come
 * first there, behind their own gates), and whose commands all run without waiting on anything
 * outside it or whose waiting ones belong to calls on the same in-order queue; else a new one. */
static clattn_status lane_reserve(clattn_context *ctx, struct clattn_blas_lanes *pool,
                                  cl_command_queue caller, bool in_order, const void *call,
                                  blas_lane **out)
{
    pthread_mutex_lock(&pool->lock);
    for (size_t i = 0; i < pool->n; i++) {
        blas_lane *l = pool->lane[i];
        pthread_mutex_lock(&l->lock);
        const bool ok = (l->busy == 0 || l->busy_call == call) &&
                        (l->closed == 0 || (in_order && l->owner == caller));
        if (ok && in_order && !l->owner) { /* the lane holds the caller's queue as its owner */
            const cl_int err = clRetainCommandQueue(caller);
            if (err != CL_SUCCESS) {
                pthread_mutex_unlock(&l->lock);
                pthread_mutex_unlock(&pool->lock);
                return err;
            }
            l->owner = caller;
        }
        if (ok) {
            l->closed++;
            l->busy++;
            l->busy_call = call;
            l->refs += 2;
        }
        pthread_mutex_unlock(&l->lock);
        if (ok) {
            pthread_mutex_unlock(&pool->lock);
            *out = l;
            return CL_SUCCESS;
        }
    }
    clattn_status st = CL_SUCCESS;
    if (pool->n == pool->cap) {
        const size_t ncap = pool->cap ? pool->cap * 2 : 4;
        blas_lane **nl = realloc(pool->lane, ncap * sizeof *nl);
        if (!nl)
            st = CLATTN_ERROR_OUT_OF_HOST_MEMORY;
        else
            pool->lane = nl, pool->cap = ncap;
    }
    blas_lane *l = NULL;
    if (st == CL_SUCCESS && (st = lane_new(ctx, caller, in_order, call, &l)) == CL_SUCCESS)
        pool->lane[pool->n++] = l;
    pthread_mutex_unlock(&pool->lock);
    *out = l;
    return st;
}

/* Opens the gate, successfully, once (a callback and a later look may both find it ended). */
static void gate_open_once(clattn_blas_gate *g)
{
    if (atomic_flag_test_and_set(&g->opened))
        return;
    clSetUserEventStatus(g->user, CL_COMPLETE);
    lane_open_one(g->lane);
}

static void gate_unref(clattn_blas_gate *g)
{
    if (atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    clReleaseEvent(g->user);
    if (g->mark)
        clReleaseEvent(g->mark);
    free(g);
}

/* The callback on the gate's marker: it has completed (or failed, where the driver says so). */
static void CL_CALLBACK gate_ended(cl_event e, cl_int status, void *data)
{
    (void)e, (void)status;
    gate_open_once(data);
    gate_unref(data);
}

/* Opens the listed gates whose markers have ended, failed ones included, and drops them from
 * the list. The pool's lock is held. */
static void reap_gates(struct clattn_blas_lanes *pool)
{
    for (size_t i = 0; i < pool->n_armed;) {
        clattn_blas_gate *g = pool->armed[i];
        cl_int status = CL_QUEUED;
        if (clGetEventInfo(g->mark, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status,
                           NULL) != CL_SUCCESS ||
            status > CL_COMPLETE) {
            i++;
            continue;
        }
        gate_open_once(g);
        pool->armed[i] = pool->armed[--pool->n_armed];
        gate_unref(g);
    }
}

/* The context's lane pool, made on first use. */
static struct clattn_blas_lanes *lanes_of(clattn_context *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    if (!ctx->blas_lanes) {
        struct clattn_blas_lanes *p = calloc(1, sizeof *p);
        if (p && pthread_mutex_init(&p->lock, NULL) != 0) {
            free(p);
            p = NULL;
        }
        ctx->blas_lanes = p;
    }
    struct clattn_blas_lanes *pool = ctx->blas_lanes;
    pthread_mutex_unlock(&ctx->lock);
    return pool;
}

/* A gate never armed, or whose making failed, gives back its room on the armed list. */
static void gate_unreserve(struct clattn_blas_lanes *pool)
{
    pthread_mutex_lock(&pool->lock);
    pool->unarmed--;
    pthread_mutex_unlock(&pool->lock);
}

static clattn_status gate_make(clattn_context *ctx, cl_command_queue caller, bool in_order,
                               const void *call, clattn_blas_gate **out)
{
    struct clattn_blas_lanes *pool = lanes_of(ctx);
    clattn_blas_gate *g = pool ? calloc(1, sizeof *g) : NULL;
    if (!g)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    atomic_flag_clear(&g->opened);
    g->pool = pool;
    /* Room on the armed list for this gate too; gates whose markers have ended go first. */
    pthread_mutex_lock(&pool->lock);
    reap_gates(pool);
    bool room = pool->n_armed + pool->unarmed < pool->cap_armed;
    if (!room) {
        const size_t ncap = 2 * (pool->n_armed + pool->unarmed + 1);
        clattn_blas_gate **na = realloc(pool->armed, ncap * sizeof *na);
        if ((room = na != NULL))
            pool->armed = na, pool->cap_armed = ncap;
    }
    if (room)
        pool->unarmed++;
    pthread_mutex_unlock(&pool->lock);
    if (!room) {
        free(g);
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    }
    cl_int err = lane_reserve(ctx, pool, caller, in_order, call, &g->lane);
    if (err == CL_SUCCESS) {
        g->user = clCreateUserEvent(ctx->context, &err);
        if (err != CL_SUCCESS) {
            lane_done(g->lane);
            lane_open_one(g->lane);
        }
    }
    if (err != CL_SUCCESS) {
        gate_unreserve(pool);
        free(g);
        return err;
    }
    *out = g;
    return CL_SUCCESS;
}

/* From here the gate opens, and frees itself, on its own: when `mark` ends, by its callback or,
 * where none comes, by a later reap; with no mark (nothing to wait for) at once, and it is gone.
 * An armed gate also holds a reference for the enqueuer, dropped with gate_unref once its
 * barrier is on the lane. Fails only when the callback cannot be set; the gate is then still the
 * plan's, to give back. */
static clattn_status gate_arm(clattn_blas_gate *g, cl_event mark)
{
    struct clattn_blas_lanes *pool = g->pool;
    if (!mark) {
        g->armed = true;
        gate_unreserve(pool);
        atomic_init(&g->refs, 1);
        gate_open_once(g);
        gate_unref(g);
        return CL_SUCCESS;
    }
    cl_int err = clRetainEvent(mark);
    if (err != CL_SUCCESS)
        return err;
    atomic_init(&g->refs, 3);
    if ((err = clSetEventCallback(mark, CL_COMPLETE, gate_ended, g)) != CL_SUCCESS) {
        clReleaseEvent(mark);
        return err;
    }
    g->armed = true;
    g->mark = mark;
    pthread_mutex_lock(&pool->lock);
    pool->unarmed--;
    pool->armed[pool->n_armed++] = g; /* room was kept at gate_make */
    pthread_mutex_unlock(&pool->lock);
    return CL_SUCCESS;
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

clattn_status clattn__gemm_prepare(clattn_context *ctx, cl_command_queue queue, const void *call,
                                   size_t d0, size_t d1, float alpha, const clattn_operand *A_,
                                   const clattn_operand *B_, float beta, const clattn_operand *C_,
                                   clattn_gemm *g)
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
    if (!g->runs) {
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
    cl_command_queue_properties props = 0;
    if (st == CL_SUCCESS && queue &&
        (st = clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL)) == CL_SUCCESS) {
        g->in_order = !(props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE);
        if ((st = gate_make(ctx, queue, g->in_order, call, &g->gate)) == CL_SUCCESS)
            g->busy_lane = g->gate->lane;
    }
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

size_t clattn__gemm_event_count(const clattn_gemm *g)
{
    return g->num_runs + 3; /* the runs', the gate's marker, the lane's barrier, the join */
}

/* The products themselves, on `q`, their events kept; *last the number of them. */
static clattn_status run_products(clattn_context *ctx, cl_command_queue q, const clattn_gemm *g,
                                  clattn_events *keep, cl_event *evs, cl_uint *nev)
{
    atomic_store(&ctx->blas_used, 1);
    const CLBlastTranspose ta = g->trans_a ? CLBlastTransposeYes : CLBlastTransposeNo;
    const CLBlastTranspose tb = g->trans_b ? CLBlastTransposeYes : CLBlastTransposeNo;
    clattn_status st = CL_SUCCESS;
    *nev = 0;
    for (size_t t = 0; t < g->num_runs && st == CL_SUCCESS; t++) {
        const clattn_gemm_run *u = &g->runs[t];
        if (u->count == 0)
            continue;
        cl_event e = NULL;
        CLBlastStatusCode code;
        if (u->count == 1)
            code = CLBlastSgemm(CLBlastLayoutRowMajor, ta, tb, g->m, g->n, g->k, g->alpha, g->a,
                                u->a0, g->lda, g->b, u->b0, g->ldb, g->beta, g->c, u->c0, g->ldc,
                                &q, &e);
        else
            code = CLBlastSgemmStridedBatched(CLBlastLayoutRowMajor, ta, tb, g->m, g->n, g->k,
                                              g->alpha, g->a, u->a0, g->lda, u->as, g->b, u->b0,
                                              g->ldb, u->bs, g->beta, g->c, u->c0, g->ldc, u->cs,
                                              u->count, &q, &e);
        st = from_blas(ctx, code);
        if (st == CL_SUCCESS && e) {
            evs[(*nev)++] = e;
            clattn__events_keep(keep, e);
        }
    }
    return st;
}

clattn_status clattn__gemm_enqueue(clattn_context *ctx, cl_command_queue queue, clattn_gemm *g,
                                   cl_uint num_wait, const cl_event *wait_list,
                                   clattn_events *keep, cl_event *done)
{
    *done = NULL;
    cl_event stack[9], *evs = g->num_runs + 1 <= 9 ? stack : malloc((g->num_runs + 1) * sizeof *evs);
    if (!evs)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    cl_uint nev = 0;
    clattn_status st = CL_SUCCESS;
    if (!g->gate) {
        /* The library's own in-order queue, which holds the steps before: they need no wait
         * list, and nobody else's work is on it. */
        (void)num_wait, (void)wait_list;
        st = run_products(ctx, queue, g, keep, evs, &nev);
        if (st == CL_SUCCESS && nev > 0)
            st = clEnqueueMarkerWithWaitList(queue, nev, evs, done);
        clattn__events_keep(keep, *done);
    } else {
        clattn_blas_gate *gate = g->gate;
        blas_lane *lane = gate->lane;
        /* The marker the gate opens on: the wait list, and on an in-order queue what came before
         * it there. An out-of-order queue with no wait list: the products wait for nothing. */
        cl_event mark = NULL, barrier = NULL;
        if (g->in_order || num_wait > 0) {
            st = clEnqueueMarkerWithWaitList(queue, num_wait, wait_list, &mark);
            clattn__events_keep(keep, mark);
        }
        /* Armed before the products go on the lane: a gate that could not be armed would hold
         * them, and the call's event, forever. Once armed it opens even if what follows fails. */
        if (st == CL_SUCCESS && (st = gate_arm(gate, mark)) == CL_SUCCESS)
            g->gate = NULL;
        /* The barrier (when there is something to wait for) and the products enqueued together,
         * so that no other call's gate can come between them on the lane. */
        if (st == CL_SUCCESS) {
            pthread_mutex_lock(&lane->enqueue);
            if (mark) {
                st = clEnqueueBarrierWithWaitList(lane->queue, 1, &gate->user, &barrier);
                clattn__events_keep(keep, barrier);
                gate_unref(gate); /* the enqueuer's reference */
            }
            if (st == CL_SUCCESS)
                st = run_products(ctx, lane->queue, g, keep, evs, &nev);
            pthread_mutex_unlock(&lane->enqueue);
            clFlush(lane->queue); /* nothing else flushes the library's queue */
        }
        /* The join, on the caller's queue: the products, and the marker's failure if any. */
        if (st == CL_SUCCESS) {
            if (mark)
                evs[nev++] = mark;
            if (nev > 1 || (nev == 1 && !mark)) {
                st = clEnqueueMarkerWithWaitList(queue, nev, evs, done);
                clattn__events_keep(keep, *done);
            } else {
                *done = mark; /* no product at all: the step is its marker */
            }
        }
    }
    if (evs != stack)
        free(evs);
    if (st != CL_SUCCESS)
        *done = NULL;
    return st;
}

clattn_status clattn__gemm_finish(clattn_context *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    struct clattn_blas_lanes *pool = ctx->blas_lanes;
    pthread_mutex_unlock(&ctx->lock);
    if (!pool)
        return CL_SUCCESS;
    /* A marker at the end of each lane, waited for by looking, with gates whose markers have
     * ended opened in between (clFinish would wait forever behind a gate whose marker failed
     * on PoCL 3.1, where no callback would open it). */
    pthread_mutex_lock(&pool->lock);
    reap_gates(pool);
    const size_t n = pool->n;
    cl_event *ends = n ? calloc(n, sizeof *ends) : NULL;
    clattn_status st = n && !ends ? CLATTN_ERROR_OUT_OF_HOST_MEMORY : CL_SUCCESS;
    for (size_t i = 0; st == CL_SUCCESS && i < n; i++) {
        blas_lane *l = pool->lane[i];
        pthread_mutex_lock(&l->enqueue);
        st = clEnqueueMarkerWithWaitList(l->queue, 0, NULL, &ends[i]);
        pthread_mutex_unlock(&l->enqueue);
        if (st == CL_SUCCESS)
            st = clFlush(l->queue);
    }
    pthread_mutex_unlock(&pool->lock);
    for (size_t i = 0; i < n; i++) {
        for (;;) {
            cl_int status = CL_COMPLETE;
            if (ends[i] && clGetEventInfo(ends[i], CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status,
                                          &status, NULL) != CL_SUCCESS)
                status = CL_COMPLETE;
            if (status <= CL_COMPLETE)
                break;
            pthread_mutex_lock(&pool->lock);
            reap_gates(pool);
            pthread_mutex_unlock(&pool->lock);
            const struct timespec pause = {0, 100 * 1000};
            nanosleep(&pause, NULL);
        }
        if (ends[i])
            clReleaseEvent(ends[i]);
    }
    free(ends);
    return st;
}

void clattn__gemm_release(clattn_gemm *g)
{
    free(g->runs);
    g->runs = NULL;
    g->num_runs = 0;
    if (g->busy_lane) /* enqueued by now, or never to be */
        lane_done(g->busy_lane);
    g->busy_lane = NULL;
    if (g->gate && !g->gate->armed) { /* planned, never enqueued: give the lane back */
        clReleaseEvent(g->gate->user);
        lane_open_one(g->gate->lane);
        gate_unreserve(g->gate->pool);
        free(g->gate);
    }
    g->gate = NULL;
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
    struct clattn_blas_lanes *pool = ctx->blas_lanes;
    if (pool) { /* each lane lives on until its last gate has opened */
        reap_gates(pool);
        for (size_t i = 0; i < pool->n_armed; i++) /* the callback, if one comes, opens them */
            gate_unref(pool->armed[i]);
        free(pool->armed);
        for (size_t i = 0; i < pool->n; i++)
            lane_unref(pool->lane[i]);
        free(pool->lane);
        pthread_mutex_destroy(&pool->lock);
        free(pool);
        ctx->blas_lanes = NULL;
    }
    /* CLBlast 1.5 can only clear its whole cache: other contexts recompile on their next
     * product (their programs in use stay alive: the cache holds shared pointers). */
    if (atomic_load(&ctx->blas_used))
        CLBlastClearCache();
}
