/* Events: a call behind a wait list that fails, or completes late, on in-order and out-of-order
 * queues. A failed event in the wait list must reach the call's event, never take the process
 * down (PoCL 3.1 aborts when a failure reaches an event whose last reference was released); a
 * call waiting for a late event must hold back nothing but its own work (no barrier on the
 * caller's queue, no other queue's call behind it); and on an in-order queue a call must still
 * run after what was enqueued before it. Every operation that enqueues work, each setup's path
 * and engine. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The setups every case of this file runs under (see harness.h). */
#define SETUPS "fused unfused unfused-clblast"

enum { B = 2, H = 4, HKV = 2, T = 19, D = 16, E = H * D };

enum op {
    OP_SDPA,      /* clattn_sdpa on the setup's path */
    OP_LINEAR,    /* clattn_linear with a bias */
    OP_STEPS,     /* scores, mask, softmax, weighted sum: four calls chained by their events */
    OP_MHA,       /* a layer's forward, self attention */
    OP_KV,        /* a KV cache's append, then its attention after the append's event */
    OP_MERGE,     /* two partial results merged */
    OP_COUNT
};
static const char *op_names[OP_COUNT] = {"sdpa", "linear", "steps", "mha", "kv", "merge"};

/* One set of buffers for every op: inputs (random) and outputs (zeros). */
typedef struct bufs {
    cl_mem q, k, v, o, s, p, x, w, bias, y, lse, mha_w, mha_b, mha_wo, mha_bo, xo;
} bufs;

static cl_mem upload(test_env *e, size_t n, uint64_t *seed, bool random)
{
    float *h = calloc(n, sizeof *h);
    if (random)
        fill_uniform(h, n, seed, -1, 1);
    cl_mem b = buf_new(e, n * sizeof *h);
    buf_write(e, b, 0, h, n * sizeof *h);
    free(h);
    return b;
}

static bufs bufs_new(test_env *e, uint64_t seed)
{
    bufs b;
    b.q = upload(e, B * H * T * D, &seed, true);
    b.k = upload(e, B * HKV * T * D, &seed, true);
    b.v = upload(e, B * HKV * T * D, &seed, true);
    b.o = upload(e, B * H * T * D, &seed, false);
    b.s = upload(e, B * H * T * T, &seed, false);
    b.p = upload(e, B * H * T * T, &seed, false);
    b.x = upload(e, B * T * E, &seed, true);
    b.w = upload(e, E * E, &seed, true);
    b.bias = upload(e, E, &seed, true);
    b.y = upload(e, B * T * E, &seed, false);
    b.lse = upload(e, B * H * T, &seed, true);
    b.mha_w = upload(e, 3 * E * E, &seed, true);
    b.mha_b = upload(e, 3 * E, &seed, true);
    b.mha_wo = upload(e, E * E, &seed, true);
    b.mha_bo = upload(e, E, &seed, true);
    b.xo = upload(e, B * T * E, &seed, false);
    return b;
}

static void bufs_free(bufs *b)
{
    cl_mem all[] = {b->q,   b->k,   b->v,     b->o,     b->s,      b->p,      b->x,      b->w,
                    b->bias, b->y, b->lse, b->mha_w, b->mha_b, b->mha_wo, b->mha_bo, b->xo};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        clReleaseMemObject(all[i]);
}

/* The op's output buffer and its size in floats. */
static cl_mem out_of(const bufs *b, int op, size_t *n)
{
    switch (op) {
    case OP_LINEAR: *n = B * T * E; return b->y;
    case OP_MHA: *n = B * T * E; return b->xo;
    default: *n = B * H * T * D; return b->o;
    }
}

/* Objects an op keeps across its calls (the layer, the cache). */
typedef struct held {
    clattn_mha *mha;
    clattn_kv_cache *kv;
} held;

