/* The multi-head attention layer's object, shared by its creation (mha.c) and its forward
 * (mha_forward.c). */
#ifndef CLATTN_MHA_H
#define CLATTN_MHA_H
#include "plan.h"
#include "weights.h"

#include <pthread.h>

/* The four projections, in this order everywhere. */
enum { MHA_Q = 0, MHA_K = 1, MHA_V = 2, MHA_O = 3 };

struct clattn_mha {
    clattn_context *ctx;
    size_t E, H, Hkv, D, KV, kdim, vdim;
    clattn_dtype dtype; /* of the inputs and the output (fp16: staged through float) */
    bool bias;
    /* The caller's weights and biases (views; buffers retained), read at create and update. */
    clattn_tensor src_w[4], src_b[4];
    /* Prepared once: each projection's weights, and the biases as float [E | KV | KV | E]. */
    clattn_weights w[4];
    cl_mem biases;
    clattn_tensor b[4]; /* views into `biases` */
    /* The intermediates of forwards given no workspace, kept for the next one; `lock` makes
     * such forwards plan and enqueue one at a time. */
    pthread_mutex_t lock;
    clattn_buffer_pool scratch;
};

#endif
