/* The attention steps as internal check/enqueue pairs, so that composite operations (sdpa, and
 * later the multi-head block) validate every step before enqueuing the first one.
 *
 * A *_check function validates arguments and builds the kernels the step will need; it enqueues
 * nothing. A *_enqueue function assumes a successful check of the same arguments. */
#ifndef CLATTN_STEPS_H
#define CLATTN_STEPS_H
#include "context.h"

#include <stdbool.h>

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

/* Checks mask params against scores of dims `sdims` = [B, H, Lq, Lk]; _check also builds the
 * mask kernel the unfused path needs. */
clattn_status clattn__mask_validate(clattn_context *ctx, const size_t sdims[4],
                                    const clattn_mask_params *m);
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

/* fill.c: copies `src` into `dst` (same dims), one of them CLATTN_F16 and the other F32. */
clattn_status clattn__convert_prepare(clattn_context *ctx);
clattn_status clattn__convert_enqueue(clattn_context *ctx, cl_command_queue q,
                                      const clattn_tensor *src, const clattn_tensor *dst,
                                      cl_uint nw, const cl_event *wl, cl_event *ev);

/* Completion of "nothing to do": a marker carrying the wait list when the caller wants an event. */
clattn_status clattn__no_op(cl_command_queue q, cl_uint nw, const cl_event *wl, cl_event *ev);

/* Steps of one call run in order, each waiting for the one before (correct on out-of-order
 * queues); the first waits for the caller's wait list. */
typedef struct clattn_chain {
    cl_event last;     /* event of the last step enqueued */
    cl_event next;     /* where the step being enqueued puts its event */
    cl_uint nw;        /* wait list for the next step */
    const cl_event *wl;
} clattn_chain;

static inline clattn_chain clattn__chain_start(cl_uint nw, const cl_event *wl)
{
    clattn_chain c = {NULL, NULL, nw, wl};
    return c;
}

/* Enqueues one step if every step before succeeded: `call` waits for (chain.nw, chain.wl) and
 * writes its event to chain.next, which then becomes what the following step waits for. */
#define CLATTN_STEP(st, chain, call)                                                               \
    do {                                                                                           \
        if ((st) == CL_SUCCESS) {                                                                  \
            (chain).next = NULL;                                                                   \
            (st) = (call);                                                                         \
            if ((st) == CL_SUCCESS && (chain).next) {                                              \
                if ((chain).last)                                                                  \
                    clReleaseEvent((chain).last);                                                  \
                (chain).last = (chain).next;                                                       \
                (chain).nw = 1;                                                                    \
                (chain).wl = &(chain).last;                                                        \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* Ends the chain: hands the last event to *ev_out (if wanted) or releases it. */
static inline void clattn__chain_end(clattn_chain *c, cl_event *ev_out)
{
    if (ev_out && c->last)
        *ev_out = c->last;
    else if (c->last)
        clReleaseEvent(c->last);
    c->last = NULL;
}

/* flash.c: the fused path. _check validates what the fused kernel needs beyond sdpa's own
 * checks (and builds it); an error means the unfused path must run the call. */
clattn_status clattn__flash_check(clattn_context *ctx, const clattn_tensor *Q,
                                  const clattn_tensor *K, const clattn_tensor *V,
                                  const clattn_tensor *O, const clattn_sdpa_params *p);
/* Split keys (flash-decoding): `count` splits of `keys` keys each (a multiple of the block size,
 * clattn__flash_block_k), split s writing its partial O and lse `o_stride` / `lse_stride`
 * elements after split s - 1's. NULL: one pass over all keys. */
typedef struct clattn_flash_split {
    size_t keys, count, o_stride, lse_stride;
} clattn_flash_split;
int clattn__flash_block_k(const clattn_context *ctx, size_t D, size_t Dv);
clattn_status clattn__flash_enqueue(clattn_context *ctx, cl_command_queue queue,
                                    const clattn_tensor *Q, const clattn_tensor *K,
                                    const clattn_tensor *V, const clattn_tensor *O,
                                    const clattn_sdpa_params *p, const clattn_flash_split *split,
                                    cl_uint nw, const cl_event *wl, cl_event *ev);

/* A validated sdpa call (sdpa.c): its views, params and where its scores live. */
typedef struct clattn_sdpa_call {
    clattn_tensor Q, K, V, O, S;
    clattn_sdpa_params p;
    cl_mem own;  /* score buffer the library allocated, or NULL */
    bool no_op;  /* nothing to compute */
    bool fused;  /* the fused kernel runs it (else the unfused steps) */
} clattn_sdpa_call;

/* Validates an sdpa call, places its scores and builds its kernels; enqueues nothing. On success
 * the call must be released with clattn__sdpa_release (after enqueuing, or instead of it). */
clattn_status clattn__sdpa_prepare(clattn_context *ctx, const clattn_tensor *Q,
                                   const clattn_tensor *K, const clattn_tensor *V,
                                   const clattn_tensor *O, const clattn_sdpa_params *params,
                                   clattn_sdpa_call *call);
clattn_status clattn__sdpa_enqueue(clattn_context *ctx, cl_command_queue queue,
                                   const clattn_sdpa_call *call, cl_uint num_wait,
                                   const cl_event *wait_list, cl_event *event_out);
void clattn__sdpa_release(clattn_sdpa_call *call);
/* Bytes of score matrix an sdpa call with these (already validated) views would allocate: 0 on
 * the fused path or when probs hold the scores. */
clattn_status clattn__sdpa_workspace(clattn_context *ctx, const clattn_tensor *Q,
                                     const clattn_tensor *K, const clattn_tensor *V,
                                     const clattn_tensor *O, const clattn_sdpa_params *params,
                                     size_t *bytes);

#endif
