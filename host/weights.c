/* Prepared weights (see weights.h and clattn_weights in clattn.h). */
#include "weights.h"

#include "gemm_cpu.h"
#include "steps.h"
#include "tensor.h"

#include <stdlib.h>
#include <string.h>

clattn_status clattn__weights_init(clattn_context *ctx, size_t N, size_t K, clattn_weights *w)
{
    memset(w, 0, sizeof *w);
    w->ctx = ctx;
    w->N = N;
    w->K = K;
    w->panels = clattn__gemm_cpu_chosen(ctx);
    w->bytes = w->panels ? clattn__gemm_cpu_packed_bytes(ctx, 1, K, N) : 0;
    if (!w->panels && (!clattn__mul(N, K, &w->bytes) || !clattn__mul(w->bytes, sizeof(float), &w->bytes)))
        w->bytes = 0;
    if (w->bytes == 0)
        return CLATTN_ERROR_SIZE_OVERFLOW;
    if (w->bytes > ctx->info.max_mem_alloc_size)
        return CLATTN_ERROR_ALLOCATION_TOO_LARGE;
    cl_int err;
    w->buffer = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, w->bytes, NULL, &err);
    return err;
}

void clattn__weights_free(clattn_weights *w)
{
    if (w->buffer)
        clReleaseMemObject(w->buffer);
    w->buffer = NULL;
}

clattn_status clattn__weights_copy_plan(clattn_plan *p, const clattn_tensor *W,
                                        const clattn_weights *w)
{
    clattn_status st = clattn__view_check_f16(p->ctx, W, CLATTN_VIEW_INPUT);
    if (st != CL_SUCCESS)
        return st;
    if (W->dims[0] != 1 || W->dims[1] != 1 || W->dims[2] != w->N || W->dims[3] != w->K)
        return CLATTN_ERROR_INVALID_SHAPE;
    if (w->panels) {
        /* B = Wᵀ: K x N, element (k, n) = W[n, k]. */
        const clattn_operand B = {W->buffer, W->offset, {0, 0}, 1, w->K, w->N, W->strides[3],
                                  W->strides[2]};
        const clattn_packed dst = {w->buffer, w->K, w->N, 0, 0, 1};
        return clattn__gemm_cpu_pack_plan(p, 1, 1, &B, W->dtype == CLATTN_F16, &dst);
    }
    /* Wᵀ as a row-major [K, N] float matrix: W's element (n, k) lands at k * N + n. */
    const clattn_tensor Wt = {w->buffer, 0, CLATTN_F32, {1, 1, w->N, w->K}, {0, 0, 1, w->N}};
    return clattn__convert_plan(p, W, &Wt);
}

void clattn__weights_operand(const clattn_weights *w, clattn_operand *B)
{
    const clattn_operand b = {w->buffer, 0, {0, 0}, 1, w->K, w->N, w->N, 1};
    *B = b;
}

/* --- the public object ------------------------------------------------------------------------ */

static clattn_status copy_call(clattn_weights *w, cl_command_queue queue, const clattn_tensor *W,
                               cl_uint num_wait, const cl_event *wait_list, cl_event *event_out)
{
    CLATTN_RETURN_PLANNED(w->ctx, queue, num_wait, wait_list, event_out,
                          clattn__weights_copy_plan(&plan_, W, w));
}

clattn_status clattn_weights_create(clattn_context *ctx, cl_command_queue queue,
                                    const clattn_tensor *W, cl_uint num_wait,
                                    const cl_event *wait_list, cl_event *event_out,
                                    clattn_weights **out)
{
    if (!out)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    if (!ctx || !W)
        return CLATTN_ERROR_INVALID_ARGUMENT;
    if (W->dims[0] != 1 || W->dims[1] != 1 || W->dims[2] == 0 || W->dims[3] == 0)
        return CLATTN_ERROR_INVALID_SHAPE;
    clattn_weights *w = malloc(sizeof *w);
    if (!w)
        return CLATTN_ERROR_OUT_OF_HOST_MEMORY;
    clattn_status st = clattn__weights_init(ctx, W->dims[2], W->dims[3], w);
    if (st == CL_SUCCESS)
        st = copy_call(w, queue, W, num_wait, wait_list, event_out);
    if (st != CL_SUCCESS) {
        clattn_weights_destroy(&w);
        return st;
    }
    *out = w;
    return CL_SUCCESS;
}

clattn_status clattn_weights_update(clattn_weights *w, cl_command_queue queue,
                                    const clattn_tensor *W, cl_uint num_wait,
                                    const cl_event *wait_list, cl_event *event_out)
{
    return w ? copy_call(w, queue, W, num_wait, wait_list, event_out)
             : CLATTN_ERROR_INVALID_ARGUMENT;
}

void clattn_weights_destroy(clattn_weights **w)
{
    if (!w || !*w)
        return;
    clattn__weights_free(*w);
    free(*w);
    *w = NULL;
}

size_t clattn_weights_bytes(const clattn_weights *w)
{
    return w ? w->bytes : 0;
}