/* Enqueues `op` on `queue` after the wait list; *ev: its last call's event. */
static clattn_status enqueue_op(test_env *e, held *hd, const bufs *b, int op,
                                cl_command_queue queue, cl_uint nw, const cl_event *wl, cl_event *ev)
{
    const clattn_tensor Q = clattn_tensor_bhtd(b->q, 0, B, H, T, D), K = clattn_tensor_bhtd(b->k, 0, B, HKV, T, D),
                        V = clattn_tensor_bhtd(b->v, 0, B, HKV, T, D), O = clattn_tensor_bhtd(b->o, 0, B, H, T, D);
    clattn_sdpa_params sp = clattn_sdpa_params_default();
    sp.path = test_path();
    sp.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
    clattn_status st = CL_SUCCESS;
    switch (op) {
    case OP_SDPA:
        return clattn_sdpa(e->cc, queue, &Q, &K, &V, &O, &sp, nw, wl, ev);
    case OP_LINEAR: {
        const clattn_tensor X = clattn_tensor_bhtd(b->x, 0, B, 1, T, E), W = clattn_tensor_bhtd(b->w, 0, 1, 1, E, E),
                            bias = clattn_tensor_bhtd(b->bias, 0, 1, 1, 1, E), Y = clattn_tensor_bhtd(b->y, 0, B, 1, T, E);
        return clattn_linear(e->cc, queue, &X, &W, &bias, &Y, nw, wl, ev);
    }
    case OP_STEPS: {
        const clattn_tensor S = clattn_tensor_bhtd(b->s, 0, B, H, T, T), P = clattn_tensor_bhtd(b->p, 0, B, H, T, T);
        cl_event e1 = NULL, e2 = NULL, e3 = NULL;
        st = clattn_scores(e->cc, queue, &Q, &K, &S, NAN, nw, wl, &e1);
        if (st == CL_SUCCESS)
            st = clattn_mask(e->cc, queue, &S, &sp.mask, 1, &e1, &e2);
        if (st == CL_SUCCESS)
            st = clattn_softmax(e->cc, queue, &S, &P, NULL, 1, &e2, &e3);
        if (st == CL_SUCCESS)
            st = clattn_weighted_sum(e->cc, queue, &P, &V, &O, 1, &e3, ev);
        /* Released at once, as a program would: the library must not need them. */
        cl_event all[] = {e1, e2, e3};
        for (int i = 0; i < 3; i++)
            if (all[i])
                clReleaseEvent(all[i]);
        return st;
    }
    case OP_MHA: {
        if (!hd->mha) {
            const clattn_tensor in = clattn_tensor_bhtd(b->mha_w, 0, 1, 1, 3 * E, E),
                                bi = clattn_tensor_bhtd(b->mha_b, 0, 1, 1, 1, 3 * E),
                                wo = clattn_tensor_bhtd(b->mha_wo, 0, 1, 1, E, E),
                                bo = clattn_tensor_bhtd(b->mha_bo, 0, 1, 1, 1, E);
            clattn_mha_params mp = clattn_mha_params_default();
            mp.embed_dim = E;
            mp.num_heads = H;
            mp.in_proj_weight = &in, mp.in_proj_bias = &bi, mp.out_proj_weight = &wo, mp.out_proj_bias = &bo;
            if ((st = clattn_mha_create(e->cc, &mp, &hd->mha)) != CL_SUCCESS)
                return st;
        }
        const clattn_tensor X = clattn_tensor_bhtd(b->x, 0, B, 1, T, E), Y = clattn_tensor_bhtd(b->xo, 0, B, 1, T, E);
        clattn_mha_forward_params fp = clattn_mha_forward_params_default();
        fp.mask.causal = CLATTN_CAUSAL_TOP_LEFT;
        fp.path = test_path();
        return clattn_mha_forward(hd->mha, queue, &X, &X, &X, &Y, &fp, nw, wl, ev);
    }
    case OP_KV: {
        if (!hd->kv) {
            clattn_kv_cache_params kp = clattn_kv_cache_params_default();
            kp.batch = B, kp.num_kv_heads = HKV, kp.head_dim = D, kp.capacity = 4 * T;
            if ((st = clattn_kv_cache_create(e->cc, &kp, &hd->kv)) != CL_SUCCESS)
                return st;
        }
        cl_event appended = NULL;
        st = clattn_kv_cache_append(hd->kv, queue, &K, &V, NULL, nw, wl, &appended);
        if (st == CL_SUCCESS)
            st = clattn_kv_cache_attend(hd->kv, queue, &Q, &O, NULL, 1, &appended, ev);
        if (appended)
            clReleaseEvent(appended);
        return st;
    }
    case OP_MERGE: {
        const clattn_tensor O1 = clattn_tensor_bhtd(b->q, 0, B, H, T, D), L = clattn_tensor_bhtd(b->lse, 0, B, H, T, 1);
        const clattn_tensor O2 = clattn_tensor_bhtd(b->k, 0, B, HKV, T, D); /* first B*HKV rows */
        const clattn_tensor O2v = {O2.buffer, 0, CLATTN_F32, {B, H / 2, T, D}, {H / 2 * T * D, T * D, D, 1}};
        const clattn_tensor O1v = {O1.buffer, 0, CLATTN_F32, {B, H / 2, T, D}, {H * T * D, T * D, D, 1}};
        const clattn_tensor Lv = {L.buffer, 0, CLATTN_F32, {B, H / 2, T, 1}, {H * T, T, 1, 1}};
        const clattn_tensor Ov = {O.buffer, 0, CLATTN_F32, {B, H / 2, T, D}, {H * T * D, T * D, D, 1}};
        return clattn_merge(e->cc, queue, &O1v, &Lv, &O2v, &Lv, &Ov, NULL, nw, wl, ev);
    }
    }
    return CLATTN_ERROR_INVALID_ARGUMENT;
}

