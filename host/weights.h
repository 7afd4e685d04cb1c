/* Prepared weights: a matrix W [N, K] (Y = X·Wᵀ) copied once into the layout the context's
 * matrix-product engine reads (the public clattn_weights, and a multi-head layer's own). */
#ifndef CLATTN_WEIGHTS_H
#define CLATTN_WEIGHTS_H
#include "plan.h"

struct clattn_weights {
    clattn_context *ctx;
    size_t N, K;
    bool panels;   /* clattn's own engine: Wᵀ packed in panels; else CLBlast's: Wᵀ as [K, N] */
    cl_mem buffer; /* owned */
    size_t bytes;
};

/* Allocates the device memory of an N x K weight (N, K > 0) in the context's layout. */
clattn_status clattn__weights_init(clattn_context *ctx, size_t N, size_t K, clattn_weights *w);
void clattn__weights_free(clattn_weights *w);

/* Checks W ([1, 1, N, K], CLATTN_F32 or CLATTN_F16, matching w) and appends its copy into w. */
clattn_status clattn__weights_copy_plan(clattn_plan *p, const clattn_tensor *W,
                                        const clattn_weights *w);

/* The operand B = Wᵀ of a product with prepared weights, for clattn__product_plan. */
void clattn__weights_operand(const clattn_weights *w, clattn_operand *B);

#endif
