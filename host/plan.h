/* A call's plan: everything it will enqueue, prepared before the first enqueue.
 *
 * A public call validates its arguments and appends its steps to a plan: kernel launches with
 * every argument set (program.h) and matrix products with their batching worked out (gemm.h),
 * plus any buffer the call allocates for itself. Everything that can fail short of an enqueue
 * fails while the plan is built, so that a failed call has enqueued nothing. Then the steps are
 * enqueued in order, each waiting for the one before (the first for the caller's wait list),
 * and the plan is released: kernel objects go back to their pools, and buffers the call owns are
 * released (OpenCL keeps them alive until the commands using them have run). */
#ifndef CLATTN_PLAN_H
#define CLATTN_PLAN_H
#include "gemm.h"
#include "program.h"

typedef enum clattn_step_kind { CLATTN_STEP_KERNEL, CLATTN_STEP_GEMM } clattn_step_kind;

typedef struct clattn_step {
    clattn_step_kind kind;
    clattn_launch launch; /* CLATTN_STEP_KERNEL */
    clattn_gemm gemm;     /* CLATTN_STEP_GEMM */
} clattn_step;

#define CLATTN_PLAN_MAX_BUFFERS 16 /* a layer: its scratch, a packed B per product, scores */

/* Buffers an object keeps between its calls (a layer's scratch), so that a call in a steady
 * state allocates nothing. A call with a pool attached takes, for each buffer it needs, a kept
 * one of that exact size (its first step then waits for `last`, the end of the call that used
 * them before), or allocates one; once it has enqueued everything, the pool holds the buffers
 * it used and its last event instead. A pool whose last event has failed is emptied when the
 * next call looks for a buffer: after a failed wait list, products on library queues may still
 * run, and a command waiting for an event that has already failed never runs on PoCL 3.1. A call that fails before enqueuing leaves the pool as it
 * was; one whose enqueue fails part-way empties it (its commands may still run). The owner
 * serialises the calls that use one pool. */
typedef struct clattn_buffer_pool {
    cl_mem buffers[CLATTN_PLAN_MAX_BUFFERS];
    size_t bytes[CLATTN_PLAN_MAX_BUFFERS];
    size_t count;
    cl_event last; /* NULL when no call has used the buffers yet */
} clattn_buffer_pool;

/* Releases the pool's buffers and event; the pool is empty after. */
void clattn__pool_clear(clattn_buffer_pool *pool);
/* Bytes of device memory the pool holds. */
size_t clattn__pool_bytes(const clattn_buffer_pool *pool);

typedef struct clattn_plan {
    clattn_context *ctx;
    cl_command_queue queue; /* the caller's (NULL: planned only, or run on the library's own) */
    clattn_step *steps;
    size_t count, cap;
    cl_mem buffers[CLATTN_PLAN_MAX_BUFFERS]; /* allocated for this call, or taken from the pool */
    size_t buffer_bytes[CLATTN_PLAN_MAX_BUFFERS]; /* 0: not for the pool (created with contents) */
    size_t num_buffers;
    clattn_buffer_pool *pool; /* NULL: the call's buffers are released after it */
    bool taken[CLATTN_PLAN_MAX_BUFFERS]; /* which of the pool's buffers this call uses */
    bool took_any;
    /* Called once every step is enqueued: where state the library keeps (a KV cache's lengths, a
     * scratch it grew) changes, so that a call that fails leaves that state as it was. */
    void (*commit)(struct clattn_plan *p, void *arg);
    void *commit_arg;
} clattn_plan;

void clattn__plan_init(clattn_plan *p, clattn_context *ctx);
/* How every enqueueing call starts: an empty plan, and the checks of the call's context, queue
 * and wait list. */
clattn_status clattn__plan_begin(clattn_plan *p, clattn_context *ctx, cl_command_queue queue,
                                 cl_uint num_wait, const cl_event *wait_list);

/* Appends a kernel launch (see clattn__launch_prepare). */
clattn_status clattn__plan_kernel(clattn_plan *p, const char *file, const char *options,
                                  const char *kernel, const clattn_kargs *args, cl_uint dims,
                                  const size_t *global, const size_t *local);
/* Appends a batch of CLBlast products (see clattn__gemm_prepare; the steps go through
 * clattn__product_plan, which picks the engine). */
clattn_status clattn__plan_gemm(clattn_plan *p, size_t d0, size_t d1, float alpha,
                                const clattn_operand *A, const clattn_operand *B, float beta,
                                const clattn_operand *C);
/* A device buffer of `bytes` that lives as long as the call's commands need it (from the pool,
 * when the plan has one). */
clattn_status clattn__plan_buffer(clattn_plan *p, size_t bytes, cl_mem *out);
/* The same, created holding a copy of `host` (for small per-call tables). */
clattn_status clattn__plan_buffer_copy(clattn_plan *p, size_t bytes, const void *host, cl_mem *out);
/* Takes a buffer of the plan's for the caller to keep (in a commit): the plan no longer
 * releases it. */
void clattn__plan_keep_buffer(clattn_plan *p, cl_mem m);

/* Enqueues every step in order; *event_out (if wanted) completes when all have. A plan with no
 * step still gives an event: a marker that waits for the wait list. Every event the steps make is
 * kept until the last one completes (PoCL 3.1 aborts when a failure reaches an event whose last
 * reference was released), then released from a completion callback. */
clattn_status clattn__plan_enqueue(clattn_plan *p, cl_command_queue queue, cl_uint num_wait,
                                   const cl_event *wait_list, cl_event *event_out);
void clattn__plan_release(clattn_plan *p);

/* How every enqueueing call ends: with `st` the status of building the plan, enqueue it if that
 * succeeded (and commit), release it either way, and return the call's status. */
clattn_status clattn__plan_run(clattn_plan *p, clattn_status st, cl_command_queue queue,
                               cl_uint num_wait, const cl_event *wait_list, cl_event *event_out);

/* The same for work the library does for itself (a layer's weights at create): enqueued on the
 * context's own queue and waited for. */
clattn_status clattn__plan_run_own(clattn_plan *p, clattn_status st);

/* The whole body of a public enqueueing call: begins a plan, builds it with `planner` (an
 * expression on `plan_`, the plan being built), runs it and returns the call's status. */
#define CLATTN_RETURN_PLANNED(ctx, queue, num_wait, wait_list, event_out, planner)                  \
    do {                                                                                           \
        clattn_plan plan_;                                                                         \
        clattn_status st_ = clattn__plan_begin(&plan_, (ctx), (queue), (num_wait), (wait_list));   \
        if (st_ == CL_SUCCESS)                                                                     \
            st_ = (planner);                                                                       \
        return clattn__plan_run(&plan_, st_, (queue), (num_wait), (wait_list), (event_out));       \
    } while (0)

/* The whole body of a *_prepare call: builds the plan `planner` makes on `plan_`, releases it
 * without enqueuing anything and returns the status. */
#define CLATTN_RETURN_PREPARED(ctx, planner)                                                       \
    do {                                                                                           \
        if (!(ctx))                                                                                \
            return CLATTN_ERROR_INVALID_ARGUMENT;                                                  \
        clattn_plan plan_;                                                                         \
        clattn__plan_init(&plan_, (ctx));                                                          \
        const clattn_status st_ = (planner);                                                       \
        clattn__plan_release(&plan_);                                                              \
        return st_;                                                                                \
    } while (0)

#endif
