/* Matrix products for the steps (projections, scores, weighted sums): which engine runs them,
 * and a bias added to each row of the result. */
#include "gemm_cpu.h"
#include "steps.h"
#include "tensor.h"
#include "weights.h"

/* CLBlast's product, then a kernel for the bias: C seen as a [d0, d1, M, N] view. */
static clattn_status clblast_plan(clattn_plan *p, size_t d0, size_t d1, float alpha,
                                  const clattn_operand *A, const clattn_operand *B,
                                  const clattn_operand *C, const clattn_tensor *bias)
{
    clattn_status st = clattn__plan_gemm(p, d0, d1, alpha, A, B, 0.0f, C);
    if (st != CL_SUCCESS || !bias)
        return st;
    const clattn_tensor Y = {C->buffer, C->offset, CLATTN_F32, {d0, d1, C->rows, C->cols},
                             {C->batch_stride[0], C->batch_stride[1], C->rs, C->cs}};
    clattn_kargs args = {0};
    clattn__arg_view(&args, &Y);
    clattn__arg_ulong(&args, d1);
    clattn__arg_view(&args, bias);
    const size_t global[3] = {C->cols, C->rows, d0 * d1};
    return clattn__plan_kernel(p, "bias", "", "bias_add", &args, 3, global, NULL);
}

clattn_status clattn__product_plan(clattn_plan *p, size_t d0, size_t d1, float alpha,
                                   const clattn_operand *A, const clattn_operand *B,
                                   const clattn_operand *C, const clattn_tensor *bias)
{
    /* C may be read back (CLBlast copies it in, and a separate bias pass reads it): whatever the
     * engine, so that a call valid on one device is valid on all. */
    clattn_status st = clattn__buffer_readable(C->buffer);
    if (st != CL_SUCCESS)
        return st;
    /* clattn's own kernel adds the bias as it stores C. */
    return clattn__gemm_cpu_chosen(p->ctx) ? clattn__gemm_cpu_plan(p, d0, d1, alpha, A, B, C, bias)
                                           : clblast_plan(p, d0, d1, alpha, A, B, C, bias);
}

clattn_status clattn__product_weights_plan(clattn_plan *p, size_t d0, size_t d1,
                                           const clattn_operand *A, const clattn_weights *w,
                                           const clattn_operand *C, const clattn_tensor *bias)
{
    clattn_status st = clattn__buffer_readable(C->buffer);
    if (st != CL_SUCCESS)
        return st;
    if (w->panels) {
        const clattn_packed B = {w->buffer, w->K, w->N, 0, 0, 1};
        return clattn__gemm_cpu_product_plan(p, d0, d1, 1.0f, A, &B, C, bias, 0, 0);
    }
    clattn_operand B;
    clattn__weights_operand(w, &B);
    return clblast_plan(p, d0, d1, 1.0f, A, &B, C, bias);
}