static cl_int status_of(cl_event ev)
{
    cl_int s = 1;
    CL_OK(clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof s, &s, NULL));
    return s;
}

/* Waits up to 20 s for `ev` to complete (or fail); false when it has not by then. */
static bool finishes(cl_event ev)
{
    for (int i = 0; i < 2000; i++) {
        if (status_of(ev) <= CL_COMPLETE)
            return true;
        const struct timespec t = {0, 10 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    return false;
}

/* Whether `op`'s output is bit-identical in the two sets of buffers. */
static bool same_output(test_env *e, const bufs *a, const bufs *b, int op)
{
    size_t n;
    cl_mem ma = out_of(a, op, &n), mb = out_of(b, op, &n);
    float *ha = malloc(n * sizeof *ha), *hb = malloc(n * sizeof *hb);
    buf_read(e, ma, 0, ha, n * sizeof *ha);
    buf_read(e, mb, 0, hb, n * sizeof *hb);
    const bool same = memcmp(ha, hb, n * sizeof *ha) == 0;
    free(ha), free(hb);
    return same;
}

static cl_command_queue queue_new(test_env *e, bool out_of_order)
{
    cl_int err;
    cl_command_queue q = clCreateCommandQueue(e->context, e->device,
                                              out_of_order ? CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE : 0, &err);
    CL_OK(err);
    return q;
}

static void held_free(held *hd)
{
    clattn_mha_destroy(&hd->mha);
    clattn_kv_cache_destroy(&hd->kv);
}

/* Every op behind a user event set to -1, on both queue kinds: the call's event fails, the
 * process lives, a new call with the failed event in its wait list is refused, and the context
 * works afterwards (the same op then matches a run that never failed, bit for bit: a layer's
 * kept scratch is reused after the failure). */
static bool failed_wait_list(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    for (int ooo = 0; ooo < 2; ooo++) {
        cl_int err;
        cl_command_queue q = queue_new(&e, ooo);
        for (int op = 0; op < OP_COUNT; op++) {
            bufs b = bufs_new(&e, 11), ref = bufs_new(&e, 11);
            held hd = {0}, hr = {0};
            cl_event u = clCreateUserEvent(e.context, &err), ev = NULL;
            CL_OK(err);
            EXPECT_STATUS(enqueue_op(&e, &hd, &b, op, q, 1, &u, &ev), CLATTN_SUCCESS);
            CL_OK(clFlush(q));
            CL_OK(clSetUserEventStatus(u, -1));
            const bool done = ev && finishes(ev);
            const cl_int s = done ? status_of(ev) : 1;
            printf("%-6s %s queue: call's event %d\n", op_names[op], ooo ? "out-of-order" : "in-order", s);
            EXPECT(done && s < 0);
            CL_OK(clFinish(q));
            CL_OK(clattn_context_finish(e.cc)); /* products that still ran, on CLBlast's lanes */
            /* The failed event in a new call's wait list: refused, nothing enqueued. */
            cl_event none = NULL;
            EXPECT_STATUS(enqueue_op(&e, &hd, &b, op, q, 1, &u, &none), CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST);
            EXPECT(none == NULL);
            /* Then the same op, with nothing failing, against a fresh run. */
            if (op == OP_KV) { /* the failed append left the cache's length advanced: start over */
                clattn_kv_cache_destroy(&hd.kv);
            }
            cl_event ok_ev = NULL;
            EXPECT_STATUS(enqueue_op(&e, &hd, &b, op, q, 0, NULL, &ok_ev), CLATTN_SUCCESS);
            EXPECT_STATUS(enqueue_op(&e, &hr, &ref, op, e.queue, 0, NULL, NULL), CLATTN_SUCCESS);
            CL_OK(clFinish(q));
            EXPECT(ok_ev && status_of(ok_ev) == CL_COMPLETE);
            EXPECT(same_output(&e, &b, &ref, op));
            if (ev)
                clReleaseEvent(ev);
            if (ok_ev)
                clReleaseEvent(ok_ev);
            clReleaseEvent(u);
            held_free(&hd), held_free(&hr);
            bufs_free(&b), bufs_free(&ref);
        }
        clReleaseCommandQueue(q);
    }
    env_close(&e);
    return ok;
}

/* A call waiting for a user event holds back only its own work: a command enqueued after it on
 * the same out-of-order queue, and the same op on another queue of either kind, complete while
 * the event is pending (a barrier on the caller's queue, or a queue of the library's shared with
 * the waiting call, would hold them: the program would deadlock if it waited for them before
 * setting the event). Then the waiting call completes and matches the other. */
static bool late_event_holds_nothing_else(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    cl_int err;
    cl_command_queue q1 = queue_new(&e, true);
    for (int kind = 0; kind < 2; kind++) {
        cl_command_queue q2 = queue_new(&e, kind);
        for (int op = 0; op < OP_COUNT; op++) {
            bufs b = bufs_new(&e, 21), other = bufs_new(&e, 21);
            held hd = {0}, ho = {0};
            /* Each op once ungated first: builds and warm-ups are not what is waited for. */
            EXPECT_STATUS(enqueue_op(&e, &ho, &other, op, e.queue, 0, NULL, NULL), CLATTN_SUCCESS);
            CL_OK(clFinish(e.queue));
            held_free(&ho);
            bufs_free(&other);
            other = bufs_new(&e, 21);
            cl_event u = clCreateUserEvent(e.context, &err), gated = NULL, fill = NULL, free_ev = NULL;
            CL_OK(err);
            EXPECT_STATUS(enqueue_op(&e, &hd, &b, op, q1, 1, &u, &gated), CLATTN_SUCCESS);
            const float zero = 0;
            CL_OK(clEnqueueFillBuffer(q1, other.s, &zero, sizeof zero, 0, sizeof zero, 0, NULL, &fill));
            CL_OK(clFlush(q1));
            EXPECT_STATUS(enqueue_op(&e, &ho, &other, op, q2, 0, NULL, &free_ev), CLATTN_SUCCESS);
            CL_OK(clFlush(q2));
            const bool fill_done = finishes(fill), other_done = free_ev && finishes(free_ev);
            const bool gated_pending = gated && status_of(gated) > CL_COMPLETE;
            printf("%-6s another queue (%s): later command %s, other call %s, gated call %s\n", op_names[op],
                   kind ? "out-of-order" : "in-order", fill_done ? "ran" : "HELD", other_done ? "ran" : "HELD",
                   gated_pending ? "waits" : "did not wait");
            EXPECT(fill_done && other_done && gated_pending);
            CL_OK(clSetUserEventStatus(u, CL_COMPLETE));
            EXPECT(gated && finishes(gated) && status_of(gated) == CL_COMPLETE);
            CL_OK(clFinish(q1));
            CL_OK(clFinish(q2));
            EXPECT(same_output(&e, &b, &other, op));
            cl_event all[] = {u, gated, fill, free_ev};
            for (int i = 0; i < 4; i++)
                if (all[i])
                    clReleaseEvent(all[i]);
            held_free(&hd), held_free(&ho);
            bufs_free(&b), bufs_free(&other);
        }
        clReleaseCommandQueue(q2);
    }
    clReleaseCommandQueue(q1);
    env_close(&e);
    return ok;
}

/* On an in-order queue a call runs after what was enqueued before it, even when that is held
 * back: new inputs written behind a late user event are what the call reads (a product run on a
 * queue of the library's must still wait for them). */
static bool in_order_queue_keeps_its_order(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    cl_int err;
    cl_command_queue q = queue_new(&e, false);
    for (int op = 0; op < OP_COUNT; op++) {
        bufs b = bufs_new(&e, 31), ref = bufs_new(&e, 32); /* ref: the new inputs, written plainly */
        held hd = {0}, hr = {0};
        /* Weights are not among the inputs replaced: ref takes b's. */
        const cl_mem wsrc[] = {b.w, b.bias, b.mha_w, b.mha_b, b.mha_wo, b.mha_bo},
                     wdst[] = {ref.w, ref.bias, ref.mha_w, ref.mha_b, ref.mha_wo, ref.mha_bo};
        const size_t n_w[] = {E * E, E, 3 * E * E, 3 * E, E * E, E};
        for (int i = 0; i < 6; i++)
            CL_OK(clEnqueueCopyBuffer(e.queue, wsrc[i], wdst[i], 0, 0, n_w[i] * sizeof(float), 0, NULL, NULL));
        CL_OK(clFinish(e.queue));
        EXPECT_STATUS(enqueue_op(&e, &hd, &b, op, q, 0, NULL, NULL), CLATTN_SUCCESS); /* warm */
        CL_OK(clFinish(q));
        held_free(&hd);
        EXPECT_STATUS(enqueue_op(&e, &hr, &ref, op, e.queue, 0, NULL, NULL), CLATTN_SUCCESS);
        CL_OK(clFinish(e.queue));
        /* b's inputs replaced by ref's, behind a user event, then the op with no wait list. */
        cl_event u = clCreateUserEvent(e.context, &err);
        CL_OK(err);
        const size_t n_in[] = {B * H * T * D, B * HKV * T * D, B * HKV * T * D, B * T * E, B * H * T};
        const cl_mem src[] = {ref.q, ref.k, ref.v, ref.x, ref.lse}, dst[] = {b.q, b.k, b.v, b.x, b.lse};
        for (int i = 0; i < 5; i++)
            CL_OK(clEnqueueCopyBuffer(q, src[i], dst[i], 0, 0, n_in[i] * sizeof(float), 1, &u, NULL));
        EXPECT_STATUS(enqueue_op(&e, &hd, &b, op, q, 0, NULL, NULL), CLATTN_SUCCESS);
        CL_OK(clFlush(q));
        const struct timespec t = {0, 50 * 1000 * 1000};
        nanosleep(&t, NULL);
        CL_OK(clSetUserEventStatus(u, CL_COMPLETE));
        CL_OK(clFinish(q));
        const bool same = same_output(&e, &b, &ref, op);
        printf("%-6s reads the inputs written before it: %s\n", op_names[op], same ? "yes" : "NO");
        EXPECT(same);
        clReleaseEvent(u);
        held_free(&hd), held_free(&hr);
        bufs_free(&b), bufs_free(&ref);
    }
    clReleaseCommandQueue(q);
    env_close(&e);
    return ok;
}

/* Threads whose calls do not wait, next to a call held by a user event: none of theirs ever
 * waits for it, however their planning and enqueueing interleave with the held call's (a lane
 * taken over between a call's gate opening and its products reaching the lane would put them
 * behind the held call's barrier). The held call is made by one thread while three others make
 * 40 calls each of the same op with no wait list, on queues of both kinds. */
typedef struct free_runner {
    test_env *e;
    int op, kind;
    bool ok;
} free_runner;

static void *run_free(void *arg)
{
    free_runner *r = arg;
    cl_command_queue q = queue_new(r->e, r->kind);
    r->ok = true;
    bufs b = bufs_new(r->e, 41);
    held hd = {0};
    for (int i = 0; r->ok && i < 40; i++) {
        cl_event ev = NULL;
        r->ok = enqueue_op(r->e, &hd, &b, r->op, q, 0, NULL, &ev) == CLATTN_SUCCESS;
        clFlush(q);
        r->ok = r->ok && finishes(ev) && status_of(ev) == CL_COMPLETE;
        if (ev)
            clReleaseEvent(ev);
    }
    clFinish(q);
    held_free(&hd);
    bufs_free(&b);
    clReleaseCommandQueue(q);
    return NULL;
}

static bool concurrent_calls_never_wait_for_another(void)
{
    bool ok = true;
    test_env e;
    env_open(&e, false);
    cl_int err;
    cl_command_queue qh = queue_new(&e, true);
    const int ops[] = {OP_LINEAR, OP_STEPS, OP_MHA};
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        bufs warm = bufs_new(&e, 40), bh = bufs_new(&e, 40);
        held hw = {0}, hh = {0};
        EXPECT_STATUS(enqueue_op(&e, &hw, &warm, ops[o], e.queue, 0, NULL, NULL), CLATTN_SUCCESS);
        CL_OK(clFinish(e.queue));
        cl_event u = clCreateUserEvent(e.context, &err), held_ev = NULL;
        CL_OK(err);
        free_runner r[3];
        pthread_t th[3];
        for (int t = 0; t < 3; t++) {
            r[t] = (free_runner){&e, ops[o], t % 2, false};
            EXPECT(pthread_create(&th[t], NULL, run_free, &r[t]) == 0);
        }
        EXPECT_STATUS(enqueue_op(&e, &hh, &bh, ops[o], qh, 1, &u, &held_ev), CLATTN_SUCCESS);
        CL_OK(clFlush(qh));
        bool all = true;
        for (int t = 0; t < 3; t++) {
            pthread_join(th[t], NULL);
            all &= r[t].ok;
        }
        printf("%-6s 3 threads x 40 calls beside a held one: %s\n", op_names[ops[o]], all ? "none waited" : "SOME WAITED");
        EXPECT(all);
        CL_OK(clSetUserEventStatus(u, CL_COMPLETE));
        EXPECT(held_ev && finishes(held_ev) && status_of(held_ev) == CL_COMPLETE);
        CL_OK(clFinish(qh));
        if (held_ev)
            clReleaseEvent(held_ev);
        clReleaseEvent(u);
        held_free(&hw), held_free(&hh);
        bufs_free(&warm), bufs_free(&bh);
    }
    clReleaseCommandQueue(qh);
    env_close(&e);
    return ok;
}

int main(int argc, char **argv)
{
    static const test_case cases[] = {
        CASE(failed_wait_list),
        CASE(late_event_holds_nothing_else),
        CASE_IN(concurrent_calls_never_wait_for_another, "unfused-clblast"),
        CASE(in_order_queue_keeps_its_order),
    };
    return run_cases(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
