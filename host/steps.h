/* The attention steps as internal check/enqueue pairs, so that composite operations (sdpa, and
 * later the multi-head block) validate every step before enqueuing the first one.
 *
 * A *_check function validates arguments and builds the kernels the step will need; it enqueues
 * nothing. A *_enqueue function assumes a successful check of the same arguments. */
#ifndef CLATTN_STEPS_H
#define CLATTN_STEPS_H
#include "context.h"

clattn_status clattn__linear_check(clattn_context *ctx, const clattn_tensor *X,
                                   const clattn_tensor *W, const clattn_tensor *bias,
                                   const clattn_tensor *Y);
clattn_status clattn__linear_enqueue(clattn_context *ctx, cl_command_queue q,
                                     const clattn_tensor *X, const clattn_tensor *W,
                                     const clattn_tensor *bias, const clattn_tensor *Y,
                                     cl_uint nw, const cl_event *wl, cl_event *ev);

clattn_status clattn__scores_check(clattn_context *ctx, const clattn_tensor *Q,
                                   const clattn_tensor *K, const clattn_tensor *S);
clattn_status clattn__scores_enqueue(clattn_context *ctx, cl_command_queue q,
                                     const clattn_tensor *Q, const clattn_tensor *K,
                                     const clattn_tensor *S, float scale, cl_uint nw,
                                     const cl_event *wl, cl_event *ev);

/* Checks mask params against scores of dims `sdims` = [B, H, Lq, Lk]. */
clattn_status clattn__mask_check(clattn_context *ctx, const size_t sdims[4],
                                 const clattn_mask_params *m);
clattn_status clattn__mask_enqueue(clattn_context *ctx, cl_command_queue q, const clattn_tensor *S,
                                   const clattn_mask_params *m, cl_uint nw, const cl_event *wl,
                                   cl_event *ev);

clattn_status clattn__softmax_check(clattn_context *ctx, const clattn_tensor *S,
                                    const clattn_tensor *P, const clattn_tensor *lse);
clattn_status clattn__softmax_enqueue(clattn_context *ctx, cl_command_queue q,
                                      const clattn_tensor *S, const clattn_tensor *P,
                                      const clattn_tensor *lse, cl_uint nw, const cl_event *wl,
                                      cl_event *ev);

clattn_status clattn__weighted_sum_check(clattn_context *ctx, const clattn_tensor *P,
                                         const clattn_tensor *V, const clattn_tensor *O);
clattn_status clattn__weighted_sum_enqueue(clattn_context *ctx, cl_command_queue q,
                                           const clattn_tensor *P, const clattn_tensor *V,
                                           const clattn_tensor *O, cl_uint nw, const cl_event *wl,
                                           cl_event *ev);

/* fill.c: sets a (checked, non-empty) view to `value`. */
clattn_status clattn__fill_prepare(clattn_context *ctx);
clattn_status clattn__fill_enqueue(clattn_context *ctx, cl_command_queue q, const clattn_tensor *t,
                                   float value, cl_uint nw, const cl_event *wl, cl_event *ev);

/* Completion of "nothing to do": a marker carrying the wait list when the caller wants an event. */
clattn_status clattn__no_op(cl_command_queue q, cl_uint nw, const cl_event *wl, cl_event *ev);

/* Steps of one call run in order, each waiting for the one before (correct on out-of-order
 * queues); the first waits for the caller's wait list. */
typedef struct clattn_chain {
    cl_event last;
    cl_uint nw;
    const cl_event *wl;
} clattn_chain;

static inline clattn_chain clattn__chain_start(cl_uint nw, const cl_event *wl)
{
    clattn_chain c = {NULL, nw, wl};
    return c;
}
/* Records the event of the step just enqueued (`ev`, from a step given c->nw/c->wl). */
static inline void clattn__chain_push(clattn_chain *c, cl_event ev)
{
    if (c->last)
        clReleaseEvent(c->last);
    c->last = ev;
    c->nw = 1;
    c->wl = &c->last;
}
/* Ends the chain: hands the last event to *ev_out (if wanted) or releases it. */
static inline void clattn__chain_end(clattn_chain *c, cl_event *ev_out)
{
    if (ev_out && c->last)
        *ev_out = c->last;
    else if (c->last)
        clReleaseEvent(c->last);
    c->last = NULL;
}

#endif
